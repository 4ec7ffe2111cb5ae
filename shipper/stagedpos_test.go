package shipper

import (
	"encoding/binary"
	"hash/crc32"
	"os"
	"path/filepath"
	"testing"

	"github.com/superfly/ltx"
	"github.com/walsync/walsync/capture"
)

// TestStagedPosFile: staged.pos keeps the head of the shared chain whole
// (position, pending's end, the WAL position of its capture); a file in the
// format before the WAL position is still read, with none; a torn one asks
// for a resync.
func TestStagedPosFile(t *testing.T) {
	st := &stage{dir: t.TempDir()}
	defer st.closePosFile()
	want := stagedPos{
		pos: capture.Pos{TXID: 42, Checksum: ltx.ChecksumFlag | 0x1234, PageSize: 4096, Commit: 7},
		ino: 99, end: 12345, resync: true,
		wal: capture.WALPos{BigEndian: true, PageSize: 4096, Salt1: 0xdeadbeef, Salt2: 7, End: 32 + 3*(4096+24), Cksum: [2]uint32{1, 0xffffffff}},
	}
	if err := st.writeStagedPos(want); err != nil {
		t.Fatal(err)
	}
	got, ok, err := st.readStagedPos()
	if err != nil || !ok || got != want {
		t.Fatalf("read back %+v, %v, %v; want %+v", got, ok, err, want)
	}

	// The earlier format: 41 bytes and a CRC-32C, no WAL position.
	st.closePosFile()
	var old [stagedPosSizeV1]byte
	binary.BigEndian.PutUint64(old[:], 41)
	binary.BigEndian.PutUint32(old[16:], 4096)
	binary.BigEndian.PutUint32(old[20:], 3)
	binary.BigEndian.PutUint32(old[41:], crc32.Checksum(old[:41], castagnoli))
	path := filepath.Join(st.dir, stagedPosFile)
	if err := os.WriteFile(path, old[:], 0o600); err != nil {
		t.Fatal(err)
	}
	got, ok, err = st.readStagedPos()
	if err != nil || !ok || got.pos.TXID != 41 || got.pos.Commit != 3 || got.wal != (capture.WALPos{}) || got.resync {
		t.Fatalf("the earlier format read as %+v, %v, %v", got, ok, err)
	}

	// Torn: one byte changed.
	st.closePosFile()
	old[3] ^= 1
	if err := os.WriteFile(path, old[:], 0o600); err != nil {
		t.Fatal(err)
	}
	if got, ok, err = st.readStagedPos(); err != nil || ok || !got.resync {
		t.Fatalf("a torn staged.pos read as %+v, %v, %v; want a resync", got, ok, err)
	}
}

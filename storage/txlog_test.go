package storage

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc64"
	"testing"

	"github.com/superfly/ltx"
)

func writeRecord(t *testing.T, buf *bytes.Buffer, rec TxRecord, pages map[uint32][]byte, pgnos []uint32) {
	t.Helper()
	bw := bufio.NewWriter(buf)
	rw, err := NewTxRecordWriter(bw, rec)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pgnos {
		if err := rw.WritePage(p, pages[p]); err != nil {
			t.Fatal(err)
		}
	}
	if err := rw.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestTxLogFormats: records written now (WTX3, CRC-32C) and records of the
// earlier format (WTX2, CRC-64/ISO, as older replicas hold them) both read
// back; a flipped byte in either is caught.
func TestTxLogFormats(t *testing.T) {
	const ps = 512
	pages := map[uint32][]byte{1: bytes.Repeat([]byte{1}, ps), 3: bytes.Repeat([]byte{3}, ps)}
	var buf bytes.Buffer
	writeRecord(t, &buf, TxRecord{TXID: 7, PageSize: ps, Commit: 3, PageCount: 2, Pre: 11, Post: 12, Timestamp: 1000}, pages, []uint32{1, 3})
	if string(buf.Bytes()[:4]) != "WTX3" {
		t.Fatalf("magic %q", buf.Bytes()[:4])
	}

	// An older record, by hand: "WTX2" and a CRC-64/ISO tail.
	var old bytes.Buffer
	h := make([]byte, TxRecordHeadSize)
	copy(h, "WTX2")
	binary.BigEndian.PutUint32(h[4:], ps)
	binary.BigEndian.PutUint32(h[8:], 3)
	binary.BigEndian.PutUint32(h[12:], 1)
	binary.BigEndian.PutUint64(h[16:], 8)
	binary.BigEndian.PutUint64(h[24:], 12)
	binary.BigEndian.PutUint64(h[32:], 13)
	binary.BigEndian.PutUint64(h[40:], 2000)
	old.Write(h)
	old.Write([]byte{0, 0, 0, 3})
	old.Write(pages[3])
	var tail [8]byte
	binary.BigEndian.PutUint64(tail[:], crc64.Checksum(old.Bytes(), crc64.MakeTable(crc64.ISO)))
	old.Write(tail[:])

	log := append(bytes.Clone(buf.Bytes()), old.Bytes()...)
	recs, end, err := ReadTxLog(bytes.NewReader(log), int64(len(log)), true)
	if err != nil || end != int64(len(log)) || len(recs) != 2 {
		t.Fatalf("read: %d records, end %d of %d, %v", len(recs), end, len(log), err)
	}
	if recs[0].TXID != 7 || recs[0].Post != 12 || recs[1].TXID != 8 || recs[1].Pre != ltx.Checksum(12) || recs[1].Offset != int64(buf.Len()) {
		t.Fatalf("records %+v", recs)
	}
	pgno, off, err := recs[0].PageOffset(bytes.NewReader(log), 1)
	if err != nil || pgno != 3 || !bytes.Equal(log[off:off+ps], pages[3]) {
		t.Fatalf("page 1 of record 0: pgno %d off %d %v", pgno, off, err)
	}

	for _, at := range []int{100, buf.Len() + 100} {
		bad := bytes.Clone(log)
		bad[at] ^= 1
		if _, _, err := ReadTxLog(bytes.NewReader(bad), int64(len(bad)), true); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("flipped byte at %d: %v", at, err)
		}
		// Not strict (a torn tail after a crash): the valid prefix.
		recs, _, err := ReadTxLog(bytes.NewReader(bad), int64(len(bad)), false)
		if err != nil || (at < buf.Len()) != (len(recs) == 0) {
			t.Fatalf("flipped byte at %d, not strict: %d records, %v", at, len(recs), err)
		}
	}
}

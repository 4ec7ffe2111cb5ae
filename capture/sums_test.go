package capture_test

import (
	"errors"
	"testing"

	"github.com/superfly/ltx"
	"github.com/walsync/walsync/capture"
)

// failingSums is an in-memory checksum store whose writes fail while fail is set.
type failingSums struct {
	capture.MemSums
	fail bool
}

func (f *failingSums) WriteSums(first uint32, src []ltx.Checksum) error {
	if f.fail {
		return errors.New("no space left on device")
	}
	return f.MemSums.WriteSums(first, src)
}

// TestSumsStoreFailure: when a staged transaction's page checksums cannot be
// stored, the commit still succeeds (it is staged), and the next commit is
// captured from a state rebuilt from the files, continuing the chain.
func TestSumsStoreFailure(t *testing.T) {
	const ps = 4096
	files := &memFiles{}
	files.put(capture.DBFile, 0, newDB(ps, true, 2, 1))
	h := newHarness(t, files)
	sums := &failingSums{}
	h.sums = sums
	h.mustOpen(capture.Pos{})
	h.check("after open")
	w := &walWriter{ps: ps, salt1: 1, salt2: 2}
	s := &sqliteWAL{h: h, w: w, next: 1}
	h.must(h.writeWAL(0, w.header()))

	sums.fail = true
	m := h.mustModel()
	tx := s.commitTx(2, framePage{2, fillPage(ps, 2, 5)}, framePage{1, nextPage1(m, 2, 5)})
	if tx.TXID != 2 || len(h.warns) != 1 {
		t.Fatalf("tx %+v, warnings %q", tx, h.warns)
	}
	sums.fail = false

	// The next commit rebuilds the state: a full resync that still follows
	// transaction 2 (the harness checks the checksum chain and content).
	m = h.mustModel()
	tx = s.commitTx(3, framePage{3, fillPage(ps, 3, 6)}, framePage{1, nextPage1(m, 3, 6)})
	if tx.TXID != 3 {
		t.Fatalf("tx %+v, want TXID 3", tx)
	}
	// And the one after is incremental again.
	tx = s.commitTx(3, framePage{2, fillPage(ps, 2, 7)})
	if tx.TXID != 4 || tx.Full || len(tx.Pgnos) != 1 || tx.Pgnos[0] != 2 {
		t.Fatalf("tx %+v, want an incremental TXID 4 of page 2", tx)
	}
}

func TestMemSums(t *testing.T) {
	var m capture.MemSums
	dst := make([]ltx.Checksum, 3)
	if err := m.WriteSums(2, []ltx.Checksum{20, 30}); err != nil {
		t.Fatal(err)
	}
	m.ReadSums(1, dst)
	if dst[0] != 0 || dst[1] != 20 || dst[2] != 30 {
		t.Fatalf("read %v", dst)
	}
	m.TruncateSums(2)
	m.ReadSums(1, dst)
	if dst[1] != 20 || dst[2] != 0 {
		t.Fatalf("after truncate: %v", dst)
	}
}

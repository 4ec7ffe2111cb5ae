package capture_test

import (
	"strings"
	"testing"

	"github.com/superfly/ltx"
	"github.com/walsync/walsync/capture"
)

// rawCommit writes a transaction's frames to the -wal without the DB seeing
// them (FUSE passthrough, the VFS), the last page the commit frame.
func (s *sqliteWAL) rawCommit(commit uint32, pages ...framePage) {
	s.h.t.Helper()
	for i, p := range pages {
		c := uint32(0)
		if i == len(pages)-1 {
			c = commit
		}
		b := s.w.frame(p.pgno, c, p.data)
		s.h.files.put(capture.WALFile, s.w.frameOff(s.next), b)
		s.next++
	}
}

// TestDeferredCheckpointBarrier: commits written behind the DB's back are
// all captured, each with its own TXID and in order, before a checkpoint's
// write to the database file is applied.
func TestDeferredCheckpointBarrier(t *testing.T) {
	h, s := setupWAL(t, 1024, false, 3)
	h.deferWAL = true
	for i := 0; i < 3; i++ {
		s.rawCommit(3, framePage{2, fillPage(1024, 2, uint64(20+i))})
	}
	if len(h.txs) != 1 {
		t.Fatalf("captured %d transactions before any barrier", len(h.txs)-1)
	}
	m := h.mustModel()
	applied := false
	got := h.ntx(func() {
		h.must(h.db.WriteDB(1024, 1024, func() error {
			if len(h.txs) != 4 {
				t.Fatalf("checkpoint write applied with %d of 3 commits captured", len(h.txs)-1)
			}
			applied = true
			h.files.put(capture.DBFile, 1024, m.page(2))
			return nil
		}))
	})
	if !applied || len(got) != 3 {
		t.Fatalf("checkpoint captured %d transactions, want 3", len(got))
	}
	for i, tx := range got {
		if tx.Full || tx.TXID != uint64ToTXID(2+i) || len(tx.Pgnos) != 1 || tx.Pgnos[0] != 2 {
			t.Fatalf("transaction %d: %+v, want page 2 alone as TXID %d", i, tx, 2+i)
		}
	}
	h.check("after checkpoint")
}

// TestDeferredOverwrittenCommit: a commit captured by a barrier whose frames
// SQLite then overwrites in the same WAL generation (it reported that
// commit failed) is detected, and the database is shipped whole.
func TestDeferredOverwrittenCommit(t *testing.T) {
	h, s := setupWAL(t, 1024, false, 3)
	h.deferWAL = true
	hdrSum := s.w.cksum
	s.rawCommit(3, framePage{2, fillPage(1024, 2, 30)})
	h.must(h.db.SyncWAL())
	if len(h.txs) != 2 {
		t.Fatalf("barrier captured %d transactions, want 1", len(h.txs)-1)
	}
	// The same frame slot, another transaction.
	s.w.cksum, s.next = hdrSum, 1
	s.rawCommit(3, framePage{3, fillPage(1024, 3, 31)})
	got := h.ntx(func() { h.must(h.db.SyncWAL()) })
	if len(got) != 1 || !got[0].Full {
		t.Fatalf("after the overwrite captured %+v, want the database whole", got)
	}
	if !strings.Contains(strings.Join(h.warns, "\n"), "were overwritten") {
		t.Fatalf("no warning of the overwrite: %q", h.warns)
	}
	h.check("after overwrite")
}

// TestOpenCapturesUncaptured: a DB opened at the last captured position
// captures, one by one, the commits in the -wal after it (walsync killed
// before its barrier), and nothing when there are none.
func TestOpenCapturesUncaptured(t *testing.T) {
	h, s := setupWAL(t, 1024, false, 3)
	s.commitTx(3, framePage{2, fillPage(1024, 2, 40)}) // captured at its write
	h.deferWAL = true
	s.rawCommit(4, framePage{4, fillPage(1024, 4, 41)}, framePage{1, nextPage1(h.mustModel(), 4, 41)})
	s.rawCommit(4, framePage{3, fillPage(1024, 3, 42)})
	pos := h.db.Pos()
	got := h.ntx(func() { h.mustOpen(pos) })
	if len(got) != 2 || got[0].Full || got[1].Full || got[0].TXID != pos.TXID+1 {
		t.Fatalf("open at TXID %d captured %+v, want the 2 commits after it", pos.TXID, got)
	}
	h.check("after open")
	if got := h.ntx(func() { h.mustOpen(h.db.Pos()) }); len(got) != 0 {
		t.Fatalf("open at the last position captured %+v", got)
	}
}

func uint64ToTXID(i int) ltx.TXID { return ltx.TXID(i) }

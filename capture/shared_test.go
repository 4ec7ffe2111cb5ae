package capture_test

import (
	"errors"
	"sync"
	"testing"

	"github.com/superfly/ltx"
	"github.com/walsync/walsync/capture"
)

// Several processes capture one database (the VFS loaded by several
// processes): each has its own DB on the same files, and they share the
// page checksums and the head of the chain (capture.Shared).

// memShared is capture.Shared in memory, as the shipper's shared staging
// keeps it in a file (shipper/shared.go).
type memShared struct {
	mu   sync.Mutex
	head capture.Head
	ok   bool
}

func (s *memShared) Lock() error   { s.mu.Lock(); return nil }
func (s *memShared) Unlock() error { s.mu.Unlock(); return nil }

func (s *memShared) Load() (capture.Head, bool, error) { return s.head, s.ok, nil }

func (s *memShared) Staged(pos capture.Pos, wal capture.WALPos, sumsStored bool) error {
	s.head, s.ok = capture.Head{Pos: pos, WAL: wal, Resync: !sumsStored}, true
	return nil
}

func (h *harness) sharedOrNil() capture.Shared {
	if h.shared == nil {
		return nil // a typed nil would be a Shared
	}
	return h.shared
}

// share makes the harness's DBs capture as processes sharing one staging;
// it returns the DB of a second process, opened at the head. Each process
// keeps checksums in memory in front of the shared store, as the front
// ends do (capture.CachingSums).
func (h *harness) share() *capture.DB {
	h.t.Helper()
	store := &capture.MemSums{}
	h.shared = &memShared{}
	h.sums = &cachedSums{store: store}
	h.mustOpen(h.db.Pos()) // the first process again, with the shared state
	a := h.db
	h.sums = &cachedSums{store: store}
	h.mustOpen(a.Pos())
	b := h.db
	h.db = a
	return b
}

// cachedSums is a process's capture.CachingSums over the shared store:
// writes stay in memory until Flush, reads are served from memory first,
// until Forget.
type cachedSums struct {
	store *capture.MemSums
	cache map[uint32]ltx.Checksum
}

func (c *cachedSums) ReadSums(first uint32, dst []ltx.Checksum) error {
	if err := c.store.ReadSums(first, dst); err != nil {
		return err
	}
	for i := range dst {
		if v, ok := c.cache[first+uint32(i)]; ok {
			dst[i] = v
		}
	}
	return nil
}

func (c *cachedSums) WriteSums(first uint32, src []ltx.Checksum) error {
	if c.cache == nil {
		c.cache = map[uint32]ltx.Checksum{}
	}
	for i, v := range src {
		c.cache[first+uint32(i)] = v
	}
	return nil
}

func (c *cachedSums) TruncateSums(n uint32) error {
	for p := range c.cache {
		if p > n {
			delete(c.cache, p)
		}
	}
	return c.store.TruncateSums(n)
}

// Flush writes what is cached and keeps it: reads go on hitting the cache
// until Forget.
func (c *cachedSums) Flush() error {
	for p, v := range c.cache {
		if err := c.store.WriteSums(p, []ltx.Checksum{v}); err != nil {
			return err
		}
	}
	return nil
}

func (c *cachedSums) Forget() { clear(c.cache) }

// TestSharedWALCursor: two processes capture one WAL database at their
// barriers, in turn. Each reads the -wal on from where the last capture of
// either stopped: a commit the other process captured is not shipped again
// over the later state (an increment that would take pages back), and none
// is skipped.
func TestSharedWALCursor(t *testing.T) {
	h, s := setupOutside(t)
	b := h.share()
	a := h.db
	look := func(d *capture.DB, n int, where string) {
		t.Helper()
		h.db = d
		got := h.sync()
		wantIncrements(t, got, n)
	}
	s.commitPage(2, 1)
	s.commitPage(3, 2)
	s.commitPage(2, 3) // page 2 again: a second read of frame 1 would take it back
	look(a, 3, "a")
	s.commitPage(3, 4)
	look(b, 1, "b")
	s.commitPage(2, 5)
	look(a, 1, "a")
	look(b, 0, "b again")
	// A restart by the other process's connection: b follows it.
	rawCheckpoint(h)
	s.restart()
	s.commitPage(2, 6)
	look(a, 1, "a after restart")
	s.commitPage(3, 7)
	look(b, 1, "b after restart")
}

// TestSharedEstablishFailsHalfWay: a process's establish fails after it
// started rewriting the shared page checksums (a read error half way
// through the database file). The head must then ask for a resync: the
// other process, which trusts the shared checksums at the head, would
// otherwise ship increments computed against a half-rebuilt state.
func TestSharedEstablishFailsHalfWay(t *testing.T) {
	h, s := setupOutside(t)
	h.share() // a second process, b, whose checksum cache h.open uses
	a := h.db
	s.commitPage(2, 1)
	s.commitPage(3, 2)
	wantIncrements(t, h.sync(), 2)
	// b opens the database again (its state rebuilt from the files) and
	// fails reading page 3 of the database file.
	h.files.failRead = func(k capture.Kind, off int64) error {
		if k == capture.DBFile && off == 2*1024 {
			return errors.New("injected read error")
		}
		return nil
	}
	if err := h.open(a.Pos()); err == nil {
		t.Fatal("establish with a failing read succeeded")
	}
	h.files.failRead = nil
	if !h.shared.head.Resync {
		t.Fatalf("head after a failed establish: %+v; want the resync mark", h.shared.head)
	}
	// a's next capture ships the database whole, and the replica is right.
	s.commitPage(2, 3)
	h.db = a
	wantWhole(t, h.sync())
}

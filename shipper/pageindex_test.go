package shipper

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestPageIndex: the file-backed index of a large batch returns the same
// pages, latest versions, in the same order as the in-memory one.
func TestPageIndex(t *testing.T) {
	small, err := newPageIndex(t.TempDir(), 10)
	if err != nil {
		t.Fatal(err)
	}
	large, err := newPageIndex(t.TempDir(), inMemoryPages+1)
	if err != nil {
		t.Fatal(err)
	}
	defer large.close()
	if small.f != nil || large.f == nil {
		t.Fatal("a small batch must be indexed in memory, a large one in a file")
	}
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 5000; i++ {
		pgno, off := uint32(1+r.IntN(3000)), int64(r.IntN(1<<40))
		if err := small.set(pgno, off); err != nil {
			t.Fatal(err)
		}
		if err := large.set(pgno, off); err != nil {
			t.Fatal(err)
		}
	}
	type entry struct {
		pgno uint32
		off  int64
	}
	collect := func(x *pageIndex, commit uint32) []entry {
		var a []entry
		if err := x.each(commit, func(pgno uint32, off int64) error { a = append(a, entry{pgno, off}); return nil }); err != nil {
			t.Fatal(err)
		}
		return a
	}
	for _, commit := range []uint32{0, 1, 1500, 2999, 3000, 10000} {
		a, b := collect(small, commit), collect(large, commit)
		if !slices.Equal(a, b) {
			t.Fatalf("commit %d: in memory %d entries, in a file %d", commit, len(a), len(b))
		}
		if !slices.IsSortedFunc(a, func(x, y entry) int { return int(x.pgno) - int(y.pgno) }) {
			t.Fatal("not in page order")
		}
		for _, e := range a {
			if e.pgno > commit {
				t.Fatalf("page %d past commit %d", e.pgno, commit)
			}
		}
	}
	if err := small.set(0, 5); err != nil { // offset 0 and page 0 are distinct from "none"
		t.Fatal(err)
	}
}

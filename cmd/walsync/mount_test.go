package main

import "testing"

// TestMemoryLimit: the limit is the floor while the live heap is small and
// twice the live heap plus 8 MiB once that is more, so the collector never
// runs continuously because the heap outgrew the floor.
func TestMemoryLimit(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		floor int64
		live  uint64
		want  int64
	}{
		{24 * mib, 0, 24 * mib},
		{24 * mib, 8 * mib, 24 * mib},
		{24 * mib, 10 * mib, 28 * mib},
		{24 * mib, 100 * mib, 208 * mib},
	} {
		if got := memoryLimit(c.floor, c.live); got != c.want {
			t.Errorf("memoryLimit(%d MiB, live %d MiB) = %d MiB, want %d", c.floor/mib, c.live/mib, got/mib, c.want/mib)
		}
	}
}

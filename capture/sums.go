package capture

import (
	"math/bits"
	"sync"

	"github.com/superfly/ltx"
)

// Sums holds the per-page checksums of a database's last captured state,
// page 1 first. The lock page's checksum is zero, and so is any checksum
// never written. A database can have millions of pages, so the front ends
// keep them in a file (page cache, not heap); MemSums is the in-memory store.
type Sums interface {
	// ReadSums fills dst with the checksums of pages first, first+1, ...
	ReadSums(first uint32, dst []ltx.Checksum) error
	// WriteSums stores the checksums of pages first, first+1, ...
	WriteSums(first uint32, src []ltx.Checksum) error
	// TruncateSums forgets the checksums of pages after n.
	TruncateSums(n uint32) error
}

// CachingSums is a Sums that keeps some checksums in memory in front of a
// store other processes share (Config.Shared): Flush writes them to the
// store before the capture's lock is released; Forget drops them when
// another process captured since (the store has its newer ones).
type CachingSums interface {
	Sums
	Flush() error
	Forget()
}

// MemSums is a Sums in memory.
type MemSums struct{ s []ltx.Checksum }

func (m *MemSums) ReadSums(first uint32, dst []ltx.Checksum) error {
	clear(dst)
	if i := int(first) - 1; i < len(m.s) {
		copy(dst, m.s[i:])
	}
	return nil
}

func (m *MemSums) WriteSums(first uint32, src []ltx.Checksum) error {
	if end := int(first) - 1 + len(src); end > len(m.s) {
		m.s = append(m.s, make([]ltx.Checksum, end-len(m.s))...)
	}
	copy(m.s[first-1:], src)
	return nil
}

func (m *MemSums) TruncateSums(n uint32) error {
	if int(n) < len(m.s) {
		m.s = m.s[:n]
	}
	return nil
}

// runs calls fn for each run of consecutive page numbers in pgnos (sorted,
// distinct) with the run's first page and its index range in pgnos.
func runs(pgnos []uint32, fn func(first uint32, i, j int) error) error {
	for i := 0; i < len(pgnos); {
		j := i + 1
		for j < len(pgnos) && pgnos[j] == pgnos[j-1]+1 {
			j++
		}
		if err := fn(pgnos[i], i, j); err != nil {
			return err
		}
		i = j
	}
	return nil
}

// Buffers for pages and frames, shared by all databases: an idle database
// holds none.
var bufPools [18]sync.Pool // by power of two, up to 64 KiB + frame header

func getBuf(n int) *[]byte {
	c := bits.Len(uint(n - 1))
	if p, ok := bufPools[c].Get().(*[]byte); ok {
		*p = (*p)[:n]
		return p
	}
	b := make([]byte, n, 1<<c)
	return &b
}

func putBuf(p *[]byte) {
	c := bits.Len(uint(cap(*p) - 1))
	if 1<<c == cap(*p) && c < len(bufPools) {
		bufPools[c].Put(p)
	}
}

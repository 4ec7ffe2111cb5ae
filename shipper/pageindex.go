package shipper

import (
	"bufio"
	"encoding/binary"
	"io"
	"os"
	"sort"
)

// pageIndex records where the latest version of each page of a batch is in
// its staged log. A small batch keeps it in a map; a large one (a snapshot
// of a big database) in a temporary file of 8 bytes per page number, so its
// memory does not grow with the database (the file lives in the page cache).
type pageIndex struct {
	m   map[uint32]int64
	f   *os.File
	max uint32
}

// inMemoryPages is the largest batch whose index stays in memory.
const inMemoryPages = 16 << 10

func newPageIndex(dir string, pages int) (*pageIndex, error) {
	if pages <= inMemoryPages {
		return &pageIndex{m: make(map[uint32]int64, pages)}, nil
	}
	f, err := os.CreateTemp(dir, ".index-*")
	if err != nil {
		return nil, err
	}
	os.Remove(f.Name()) // anonymous: gone when closed
	return &pageIndex{f: f}, nil
}

func (x *pageIndex) close() {
	if x.f != nil {
		x.f.Close()
	}
}

// set records that pgno's latest version is at off.
func (x *pageIndex) set(pgno uint32, off int64) error {
	if x.f == nil {
		x.m[pgno] = off
		return nil
	}
	x.max = max(x.max, pgno)
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(off)+1) // 0: no version
	_, err := x.f.WriteAt(b[:], int64(pgno)*8)
	return err
}

// each calls fn for every page up to commit, in ascending order.
func (x *pageIndex) each(commit uint32, fn func(pgno uint32, off int64) error) error {
	if x.f == nil {
		pgnos := make([]uint32, 0, len(x.m))
		for pgno := range x.m {
			if pgno <= commit {
				pgnos = append(pgnos, pgno)
			}
		}
		sort.Slice(pgnos, func(i, j int) bool { return pgnos[i] < pgnos[j] })
		for _, pgno := range pgnos {
			if err := fn(pgno, x.m[pgno]); err != nil {
				return err
			}
		}
		return nil
	}
	r := bufio.NewReaderSize(io.NewSectionReader(x.f, 0, int64(min(x.max, commit)+1)*8), 64<<10)
	var b [8]byte
	for pgno := uint32(0); pgno <= min(x.max, commit); pgno++ {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return err
		}
		if v := binary.BigEndian.Uint64(b[:]); v != 0 {
			if err := fn(pgno, int64(v-1)); err != nil {
				return err
			}
		}
	}
	return nil
}

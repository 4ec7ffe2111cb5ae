package replicate

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"sort"

	"github.com/superfly/ltx"
)

// pageSet is the new content of a transaction's pages, kept in a file: a
// transaction of any size (a resync of a 10 GB database) costs a few bytes
// of memory per page, not the pages.
type pageSet struct {
	f        *os.File // page i at i*pageSize
	pgnos    []uint32 // ascending
	pageSize uint32
	remove   bool // f is a temporary file of this set
}

// fileSet is a whole database file of nPages pages.
func fileSet(f *os.File, pageSize, nPages uint32) *pageSet {
	p := &pageSet{f: f, pageSize: pageSize, pgnos: make([]uint32, nPages)}
	for i := range p.pgnos {
		p.pgnos[i] = uint32(i) + 1
	}
	return p
}

// decodeSet decodes the pages of an LTX file into a temporary file in dir.
func decodeSet(dec *ltx.Decoder, dir string, name string) (*pageSet, error) {
	hdr := dec.Header()
	f, err := os.CreateTemp(dir, ".walsync-pages-*")
	if err != nil {
		return nil, err
	}
	p := &pageSet{f: f, pageSize: hdr.PageSize, remove: true}
	w := bufio.NewWriterSize(f, 256<<10)
	buf := make([]byte, hdr.PageSize)
	for {
		var ph ltx.PageHeader
		if err := dec.DecodePage(&ph, buf); err == io.EOF {
			break
		} else if err != nil {
			p.close()
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if n := len(p.pgnos); n > 0 && ph.Pgno <= p.pgnos[n-1] {
			p.close()
			return nil, fmt.Errorf("%s: page %d out of order", name, ph.Pgno)
		}
		p.pgnos = append(p.pgnos, ph.Pgno)
		if _, err := w.Write(buf); err != nil {
			p.close()
			return nil, err
		}
	}
	if err := w.Flush(); err != nil {
		p.close()
		return nil, err
	}
	return p, nil
}

func (p *pageSet) close() {
	if p.remove {
		p.f.Close()
		os.Remove(p.f.Name())
	}
}

// index returns the position of pgno in the set, or -1.
func (p *pageSet) index(pgno uint32) int {
	i := sort.Search(len(p.pgnos), func(i int) bool { return p.pgnos[i] >= pgno })
	if i < len(p.pgnos) && p.pgnos[i] == pgno {
		return i
	}
	return -1
}

// read reads the i-th page of the set into buf.
func (p *pageSet) read(i int, buf []byte) error {
	_, err := p.f.ReadAt(buf[:p.pageSize], int64(i)*int64(p.pageSize))
	return err
}

// complete reports whether the set holds every page of an nPages database
// (the lock page aside).
func (p *pageSet) complete(nPages uint32) bool {
	lock := ltx.LockPgno(p.pageSize)
	for pgno := uint32(1); pgno <= nPages; pgno++ {
		if pgno != lock && p.index(pgno) < 0 {
			return false
		}
	}
	return true
}

package dbfiles

import (
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/superfly/ltx"
)

// SumsFile is a capture.Sums in a file, 8 bytes per page (big-endian), so a
// database's page checksums live in the page cache, not in the heap. Its
// content is rebuilt when a capture core opens; it is opened on first use.
//
// With Cache, the checksums of recently captured pages are also kept in
// memory (a few hundred at most) and written back when there are too many
// or the database goes idle: a busy database's captures make no system call
// for them. A crash loses nothing: the file is rebuilt at the next start.
// In a file other processes share (shared staging), the capture core
// flushes it before each capture's lock is released and makes it forget
// what it keeps when another process captured (capture.CachingSums).
type SumsFile struct {
	Path  string
	Cache bool

	mu    sync.Mutex
	f     *os.File
	cache map[uint32]sumEntry
}

type sumEntry struct {
	sum   ltx.Checksum
	dirty bool
}

// maxCachedSums bounds the in-memory checksums of one database: a small
// transaction's pages (a leaf, its parents, page 1) stay cached; a big one
// writes through.
const maxCachedSums = 256

func (s *SumsFile) file() (*os.File, error) {
	if s.f != nil {
		return s.f, nil
	}
	if err := os.MkdirAll(filepath.Dir(s.Path), 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(s.Path, os.O_RDWR|os.O_CREATE, 0o600) // private, as all staging (shipper.PrivateDir)
	if err != nil {
		return nil, err
	}
	s.f = f
	return f, nil
}

func (s *SumsFile) ReadSums(first uint32, dst []ltx.Checksum) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cache != nil {
		hit := true
		for i := range dst {
			e, ok := s.cache[first+uint32(i)]
			if !ok {
				hit = false
				break
			}
			dst[i] = e.sum
		}
		if hit {
			return nil
		}
	}
	if err := s.readFile(first, dst); err != nil {
		return err
	}
	if s.cache != nil {
		for i := range dst {
			if e, ok := s.cache[first+uint32(i)]; ok {
				dst[i] = e.sum // newer than the file
			} else if len(s.cache) < maxCachedSums {
				s.cache[first+uint32(i)] = sumEntry{sum: dst[i]}
			}
		}
	}
	return nil
}

func (s *SumsFile) readFile(first uint32, dst []ltx.Checksum) error {
	f, err := s.file()
	if err != nil {
		return err
	}
	var small [8 * 16]byte // a small transaction's pages: no allocation
	b := small[:]
	if len(dst) > 16 {
		b = make([]byte, 8*len(dst))
	}
	b = b[:8*len(dst)]
	n, err := f.ReadAt(b, 8*int64(first-1))
	if err != nil && err != io.EOF {
		return err
	}
	clear(b[n:]) // past the end: never written
	for i := range dst {
		dst[i] = ltx.Checksum(binary.BigEndian.Uint64(b[8*i:]))
	}
	return nil
}

func (s *SumsFile) WriteSums(first uint32, src []ltx.Checksum) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.Cache && s.cache == nil {
		s.cache = map[uint32]sumEntry{}
	}
	if s.cache != nil && len(src) <= maxCachedSums/4 {
		if len(s.cache)+len(src) > maxCachedSums {
			if err := s.flushLocked(); err != nil {
				return err
			}
		}
		for i, c := range src {
			s.cache[first+uint32(i)] = sumEntry{sum: c, dirty: true}
		}
		return nil
	}
	for i := range src {
		delete(s.cache, first+uint32(i)) // the file has the newer one
	}
	return s.writeFile(first, src)
}

func (s *SumsFile) writeFile(first uint32, src []ltx.Checksum) error {
	f, err := s.file()
	if err != nil {
		return err
	}
	var small [8 * 16]byte
	b := small[:]
	if len(src) > 16 {
		b = make([]byte, 8*len(src))
	}
	b = b[:8*len(src)]
	for i, c := range src {
		binary.BigEndian.PutUint64(b[8*i:], uint64(c))
	}
	_, err = f.WriteAt(b, 8*int64(first-1))
	return err
}

// flushLocked writes the dirty cached checksums to the file and empties
// the cache; s.mu is held.
func (s *SumsFile) flushLocked() error { return s.writeBackLocked(true) }

// writeBackLocked writes the dirty cached checksums to the file; empty:
// the cache is emptied, else they stay cached, clean. s.mu is held.
func (s *SumsFile) writeBackLocked(empty bool) error {
	if len(s.cache) == 0 {
		return nil
	}
	pgnos := make([]uint32, 0, len(s.cache))
	for p, e := range s.cache {
		if e.dirty {
			pgnos = append(pgnos, p)
		}
	}
	slices.Sort(pgnos)
	for i := 0; i < len(pgnos); {
		j := i + 1
		for j < len(pgnos) && pgnos[j] == pgnos[j-1]+1 {
			j++
		}
		run := make([]ltx.Checksum, j-i)
		for k := range run {
			run[k] = s.cache[pgnos[i+k]].sum
		}
		if err := s.writeFile(pgnos[i], run); err != nil {
			return err
		}
		i = j
	}
	if empty {
		clear(s.cache)
		return nil
	}
	for _, p := range pgnos {
		s.cache[p] = sumEntry{sum: s.cache[p].sum}
	}
	return nil
}

func (s *SumsFile) TruncateSums(n uint32) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for p := range s.cache {
		if p > n {
			delete(s.cache, p)
		}
	}
	f, err := s.file()
	if err != nil {
		return err
	}
	return f.Truncate(8 * int64(n))
}

// Flush writes the cached checksums to the file (capture.CachingSums: the
// file is shared with other processes, which read it once the capture's
// lock is released).
func (s *SumsFile) Flush() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.writeBackLocked(false)
}

// Forget drops the cached checksums: another process wrote newer ones to
// the file. Those not written yet are lost (Flush first).
func (s *SumsFile) Forget() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.cache)
}

// Close writes back the cached checksums and releases the descriptor and
// the cache; the next call opens it again.
func (s *SumsFile) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.flushLocked()
	s.cache = nil
	if s.f != nil {
		s.f.Close()
		s.f = nil
	}
	return err
}

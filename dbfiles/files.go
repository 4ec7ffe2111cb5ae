package dbfiles

import (
	"os"
	"sync"

	"github.com/walsync/walsync/capture"
)

// Files reads a database's files on local disk for the capture core.
type Files struct {
	base string // path of the main file
	mu   sync.Mutex
	fds  [3]*os.File
}

func NewFiles(base string) *Files { return &Files{base: base} }

// Path returns the path of one of the database's files.
func (f *Files) Path(k capture.Kind) string { return f.path(k) }

func (f *Files) path(k capture.Kind) string {
	switch k {
	case capture.WALFile:
		return f.base + "-wal"
	case capture.JournalFile:
		return f.base + "-journal"
	}
	return f.base
}

// file returns the descriptor of a file; f.mu must be held.
func (f *Files) file(k capture.Kind) (*os.File, error) {
	if f.fds[k] != nil {
		return f.fds[k], nil
	}
	fd, err := os.OpenFile(f.path(k), os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	f.fds[k] = fd
	return fd, nil
}

// Invalidate drops the cached descriptor of a file that was removed or replaced.
func (f *Files) Invalidate(k capture.Kind) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fds[k] != nil {
		f.fds[k].Close()
		f.fds[k] = nil
	}
}

// CloseAll closes every cached descriptor.
func (f *Files) CloseAll() {
	for k := range f.fds {
		f.Invalidate(capture.Kind(k))
	}
}

func (f *Files) ReadAt(k capture.Kind, p []byte, off int64) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fd, err := f.file(k)
	if err != nil {
		return 0, err
	}
	return fd.ReadAt(p, off)
}

func (f *Files) WriteAt(k capture.Kind, p []byte, off int64) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fd, err := f.file(k)
	if err != nil {
		return 0, err
	}
	return fd.WriteAt(p, off)
}

func (f *Files) Size(k capture.Kind) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	fd, err := f.file(k)
	if err != nil {
		return -1
	}
	fi, err := fd.Stat()
	if err != nil {
		return -1
	}
	return fi.Size()
}

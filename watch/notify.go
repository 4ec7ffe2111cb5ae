package watch

// What tells the sidecar a database changed, at almost no cost to the
// application. A directory watch that reports every write (what fsnotify
// offers) puts an inotify event on each of the application's write(2)
// calls, several per commit: a writer committing as fast as it can lost a
// quarter of its rate to a watcher that did nothing else (measured: 72,000
// against 56,000 commits/s). So directories report only files created,
// deleted and renamed, and each database's file (the -wal in WAL mode, the
// main file otherwise) carries a one-shot watch armed by each scan: the
// first write after a scan reports itself, the writes after it cost nothing
// until the next scan arms it again. fsnotify has no one-shot watch and
// cannot narrow a directory's events, hence inotify(7) directly.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Masks: a directory's entries, and a file's next write.
const (
	dirMask  = unix.IN_CREATE | unix.IN_DELETE | unix.IN_MOVED_FROM | unix.IN_MOVED_TO | unix.IN_ONLYDIR
	fileMask = unix.IN_MODIFY | unix.IN_ONESHOT
)

// notice is one thing a notifier saw.
type notice struct {
	path     string
	modified bool // a write to an armed file (else: an entry created, deleted or renamed)
	overflow bool // the kernel's queue overflowed: events were lost
}

// notifier is one inotify instance.
type notifier struct {
	f  *os.File // non-blocking: Close interrupts a Read
	fd int      // f's descriptor (os.File.Fd would make it blocking)

	mu     sync.Mutex
	closed bool
	paths  map[int32]string // watch descriptor → directory or file
	dirs   map[int32]bool
}

func newNotifier() (*notifier, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("inotify: %w", err)
	}
	return &notifier{f: os.NewFile(uintptr(fd), "inotify"), fd: fd, paths: map[int32]string{}, dirs: map[int32]bool{}}, nil
}

// watchDir reports the entries created, deleted and renamed in dir.
func (n *notifier) watchDir(dir string) error {
	return n.add(dir, dirMask, true)
}

// arm reports the next write to the file at p, once.
func (n *notifier) arm(p string) error {
	return n.add(p, fileMask, false)
}

func (n *notifier) add(p string, mask uint32, dir bool) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return os.ErrClosed
	}
	wd, err := unix.InotifyAddWatch(n.fd, p, mask)
	if err != nil {
		return &os.PathError{Op: "inotify_add_watch", Path: p, Err: err}
	}
	n.paths[int32(wd)], n.dirs[int32(wd)] = p, dir
	return nil
}

// Close stops run.
func (n *notifier) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.closed = true
	return n.f.Close()
}

// run calls fn with each notice until Close.
func (n *notifier) run(fn func(notice)) error {
	buf := make([]byte, 16<<10)
	for {
		k, err := n.f.Read(buf)
		if errors.Is(err, os.ErrClosed) {
			return nil
		} else if err != nil {
			return err
		}
		for off := 0; off+unix.SizeofInotifyEvent <= k; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			name := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
			off += unix.SizeofInotifyEvent + int(ev.Len)
			if ev.Mask&unix.IN_Q_OVERFLOW != 0 {
				fn(notice{overflow: true})
				continue
			}
			n.mu.Lock()
			p, dir := n.paths[ev.Wd], n.dirs[ev.Wd]
			if ev.Mask&unix.IN_IGNORED != 0 { // fired (one-shot), removed, or its file is gone
				delete(n.paths, ev.Wd)
				delete(n.dirs, ev.Wd)
			}
			n.mu.Unlock()
			switch {
			case p == "" || ev.Mask&unix.IN_IGNORED != 0:
			case dir && len(name) > 0:
				fn(notice{path: filepath.Join(p, cstring(name))})
			case !dir && ev.Mask&unix.IN_MODIFY != 0:
				fn(notice{path: p, modified: true})
			}
		}
	}
}

// cstring is a NUL-padded name.
func cstring(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

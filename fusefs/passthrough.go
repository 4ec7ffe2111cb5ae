package fusefs

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// Capture is how the mount sees the writes to -wal files.
type Capture string

const (
	// CaptureAuto uses passthrough when the kernel and privileges allow it,
	// and CaptureWrite otherwise (logged once, with the reason).
	CaptureAuto Capture = "auto"
	// CapturePassthrough opens -wal files (and files that are not
	// databases) in FUSE passthrough: the kernel reads and writes them
	// without asking walsync, and the -wal's committed transactions are
	// captured at barriers (capture.DB.SyncWAL): its fsync, any checkpoint
	// write to the database file, its truncation or removal, the end of each
	// batch window, the last close and walsync's start. The mount fails if
	// passthrough is not available.
	CapturePassthrough Capture = "passthrough"
	// CaptureWrite sees every write: a transaction is captured by the write
	// of its commit frame, before that write returns to SQLite.
	CaptureWrite Capture = "write"
)

// ParseCapture checks a --capture value.
func ParseCapture(s string) (Capture, error) {
	switch c := Capture(s); c {
	case CaptureAuto, CapturePassthrough, CaptureWrite:
		return c, nil
	case "":
		return CaptureAuto, nil
	}
	return "", fmt.Errorf("unknown capture mode %q: use auto, passthrough or write", s)
}

// backingRegistrar is the part of *fuse.Server that registers backing files.
type backingRegistrar interface {
	RegisterBackingFd(m *fuse.BackingMap) (int32, syscall.Errno)
	UnregisterBackingFd(id int32) syscall.Errno
}

// probePassthrough registers a file of the data directory as a backing file
// and unregisters it: it fails where the kernel has no passthrough, the
// process lacks CAP_SYS_ADMIN, or the data directory is itself on a stacked
// filesystem (another FUSE mount, overlayfs) too deep for it.
func (w *FS) probePassthrough(srv backingRegistrar) error {
	dir := w.root
	if w.opts.HiddenDir != "" {
		dir = filepath.Join(w.root, w.opts.HiddenDir)
	}
	f, err := os.CreateTemp(dir, ".passthrough-probe-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	id, errno := srv.RegisterBackingFd(&fuse.BackingMap{Fd: int32(f.Fd())})
	if errno != 0 {
		switch errno {
		case syscall.ELOOP:
			return fmt.Errorf("the data directory is on a stacked filesystem (FUSE or overlayfs): %w", errno)
		case syscall.EPERM:
			return fmt.Errorf("needs CAP_SYS_ADMIN (run as root): %w", errno)
		}
		return fmt.Errorf("the kernel refused a backing file: %w", errno)
	}
	srv.UnregisterBackingFd(id)
	return nil
}

// PassthroughFd gives the kernel the file to read and write directly, for
// -wal files and files that are not databases, when the mount uses
// passthrough. go-fuse asks once per inode; an inode already in passthrough
// stays so for every open.
func (h *handle) PassthroughFd() (int, bool) {
	return h.fd, h.passthrough
}

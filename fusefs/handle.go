package fusefs

import (
	"context"
	"io"
	"path/filepath"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/walsync/walsync/capture"
	"github.com/walsync/walsync/dbfiles"
	"golang.org/x/sys/unix"
)

// handle is an open file of the mount.
type handle struct {
	fd   int
	w    *FS
	db   *dbfiles.Database // nil for plain files
	role dbfiles.Role
	// passthrough: the kernel is asked to read and write the file directly.
	passthrough bool
}

var (
	_ fs.FileReader    = (*handle)(nil)
	_ fs.FileWriter    = (*handle)(nil)
	_ fs.FileReleaser  = (*handle)(nil)
	_ fs.FileFlusher   = (*handle)(nil)
	_ fs.FileFsyncer   = (*handle)(nil)
	_ fs.FileGetattrer = (*handle)(nil)
	_ fs.FileLseeker   = (*handle)(nil)
	_ fs.FileAllocater = (*handle)(nil)
)

func (w *FS) newHandle(fd int, d *dbfiles.Database, r dbfiles.Role, st *syscall.Stat_t) (*handle, syscall.Errno) {
	if err := d.Open(r); err != nil {
		return nil, w.errno(d, err)
	}
	h := &handle{fd: fd, w: w, db: d, role: r}
	switch {
	case !w.passthrough.Load():
	case uint64(st.Dev) != w.dev:
		// On another filesystem than the data directory's (something
		// mounted inside it): the kernel may refuse it as a backing file,
		// and go-fuse would then stop passthrough for the whole mount.
		if r == dbfiles.RoleWAL && !w.warnedDirect.Swap(true) {
			w.log.Warn("a -wal on another filesystem than the data directory: its writes are captured one by one", "db", d.Name)
		}
	case r == dbfiles.RoleWAL:
		h.passthrough = true
		d.WatchWAL(d.Files.Path(capture.WALFile))
	case r == dbfiles.RoleDB && d.NotDB() && st.Mode&syscall.S_IFMT == syscall.S_IFREG && st.Nlink == 1 && d.Opens() == 1:
		// A file that is not a database, opened by no one else: the
		// kernel refuses a passthrough open beside cached ones.
		h.passthrough = true
	}
	return h, 0
}

func (h *handle) Read(ctx context.Context, buf []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	return fuse.ReadResultFd(uintptr(h.fd), off, len(buf)), 0
}

func (h *handle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	var n int
	apply := func() error {
		var err error
		n, err = syscall.Pwrite(h.fd, data, off)
		if err == nil && n < len(data) {
			err = io.ErrShortWrite
		}
		return err
	}
	err := h.db.Write(h.role, off, data, apply)
	if err != nil {
		return uint32(n), h.w.errno(h.db, err)
	}
	return uint32(n), 0
}

func (h *handle) truncate(size int64) syscall.Errno {
	return h.w.errno(h.db, h.db.Truncate(h.role, size, func() error { return syscall.Ftruncate(h.fd, size) }))
}

func (h *handle) Setattr(ctx context.Context, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return syscall.ENOTSUP // Node.Setattr handles it
}

func (h *handle) Flush(ctx context.Context) syscall.Errno {
	// close(2) on a dup closes nothing but reports deferred write errors.
	fd, err := syscall.Dup(h.fd)
	if err != nil {
		return fs.ToErrno(err)
	}
	return fs.ToErrno(syscall.Close(fd))
}

func (h *handle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	if err := syscall.Fsync(h.fd); err != nil {
		return fs.ToErrno(err)
	}
	if h.passthrough && h.role == dbfiles.RoleWAL {
		h.db.WALSynced()
		return 0
	}
	if h.db != nil && h.db.Core() != nil {
		// SQLite asked for durability: the staged transactions get it too.
		if err := h.w.opts.Stager.Sync(h.db.Name); err != nil {
			return h.w.errno(h.db, err)
		}
	}
	return 0
}

func (h *handle) Release(ctx context.Context) syscall.Errno {
	err := syscall.Close(h.fd)
	if _, cerr := h.db.Close(h.role); cerr != nil {
		h.w.errno(h.db, cerr)
	}
	return fs.ToErrno(err)
}

func (h *handle) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	var st syscall.Stat_t
	if err := syscall.Fstat(h.fd, &st); err != nil {
		return fs.ToErrno(err)
	}
	out.FromStat(&st)
	return 0
}

func (h *handle) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	n, err := unix.Seek(h.fd, int64(off), int(whence))
	return uint64(n), fs.ToErrno(err)
}

func (h *handle) Allocate(ctx context.Context, off uint64, size uint64, mode uint32) syscall.Errno {
	return fs.ToErrno(syscall.Fallocate(h.fd, mode, int64(off), int64(size)))
}

// dirHandle is an open directory. Its fsync is how SQLite, with
// synchronous=FULL, makes the deletion of a -journal durable (the commit of
// a DELETE-mode transaction): the staged transactions of the databases in
// that directory are made durable with it.
type dirHandle struct {
	fs.FileHandle // the directory stream
	w             *FS
	dir           string // relative to the root
}

var (
	_ fs.FileReaddirenter = (*dirHandle)(nil)
	_ fs.FileSeekdirer    = (*dirHandle)(nil)
	_ fs.FileReleasedirer = (*dirHandle)(nil)
	_ fs.FileFsyncdirer   = (*dirHandle)(nil)
)

func (d *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	if r, ok := d.FileHandle.(fs.FileReaddirenter); ok {
		return r.Readdirent(ctx)
	}
	return nil, 0
}

func (d *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if s, ok := d.FileHandle.(fs.FileSeekdirer); ok {
		return s.Seekdir(ctx, off)
	}
	return syscall.ENOTSUP
}

func (d *dirHandle) Releasedir(ctx context.Context, flags uint32) {
	if r, ok := d.FileHandle.(fs.FileReleasedirer); ok {
		r.Releasedir(ctx, flags)
	}
}

func (d *dirHandle) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno {
	if fd, err := syscall.Open(filepath.Join(d.w.root, d.dir), syscall.O_RDONLY|syscall.O_DIRECTORY, 0); err != nil {
		return fs.ToErrno(err)
	} else {
		err = syscall.Fsync(fd)
		syscall.Close(fd)
		if err != nil {
			return fs.ToErrno(err)
		}
	}
	for _, db := range d.w.reg.In(d.dir) {
		if db.Core() == nil {
			continue
		}
		if err := d.w.opts.Stager.Sync(db.Name); err != nil {
			return d.w.errno(db, err)
		}
		d.w.log.Debug("staging synced with its directory", "db", db.Name)
	}
	return 0
}

package fusefs

import (
	"context"
	"io"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/walsync/walsync/dbfiles"
	"golang.org/x/sys/unix"
)

// handle is an open file of the mount.
type handle struct {
	fd   int
	w    *FS
	db   *dbfiles.Database // nil for plain files
	role dbfiles.Role
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

func (w *FS) newHandle(fd int, d *dbfiles.Database, r dbfiles.Role) (*handle, syscall.Errno) {
	if err := d.Open(r); err != nil {
		return nil, w.errno(d, err)
	}
	return &handle{fd: fd, w: w, db: d, role: r}, 0
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

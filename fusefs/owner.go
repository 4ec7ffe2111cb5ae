package fusefs

import (
	"context"
	"path/filepath"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Files, directories, links and nodes created through the mount belong to
// the process that created them, as on a plain filesystem, although
// walsync creates them as root. The kernel checks every access against
// their modes (the mount uses default_permissions).

// own gives the node just created at p to the caller of ctx and sets its
// permission bits to mode (already masked by the caller's umask: walsync's
// own umask must not change it). A directory with the set-group-ID bit
// gives its group to what is created in it, as Linux does. fd, when not
// -1, is the node open: it is changed through it, not by path. On failure
// the node is removed with undo and an error is returned.
func (w *FS) own(ctx context.Context, p string, fd int, mode uint32, undo func(string) error) (syscall.Stat_t, syscall.Errno) {
	var st syscall.Stat_t
	fail := func(err error) (syscall.Stat_t, syscall.Errno) {
		_ = undo(p)
		return st, fs.ToErrno(err)
	}
	// A root caller's node is root's already (walsync runs as root).
	if caller, ok := fuse.FromContext(ctx); ok && syscall.Geteuid() == 0 && (caller.Uid != 0 || caller.Gid != 0) {
		gid := int(caller.Gid)
		var parent syscall.Stat_t
		if err := syscall.Stat(filepath.Dir(p), &parent); err != nil {
			return fail(err)
		}
		if parent.Mode&syscall.S_ISGID != 0 {
			gid = -1 // inherited from the directory at creation
		}
		chown := func() error { return syscall.Lchown(p, int(caller.Uid), gid) }
		if fd >= 0 {
			chown = func() error { return syscall.Fchown(fd, int(caller.Uid), gid) }
		}
		if err := chown(); err != nil {
			return fail(err)
		}
	}
	stat := func() error { return syscall.Lstat(p, &st) }
	if fd >= 0 {
		stat = func() error { return syscall.Fstat(fd, &st) }
	}
	if err := stat(); err != nil {
		return fail(err)
	}
	if st.Mode&syscall.S_IFMT == syscall.S_IFLNK {
		return st, 0
	}
	// Permission and sticky bits as asked; set-user/group-ID bits are not
	// given on creation (a directory keeps the set-group-ID bit it inherited).
	perm := mode & 0o1777
	if st.Mode&syscall.S_IFMT == syscall.S_IFDIR {
		perm |= st.Mode & syscall.S_ISGID
	}
	if st.Mode&0o7777 != perm {
		chmod := func() error { return syscall.Chmod(p, perm) }
		if fd >= 0 {
			chmod = func() error { return syscall.Fchmod(fd, perm) }
		}
		if err := chmod(); err != nil {
			return fail(err)
		}
		st.Mode = st.Mode&syscall.S_IFMT | perm
	}
	return st, 0
}

// permits reports whether the caller of ctx may open a file with attributes
// st with the access mode of flags, by its owner, group and other bits
// (supplementary groups are not known: they grant nothing here, which can
// only refuse more). It is needed only where walsync opens a file the kernel
// did not check: a file that appeared between the kernel's lookup and its
// create request.
func permits(ctx context.Context, st *syscall.Stat_t, flags uint32) bool {
	caller, ok := fuse.FromContext(ctx)
	if !ok || caller.Uid == 0 {
		return true
	}
	var want uint32
	switch flags & syscall.O_ACCMODE {
	case syscall.O_RDONLY:
		want = 4
	case syscall.O_WRONLY:
		want = 2
	default:
		want = 6
	}
	if flags&syscall.O_TRUNC != 0 {
		want |= 2
	}
	bits := st.Mode & 7
	switch {
	case st.Uid == caller.Uid:
		bits = st.Mode >> 6 & 7
	case st.Gid == caller.Gid:
		bits = st.Mode >> 3 & 7
	}
	return bits&want == want
}

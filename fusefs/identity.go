package fusefs

import (
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"golang.org/x/sys/unix"
)

// The identity (fs.StableAttr) of a file of the mount. go-fuse keeps one
// inode per identity and hands the kernel one node id per inode; the
// kernel keeps SQLite's locks (and its page cache) per node id. So a file
// must get the same identity from every path that makes its inode: go-fuse's
// loopback Lookup, and this package's Create, Mkdir, Mknod and Symlink.
// Since go-fuse v2.12 the loopback's generation is the file's birth time,
// so a file that reuses the inode number of a deleted one is a new
// identity; walsync must compute it the same way (integration
// TestLockAfterInodeNumberReuse fails otherwise: a directory made here got a
// second node id at its next lookup, and so did every file under it).

// stableAttr is the identity go-fuse's loopback gives the file at p (fd,
// if not -1, is open on it) whose stat is st: the inode number mixed with
// the device as the loopback does, and the birth time as generation (1
// where the filesystem has none).
func stableAttr(root *fs.LoopbackRoot, p string, fd int, st *syscall.Stat_t) fs.StableAttr {
	swapped := (uint64(st.Dev) << 32) | (uint64(st.Dev) >> 32)
	swappedRootDev := (root.Dev << 32) | (root.Dev >> 32)
	return fs.StableAttr{Mode: uint32(st.Mode), Gen: birthGen(p, fd), Ino: (swapped ^ swappedRootDev) ^ st.Ino}
}

// birthGen is the file's birth time in nanoseconds, or 1 when the
// filesystem does not record it (go-fuse's genFromBtime).
func birthGen(p string, fd int) uint64 {
	var x unix.Statx_t
	var err error
	if fd >= 0 {
		err = unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_BTIME, &x)
	} else {
		err = unix.Statx(unix.AT_FDCWD, p, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_BTIME, &x)
	}
	if err != nil || x.Mask&unix.STATX_BTIME == 0 || (x.Btime.Sec == 0 && x.Btime.Nsec == 0) {
		return 1
	}
	return uint64(x.Btime.Sec)*1e9 + uint64(x.Btime.Nsec)
}

package fusefs

import (
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"golang.org/x/sys/unix"
)

// The identity (fs.StableAttr) of a file of the mount. go-fuse keeps one
// inode per identity and hands the kernel one node id per inode; the
// kernel keeps SQLite's locks (and its page cache) per node id. So a file
// must keep one identity for as long as it exists, from every path that
// makes its inode: Lookup, Create, Mkdir, Mknod, Symlink and Link all go
// through node.newChild.
//
// The generation is the file's birth time. go-fuse's loopback (v2.9) gives
// every file generation 1, so a file that reuses the inode number of a
// deleted one had the deleted one's identity, and when go-fuse handled
// the deleted file's FORGET after the new file's creation it dropped the
// new file's entry: its next lookup got a second node id, the kernel a
// second inode, and SQLite's locks on the file no longer excluded the
// processes that opened it before and after (integration
// TestLockAfterInodeNumberReuse; a DELETE-mode database corrupted by two
// writers in CI). go-fuse v2.12 takes the birth time too, the same way.

// stableAttr is the identity of the file at p (fd, if not -1, is open on
// it) whose stat is st: the inode number mixed with the device as go-fuse's
// loopback does, and the birth time as generation (1 where the filesystem
// has none).
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

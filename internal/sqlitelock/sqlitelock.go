// Package sqlitelock holds SQLite's file-locking byte ranges (os.h) and takes
// them as open-file-description (OFD) locks, which conflict between
// descriptors of one process as well as with other processes' POSIX locks.
package sqlitelock

import (
	"io"

	"golang.org/x/sys/unix"
)

// SQLite's lock bytes.
const (
	PendingByte  = 0x40000000
	ReservedByte = PendingByte + 1
	SharedFirst  = PendingByte + 2
	SharedSize   = 510
)

// Set takes (unix.F_RDLCK, unix.F_WRLCK) or releases (unix.F_UNLCK) an OFD
// lock on [start, start+length) without waiting.
func Set(fd int, typ int16, start, length int64) error {
	lk := unix.Flock_t{Type: typ, Whence: io.SeekStart, Start: start, Len: length}
	return unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &lk)
}

// Held reports whether another descriptor holds a lock that conflicts with a
// write lock on [start, start+length).
func Held(fd int, start, length int64) (bool, error) {
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart, Start: start, Len: length}
	if err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_GETLK, &lk); err != nil {
		return false, err
	}
	return lk.Type != unix.F_UNLCK, nil
}

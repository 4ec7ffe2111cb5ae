package vfs

import (
	"context"
	"io"
	"os"

	"github.com/walsync/walsync/dbfiles"
	"github.com/walsync/walsync/internal/sqlite3vfs"
	"github.com/walsync/walsync/internal/sqlitelock"
	"golang.org/x/sys/unix"
)

// file is one open file of the VFS.
type file struct {
	v             *VFS
	f             *os.File
	fd            int
	role          dbfiles.Role
	db            *dbfiles.Database // nil for temp and other files
	deleteOnClose bool
	lock          sqlite3vfs.LockType
}

func (fl *file) ReadAt(p []byte, off int64) (int, error) {
	n, err := fl.f.ReadAt(p, off)
	if err == io.EOF || (err == nil && n < len(p)) {
		return n, io.EOF
	}
	return n, err
}

func (fl *file) WriteAt(p []byte, off int64) (int, error) {
	var n int
	apply := func() error {
		var err error
		n, err = fl.f.WriteAt(p, off)
		return err
	}
	err := fl.db.Write(fl.role, off, p, apply)
	if err != nil {
		fl.v.log.Error("write failed", "file", fl.f.Name(), "err", err)
		return n, sqlite3vfs.IOErrorWrite
	}
	return n, nil
}

func (fl *file) Truncate(size int64) error {
	err := fl.db.Truncate(fl.role, size, func() error { return fl.f.Truncate(size) })
	if err != nil {
		fl.v.log.Error("truncate failed", "file", fl.f.Name(), "err", err)
		return sqlite3vfs.IOError
	}
	return nil
}

func (fl *file) Sync(flag sqlite3vfs.SyncType) error {
	if err := fl.f.Sync(); err != nil {
		return sqlite3vfs.IOError
	}
	if fl.role == dbfiles.RoleWAL {
		fl.db.WALSynced() // written straight to the file: see WALSynced
		return nil
	}
	if fl.db.Core() != nil {
		// SQLite asked for durability: the staged transactions get it too.
		if err := fl.v.shipper.Sync(fl.db.Name); err != nil {
			return sqlite3vfs.IOError
		}
	}
	return nil
}

func (fl *file) FileSize() (int64, error) {
	fi, err := fl.f.Stat()
	if err != nil {
		return 0, sqlite3vfs.IOError
	}
	return fi.Size(), nil
}

// Close releases the file. The last connection to a database ships its
// pending transactions before returning, bounded by Config.CloseTimeout.
func (fl *file) Close() error {
	_ = fl.Unlock(sqlite3vfs.LockNone)
	name := fl.f.Name()
	err := fl.f.Close()
	if fl.deleteOnClose {
		os.Remove(name)
	}
	last, cerr := fl.db.Close(fl.role)
	if cerr != nil {
		fl.v.log.Error("capture at close failed", "db", fl.db.Name, "err", cerr)
	}
	if last && fl.db.Core() != nil {
		ctx, cancel := context.WithTimeout(context.Background(), fl.v.cfg.CloseTimeout)
		if ferr := fl.v.shipper.FlushDB(ctx, fl.db.Name); ferr != nil {
			fl.v.log.Warn("pending transactions stay staged and ship at the next start", "db", fl.db.Name, "err", ferr)
		} else if ferr := fl.v.shipper.FlushDetail(ctx, fl.db.Name); ferr != nil {
			fl.v.log.Warn("the transaction log of the last batches stays staged and ships at the next level-1 pass", "db", fl.db.Name, "err", ferr)
		}
		cancel()
	}
	if err != nil {
		return sqlite3vfs.IOError
	}
	return nil
}

// setLock takes or releases one of SQLite's lock ranges; ok reports success.
func (fl *file) setLock(typ int16, start, length int64) bool {
	return sqlitelock.Set(fl.fd, typ, start, length) == nil
}

// Lock raises the lock as SQLite's unix VFS does (os_unix.c, unixLock).
func (fl *file) Lock(want sqlite3vfs.LockType) error {
	if fl.lock >= want {
		return nil
	}
	switch want {
	case sqlite3vfs.LockShared:
		if !fl.setLock(unix.F_RDLCK, sqlitelock.PendingByte, 1) {
			return sqlite3vfs.BusyError
		}
		ok := fl.setLock(unix.F_RDLCK, sqlitelock.SharedFirst, sqlitelock.SharedSize)
		fl.setLock(unix.F_UNLCK, sqlitelock.PendingByte, 1)
		if !ok {
			return sqlite3vfs.BusyError
		}
	case sqlite3vfs.LockReserved:
		if !fl.setLock(unix.F_WRLCK, sqlitelock.ReservedByte, 1) {
			return sqlite3vfs.BusyError
		}
	case sqlite3vfs.LockPending, sqlite3vfs.LockExclusive:
		if fl.lock < sqlite3vfs.LockPending {
			if !fl.setLock(unix.F_WRLCK, sqlitelock.PendingByte, 1) {
				return sqlite3vfs.BusyError
			}
			fl.lock = sqlite3vfs.LockPending
		}
		if want == sqlite3vfs.LockExclusive && !fl.setLock(unix.F_WRLCK, sqlitelock.SharedFirst, sqlitelock.SharedSize) {
			return sqlite3vfs.BusyError
		}
	}
	fl.lock = want
	return nil
}

// Unlock lowers the lock to SHARED or NONE.
func (fl *file) Unlock(want sqlite3vfs.LockType) error {
	if fl.lock <= want {
		return nil
	}
	if want == sqlite3vfs.LockShared {
		if fl.lock > sqlite3vfs.LockShared && !fl.setLock(unix.F_RDLCK, sqlitelock.SharedFirst, sqlitelock.SharedSize) {
			return sqlite3vfs.IOError
		}
		fl.setLock(unix.F_UNLCK, sqlitelock.PendingByte, 2) // PENDING and RESERVED
	} else {
		fl.setLock(unix.F_UNLCK, sqlitelock.PendingByte, 2+sqlitelock.SharedSize)
	}
	fl.lock = want
	return nil
}

// CheckReservedLock reports whether any connection holds RESERVED or more.
//
// sqlite3vfs's cgo bridge inverts this method's result before it reaches
// SQLite (true becomes 0, "no reserved lock"). The method therefore returns
// the opposite of the answer, so that SQLite sees the right one; without
// this, a hot journal left by a crashed writer would never be rolled back.
func (fl *file) CheckReservedLock() (bool, error) {
	reserved := fl.lock >= sqlite3vfs.LockReserved
	if !reserved {
		held, err := sqlitelock.Held(fl.fd, sqlitelock.ReservedByte, 1)
		if err != nil {
			return false, sqlite3vfs.IOError
		}
		reserved = held
	}
	return !reserved, nil
}

func (fl *file) SectorSize() int64 { return 4096 }

func (fl *file) DeviceCharacteristics() sqlite3vfs.DeviceCharacteristic {
	return sqlite3vfs.IocapPowersafeOverwrite
}

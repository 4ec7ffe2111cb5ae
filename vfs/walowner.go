package vfs

// One process captures a WAL database through the VFS.
//
// Each process's capture core follows the -wal with its own cursor, and the
// staged position the processes share (dbfiles, capture.Config.Shared)
// carries the database's state, not where in the -wal it was read: a second
// process would read again frames the first already captured and ship them
// over a later state (found by TestVFSWALSeveralProcesses). Until the shared
// position carries the WAL cursor, the first process to open a database's
// -wal through the VFS holds a lock in the database's staging directory, and
// another process's open of that -wal fails with an error that says why.
// Any number of connections of the holding process work; processes using
// the default VFS, which capture nothing, are not concerned.

import (
	"errors"
	"os"
	"path/filepath"
	"sync"

	"github.com/walsync/walsync/dbfiles"
	"github.com/walsync/walsync/internal/sqlitelock"
	"golang.org/x/sys/unix"
)

// walLockPath is the lock file of db's WAL, in its staging directory
// (shared by the processes that share the staging).
func walLockPath(v *VFS, db *dbfiles.Database) string {
	return filepath.Join(v.shipper.StateDir(db.Name), "wal-capture.lock")
}

// errWALOwned: another process captures the database's WAL.
var errWALOwned = errors.New("another process captures this database's WAL through walsync: " +
	"WAL through the VFS is captured by the connections of one process (several processes: a rollback journal mode, or the mount)")

// walOwners holds the lock of each database whose -wal this process has
// open, and counts the opens.
type walOwners struct {
	mu   sync.Mutex
	held map[string]*walOwner
}

type walOwner struct {
	f     *os.File
	opens int
}

// acquire counts an open of db's -wal, taking the lock at the first.
func (w *walOwners) acquire(v *VFS, db *dbfiles.Database) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if o := w.held[db.Name]; o != nil {
		o.opens++
		return nil
	}
	path := walLockPath(v, db)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	if err := sqlitelock.Set(int(f.Fd()), unix.F_WRLCK, 0, 1); err != nil {
		f.Close()
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES) {
			return errWALOwned
		}
		return err
	}
	if w.held == nil {
		w.held = map[string]*walOwner{}
	}
	w.held[db.Name] = &walOwner{f: f, opens: 1}
	return nil
}

// ownedElsewhere reports whether another process holds db's WAL lock: a
// database in WAL mode is then not opened here at all (its capture core
// would read the -wal the other process captures).
func (w *walOwners) ownedElsewhere(v *VFS, db *dbfiles.Database) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.held[db.Name] != nil {
		return false
	}
	f, err := os.Open(walLockPath(v, db))
	if err != nil {
		return false
	}
	defer f.Close()
	held, err := sqlitelock.Held(int(f.Fd()), 0, 1)
	return err == nil && held
}

// inWALMode reports whether the database file's header says WAL.
func inWALMode(f *os.File) bool {
	var b [20]byte
	n, _ := f.ReadAt(b[:], 0)
	return n == len(b) && b[18] == 2 && b[19] == 2
}

// release counts a close of db's -wal, dropping the lock at the last.
func (w *walOwners) release(db *dbfiles.Database) {
	w.mu.Lock()
	defer w.mu.Unlock()
	o := w.held[db.Name]
	if o == nil {
		return
	}
	if o.opens--; o.opens == 0 {
		o.f.Close() // drops the OFD lock
		delete(w.held, db.Name)
	}
}

package watch

// Reading a live database from outside without a SQLite connection (which
// could run a checkpoint when it closes): the scan takes the same locks a
// SQLite reader would, for as long as it reads.
//
// WAL mode: a shared lock on the read-mark slot 1 of the -shm
// (WAL_READ_LOCK(1)). While it is held no writer can restart the WAL (a
// restart needs every read-mark slot from 1 on exclusively), so the frames
// being read stay where they are; a RESTART or TRUNCATE checkpoint waits for
// it (the app's busy handler), and other checkpoints backfill no further
// than slot 1's frame. Nothing else waits. It is held only while one scan
// reads, milliseconds.
//
// And in every mode first, a SHARED lock on the database file, as any
// reader's: the journal mode cannot change under the read, and a
// rollback-journal commit (or a VACUUM in such a mode) waits for it (its
// busy handler), so no torn transaction is read. One thing does not wait:
// leaving WAL mode (PRAGMA journal_mode=DELETE ...) takes SQLite's
// exclusive lock without the busy handler, so it fails with "database is
// locked" if it falls within a read; the application retries it.

import (
	"encoding/binary"
	"errors"
	"os"

	"github.com/walsync/walsync/internal/sqlitelock"
	"golang.org/x/sys/unix"
)

// Byte offsets of SQLite's locks in the -shm file (wal.c: the lock bytes
// start at 120; WAL_READ_LOCK(i) is lock 3+i).
const (
	shmLockOffset = 120
	shmReadMark1  = shmLockOffset + 3 + 1
)

// errBusy: a writer holds the lock that was asked for; try again shortly.
var errBusy = errors.New("locked by a writer")

// lock is a held lock; release drops it.
type lock struct{ f *os.File }

func (l *lock) release() {
	if l != nil && l.f != nil {
		l.f.Close() // closing the descriptor drops its OFD locks
	}
}

// lockWAL takes the shared lock on read-mark slot 1 of db's -shm. With no
// -shm (no connection has the database open in WAL mode) it returns a nil
// lock: nothing can restart the WAL.
func lockWAL(db string) (*lock, error) {
	f, err := os.Open(db + "-shm") // a read lock needs only a descriptor open for reading
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	return take(f, shmReadMark1, 1)
}

// lockDB takes a SHARED lock on a rollback-journal database, as a reader.
func lockDB(db string) (*lock, error) {
	f, err := os.Open(db)
	if err != nil {
		return nil, err
	}
	// As SQLite's unix VFS: the PENDING byte for a moment (no new writer
	// starts meanwhile), then a read lock on the shared range.
	if err := sqlitelock.Set(int(f.Fd()), unix.F_RDLCK, sqlitelock.PendingByte, 1); err != nil {
		f.Close()
		return nil, busy(err)
	}
	l, err := take(f, sqlitelock.SharedFirst, sqlitelock.SharedSize)
	if err == nil {
		_ = sqlitelock.Set(int(f.Fd()), unix.F_UNLCK, sqlitelock.PendingByte, 1)
	}
	return l, err
}

func take(f *os.File, start, n int64) (*lock, error) {
	if err := sqlitelock.Set(int(f.Fd()), unix.F_RDLCK, start, n); err != nil {
		f.Close()
		return nil, busy(err)
	}
	return &lock{f: f}, nil
}

func busy(err error) error {
	if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES) {
		return errBusy
	}
	return err
}

// shmState reads from db's -shm how many frames the WAL holds committed
// (the wal-index header's mxFrame) and how many of them a checkpoint copied
// into the database file (nBackfill); ok is false without a -shm. SQLite
// keeps them in the machine's byte order (little-endian where walsync runs).
func shmState(db string) (mxFrame, nBackfill uint32, ok bool) {
	f, err := os.Open(db + "-shm")
	if err != nil {
		return 0, 0, false
	}
	defer f.Close()
	var b [100]byte
	if n, _ := f.ReadAt(b[:], 0); n < len(b) {
		return 0, 0, false
	}
	return binary.LittleEndian.Uint32(b[16:20]), binary.LittleEndian.Uint32(b[96:100]), true
}

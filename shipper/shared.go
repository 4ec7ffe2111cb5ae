package shipper

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/superfly/ltx"
	"github.com/walsync/walsync/capture"
	"golang.org/x/sys/unix"
)

// Shared staging (Options.Shared): several processes (the VFS loaded by
// several processes) capture the same databases into one staging directory.
// Per database:
//
//   - capture.lock serializes captures, appends to pending and its sealing
//     across processes (and, through separate open file descriptions,
//     between a process's capture and its own shipper);
//   - staged.pos records the last staged position, where in the -wal its
//     capture stopped reading, and where pending's last whole record ends,
//     so each process continues the one chain from the same frame and a
//     record torn by a process that died is cut off;
//   - ship.lock lets one process at a time upload, compact and apply
//     retention; the others leave it to that one and try again later.
//
// A single process that owns its staging (the mount, which locks its data
// directory) uses none of it.

const (
	captureLockFile = "capture.lock"
	shipLockFile    = "ship.lock"
	stagedPosFile   = "staged.pos"
	// staged.pos: position (24 bytes), pending's inode and end (16),
	// resync (1), WAL position (29), CRC-32C (4). A file of the size
	// before the WAL position (45 bytes, walsync before 2026-12) is read
	// with no WAL position.
	stagedPosSize   = 8 + 8 + 4 + 4 + 8 + 8 + 1 + walPosSize + 4
	stagedPosSizeV1 = stagedPosSize - walPosSize
	walPosSize      = 1 + 4 + 4 + 4 + 8 + 8
)

// errShipBusy: another process is shipping the database.
var errShipBusy = errors.New("another process is shipping this database")

// fileLock is an flock(2) lock on its own open file description, so it
// excludes other processes and the other fileLocks of this one; mu excludes
// the goroutines sharing it (flock does not: they share the description).
type fileLock struct {
	path string
	mu   sync.Mutex
	f    *os.File
}

func (l *fileLock) open() error {
	if l.f != nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(l.path), dirMode); err != nil {
		return err
	}
	f, err := os.OpenFile(l.path, os.O_RDWR|os.O_CREATE, fileMode)
	if err != nil {
		return err
	}
	l.f = f
	return nil
}

// lock blocks until the lock is held.
func (l *fileLock) lock() error {
	l.mu.Lock()
	if err := l.open(); err != nil {
		l.mu.Unlock()
		return err
	}
	for {
		err := unix.Flock(int(l.f.Fd()), unix.LOCK_EX)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			l.mu.Unlock()
		}
		return err
	}
}

// tryLock takes the lock if it is free.
func (l *fileLock) tryLock() (bool, error) {
	if !l.mu.TryLock() {
		return false, nil
	}
	if err := l.open(); err != nil {
		l.mu.Unlock()
		return false, err
	}
	err := unix.Flock(int(l.f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	if err != nil {
		l.mu.Unlock()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return false, nil
		}
		return false, err
	}
	return true, nil
}

func (l *fileLock) unlock() {
	_ = unix.Flock(int(l.f.Fd()), unix.LOCK_UN)
	l.mu.Unlock()
}

func (l *fileLock) close() {
	if l.f != nil {
		l.f.Close()
		l.f = nil
	}
}

// stagedPos is the content of staged.pos.
type stagedPos struct {
	pos capture.Pos
	ino uint64 // pending's inode, 0 when there is no pending log
	end int64  // end of pending's last whole record
	wal capture.WALPos
	// resync: the next capture ships the database whole. Set by a reset,
	// and from a transaction's append until its page checksums are stored
	// (capture.Shared.Staged), so a process that dies in between leaves no
	// position whose checksums are missing.
	resync bool
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// posFile returns staged.pos, open (it stays open: it is read and written
// at every capture); create makes it if it does not exist.
func (st *stage) posFile(create bool) (*os.File, error) {
	st.posMu.Lock()
	defer st.posMu.Unlock()
	if st.posF != nil {
		return st.posF, nil
	}
	flags := os.O_RDWR
	if create {
		flags |= os.O_CREATE
	}
	f, err := os.OpenFile(filepath.Join(st.dir, stagedPosFile), flags, fileMode)
	if err != nil {
		return nil, err
	}
	st.posF = f
	return f, nil
}

// closePosFile closes staged.pos (its directory is moved or closed).
func (st *stage) closePosFile() {
	st.posMu.Lock()
	defer st.posMu.Unlock()
	if st.posF != nil {
		st.posF.Close()
		st.posF = nil
	}
}

func (st *stage) readStagedPos() (stagedPos, bool, error) {
	f, err := st.posFile(false)
	if errors.Is(err, fs.ErrNotExist) {
		return stagedPos{}, false, nil
	} else if err != nil {
		return stagedPos{}, false, err
	}
	b := make([]byte, stagedPosSize+1)
	n, err := f.ReadAt(b, 0)
	if err != nil && err != io.EOF {
		return stagedPos{}, false, err
	}
	b = b[:n]
	valid := func(size int) bool {
		return len(b) == size && crc32.Checksum(b[:size-4], castagnoli) == binary.BigEndian.Uint32(b[size-4:])
	}
	if !valid(stagedPosSize) && !valid(stagedPosSizeV1) {
		// Torn: the logs tell where the staging ends (load); the next
		// capture ships the database whole.
		return stagedPos{resync: true}, false, nil
	}
	be := binary.BigEndian
	sp := stagedPos{
		pos:    capture.Pos{TXID: ltx.TXID(be.Uint64(b)), Checksum: ltx.Checksum(be.Uint64(b[8:])), PageSize: be.Uint32(b[16:]), Commit: be.Uint32(b[20:])},
		ino:    be.Uint64(b[24:]),
		end:    int64(be.Uint64(b[32:])),
		resync: b[40] != 0,
	}
	if len(b) == stagedPosSize {
		w := b[41:]
		sp.wal = capture.WALPos{BigEndian: w[0] != 0, PageSize: be.Uint32(w[1:]), Salt1: be.Uint32(w[5:]), Salt2: be.Uint32(w[9:]),
			End: int64(be.Uint64(w[13:])), Cksum: [2]uint32{be.Uint32(w[21:]), be.Uint32(w[25:])}}
	}
	return sp, true, nil
}

// readStagedPosLocked is readStagedPos under the capture lock.
func (st *stage) readStagedPosLocked() (stagedPos, bool, error) {
	if err := st.sealLock.lock(); err != nil {
		return stagedPos{}, false, err
	}
	defer st.sealLock.unlock()
	return st.readStagedPos()
}

func (st *stage) writeStagedPos(sp stagedPos) error {
	var b [stagedPosSize]byte
	be := binary.BigEndian
	be.PutUint64(b[:], uint64(sp.pos.TXID))
	be.PutUint64(b[8:], uint64(sp.pos.Checksum))
	be.PutUint32(b[16:], sp.pos.PageSize)
	be.PutUint32(b[20:], sp.pos.Commit)
	be.PutUint64(b[24:], sp.ino)
	be.PutUint64(b[32:], uint64(sp.end))
	if sp.resync {
		b[40] = 1
	}
	w := b[41:]
	if sp.wal.BigEndian {
		w[0] = 1
	}
	be.PutUint32(w[1:], sp.wal.PageSize)
	be.PutUint32(w[5:], sp.wal.Salt1)
	be.PutUint32(w[9:], sp.wal.Salt2)
	be.PutUint64(w[13:], uint64(sp.wal.End))
	be.PutUint32(w[21:], sp.wal.Cksum[0])
	be.PutUint32(w[25:], sp.wal.Cksum[1])
	be.PutUint32(b[stagedPosSize-4:], crc32.Checksum(b[:stagedPosSize-4], castagnoli))
	f, err := st.posFile(true)
	if err != nil {
		return err
	}
	_, err = f.WriteAt(b[:], 0)
	return err
}

func inode(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}

// sharedPending makes st.pending the log now at the pending path, its
// valid end st.size, and st.pos the last staged position of any process;
// the capture lock is held.
func (st *stage) sharedPending() error {
	sp, ok, err := st.readStagedPos()
	if err != nil {
		return err
	}
	if ok {
		st.pos, st.wal, st.known = sp.pos, sp.wal, true
	}
	path := filepath.Join(st.dir, "pending")
	if st.pending != nil && !(ok && sp.ino == st.pendingIno) {
		// staged.pos names another log (or none): make sure this one is
		// still the one at the path (another process may have sealed it).
		fi, err := os.Stat(path)
		if err != nil || inode(fi) != st.pendingIno {
			st.pending.Close()
			st.pending = nil
		}
	}
	if st.pending == nil {
		if err := os.MkdirAll(st.dir, dirMode); err != nil {
			return err
		}
		if err := st.reserveShipped(); err != nil {
			return err
		}
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, fileMode)
		if err != nil {
			return err
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return err
		}
		st.pending, st.pendingIno = f, inode(fi)
		// Where its last whole record ends: from staged.pos when it names
		// this log, else read (cutting a record torn by a process that
		// died).
		end := fi.Size()
		if ok && sp.ino == st.pendingIno {
			end = min(end, sp.end)
		} else if end > 0 {
			if end, err = validEnd(f); err != nil {
				return err
			}
		}
		st.size = end
	} else if ok && sp.ino == st.pendingIno {
		st.size = sp.end // another process may have appended since
	}
	// Cut what a process that died left after the last whole record.
	if fi, err := st.pending.Stat(); err != nil {
		return err
	} else if fi.Size() > st.size {
		if err := st.pending.Truncate(st.size); err != nil {
			return err
		}
	}
	return nil
}

// sharedStaged records the position just staged and pending's end; st.mu
// is held.
func (st *stage) sharedStaged(resync bool) error {
	if st.pending == nil {
		return st.writeStagedPos(stagedPos{pos: st.pos, wal: st.wal, resync: resync})
	}
	return st.writeStagedPos(stagedPos{pos: st.pos, wal: st.wal, ino: st.pendingIno, end: st.size, resync: resync})
}

// sharedCapture is the capture.Shared of one database. Its lock is on a
// descriptor of its own, and excludes the process's other capture cores of
// the database too (one replaced by a resync may still be finishing).
type sharedCapture struct {
	st   *stage
	lock fileLock
	err  error // the staging could not be opened: every capture fails
}

// Lock starts a capture: the transactions it stages are written to the
// pending log together, and staged.pos once, at Unlock (as Shipper.Batch
// does for a process that owns its staging).
func (c *sharedCapture) Lock() error {
	if c.err != nil {
		return c.err
	}
	if err := c.lock.lock(); err != nil {
		return err
	}
	st := c.st
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.batching == 0 && len(st.batchBuf) == 0 {
		st.writtenPos = st.pos
	}
	st.batching++
	st.sharedFresh, st.lockAppends, st.sumsMissing = true, 0, false
	return nil
}

// Unlock writes what the capture staged, then staged.pos (the new head),
// and releases the lock. If the records cannot be written, staged.pos
// keeps the mark of the first append (resync): the page checksums already
// describe the transactions that were not written.
func (c *sharedCapture) Unlock() error {
	st := c.st
	st.mu.Lock()
	st.batching--
	_, err := st.writeBatchLocked()
	if err == nil && (st.lockAppends > 0 || st.sumsMissing) {
		serr := error(nil)
		if st.sharedFresh {
			serr = st.sharedPending() // nothing appended: the head as it is on disk, to mark
		}
		if serr == nil {
			serr = st.sharedStaged(st.sumsMissing)
		}
		if serr != nil {
			err = fmt.Errorf("record the staged position of %s: %w (%w)", st.db, serr, capture.ErrUnstaged)
		}
	}
	st.sharedFresh, st.lockAppends = false, 0
	st.mu.Unlock()
	c.lock.unlock()
	return err
}

func (c *sharedCapture) Load() (capture.Head, bool, error) {
	sp, ok, err := c.st.readStagedPos()
	if err != nil || ok || !sp.resync {
		return capture.Head{Pos: sp.pos, WAL: sp.wal, Resync: sp.resync}, ok, err
	}
	// staged.pos is torn: the logs say where the chain ends, and the
	// database is shipped whole from there.
	pos, known, err := c.st.logPos(false)
	if err == nil && !known {
		c.st.mu.Lock()
		pos, known = c.st.shipped, c.st.shipped.TXID > 0
		c.st.mu.Unlock()
	}
	return capture.Head{Pos: pos, Resync: true}, known, err
}

func (c *sharedCapture) Staged(pos capture.Pos, wal capture.WALPos, sumsStored bool) error {
	st := c.st
	st.mu.Lock()
	defer st.mu.Unlock()
	if pos == st.pos {
		st.wal = wal
	}
	if st.batching > 0 {
		st.sumsMissing = st.sumsMissing || !sumsStored
		return nil // written at Unlock
	}
	if pos != st.pos {
		return nil // not what this process staged last (a resync started)
	}
	return st.sharedStaged(!sumsStored)
}

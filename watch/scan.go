package watch

// A scan: what a database committed since the last one, read from its
// files under a SQLite reader's locks.

import (
	"encoding/binary"
	"errors"
	"os"
	"time"

	"github.com/walsync/walsync/capture"
	"golang.org/x/sys/unix"
)

// scan captures what a database committed since its last scan.
func (s *Sidecar) scan(e *entry) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for attempt := 0; ; attempt++ {
		err := s.scanOnce(e)
		if errors.Is(err, errBusy) && attempt < 50 {
			time.Sleep(10 * time.Millisecond) // a writer is committing or restarting the WAL
			continue
		}
		if errors.Is(err, os.ErrNotExist) && e.fromDir {
			s.forget(e)
			return
		}
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Error("cannot capture the database; tried again at the next write or interval", "db", e.name, "path", e.path, "err", err)
		}
		if err == nil && e.wal && s.opts.CheckpointSize > 0 && e.walSize > s.opts.CheckpointSize && s.opts.Checkpoint != nil {
			// Every commit read: the frames the checkpoint copies are
			// captured (what commits meanwhile, the next scan proves or
			// ships whole).
			if err := s.opts.Checkpoint(e.path); err != nil {
				s.log.Warn("checkpoint failed", "db", e.name, "err", err)
			} else {
				s.log.Debug("checkpointed", "db", e.name, "wal_bytes", e.walSize)
			}
		}
		return
	}
}

func (s *Sidecar) scanOnce(e *entry) error {
	// A reader's SHARED lock on the database first: while it is held the
	// journal mode cannot change and no rollback-journal commit (nor a
	// VACUUM in such a mode) rewrites the file under the read.
	dl, err := lockDB(e.path)
	if err != nil {
		return err
	}
	defer dl.release()
	// The WAL's read slot: taken by a restart noticed since the last scan
	// (see walWritten), or by the capture core before it reads the
	// database file (Registry.ReadLock); dropped once the scan is done.
	// Reading the WAL's frames needs none: a frame overwritten under the
	// read breaks its checksum chain, and a page read back to be staged is
	// checked against what was read (capture.ErrChangedUnderRead).
	defer s.releaseWAL(e)
	var hdr [100]byte
	if err := readAt(e.path, hdr[:], 0); err != nil {
		return err
	}
	if !capture.IsDatabaseHeader(hdr[:]) {
		return nil // not (yet) a database
	}
	wal := hdr[18] == 2 && hdr[19] == 2
	if e.seen && wal != e.wal {
		e.d.Reestablish() // the journal mode changed
	}
	e.walMode.Store(wal)
	if wal {
		// Armed before the read: a write after it reports itself.
		_ = s.ino.arm(e.path + "-wal")
		salts, size, mtime := walHeader(e.path + "-wal")
		// A restart after this read may not be followed by this scan:
		// the next one notices it (walWritten) against these salts.
		e.cycling.Store(e.seen && e.wal && salts != e.salts)
		e.scanSalts.Store(salts)
		db := statFile(e.path)
		if e.seen && e.wal && salts == 0 && (db != e.dbStat || e.readAt.Sub(time.Unix(0, db.mtime)) <= quiet) {
			// No WAL now, and the database file changed since the last
			// scan: a WAL created, written, checkpointed and deleted (or
			// emptied) in between leaves no other trace.
			e.d.Reestablish()
		} else if e.seen && e.wal && salts == e.salts && size == e.walSize && mtime == e.walTime &&
			e.readAt.Sub(time.Unix(0, mtime)) > quiet {
			return nil // nothing written since the last scan
		}
		if err := e.d.CaptureNow(); err != nil {
			return err
		}
		e.readAt = time.Now()
		e.salts, e.walSize, e.walTime = walHeader(e.path + "-wal")
		e.dbStat = statFile(e.path)
	} else {
		if !e.warned {
			e.warned = true
			s.log.Warn("database in a rollback-journal mode: each change ships the whole database; per-transaction capture needs WAL mode, the mount or the VFS", "db", e.name)
		}
		_ = s.ino.arm(e.path) // before the header read: a commit after it reports itself
		counter := binary.BigEndian.Uint32(hdr[24:28])
		if e.seen && !e.wal && counter == e.counter {
			return nil // not changed since the last scan
		}
		if e.seen && counter != e.counter {
			e.d.Reestablish()
		}
		if err := e.d.CaptureNow(); err != nil {
			return err
		}
		e.counter = counter
	}
	e.seen, e.wal = true, wal
	return nil
}

// quiet: a scan skips a WAL unchanged since the last one only if that one
// read it this long after its last write, whatever the filesystem's
// timestamp granularity.
const quiet = 2 * time.Second

// walHeader returns the salts, the size and the modification time of a
// WAL file (zero: none).
func walHeader(p string) (salts uint64, size, mtime int64) {
	f, err := os.Open(p)
	if err != nil {
		return 0, 0, 0
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, 0, 0
	}
	var b [32]byte
	if n, _ := f.ReadAt(b[:], 0); n == len(b) {
		salts = binary.BigEndian.Uint64(b[16:24])
	}
	return salts, fi.Size(), fi.ModTime().UnixNano()
}

// fileStat tells whether a file changed: its inode, size and
// modification time.
type fileStat struct {
	ino         uint64
	size, mtime int64
}

func statFile(p string) fileStat {
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return fileStat{}
	}
	return fileStat{ino: st.Ino, size: st.Size, mtime: st.Mtim.Nano()}
}

func readAt(p string, b []byte, off int64) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	n, err := f.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	return err
}

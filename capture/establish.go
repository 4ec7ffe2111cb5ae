package capture

import (
	"errors"
	"fmt"

	"github.com/superfly/ltx"
)

// establish reads the logical state from the files and reconciles it with
// the last captured position.
//
// It replays the database: first the database file alone, then each
// transaction committed in the WAL, in order. When one of these states is
// the last captured position (same checksum, size and page size), the
// transactions committed after it are captured one by one, each with its
// own TXID: this is how commits written to a -wal that walsync did not see
// (a crash of walsync with frames not yet captured, a deferred capture) are
// shipped at the next start. When none is, continuity cannot be proven and
// the final state is shipped whole as the next transaction (a resync), or
// as TXID 1 for a database never captured.
//
// The database file may already hold pages a checkpoint copied from the
// WAL; the replayed states before those frames are then mixtures that match
// nothing, and the states from the checkpointed frames on are exact.
func (d *DB) establish() error {
	if d.cfg.ReadLock != nil {
		if err := d.cfg.ReadLock(); err != nil {
			return fmt.Errorf("%s: %w", d.cfg.Name, err)
		}
	}
	err := d.establishAttempt(0)
	if err == nil {
		d.replaying = false // the page checksums are those of the captured position
	}
	return err
}

// errMovedUnderRead: the second replay of establish did not reach the
// captured position where the first did (see establishAttempt).
var errMovedUnderRead = errors.New("the database file changed between two reads")

func (d *DB) establishAttempt(attempt int) error {
	forced := d.needFull // a resync was asked for: no state can match
	d.known = false
	d.pageSize, d.commit, d.xor, d.walMode = 0, 0, 0, false
	d.wal.Reset()
	d.lastFrameOff = -1
	size := d.files.Size(DBFile)
	if size >= 100 {
		var hb [100]byte
		if _, err := d.files.ReadAt(DBFile, hb[:], 0); err != nil {
			return fmt.Errorf("read %s header: %w", d.cfg.Name, err)
		}
		h, ok := parseDBHeader(hb[:])
		if !ok {
			return fmt.Errorf("%s: %w", d.cfg.Name, ErrNotDatabase)
		}
		d.pageSize, d.walMode = h.pageSize, h.wal
		d.commit = h.nPages
		if d.commit == 0 {
			d.commit = uint32(size / int64(h.pageSize))
		}
	} else if size > 0 {
		return fmt.Errorf("%s: %w", d.cfg.Name, ErrNotDatabase)
	}
	d.walWritten = max(0, d.files.Size(WALFile))
	d.readWALHeader()
	if d.wal.valid && d.pageSize == 0 {
		d.pageSize = d.wal.hdr.pageSize
	}
	file := fileState{commit: d.commit, walMode: d.walMode}
	// The last replayed state that is the captured position: a state can
	// recur (a page changed and changed back), and the states before the
	// checkpointed frames are mixtures, so only the last match is sure to
	// be where capture stopped.
	last := int64(-1)
	if err := d.replay(file, func(tx *WALTx) (bool, error) {
		if !forced && d.atPos() {
			last = d.wal.end // the state before tx
		}
		return false, nil
	}); err != nil {
		return err
	}
	matched := !forced && d.atPos()
	if !matched && last >= 0 {
		// Commits after the last match were not captured: replay again up
		// to it, then capture each of them. The database file is read
		// again: a checkpoint may have copied more frames into it since
		// (read from outside, the read slot held lets a checkpoint go on
		// up to its frame), and a state before those frames is a mixture:
		// increments over it would be wrong. Captured only from a state
		// that is still the position.
		matched = true
		started := false
		err := d.replay(file, func(tx *WALTx) (bool, error) {
			if d.wal.end < last {
				return false, nil
			}
			if !started && !d.atPos() {
				return false, errMovedUnderRead
			}
			started = true
			return true, nil
		})
		if err == nil && !started && !d.atPos() {
			// The WAL no longer holds the commits that followed the
			// position (checkpointed and restarted between the passes):
			// they are in the database file, which is not the position.
			err = errMovedUnderRead
		}
		if errors.Is(err, errMovedUnderRead) {
			if attempt >= 2 {
				d.needFull = true // checkpointed as fast as it is read: ship the state whole
			}
			return d.establishAttempt(attempt + 1)
		}
		var ue *uncapturedError
		if errors.As(err, &ue) {
			// Staging refuses them now (full, failing): the database opens
			// at the last staged position; barriers try again, and
			// checkpoints wait for them.
			if d.cfg.Warn != nil {
				d.cfg.Warn(fmt.Sprintf("database %s: transactions committed after %d are in its WAL but cannot be staged now (%v); "+
					"they are captured when staging accepts them", d.cfg.Name, d.pos.TXID, ue.err))
			}
			d.barrierBackoff = minBarrierBackoff
			d.barrierErr, d.barrierRetry = ue.err, d.cfg.Now().Add(d.barrierBackoff)
			d.needFull = false
			return nil
		}
		if err != nil {
			return err
		}
	}
	if matched {
		d.needFull = false
		return nil
	}
	if d.pos.TXID != 0 {
		d.needFull = true // continuity with the last capture cannot be proven
	}
	if d.commit == 0 {
		return nil // an empty database: nothing to ship until it has a page
	}
	d.needFull = true
	if d.pos.TXID != 0 && d.cfg.Warn != nil && !d.cfg.Full {
		d.cfg.Warn(fmt.Sprintf("database %s: its state on disk cannot be proven to follow transaction %d "+
			"(changed outside walsync, or a new page size): shipping the whole database as transaction %d (resync)",
			d.cfg.Name, d.pos.TXID, d.pos.TXID+1))
	}
	return d.emit(nil, d.commit, d.wal.Pos())
}

// fileState is what the database file's header says.
type fileState struct {
	commit  uint32
	walMode bool
}

// replay establishes the state of the database file, then applies each
// transaction committed in the WAL: silently while capture(tx) is false,
// capturing it (a new TXID) once it is true.
func (d *DB) replay(file fileState, capture func(tx *WALTx) (bool, error)) error {
	d.known = false
	d.commit, d.xor, d.walMode = file.commit, 0, file.walMode
	d.wal.Reset()
	d.readWALHeader()
	d.replaying = true // until establish ends well: see DB.locked
	if err := d.sums.TruncateSums(0); err != nil {
		return fmt.Errorf("reset page checksums of %s: %w", d.cfg.Name, err)
	}
	if err := d.sumDatabaseFile(); err != nil {
		return err
	}
	d.known = true
	var captureErr error
	err := d.wal.Scan(walFile{d.files}, 0, func(tx *WALTx) error {
		c, err := capture(tx)
		if err != nil {
			return err
		}
		if c {
			if err := d.commitWAL(tx, false); err != nil {
				captureErr = err
				return err
			}
			return nil
		}
		changes, err := d.walChanges(tx)
		if err != nil {
			return err
		}
		xor, err := d.xorAfter(changes, tx.Commit)
		if err != nil {
			return err
		}
		if err := d.apply(changes, tx.Commit, xor); err != nil {
			return fmt.Errorf("write page checksums of %s: %w", d.cfg.Name, err)
		}
		return nil
	})
	if captureErr != nil {
		// The state is the last transaction captured: the rest stay in
		// the -wal for the next barrier.
		return &uncapturedError{captureErr}
	}
	if err != nil {
		d.known = false
	}
	return err
}

// uncapturedError: establish stopped capturing the WAL's commits after the
// last captured position at one that could not be staged; the state is that
// of the last one staged, and the next barrier tries again.
type uncapturedError struct{ err error }

func (e *uncapturedError) Error() string { return e.err.Error() }
func (e *uncapturedError) Unwrap() error { return e.err }

// atPos reports whether the state established so far is the last captured
// position.
func (d *DB) atPos() bool {
	return d.pos.TXID != 0 && d.pos.Checksum == ltx.ChecksumFlag|d.xor &&
		d.pos.Commit == d.commit && d.pos.PageSize == d.pageSize
}

// sumDatabaseFile stores the checksum of every page of the database file
// (its first d.commit pages) and sets d.xor.
func (d *DB) sumDatabaseFile() error {
	if d.commit == 0 {
		return nil
	}
	lock := ltx.LockPgno(d.pageSize)
	bp := getBuf(int(d.pageSize))
	defer putBuf(bp)
	var chunk [1024]ltx.Checksum
	for first := uint32(1); first <= d.commit; first += uint32(len(chunk)) {
		n := min(uint32(len(chunk)), d.commit-first+1)
		for i := range n {
			pgno := first + i
			if pgno == lock {
				chunk[i] = 0
				continue
			}
			if err := readFull(d.files, DBFile, *bp, int64(pgno-1)*int64(d.pageSize)); err != nil {
				return fmt.Errorf("read %s page %d: %w", d.cfg.Name, pgno, err)
			}
			chunk[i] = pageChecksum(pgno, *bp)
			d.xor ^= chunk[i]
		}
		if err := d.sums.WriteSums(first, chunk[:n]); err != nil {
			return fmt.Errorf("write page checksums of %s: %w", d.cfg.Name, err)
		}
	}
	return nil
}

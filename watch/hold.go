package watch

// When the WAL's read slot is held: from a restart noticed between two scans
// until the next scan, and while the capture core reads the database file.

import "time"

// walWritten: a write to a WAL reported by its one-shot watch (armed by
// each scan). If the WAL restarted since the last scan, its read slot is
// taken at once and restarted is true: no second restart can happen before
// the scan (queued at once), which reads what the old generation committed
// after it from the frames still in the file and proves that generation
// ended there (capture.WALCursor.FollowRestart); two restarts would leave
// nothing to prove it. While a restart may come (the WAL restarted between
// the last two scans, holds SQLite's default auto-checkpoint size, or a
// checkpoint copied some of it), the watch is armed again a little later,
// to see it come: one report per rearmDelay, not one per write. Otherwise
// the next scan arms it: each report costs the application's write a
// wake-up.
//
// The slot is not taken at the first write: held from then until the
// scan, it would keep a writer that never pauses from ever restarting its
// WAL, which would grow without bound. Nor once the WAL file is larger than
// MaxHeldWAL: a writer committing faster than walsync captures makes each
// hold last a long scan, and its generations grow with them (to 1 GB in
// 5 s, measured, flat out); past that size its restarts go on unheld, and
// what the next scan cannot prove ships as a snapshot.
func (s *Sidecar) walWritten(e *entry) (restarted bool) {
	rearm := func() { time.AfterFunc(rearmDelay, func() { _ = s.ino.arm(e.path + "-wal") }) }
	if salts, size, _ := walHeader(e.path + "-wal"); salts != e.scanSalts.Load() {
		if size > s.opts.MaxHeldWAL {
			return false // not held: the next scan proves what it can, or ships the database
		}
		if e.holdWAL() == nil {
			return true
		}
		rearm() // busy: a writer is restarting it right now
		return false
	}
	if mx, backfilled, ok := shmState(e.path); e.cycling.Load() || ok && (mx >= restartNear || backfilled > 0) {
		rearm()
	}
	return false
}

// rearmDelay: how soon a WAL's watch is armed again while a restart may
// come; restartNear: SQLite's default wal_autocheckpoint, in frames.
const (
	rearmDelay  = time.Millisecond
	restartNear = 1000
)

// holdWAL takes the WAL's read slot if it is not held: from then on SQLite
// cannot restart the WAL over the frames written since the last scan.
func (e *entry) holdWAL() error {
	e.holdMu.Lock()
	defer e.holdMu.Unlock()
	if e.held {
		return nil
	}
	l, err := lockWAL(e.path)
	if err != nil {
		return err
	}
	e.hold, e.held = l, true
	return nil
}

// releaseWAL drops the read slot once a scan has read the WAL: SQLite may
// restart it again (see walWritten).
func (s *Sidecar) releaseWAL(e *entry) {
	e.holdMu.Lock()
	defer e.holdMu.Unlock()
	e.hold.release()
	e.hold, e.held = nil, false
}

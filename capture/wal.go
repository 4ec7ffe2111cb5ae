package capture

import (
	"fmt"
	"time"

	"github.com/superfly/ltx"
)

// WriteWAL performs apply (a write of n bytes at off to the -wal) and captures
// any transaction it commits.
func (d *DB) WriteWAL(off int64, data []byte, apply func() error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := apply(); err != nil {
		return err
	}
	n := int64(len(data))
	d.walWritten = max(d.walWritten, off+n)
	if off < walHeaderSize {
		d.readWALHeader()
	}
	if d.wal.valid && d.known && off < d.wal.end && off+n > walHeaderSize {
		// A write over frames already captured without a new header:
		// they were a commit SQLite did not count (see WALCursor.Intact).
		// The next barrier finds out and resyncs; nothing more here.
		return nil
	}
	if !d.known && !d.journalLive && d.wal.valid {
		// The state was lost (its checksums could not be stored): rebuild
		// it from the files; what this write committed is shipped with it.
		return d.locked(d.establish)
	}
	if !d.wal.valid || !d.known || off+n <= d.wal.end {
		return nil
	}
	// Only a write that ends inside a commit frame of the current generation
	// can complete a transaction.
	fsz := int64(d.wal.hdr.pageSize) + walFrameHeaderSize
	fstart := walHeaderSize + (off+n-1-walHeaderSize)/fsz*fsz
	if fstart < d.wal.end {
		return nil
	}
	// SQLite writes a frame's header, then its page data: keep the header
	// of the last written frame so the data write needs no read.
	switch {
	case off == fstart && n >= walFrameHeaderSize:
		copy(d.lastFrameHdr[:], data)
		d.lastFrameOff = fstart
	case off >= fstart+walFrameHeaderSize && d.lastFrameOff == fstart:
		// Page data of the frame whose header was written last.
	default:
		if _, err := d.files.ReadAt(WALFile, d.lastFrameHdr[:], fstart); err != nil {
			return nil
		}
		d.lastFrameOff = fstart
	}
	f := parseWALFrame(d.lastFrameHdr[:])
	if f.commit == 0 || f.salt1 != d.wal.hdr.salt1 || f.salt2 != d.wal.hdr.salt2 {
		return nil
	}
	if d.walWritten < fstart+fsz {
		// The frame's page data has not been written yet (SQLite writes
		// the header first): the write that completes it is the commit.
		return nil
	}
	// The commit frame's page is in hand: neither the scan nor staging
	// reads it back.
	var tail *frameInHand
	switch ps := int64(d.wal.hdr.pageSize); {
	case off == fstart+walFrameHeaderSize && n == ps && d.lastFrameOff == fstart:
		tail = &frameInHand{off: fstart, hdr: d.lastFrameHdr, page: data}
	case off == fstart && n == fsz:
		tail = &frameInHand{off: fstart, hdr: d.lastFrameHdr, page: data[walFrameHeaderSize:]}
	}
	return d.locked(func() error { return d.scanWAL(fstart+fsz, tail, true) })
}

// TruncateWAL performs apply (a truncation of the -wal to size), after
// capturing every transaction committed in the frames it may cut off.
func (d *DB) TruncateWAL(size int64, apply func() error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.afterBarrier(apply); err != nil {
		return err
	}
	d.walWritten = min(d.walWritten, size)
	if size < d.wal.end {
		// SQLite truncates the WAL only after a complete checkpoint.
		d.wal.Reset()
		d.lastFrameOff = -1
	}
	return nil
}

// RemoveWAL performs apply (the deletion or renaming of the -wal), after
// capturing every transaction committed in it.
func (d *DB) RemoveWAL(apply func() error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.afterBarrier(apply); err != nil {
		return err
	}
	d.wal.Reset()
	d.lastFrameOff = -1
	d.walWritten = 0
	return nil
}

// walIndex maps each page to the offset of the page data of its latest
// committed frame in the current WAL generation, as SQLite's wal-index does.
func (d *DB) walIndex() (map[uint32]int64, error) {
	idx := map[uint32]int64{}
	if !d.wal.valid {
		return idx, nil
	}
	fsz := int64(d.wal.hdr.pageSize) + walFrameHeaderSize
	var h [walFrameHeaderSize]byte
	type frame struct {
		pgno uint32
		off  int64
	}
	var pending []frame
	for off := int64(walHeaderSize); off+fsz <= d.wal.end; off += fsz {
		if err := readFull(d.files, WALFile, h[:], off); err != nil {
			return nil, fmt.Errorf("read %s WAL frame at %d: %w", d.cfg.Name, off, err)
		}
		f := parseWALFrame(h[:])
		pending = append(pending, frame{f.pgno, off + walFrameHeaderSize})
		if f.commit == 0 {
			continue
		}
		for _, p := range pending {
			if p.pgno <= f.commit {
				idx[p.pgno] = p.off
			}
		}
		for pgno := range idx {
			if pgno > f.commit {
				delete(idx, pgno)
			}
		}
		pending = pending[:0]
	}
	return idx, nil
}

// walChanges returns the pages of a committed WAL transaction whose
// content differs from the last captured state.
func (d *DB) walChanges(tx *WALTx) ([]change, error) {
	if d.pageSize == 0 {
		d.pageSize = d.wal.hdr.pageSize
	}
	lock := ltx.LockPgno(d.pageSize)
	changes := make([]change, 0, len(tx.Pages))
	for pgno, p := range tx.Pages {
		if pgno <= tx.Commit && pgno != lock {
			changes = append(changes, change{pgno: pgno, sum: p.sum, ref: pageRef{pgno: pgno, kind: WALFile, off: p.Off, data: p.Data}})
		}
	}
	// Pages the database grew into without a frame read from the database file.
	for pgno := d.commit + 1; pgno <= tx.Commit; pgno++ {
		if _, ok := tx.Pages[pgno]; !ok && pgno != lock {
			c, err := d.readDBPage(pgno)
			if err != nil {
				return nil, err
			}
			changes = append(changes, c)
		}
	}
	return d.changed(changes)
}

// commitWAL captures a committed WAL transaction. atWrite: it is captured
// by the write of its commit frame, which fails if the capture does.
func (d *DB) commitWAL(tx *WALTx, atWrite bool) error {
	changes, err := d.walChanges(tx)
	if err == nil {
		err = d.emit(changes, tx.Commit, d.wal.posAt(tx.End, tx.Cksum))
	}
	if err != nil && atWrite {
		// SQLite will report the commit as failed; make sure its recovery
		// can never resurrect it. (A transaction found by a barrier is
		// already committed for SQLite: it stays, and is captured by the
		// next barrier.)
		var zero [walFrameHeaderSize]byte
		_, _ = d.files.WriteAt(WALFile, zero[:], tx.End-int64(d.wal.hdr.pageSize)-walFrameHeaderSize)
	}
	return err
}

// walFile reads the -wal for a WALCursor.
type walFile struct{ f Files }

func (w walFile) ReadAt(p []byte, off int64) (int, error) { return w.f.ReadAt(WALFile, p, off) }

// readWALHeader reads the WAL header and starts a new generation when its
// salts changed (SQLite restarted the WAL after a complete checkpoint).
func (d *DB) readWALHeader() {
	if d.wal.ReadHeader(walFile{d.files}, d.pageSize) || !d.wal.valid {
		d.lastFrameOff = -1
	}
}

// scanWAL captures every transaction committed by the frames after the last
// captured one, up to end (0: the end of the file). tail, if not nil, is
// the last frame, in hand; atWrite: see commitWAL.
func (d *DB) scanWAL(end int64, tail *frameInHand, atWrite bool) error {
	return d.wal.scan(walFile{d.files}, end, tail, func(tx *WALTx) error { return d.commitWAL(tx, atWrite) })
}

// SyncWAL is the barrier of deferred capture: it captures every transaction
// committed in the -wal since the last capture. A front end whose -wal writes
// do not pass through WriteWAL (FUSE passthrough, or the VFS writing the
// file directly) calls it when SQLite fsyncs the -wal, at the end of each
// batch window, and at the last close; the core calls it itself before
// anything that can make a WAL frame disappear: a write to or truncation of
// the database file while it is in WAL mode (a checkpoint), a truncation or
// removal of the -wal.
//
// Why no committed frame can be lost: SQLite overwrites WAL frames only
// after restarting the WAL, which it does only once a checkpoint has copied
// every frame into the database file (and truncates or deletes the -wal
// only after one too); a checkpoint writes the database file, and that write
// waits for this barrier. Frames a checkpoint copies were committed before
// it began, so the barrier before its first write captures them all.
func (d *DB) SyncWAL() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.barrier()
}

// afterBarrier performs apply, an operation that can make WAL frames
// disappear, once the barrier has captured what they committed; d.mu is
// held.
func (d *DB) afterBarrier(apply func() error) error {
	if err := d.barrier(); err != nil {
		return err
	}
	return apply()
}

// Failed barriers are retried after a backoff from minBarrierBackoff to
// maxBarrierBackoff; until then they fail at once with the same error.
const (
	minBarrierBackoff = 50 * time.Millisecond
	maxBarrierBackoff = 2 * time.Second
)

// barrier is SyncWAL with d.mu held.
func (d *DB) barrier() error {
	if d.barrierErr != nil && d.cfg.Now().Before(d.barrierRetry) {
		return d.barrierErr
	}
	err := d.syncWAL()
	if err != nil {
		d.barrierBackoff = min(max(2*d.barrierBackoff, minBarrierBackoff), maxBarrierBackoff)
		d.barrierErr, d.barrierRetry = err, d.cfg.Now().Add(d.barrierBackoff)
		return err
	}
	d.barrierErr, d.barrierBackoff = nil, 0
	return nil
}

// outsideRestart handles, for a front end that reads the files from
// outside (Config.Outside), what may have happened to the WAL between two
// looks: done is true when it captured (or established) everything itself.
// With the header of the generation the cursor follows, it is false: the
// caller scans. A WAL gone or emptied after the cursor's generation, or one
// that appears when the cursor had none, may hide commits already copied
// into the database file: the state is established from the files (proven
// by the database's checksum, or shipped whole). A new generation is
// followed only once FollowRestart proves the old one ended at the cursor.
// A header that is not valid right now (being written) is looked at again
// by the next scan.
func (d *DB) outsideRestart(wf walFile) (done bool, err error) {
	h, ok := peekWALHeader(wf)
	switch {
	case !ok && d.wal.valid && d.files.Size(WALFile) < walHeaderSize:
		return true, d.locked(d.establish) // deleted or truncated
	case !ok:
		return true, nil
	case !d.wal.valid || h.pageSize != d.wal.hdr.pageSize:
		return true, d.locked(d.establish)
	case h.salt1 == d.wal.hdr.salt1 && h.salt2 == d.wal.hdr.salt2:
		return false, nil
	}
	var ended bool
	err = d.locked(func() error {
		if d.wal.valid && d.wal.hdr.salt1 == h.salt1 && d.wal.hdr.salt2 == h.salt2 {
			ended = true // another process's capture read into h's generation: its position is adopted
			return nil
		}
		ended, err = d.wal.FollowRestart(wf, h, func(tx *WALTx) error { return d.commitWAL(tx, false) })
		if err != nil || ended {
			return err
		}
		return d.establish()
	})
	if err != nil || !ended {
		return true, err
	}
	d.lastFrameOff = -1
	return false, nil
}

// syncWAL captures what the -wal committed since the last capture.
func (d *DB) syncWAL() error {
	if d.journalLive {
		return nil // a rollback-journal transaction: no WAL to read
	}
	if !d.known {
		// The state was lost (its checksums could not be stored): rebuild
		// it; the replay captures what was committed since.
		return d.locked(d.establish)
	}
	if !d.walMode && !d.wal.valid && d.commit != 0 {
		return nil // a rollback-journal database (an empty one may be starting a WAL)
	}
	wf := walFile{d.files}
	if d.cfg.Outside {
		return d.syncOutside(wf)
	}
	d.readWALHeader()
	if !d.wal.valid {
		return nil
	}
	if !d.wal.Intact(wf) {
		// A WAL restart between the header read and the frame read changes
		// that frame too: read the header again.
		d.readWALHeader()
	}
	if d.wal.valid && !d.wal.Intact(wf) {
		return d.overwritten()
	}
	return d.scanNew()
}

// syncOutside is syncWAL for a front end that reads from outside: SQLite
// may checkpoint and restart the WAL at any moment of a look, between any
// two of its reads, and the cursor leaves its generation only through
// outsideRestart (FollowRestart's proof). Adopting a new header as it is
// found would skip the old generation's commits not read yet, and ship
// the new one's as increments over a state that lacks them.
func (d *DB) syncOutside(wf walFile) error {
	for range 3 {
		if done, err := d.outsideRestart(wf); done || err != nil {
			return err
		}
		if d.wal.Intact(wf) {
			return d.scanNew()
		}
		if h, ok := peekWALHeader(wf); !ok || h.salt1 != d.wal.hdr.salt1 || h.salt2 != d.wal.hdr.salt2 {
			continue // restarted since outsideRestart looked: follow it
		}
		return d.overwritten()
	}
	return nil // restarting as fast as it is looked at: the next look follows
}

// overwritten: frames captured as a transaction were overwritten in the
// same generation: SQLite did not count that commit (it failed after its
// frames were written). Start again from the files.
func (d *DB) overwritten() error {
	if d.cfg.Warn != nil {
		d.cfg.Warn(fmt.Sprintf("database %s: WAL frames captured as transaction %d were overwritten "+
			"(SQLite reported that commit as failed): shipping the database whole", d.cfg.Name, d.pos.TXID))
	}
	d.needFull = true
	return d.locked(d.establish)
}

// scanNew captures the frames written after the cursor.
func (d *DB) scanNew() error {
	size := d.files.Size(WALFile)
	if size < d.wal.end+d.wal.frameSize() {
		return nil // no new frame
	}
	// Frames written after this point are not waited for: they were not
	// committed when the barrier was called. A frame being overwritten by
	// a new generation as it is read ends the scan (its salts differ).
	return d.locked(func() error { return d.scanWAL(size, nil, false) })
}

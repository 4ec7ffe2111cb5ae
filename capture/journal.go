package capture

import (
	"fmt"

	"github.com/superfly/ltx"
)

// WriteDB performs apply (a write of n bytes at off to the database file).
// In WAL mode it is a checkpoint's: every transaction committed in the WAL
// is captured first (see SyncWAL).
func (d *DB) WriteDB(off, n int64, apply func() error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.afterBarrier(apply); err != nil {
		return err
	}
	switch {
	case d.journalLive:
		d.markDirty(off, n)
	case d.wal.valid:
		// A checkpoint: the logical database does not change.
	default:
		d.markDirty(off, n)
		d.unjournaled = true
		d.warnUnjournaled()
	}
	return nil
}

// TruncateDB performs apply (a truncation of the database file to size).
// Under a live journal it is part of the transaction, with a WAL it is a
// checkpoint's; otherwise, when it cuts into the database, the file is
// changed outside any transaction (a file copied over the database) and
// captured with the writes that follow.
func (d *DB) TruncateDB(size int64, apply func() error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.afterBarrier(apply); err != nil {
		return err
	}
	// SQLite also cuts a file back to the database's size outside a
	// transaction (pages a rolled-back transaction grew): that changes
	// nothing captured. Cutting into the database does.
	if !d.journalLive && !d.wal.valid && size < int64(d.commit)*int64(d.pageSize) {
		d.unjournaled = true
		d.warnUnjournaled()
	}
	return nil
}

// warnUnjournaled warns, once per database, that it is written outside
// SQLite's transactions. A WAL-mode database written without a WAL to
// checkpoint is being replaced (a file copied over it); any other is in
// journal_mode OFF or MEMORY. Either way the changes are captured when the
// last handle closes.
func (d *DB) warnUnjournaled() {
	if d.cfg.Warn == nil {
		return
	}
	if d.walMode {
		if d.warnedCopy {
			return
		}
		d.warnedCopy = true
		d.cfg.Warn(fmt.Sprintf("database %s is written outside any SQLite transaction (a file copied over it?): "+
			"its new content is captured when the last handle on it closes", d.cfg.Name))
		return
	}
	if d.warnedMode {
		return
	}
	d.warnedMode = true
	d.cfg.Warn(fmt.Sprintf("database %s is written without a rollback journal or WAL (journal_mode OFF or MEMORY): "+
		"walsync cannot see its transaction boundaries and captures it only when its last connection closes; "+
		"use journal_mode WAL, DELETE, TRUNCATE or PERSIST", d.cfg.Name))
}

func (d *DB) markDirty(off, n int64) {
	ps := int64(d.pageSize)
	if ps == 0 {
		ps = 512 // page size not known yet: over-approximate
	}
	if n <= 0 {
		return
	}
	for p := off / ps; p <= (off+n-1)/ps; p++ {
		d.dirty[uint32(p+1)] = struct{}{}
	}
}

// WriteJournal performs apply (a write of data at off to the -journal). A
// write that zeroes the header of a live journal commits the transaction; it
// is captured before the write is applied.
func (d *DB) WriteJournal(off int64, data []byte, apply func() error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.endJournal(off == 0 && len(data) >= 8 && isZero(data[:8]), apply); err != nil {
		return err
	}
	if off < 8 {
		return d.journalChanged()
	}
	return nil
}

// TruncateJournal performs apply (a truncation of the -journal to size).
func (d *DB) TruncateJournal(size int64, apply func() error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.endJournal(size < 8, apply); err != nil {
		return err
	}
	return d.journalChanged()
}

// RemoveJournal performs apply (the deletion of the -journal).
func (d *DB) RemoveJournal(apply func() error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.endJournal(true, apply)
}

// endJournal performs apply; when apply ends a live journal (ends), the
// transaction is captured first, so a commit never returns to SQLite
// uncaptured. If apply fails, liveness is read back from the file.
func (d *DB) endJournal(ends bool, apply func() error) error {
	if ends && d.journalLive {
		if err := d.locked(d.finalize); err != nil {
			return err
		}
		d.journalLive = false
	}
	if err := apply(); err != nil {
		d.journalLive = d.readJournalLive()
		return err
	}
	return nil
}

// JournalOpened tells the core a -journal was created or opened.
func (d *DB) JournalOpened() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.journalChanged()
}

// Closed tells the core the last handle on the database file was released.
// What the -wal committed since the last capture, and changes written
// without a journal (journal_mode OFF or MEMORY), are captured now: no
// transaction can be in progress without an open handle.
func (d *DB) Closed() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.barrier(); err != nil {
		return err
	}
	if d.unjournaled && !d.journalLive {
		return d.locked(d.finalize)
	}
	return nil
}

// journalChanged re-reads whether the journal is live; a live journal that
// ended without passing through a commit hook is finalized now.
func (d *DB) journalChanged() error {
	live := d.readJournalLive()
	if d.journalLive && !live {
		d.journalLive = false
		return d.locked(d.finalize)
	}
	d.journalLive = live
	return nil
}

func (d *DB) readJournalLive() bool {
	var b [8]byte
	if d.files.Size(JournalFile) < int64(len(b)) {
		return false
	}
	if n, _ := d.files.ReadAt(JournalFile, b[:], 0); n < len(b) {
		return false
	}
	return !isZero(b[:])
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// finalize ends a rollback-journal transaction: the dirty pages are compared
// with the last captured state and what changed is captured.
func (d *DB) finalize() error {
	if !d.known {
		d.dirty, d.unjournaled = map[uint32]struct{}{}, false
		return d.establish()
	}
	// The dirty pages stay recorded until the transaction is staged, so a
	// failed capture is retried whole by the next commit point.
	if err := d.captureDirty(d.dirty); err != nil {
		return err
	}
	d.dirty, d.unjournaled = map[uint32]struct{}{}, false
	return nil
}

// captureDirty compares the dirty pages (and any pages the database grew
// into) with the last captured state and captures what changed.
func (d *DB) captureDirty(dirty map[uint32]struct{}) error {
	size := d.files.Size(DBFile)
	var hb [100]byte
	if size < int64(len(hb)) {
		return nil // an empty database: nothing to capture
	}
	if _, err := d.files.ReadAt(DBFile, hb[:], 0); err != nil {
		return fmt.Errorf("read %s header: %w", d.cfg.Name, err)
	}
	h, ok := parseDBHeader(hb[:])
	if !ok {
		return nil
	}
	if d.pageSize != 0 && h.pageSize != d.pageSize {
		// VACUUM changed the page size: every page is new.
		d.needFull = true
		return d.establish()
	}
	d.pageSize = h.pageSize
	commit := h.nPages
	if commit == 0 {
		commit = uint32(size / int64(h.pageSize))
	}
	lock := ltx.LockPgno(d.pageSize)
	changes := make([]change, 0, len(dirty))
	for pgno := range dirty {
		if pgno > commit || pgno == lock {
			continue
		}
		c, err := d.readDBPage(pgno)
		if err != nil {
			return err
		}
		changes = append(changes, c)
	}
	for pgno := d.commit + 1; pgno <= commit; pgno++ {
		if _, ok := dirty[pgno]; !ok && pgno != lock {
			c, err := d.readDBPage(pgno)
			if err != nil {
				return err
			}
			changes = append(changes, c)
		}
	}
	changes, err := d.changed(changes)
	if err != nil {
		return err
	}
	return d.emit(changes, commit, d.wal.Pos())
}

package dbfiles

import (
	"strings"

	"github.com/walsync/walsync/capture"
)

// The file operations of a front end on a database's files, as capture
// events: what each file is to its database (Role), and each write,
// truncation, removal, open and close.

// Role is what a file is to a database.
type Role int

// The roles of a database's files; -shm and unrelated files are RolePlain.
const (
	RolePlain Role = iota
	RoleDB
	RoleWAL
	RoleJournal
)

// Kind is the capture core's name for the file.
func (r Role) Kind() capture.Kind {
	switch r {
	case RoleWAL:
		return capture.WALFile
	case RoleJournal:
		return capture.JournalFile
	}
	return capture.DBFile
}

// Classify tells a file's role from its name and returns the path of the
// main database file it belongs to.
func Classify(path string) (base string, r Role) {
	switch {
	case strings.HasSuffix(path, "-wal"):
		return strings.TrimSuffix(path, "-wal"), RoleWAL
	case strings.HasSuffix(path, "-journal"):
		return strings.TrimSuffix(path, "-journal"), RoleJournal
	case strings.HasSuffix(path, "-shm"):
		return path, RolePlain
	}
	return path, RoleDB
}

// Write performs apply, the write of data at off to the file of role r,
// through the capture core. The first write to an empty main file decides
// whether it is a database (SQLite's is always page 1, at offset 0). d may
// be nil (a plain file).
func (d *Database) Write(r Role, off int64, data []byte, apply func() error) error {
	if d == nil {
		return apply()
	}
	core := d.Core()
	if core == nil && r == RoleDB {
		header := data
		if off != 0 || len(header) == 0 {
			header = []byte{0}
		}
		var err error
		if core, err = d.Capture(header); err != nil {
			return err
		}
	} else if core == nil && d.retryDue() {
		var err error
		if core, err = d.Capture(nil); err != nil {
			return err
		}
	}
	switch {
	case core == nil:
		return apply()
	case r == RoleDB:
		// In WAL mode a checkpoint's write: it waits for the barrier.
		return d.batch(core, func() error { return core.WriteDB(off, int64(len(data)), apply) })
	case r == RoleWAL && d.r.DeferWAL:
		// Captured at the next barrier, or soon after by a background
		// capture this write wakes.
		if err := apply(); err != nil {
			return err
		}
		if !d.r.BarriersOnly {
			d.kick()
		}
		return nil
	case r == RoleWAL:
		return core.WriteWAL(off, data, apply)
	case r == RoleJournal:
		return core.WriteJournal(off, data, apply)
	}
	return apply()
}

// Truncate performs apply, the truncation of the file of role r to size.
func (d *Database) Truncate(r Role, size int64, apply func() error) error {
	var core *capture.DB
	if d != nil {
		core = d.Core()
	}
	switch {
	case core == nil:
		return apply()
	case r == RoleWAL:
		return d.batch(core, func() error { return core.TruncateWAL(size, apply) })
	case r == RoleJournal:
		return core.TruncateJournal(size, apply)
	case r == RoleDB:
		return d.batch(core, func() error { return core.TruncateDB(size, apply) })
	}
	return apply()
}

// Remove performs apply, the deletion of the file of role r, and forgets
// its descriptor. Deleting the main file is left to the caller (Forget).
func (d *Database) Remove(r Role, apply func() error) error {
	if d == nil {
		return apply()
	}
	defer d.Files.Invalidate(r.Kind())
	core := d.Core()
	switch {
	case core == nil:
		return apply()
	case r == RoleWAL:
		return d.batch(core, func() error { return core.RemoveWAL(apply) })
	case r == RoleJournal:
		return core.RemoveJournal(apply)
	}
	return apply()
}

// Open records that a file of role r was opened: the main file counts as a
// handle and may become captured; a journal's liveness is read.
func (d *Database) Open(r Role) error {
	if d == nil {
		return nil
	}
	switch r {
	case RoleDB:
		if _, err := d.Capture(nil); err != nil {
			return err
		}
		d.Opened()
	case RoleJournal:
		if core := d.Core(); core != nil {
			return core.JournalOpened()
		}
	}
	return nil
}

// Close records that a main-file handle closed; on the last one, changes
// made without a journal are captured. It reports whether it was the last.
func (d *Database) Close(r Role) (last bool, err error) {
	if d == nil || r != RoleDB {
		return false, nil
	}
	core := d.Core()
	last = d.Released()
	if last && core != nil {
		err = d.batch(core, core.Closed)
	}
	if last {
		d.idle()
	}
	return last, err
}

// idle releases the descriptors the capture core keeps; they are opened
// again when needed.
func (d *Database) idle() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.opens > 0 {
		return
	}
	d.closeFiles()
}

// closeFiles closes the descriptors the database keeps; d.mu is held.
func (d *Database) closeFiles() {
	d.Files.CloseAll()
	if d.sums != nil {
		if err := d.sums.Close(); err != nil {
			// The file is stale: the next capture core rebuilds it from
			// the database and the staged position.
			d.r.Log.Warn("cannot write back page checksums", "db", d.Name, "err", err)
			d.core = nil
		}
	}
}

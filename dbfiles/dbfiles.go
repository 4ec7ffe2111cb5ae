// Package dbfiles is what both front ends (the FUSE mount and the VFS) keep
// per database: its files on local disk, read by the capture core, and the
// capture core itself, created when the main file is known to be a SQLite
// database and fed to the shipper through a Stager.
package dbfiles

import (
	"context"
	"errors"
	"log/slog"
	"path"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/walsync/walsync/capture"
)

// Stager is what the front ends need from the shipper.
type Stager interface {
	// Position returns the last captured position of a database.
	Position(ctx context.Context, db string) (capture.Pos, error)
	// Stage makes a transaction durable in local staging.
	Stage(db string, tx *capture.Tx) error
	// Sync fsyncs the database's staged transactions.
	Sync(db string) error
	// StateDir is a directory for the database's other state (its page
	// checksums), created on first use.
	StateDir(db string) string
	// Shared coordinates the capture of a database with other processes
	// staging it (nil: this process is the only one).
	Shared(db string) capture.Shared
	// ShipNow ends the database's batch window: what is staged is uploaded
	// without waiting for the window to end.
	ShipNow(db string)
	// Batch runs fn, which may stage many transactions (a barrier of
	// deferred capture), and writes them to staging together before it
	// returns. On a failed write the staged position goes back to the last
	// transaction written: the caller captures again from Position.
	Batch(db string, fn func() error) error
}

// FullNeeder is a Stager that may need a database's next transaction to
// carry every page (several replicas, one of them behind the others).
type FullNeeder interface {
	// FullNeeded reports whether a capture of db starting now must begin
	// with a transaction that holds the whole database.
	FullNeeded(db string) bool
}

// Registry holds the databases of one front end, by name.
type Registry struct {
	Stager Stager
	Log    *slog.Logger
	Now    func() time.Time
	// DeferWAL: -wal writes reach the file without the capture core seeing
	// them (the VFS writing straight to the file); capture happens at the
	// barriers (capture.DB.SyncWAL). The mount in passthrough needs no flag:
	// the kernel writes those -wal files without asking it.
	DeferWAL bool
	// Outside: the files are read from outside, between SQLite's writes,
	// by a front end that sees neither them nor the checkpoints (the watch
	// sidecar): see capture.Config.Outside.
	Outside bool
	// ReadLock, if set, takes a SQLite reader's lock on the named database
	// before the core reads its database file for a proof or a snapshot
	// (see capture.Config.ReadLock); the front end releases it.
	ReadLock func(name string) error
	// Poll, if positive, is how often a database with open handles has the
	// transactions committed in its -wal captured (the batch window of
	// deferred capture); what a poll captured is shipped at once.
	Poll time.Duration
	// Watcher, if set, wakes the capture of a database whose -wal is
	// written behind the core's back (see WatchWAL). With DeferWAL, each
	// -wal write wakes it. BarriersOnly turns both off: commits wait for a
	// barrier (a test of what a kill before one leaves).
	Watcher      *Watcher
	BarriersOnly bool
	// CaptureErrors counts failed captures (each logged as an error).
	CaptureErrors atomic.Uint64

	mu  sync.Mutex
	dbs map[string]*Database
}

// NewRegistry returns an empty registry.
func NewRegistry(stager Stager, log *slog.Logger, now func() time.Time) *Registry {
	if log == nil {
		log = slog.Default()
	}
	if now == nil {
		now = time.Now
	}
	return &Registry{Stager: stager, Log: log, Now: now, dbs: map[string]*Database{}}
}

// Database is one database and its companion files. An idle database
// (no handle open on its main file) holds no file descriptors and no page
// data: its capture core keeps a few words of position and its page
// checksums stay in a file.
type Database struct {
	r     *Registry
	Name  string // replica path of the database
	Files *Files
	sums  *SumsFile

	mu    sync.Mutex
	core  *capture.DB // nil until the file is known to be a database
	notDB bool        // the main file is not a SQLite database
	opens int         // open handles on the main file
	// The replica position could not be read: capture waits until
	// retryAt, then tries again (backoff doubles, up to maxPosBackoff).
	retryAt time.Time
	backoff time.Duration
	// resync: the shipper reset the database's staging; the capture core
	// is replaced by one at the replica's position.
	resync atomic.Bool
	poll   *time.Timer // Registry.Poll's timer while handles are open
	walWD  int32       // the Watcher's watch of the -wal (0: none)
	// kickState: a capture woken by a -wal write is idle, running, or
	// running and to look again (see kick).
	kickState atomic.Int32
}

// Reading a database's replica position is retried with this backoff.
const (
	minPosBackoff = time.Second
	maxPosBackoff = time.Minute
	posTimeout    = 10 * time.Second
)

// Get returns the database name whose main file is at path.
func (r *Registry) Get(name, path string) *Database {
	r.mu.Lock()
	defer r.mu.Unlock()
	d, ok := r.dbs[name]
	if !ok {
		d = &Database{r: r, Name: name, Files: NewFiles(path)}
		r.dbs[name] = d
	}
	return d
}

// In returns the databases whose main file is in directory dir (a name
// prefix: "" is the root).
func (r *Registry) In(dir string) []*Database {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*Database
	for name, db := range r.dbs {
		if parent := path.Dir(name); parent == dir || (dir == "" && parent == ".") {
			out = append(out, db)
		}
	}
	return out
}

// Forget drops a database (deleted or renamed): it is captured anew if it
// comes back.
func (r *Registry) Forget(name string) {
	r.mu.Lock()
	d := r.dbs[name]
	delete(r.dbs, name)
	r.mu.Unlock()
	if d != nil {
		d.mu.Lock()
		d.stopWatching()
		d.closeFiles()
		d.mu.Unlock()
	}
}

// Core returns the capture core, or nil while the main file is not known to
// be a database (or d is nil: a plain file).
func (d *Database) Core() *capture.DB {
	if d == nil {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.dropIfResync()
	return d.core
}

// dropIfResync drops a capture core whose staging the shipper reset, so
// the next operation captures again from the replica's position; d.mu is
// held.
func (d *Database) dropIfResync() {
	if d.core != nil && d.resync.Load() && d.resync.Swap(false) {
		d.core = nil
		d.retryAt = d.r.Now() // capture again at once
	}
}

// Opened counts an open handle on the main file.
func (d *Database) Opened() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.opens++
	if d.opens == 1 && d.r.Poll > 0 && d.poll == nil {
		d.poll = time.AfterFunc(d.r.Poll, d.pollWAL)
	}
}

// pollWAL captures what the -wal committed since the last capture and ships
// it: the end of a batch window of deferred capture, for commits no watcher
// woke the capture for (they may be a window old, so they ship at once). It
// runs while the database has open handles (their last close captures too).
func (d *Database) pollWAL() {
	d.mu.Lock()
	if d.opens == 0 || d.poll == nil {
		d.poll = nil
		d.mu.Unlock()
		return
	}
	d.dropIfResync()
	core := d.core
	d.mu.Unlock()
	if core != nil {
		before := core.Pos()
		if err := d.batch(core, core.SyncWAL); err != nil {
			d.r.CaptureErrors.Add(1)
			d.r.Log.Error("capture of the -wal failed; retried at the next barrier", "db", d.Name, "err", err)
		}
		if core.Pos() != before {
			d.r.Stager.ShipNow(d.Name)
		}
	}
	d.mu.Lock()
	if d.poll != nil {
		d.poll.Reset(d.r.Poll)
	}
	d.mu.Unlock()
}

// WatchWAL has the Registry's Watcher wake the capture when the -wal (at
// path) is written behind the core's back; the watch ends with the last
// handle on the database.
func (d *Database) WatchWAL(path string) {
	if d == nil || d.r.Watcher == nil || d.r.BarriersOnly {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.walWD != 0 {
		d.r.Watcher.unwatch(d.walWD) // another -wal file (recreated)
	}
	d.walWD = max(d.r.Watcher.watch(path, d), 0) // -1: not watched
}

// SyncWAL captures what the -wal committed since the last capture (SQLite
// fsyncs it, or it is about to change behind the core's back).
func (d *Database) SyncWAL() error {
	if d == nil {
		return nil
	}
	if core := d.Core(); core != nil {
		return d.batch(core, core.SyncWAL)
	}
	return nil
}

// WALSynced is the barrier of SQLite's fsync of a -wal the core does not
// see written (FUSE passthrough, the VFS): under synchronous=FULL a commit
// does not return before its transaction is captured. Staging is not
// fsynced: the commit is durable in the -wal, from which walsync captures
// again what staging lost to a power failure, and staging is fsynced with
// the database file at the checkpoint, before the -wal can be restarted.
//
// If staging cannot take it now (full, failing), the fsync still succeeds:
// the commit is durable in the -wal and captured when staging accepts it,
// and checkpoints wait until then. Failing it would leave a commit frame
// SQLite does not count, which the next checkpoint's barrier would capture
// as a transaction.
func (d *Database) WALSynced() {
	if err := d.SyncWAL(); err != nil {
		d.r.Log.Warn("a commit SQLite made durable in its -wal cannot be staged now; it is captured when staging accepts it",
			"db", d.Name, "err", err)
	}
}

// batch runs fn, a call of core that may capture many transactions, with
// their staging written at once (Stager.Batch). If what the core took as
// staged could not be written (capture.ErrUnstaged), the core is dropped:
// the next operation captures again from the staged position.
func (d *Database) batch(core *capture.DB, fn func() error) error {
	err := d.r.Stager.Batch(d.Name, fn)
	d.mu.Lock()
	defer d.mu.Unlock()
	if errors.Is(err, capture.ErrUnstaged) && d.core == core {
		d.core = nil
		d.retryAt = d.r.Now()
	}
	return err
}

// stopWatching stops the poll and the watch of an idle or forgotten
// database; d.mu is held.
func (d *Database) stopWatching() {
	if d.poll != nil {
		d.poll.Stop()
		d.poll = nil
	}
	if d.walWD != 0 {
		d.r.Watcher.unwatch(d.walWD)
		d.walWD = 0
	}
}

// CaptureNow starts capturing a database that no handle has open (it
// captures what its -wal committed since the last capture), then releases
// its descriptors. What it captured is shipped at once: it may be old.
func (d *Database) CaptureNow() error {
	ctx, cancel := context.WithTimeout(context.Background(), posTimeout)
	before, perr := d.r.Stager.Position(ctx, d.Name)
	cancel()
	core, err := d.Capture(nil)
	if err == nil && core != nil {
		err = d.batch(core, core.SyncWAL)
		if perr == nil && core.Pos() != before {
			d.r.Stager.ShipNow(d.Name)
		}
	}
	d.idle()
	return err
}

// Opens returns the number of open handles on the main file.
func (d *Database) Opens() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.opens
}

// NotDB reports whether the main file is known not to be a SQLite database.
func (d *Database) NotDB() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.notDB
}

// Released counts a closed handle on the main file and reports whether it
// was the last one.
func (d *Database) Released() (last bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.opens--
	if d.opens == 0 {
		d.stopWatching()
	}
	return d.opens == 0
}

// Capture returns the capture core of the database, creating it when the main
// file is known to be a database. header is the first bytes about to be
// written at offset 0 of the main file, if that is what triggers the call.
func (d *Database) Capture(header []byte) (*capture.DB, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.dropIfResync()
	if d.core != nil || d.notDB {
		return d.core, nil
	}
	var hb [16]byte
	size := d.Files.Size(capture.DBFile)
	switch {
	case size >= 16:
		if _, err := d.Files.ReadAt(capture.DBFile, hb[:], 0); err != nil || !capture.IsDatabaseHeader(hb[:]) {
			d.notDB = true
			d.Files.CloseAll()
			return nil, nil
		}
	case header != nil && capture.IsDatabaseHeader(header):
	case header != nil:
		// The first write to an empty file is not a SQLite page 1.
		d.notDB = true
		d.Files.CloseAll()
		return nil, nil
	default:
		return nil, nil // empty: not decided yet
	}
	if now := d.r.Now(); now.Before(d.retryAt) {
		return nil, nil // the replica position is still unknown
	}
	ctx, cancel := context.WithTimeout(context.Background(), posTimeout)
	defer cancel()
	pos, err := d.r.Stager.Position(ctx, d.Name)
	if err != nil {
		// Capturing from a guess would start a history that cannot follow
		// the replica's. The database works uncaptured until the position
		// is read; then its state is compared with the replica's and, as it
		// differs, shipped whole as the next transaction (a resync).
		d.backoff = min(max(2*d.backoff, minPosBackoff), maxPosBackoff)
		d.retryAt = d.r.Now().Add(d.backoff)
		d.r.Log.Warn("cannot read the replica position: the database is captured once it can be read, its changes until then shipped together",
			"db", d.Name, "retry_in", d.backoff, "err", err)
		// Retried at the next file operation, and by itself: a database
		// written once and left alone must not stay uncaptured.
		time.AfterFunc(d.backoff, d.retryCapture)
		return nil, nil
	}
	if !d.retryAt.IsZero() {
		d.r.Log.Info("replica position read: capturing again", "db", d.Name, "txid", pos.TXID)
		d.retryAt, d.backoff = time.Time{}, 0
	}
	shared := d.r.Stager.Shared(d.Name)
	if d.sums == nil {
		d.sums = &SumsFile{Path: filepath.Join(d.r.Stager.StateDir(d.Name), "page-checksums"), Cache: true}
	}
	full := false
	if f, ok := d.r.Stager.(FullNeeder); ok {
		full = f.FullNeeded(d.Name)
	}
	var readLock func() error
	if rl := d.r.ReadLock; rl != nil {
		readLock = func() error { return rl(d.Name) }
	}
	core, err := capture.Open(capture.Config{
		Name:     d.Name,
		Files:    d.Files,
		Sums:     d.sums,
		Pos:      pos,
		Now:      d.r.Now,
		Sink:     d.stage,
		Shared:   shared,
		Warn:     func(msg string) { d.r.Log.Warn(msg, "db", d.Name) },
		Full:     full,
		Outside:  d.r.Outside,
		ReadLock: readLock,
	})
	if errors.Is(err, capture.ErrNotDatabase) {
		d.notDB = true
		d.Files.CloseAll()
		return nil, nil
	} else if err != nil {
		d.r.CaptureErrors.Add(1)
		d.r.Log.Error("cannot start capturing database", "db", d.Name, "err", err)
		return nil, err
	}
	d.core = core
	d.r.Log.Debug("capturing database", "db", d.Name, "txid", pos.TXID)
	return core, nil
}

// stage hands a captured transaction to the shipper. When the shipper reset
// the database's staging, the transaction is not staged: the core is
// replaced at the next file operation by one that starts from the
// replica's position and ships the database whole, this transaction
// included.
func (d *Database) stage(tx *capture.Tx) error {
	err := d.r.Stager.Stage(d.Name, tx)
	if errors.Is(err, capture.ErrResync) {
		if !d.resync.Swap(true) {
			d.r.Log.Warn("capture starts again from the replica's position (its staging was reset, or a replica is behind the others)", "db", d.Name, "txid", tx.TXID)
		}
		return nil
	}
	return err
}

// retryCapture tries again to start capturing a database whose replica
// position could not be read, unless it was forgotten (deleted, renamed).
func (d *Database) retryCapture() {
	d.r.mu.Lock()
	current := d.r.dbs[d.Name] == d
	d.r.mu.Unlock()
	if current && d.retryDue() {
		if _, err := d.Capture(nil); err != nil {
			d.r.Log.Error("cannot start capturing database", "db", d.Name, "err", err)
		}
	}
}

// retryDue reports whether capture waits for the replica position and may
// try again now.
func (d *Database) retryDue() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.core == nil && !d.retryAt.IsZero() && !d.r.Now().Before(d.retryAt)
}

// Reestablish drops the capture core: the next capture establishes the
// database again from its files (continuity with the last captured
// position proven by its checksum, or the whole database shipped). For a
// front end that cannot see every write (the watch sidecar), when the -wal
// was restarted or truncated, or the file changed, since it last looked.
func (d *Database) Reestablish() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.core = nil
}

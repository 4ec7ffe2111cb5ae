// Package shipper stages captured transactions on local disk and uploads them
// to a replica in batches.
//
// Staging: every database has a directory under the staging root holding
//
//	pending             the transaction log being appended to (storage.ReadTxLog format)
//	batch-<minTXID>.log sealed batches waiting for upload, shipped in TXID order
//	shipped.json        the position of the last transaction uploaded
//	kept/               what is kept after upload (kept.go)
//
// Stage appends with write(2) before the SQLite write that committed the
// transaction returns, so a crash of walsync loses nothing SQLite saw
// committed; Sync (called when SQLite fsyncs one of the database's files)
// makes it survive power loss as well, so walsync adds no fsync SQLite did not
// ask for.
//
// Shipping: a database's first staged transaction starts its batch window
// (the sync interval); when it ends the pending log is sealed and one worker
// of a shared pool uploads it as one level-0 LTX file compacting the whole
// batch (plus the level-9 snapshot when the batch starts the database at
// TXID 1): one PUT per batch. The batch's transactions one by one stay in
// staging and go up with the next level-1 compaction, in one
// transaction-log object for every batch since the last (compact.go).
// Failed uploads are retried with exponential backoff and jitter; the
// sealed batch stays on disk until it is uploaded, across restarts.
package shipper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/walsync/walsync/capture"
	"github.com/walsync/walsync/storage"
)

// Options configures a Shipper.
type Options struct {
	Dir          string // staging root
	Client       storage.Client
	SyncInterval time.Duration // batch window per database; default 1s
	Concurrency  int           // uploads in flight across all databases; default 8
	MaxBackoff   time.Duration // default 30s
	// UploadTimeout bounds one upload attempt of a database's batches; default 10m.
	UploadTimeout time.Duration
	// FlushTimeout bounds Flush, FlushDB and Close when their context has
	// no deadline; default 30s.
	FlushTimeout time.Duration
	// Shared: other processes may stage into the same directory (the VFS
	// loaded by several processes); see shared.go.
	Shared bool
	// MaxStaging bounds the staging directory (bytes, 0: unbounded). Past
	// it, each database's staged batches are merged into one LTX file (the
	// transactions in it can no longer be restored one by one); nothing is
	// dropped.
	MaxStaging int64
	Logger     *slog.Logger

	// Levels are the compaction intervals of levels 1..len(Levels);
	// default DefaultLevels. SnapshotInterval (default 24h) is how often a
	// level-9 snapshot is written; Retention (default 24h; negative: keep
	// everything) how long every transaction stays restorable.
	Levels           []time.Duration
	SnapshotInterval time.Duration
	Retention        time.Duration
	// L0Retention is how long a level-0 file stays once level 1 and the
	// transaction logs hold everything it does (default
	// DefaultL0Retention; negative: until Retention deletes it).
	L0Retention time.Duration
	// Keep keeps snapshots older than Retention: the newest of each of the
	// newest N hours, days, weeks and months (retention.go).
	Keep GFS
	// ForDB, if set, gives a database settings of its own; its zero
	// fields keep the values above.
	ForDB func(db string) DBOptions
	// SummaryInterval, if positive, is how often an info line sums up the
	// work since the last one (summary.go).
	SummaryInterval time.Duration
}

// DBOptions are the settings a database may have of its own.
type DBOptions struct {
	SyncInterval     time.Duration
	Levels           []time.Duration
	SnapshotInterval time.Duration
	Retention        time.Duration
	L0Retention      time.Duration
	Keep             GFS // zero: Options.Keep
}

// dbOptions resolves a database's settings.
func (s *Shipper) dbOptions(db string) DBOptions {
	o := DBOptions{SyncInterval: s.opts.SyncInterval, Levels: s.opts.Levels, SnapshotInterval: s.opts.SnapshotInterval,
		Retention: s.opts.Retention, L0Retention: s.opts.L0Retention, Keep: s.opts.Keep}
	if s.opts.ForDB == nil {
		return o
	}
	own := s.opts.ForDB(db)
	if own.SyncInterval > 0 {
		o.SyncInterval = own.SyncInterval
	}
	if len(own.Levels) > 0 && len(own.Levels) < storage.SnapshotLevel {
		o.Levels = own.Levels
	}
	if own.SnapshotInterval > 0 {
		o.SnapshotInterval = own.SnapshotInterval
	}
	if own.Retention != 0 {
		o.Retention = own.Retention
	}
	if own.L0Retention != 0 {
		o.L0Retention = own.L0Retention
	}
	if own.Keep != (GFS{}) {
		o.Keep = own.Keep
	}
	return o
}

// Shipper stages and uploads transactions for any number of databases.
type Shipper struct {
	opts Options
	log  *slog.Logger

	mu     sync.Mutex
	stages map[string]*stage
	closed bool

	staged     atomic.Int64 // bytes in staging, all databases
	collapsing atomic.Bool
	stats      stats
	outage     outage
	summary    summary
	snapshots  chan snapshotRequest // SnapshotNow, served by the compaction goroutine

	work chan *stage
	wg   sync.WaitGroup
	stop chan struct{}
	// ctx is the background work's (uploads, compaction); Close cancels it
	// once its flush is over, so no upload outlives Close.
	ctx    context.Context
	cancel context.CancelFunc
}

// New opens the staging root, recovers what an earlier run left there and
// starts the upload workers. Databases with staged work are shipped at once.
func New(opts Options) (*Shipper, error) {
	if opts.SyncInterval <= 0 {
		opts.SyncInterval = time.Second
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = 8
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 30 * time.Second
	}
	if opts.UploadTimeout <= 0 {
		opts.UploadTimeout = 10 * time.Minute
	}
	if opts.FlushTimeout <= 0 {
		opts.FlushTimeout = 30 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if len(opts.Levels) == 0 {
		opts.Levels = DefaultLevels
	}
	if len(opts.Levels) > storage.SnapshotLevel-1 {
		return nil, fmt.Errorf("at most %d compaction levels", storage.SnapshotLevel-1)
	}
	if opts.SnapshotInterval <= 0 {
		opts.SnapshotInterval = 24 * time.Hour
	}
	if opts.Retention == 0 {
		opts.Retention = 24 * time.Hour
	}
	if opts.L0Retention == 0 {
		opts.L0Retention = DefaultL0Retention
	}
	if err := PrivateDir(opts.Dir); err != nil {
		return nil, fmt.Errorf("staging directory %s: %w", opts.Dir, err)
	}
	probe, err := os.CreateTemp(opts.Dir, ".probe-*")
	if err != nil {
		return nil, fmt.Errorf("staging directory %s is not writable: %w", opts.Dir, err)
	}
	probe.Close()
	os.Remove(probe.Name())

	s := &Shipper{
		opts:      opts,
		log:       opts.Logger,
		stages:    map[string]*stage{},
		work:      make(chan *stage, 4096),
		stop:      make(chan struct{}),
		snapshots: make(chan snapshotRequest),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if err := s.bindReplica(); err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(opts.Dir)
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		dir := filepath.Join(opts.Dir, e.Name())
		name, err := dbOfDir(dir)
		if err != nil {
			s.setAsideDamaged("", dir, err)
			continue
		}
		st, err := s.stage(name)
		if err != nil {
			return nil, err
		}
		if st.hasWork() {
			s.schedule(st, 0)
		}
		s.staged.Add(st.diskBytes())
	}
	for i := 0; i < opts.Concurrency; i++ {
		s.wg.Add(1)
		go s.worker()
	}
	s.wg.Add(1)
	go s.compactLoop()
	if opts.SummaryInterval > 0 {
		s.wg.Add(1)
		go s.summaryLoop(opts.SummaryInterval)
	}
	return s, nil
}

// allStages returns every database's staging known now.
func (s *Shipper) allStages() []*stage {
	s.mu.Lock()
	defer s.mu.Unlock()
	stages := make([]*stage, 0, len(s.stages))
	for _, st := range s.stages {
		stages = append(stages, st)
	}
	return stages
}

// stage returns the staging state of a database, loading it from disk. It
// loads outside s.mu: with shared staging, loading waits for the database's
// capture lock, which a capture holding it may need s.mu to release.
func (s *Shipper) stage(db string) (*stage, error) {
	s.mu.Lock()
	st, ok := s.stages[db]
	if !ok {
		st = s.newStage(db)
		s.stages[db] = st
	}
	s.mu.Unlock()
	st.loadOnce.Do(func() { st.loadErr = s.loadStage(st) })
	if st.loadErr != nil {
		return nil, st.loadErr
	}
	return st, nil
}

// loadStage loads a database's staging from disk. One damaged staging must
// not stop the others: it is set aside and the database captured anew from
// the replica's position.
func (s *Shipper) loadStage(st *stage) error {
	if err := st.loadLocked(); err != nil {
		if err := s.setAsideDamaged(st.db, st.dir, err); err != nil {
			return err
		}
		st.mu.Lock()
		st.pos, st.known, st.shipped = capture.Pos{}, false, capture.Pos{}
		st.mu.Unlock()
		st.sealLock.close() // opened in the directory set aside
		st.closePosFile()
	}
	if err := nameDir(st.dir, st.db); err != nil {
		return fmt.Errorf("staging of %s: %w", st.db, err)
	}
	return nil
}

func (s *Shipper) newStage(db string) *stage {
	st := &stage{db: db, o: s.dbOptions(db), dir: s.StateDir(db), stagedBytes: &s.staged, shared: s.opts.Shared}
	if _, err := os.Lstat(st.dir); errors.Is(err, os.ErrNotExist) {
		s.log.Info("new database: every transaction is captured from now on", "db", db, "replica", s.opts.Client.URL())
	}
	st.sealLock.path = filepath.Join(st.dir, captureLockFile)
	st.shipLock.path = filepath.Join(st.dir, shipLockFile)
	st.compactLock.path = st.shipLock.path
	return st
}

// Shared returns what coordinates the capture of a database with other
// processes that stage into the same directory; nil unless Options.Shared.
func (s *Shipper) Shared(db string) capture.Shared {
	if !s.opts.Shared {
		return nil
	}
	st, err := s.stage(db)
	if err != nil {
		// Never capture without the lock: every capture fails instead.
		return &sharedCapture{err: fmt.Errorf("staging of %s: %w", db, err)}
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.sharedCap == nil {
		st.sharedCap = &sharedCapture{st: st, lock: fileLock{path: filepath.Join(st.dir, captureLockFile)}}
	}
	return st.sharedCap
}

// setAsideDamaged moves a staging directory that cannot be read out of the
// way, with an error naming it; only a failure to move it is returned.
func (s *Shipper) setAsideDamaged(db, dir string, cause error) error {
	aside, err := s.setAside(dir)
	if err != nil {
		return fmt.Errorf("staging %s cannot be read (%v) nor set aside: %w", dir, cause, err)
	}
	s.log.Error("damaged staging set aside: its database is captured anew from the replica's position; "+
		"transactions staged there and not uploaded are not shipped (inspect the set-aside directory)",
		"db", db, "set_aside", aside, "err", cause)
	return nil
}

// Position returns the last captured position of a database: from local
// staging, or, for a database this staging has never seen, from the replica.
func (s *Shipper) Position(ctx context.Context, db string) (capture.Pos, error) {
	st, err := s.stage(db)
	if err != nil {
		return capture.Pos{}, err
	}
	st.mu.Lock()
	if st.verified && st.known {
		// Compared with the replica already in this run.
		pos := st.pos
		st.resync = false
		st.mu.Unlock()
		return pos, nil
	}
	st.mu.Unlock()
	fi, err := s.reconcile(ctx, st)
	st.mu.Lock()
	pos, known := st.pos, st.known
	if err == nil || known {
		st.resync = false // a new capture starts here
	}
	st.mu.Unlock()
	if !known && err != nil && st.shared {
		// Other processes stage this database: where they are is known
		// locally, whether or not the replica answers.
		if sp, ok, serr := st.readStagedPosLocked(); serr == nil && ok {
			pos, known = sp.pos, true
		}
	}
	if known {
		if err != nil {
			// Staging is trusted until the replica can be read; it is
			// compared with it before anything is uploaded.
			s.log.Debug("replica not readable now; capture continues from staging", "db", db, "txid", pos.TXID, "err", err)
		}
		return pos, nil
	}
	if err != nil {
		return capture.Pos{}, err
	}
	if fi == nil {
		return capture.Pos{}, nil
	}
	hdr, trl, err := storage.ReadHeader(ctx, s.opts.Client, db, fi)
	if err != nil {
		return capture.Pos{}, err
	}
	pos = posOf(hdr, trl)
	// The next transaction staged must follow the replica's.
	st.mu.Lock()
	if !st.known {
		st.pos, st.known = pos, true
	}
	st.mu.Unlock()
	return pos, nil
}

// Stage appends a transaction to the database's pending log.
func (s *Shipper) Stage(db string, tx *capture.Tx) error {
	st, err := s.stage(db)
	if err != nil {
		return err
	}
	first, err := st.append(tx)
	if err != nil {
		s.stagingFailed(err)
		return err
	}
	s.stats.txStaged.Add(1)
	if s.opts.MaxStaging > 0 && s.staged.Load() > s.opts.MaxStaging {
		s.overLimit()
	}
	if first || st.shared {
		// With shared staging another process may have opened the batch
		// window and died: every appender keeps one scheduled (queued
		// makes it cheap).
		s.schedule(st, st.o.SyncInterval)
	}
	return nil
}

// StateDir is the directory of a database's staging, where a front end may
// keep other per-database state (files whose names do not start with
// "batch-", "pending", "shipped", "kept" or ".").
func (s *Shipper) StateDir(db string) string {
	return filepath.Join(s.opts.Dir, stageDirName(db))
}

// Sync makes the database's staged transactions durable on disk.
func (s *Shipper) Sync(db string) error {
	st, err := s.stage(db)
	if err != nil {
		return err
	}
	return st.sync()
}

// schedule ships a database after a delay. A database has at most one
// shipment scheduled: a new batch window or a retry does not start another
// while one waits (or an outage would multiply the retries).
func (s *Shipper) schedule(st *stage, after time.Duration) {
	st.mu.Lock()
	queued := st.queued
	st.queued = true
	st.mu.Unlock()
	if queued {
		return
	}
	t := time.AfterFunc(after, func() {
		select {
		case s.work <- st:
		case <-s.stop:
		}
	})
	st.mu.Lock()
	st.timer = t
	st.mu.Unlock()
}

// ShipNow ends a database's batch window now: what is staged is sealed and
// uploaded without waiting (deferred capture polls once per window, so its
// batch is complete when the poll has captured it).
func (s *Shipper) ShipNow(db string) {
	st, err := s.stage(db)
	if err != nil {
		return // Stage reported it; the next window ships
	}
	st.mu.Lock()
	if st.queued && st.failures == 0 && st.timer != nil && st.timer.Stop() {
		st.queued = false // the waiting window, cut short
	}
	st.mu.Unlock()
	s.schedule(st, 0)
}

func (s *Shipper) worker() {
	defer s.wg.Done()
	for {
		select {
		case st := <-s.work:
			st.mu.Lock()
			st.queued = false
			st.mu.Unlock()
			s.shipWithRetry(st)
		case <-s.stop:
			return
		}
	}
}

func (s *Shipper) shipWithRetry(st *stage) {
	// A stalled connection must not hold a worker forever.
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.UploadTimeout)
	err := s.ship(ctx, st)
	cancel()
	if errors.Is(err, errShipBusy) {
		s.schedule(st, st.o.SyncInterval) // the other process ships it, or this one next time
		return
	}
	if err != nil && s.ctx.Err() != nil {
		return // closing: what is left stays staged
	}
	if err != nil {
		if s.opts.MaxStaging > 0 && s.staged.Load() > s.opts.MaxStaging {
			s.overLimit()
		}
		st.mu.Lock()
		st.failures++
		failures := st.failures
		st.lastErr, st.lastErrAt = err.Error(), time.Now()
		st.mu.Unlock()
		s.stats.failures.Add(1)
		backoff := st.o.SyncInterval << min(failures, 10)
		backoff = min(backoff, s.opts.MaxBackoff)
		backoff = backoff/2 + rand.N(backoff/2+1)
		level := slog.LevelError
		if s.outageFailed(err) {
			level = slog.LevelDebug // the outage is logged once (outage.go), not per database and retry
		}
		s.log.Log(context.Background(), level, "upload failed; staged transactions are kept and retried",
			"db", st.db, "replica", s.opts.Client.URL(), "attempt", failures, "retry_in", backoff.Round(time.Millisecond), "err", err)
		s.schedule(st, backoff)
		return
	}
	st.mu.Lock()
	failures := st.failures
	st.failures = 0
	st.mu.Unlock()
	s.outageShipped()
	if failures > 0 {
		s.log.Debug("upload recovered", "db", st.db, "after_attempts", failures)
	}
}

// Flush seals and uploads everything staged for every database, retrying
// until ctx is done, or for FlushTimeout when ctx has no deadline. The error
// says, per database, which transactions stay staged (they ship at the next
// start).
func (s *Shipper) Flush(ctx context.Context) error {
	ctx, cancel := s.bounded(ctx)
	defer cancel()
	stages := s.allStages()
	var errs []error
	for _, st := range stages {
		for {
			err := s.ship(ctx, st)
			if err == nil {
				break
			}
			select {
			case <-ctx.Done():
				errs = append(errs, st.leftStaged(s.opts.Dir, err))
			case <-time.After(s.retryDelay(st, err)):
				continue
			}
			break
		}
	}
	return errors.Join(errs...)
}

// FlushDB seals and uploads what is staged for one database, retrying until
// ctx is done; what is left stays staged.
func (s *Shipper) FlushDB(ctx context.Context, db string) error {
	st, err := s.stage(db)
	if err != nil {
		return err
	}
	ctx, cancel := s.bounded(ctx)
	defer cancel()
	for {
		err := s.ship(ctx, st)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return st.leftStaged(s.opts.Dir, err)
		case <-time.After(s.retryDelay(st, err)):
		}
	}
}

// FlushDetail uploads the transactions one by one (the transaction log)
// of what one database shipped since the last level-1 pass, without
// waiting for that pass: a process about to end (the VFS's last
// connection closes) does not leave them for the next start.
func (s *Shipper) FlushDetail(ctx context.Context, db string) error {
	st, err := s.stage(db)
	if err != nil {
		return err
	}
	ctx, cancel := s.bounded(ctx)
	defer cancel()
	if st.shared {
		// Wait for another process's compaction or shipment rather than
		// skip: this process may be the last one on the database.
		if err := st.compactLock.lock(); err != nil {
			return err
		}
		defer st.compactLock.unlock()
	}
	return s.uploadDetail(ctx, st)
}

// retryDelay is how long a flush waits before trying a database again:
// shortly when another process was shipping it (it is done soon), a batch
// window after a failure.
func (s *Shipper) retryDelay(st *stage, err error) time.Duration {
	if errors.Is(err, errShipBusy) {
		return 20 * time.Millisecond
	}
	return st.o.SyncInterval
}

// bounded gives ctx the deadline FlushTimeout if it has none: a flush
// during an outage must end (an application's deferred Close must not
// hang its exit).
func (s *Shipper) bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, s.opts.FlushTimeout)
}

// Unshipped counts the transactions staged and not uploaded yet, and the
// databases they belong to.
func (s *Shipper) Unshipped() (txs uint64, dbs int) {
	for _, st := range s.allStages() {
		st.mu.Lock()
		if st.known && st.pos.TXID > st.shipped.TXID {
			txs += uint64(st.pos.TXID - st.shipped.TXID)
			dbs++
		}
		st.mu.Unlock()
	}
	return txs, dbs
}

// Close flushes (bounded by ctx) and stops the workers. What could not be
// uploaded stays staged for the next start.
func (s *Shipper) Close(ctx context.Context) error {
	err := s.Flush(ctx)
	if err == nil {
		// The per-transaction detail of the last batches goes up now, not
		// at the next start.
		dctx, cancel := s.bounded(ctx)
		s.forEachDB(func(st *stage) error {
			return s.uploadDetail(dctx, st)
		})
		cancel()
	}
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.stop)
	}
	stages := s.stages
	s.mu.Unlock()
	s.cancel() // uploads and compactions in flight end now
	s.wg.Wait()
	for _, st := range stages {
		st.close()
	}
	return err
}

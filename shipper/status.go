package shipper

// What the shipper can tell about itself: counters since it started, where
// each database stands (captured, shipped, how far behind), and a forced
// snapshot. Metrics, `walsync status` and the summary log read these.

import (
	"context"
	"errors"
	"sort"
	"sync/atomic"
	"time"

	"github.com/superfly/ltx"
	"github.com/walsync/walsync/storage"
)

// behindMark: the unshipped transactions from txid on were first staged at
// at. One mark per batch, so a database holds a handful.
type behindMark struct {
	txid ltx.TXID
	at   time.Time
}

// noteStaged records a staged transaction; st.mu is held.
func (st *stage) noteStaged(txid ltx.TXID) {
	st.active = true
	if len(st.behind) == 0 || st.markNext {
		st.behind = append(st.behind, behindMark{txid: txid, at: time.Now()})
		st.markNext = false
	}
}

// noteShipped drops the marks of batches now wholly shipped and returns
// how long the oldest of them waited; st.mu is held.
func (st *stage) noteShipped() time.Duration {
	var waited time.Duration
	if len(st.behind) > 0 {
		waited = time.Since(st.behind[0].at)
	}
	if st.shipped.TXID >= st.pos.TXID {
		st.behind = st.behind[:0]
		return waited
	}
	for len(st.behind) > 1 && st.behind[1].txid <= st.shipped.TXID+1 {
		st.behind = st.behind[1:]
	}
	return waited
}

// oldestUnshipped is when the oldest transaction not on the replica was
// staged (zero: none); st.mu is held.
func (st *stage) oldestUnshippedLocked() time.Time {
	if !st.known || st.pos.TXID <= st.shipped.TXID || len(st.behind) == 0 {
		return time.Time{}
	}
	return st.behind[0].at
}

// stats are the shipper's counters.
type stats struct {
	txStaged  atomic.Uint64
	txShipped atomic.Uint64
	resyncs   atomic.Uint64
	failures  atomic.Uint64
}

// Stats are the shipper's counters since it started and its totals now.
type Stats struct {
	Databases           int       // known to this shipper
	TransactionsStaged  uint64    // staged (captured) since the start
	TransactionsShipped uint64    // uploaded since the start
	Resyncs             uint64    // databases whose staging disagreed with the replica and were captured anew
	FailedShipments     uint64    // shipments that failed (each retried)
	StagedBytes         int64     // on local disk, waiting for upload
	OldestUnshipped     time.Time // the oldest transaction not on the replica was staged then (zero: none)
}

// Stats returns the counters and totals.
func (s *Shipper) Stats() Stats {
	out := Stats{
		TransactionsStaged: s.stats.txStaged.Load(), TransactionsShipped: s.stats.txShipped.Load(),
		Resyncs: s.stats.resyncs.Load(), FailedShipments: s.stats.failures.Load(), StagedBytes: s.staged.Load(),
	}
	for _, st := range s.allStages() {
		out.Databases++
		st.mu.Lock()
		if t := st.oldestUnshippedLocked(); !t.IsZero() && (out.OldestUnshipped.IsZero() || t.Before(out.OldestUnshipped)) {
			out.OldestUnshipped = t
		}
		st.mu.Unlock()
	}
	return out
}

// DBStatus is where one database stands.
type DBStatus struct {
	DB              string
	Captured        ltx.TXID  // last staged
	Shipped         ltx.TXID  // last on the replica
	OldestUnshipped time.Time // zero: everything captured is on the replica
	Failing         bool      // its last shipment failed
	LastError       string    // the last failed shipment's error, and when
	LastErrorAt     time.Time
}

// Lag is how long the oldest transaction not on the replica has waited.
func (d DBStatus) Lag(now time.Time) time.Duration {
	if d.OldestUnshipped.IsZero() {
		return 0
	}
	return now.Sub(d.OldestUnshipped)
}

// Status returns every known database's state, sorted by name.
func (s *Shipper) Status() []DBStatus {
	stages := s.allStages()
	out := make([]DBStatus, 0, len(stages))
	for _, st := range stages {
		st.mu.Lock()
		d := DBStatus{DB: st.db, Shipped: st.shipped.TXID, OldestUnshipped: st.oldestUnshippedLocked(),
			Failing: st.failures > 0, LastError: st.lastErr, LastErrorAt: st.lastErrAt}
		if st.known {
			d.Captured = st.pos.TXID
		}
		st.mu.Unlock()
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].DB < out[j].DB })
	return out
}

// StagedBytes is what a database's staging holds waiting for upload (the
// copies kept for compaction are not counted).
func (s *Shipper) StagedBytes(db string) int64 {
	s.mu.Lock()
	st, ok := s.stages[db]
	s.mu.Unlock()
	if !ok {
		return 0
	}
	return st.diskBytes()
}

// ErrUnknownDB is returned for a database this shipper has not seen.
var ErrUnknownDB = errors.New("no such database")

type snapshotRequest struct {
	st   *stage
	done chan error
}

// SnapshotNow uploads what is staged for db, then writes a level-9
// snapshot of its latest TXID (unless the latest file is one already) and
// returns that TXID. It runs in the compaction goroutine, between its
// passes.
func (s *Shipper) SnapshotNow(ctx context.Context, db string) (ltx.TXID, error) {
	s.mu.Lock()
	st, ok := s.stages[db]
	s.mu.Unlock()
	if !ok {
		return 0, ErrUnknownDB
	}
	if err := s.FlushDB(ctx, db); err != nil {
		return 0, err
	}
	req := snapshotRequest{st: st, done: make(chan error, 1)}
	select {
	case s.snapshots <- req:
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-s.stop:
		return 0, errors.New("shutting down")
	}
	select {
	case err := <-req.done:
		if err != nil {
			return 0, err
		}
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	snaps, err := s.opts.Client.LTXFiles(ctx, db, storage.SnapshotLevel)
	if err != nil || len(snaps) == 0 {
		return 0, errors.Join(err, errors.New("no snapshot on the replica after writing one"))
	}
	return snaps[len(snaps)-1].MaxTXID, nil
}

// forcedSnapshot runs a requested snapshot (compaction goroutine).
func (s *Shipper) forcedSnapshot(req snapshotRequest) {
	req.st.forget(storage.SnapshotLevel) // a snapshot now, even if nothing shipped since the last look
	req.done <- s.compactOne(req.st, s.snapshot)
}

// Client is the replica this shipper uploads to.
func (s *Shipper) Client() storage.Client { return s.opts.Client }

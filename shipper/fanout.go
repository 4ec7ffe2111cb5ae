package shipper

// Several replicas: one Shipper per replica, each with its own staging
// directory, position, retries, compaction and retention, so one replica
// down never delays another. The capture is one: Fanout stages each of its
// transactions into every Shipper.
//
// The replicas' positions can differ: a replica added to an existing
// setup, one whose staging could not take a transaction, one that lost
// files. Capture goes on from the most advanced position, and a replica
// behind it is skipped until the capture starts again (at the next file
// operation on the database, or at the next start) with a transaction that
// holds every page: that replica's history starts again from it (a
// snapshot; restores before it use what it held). A transaction staged into
// at least one replica is never refused: the commit goes on, and the
// replicas that missed it catch up with the whole database.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/walsync/walsync/capture"
)

// MaxReplicas bounds the replicas of one process.
const MaxReplicas = 16

// Fanout stages every captured transaction into several Shippers. The
// first one's staging also holds the databases' page checksums.
type Fanout struct {
	shippers []*Shipper
	log      *slog.Logger

	mu     sync.Mutex
	behind map[string]uint32 // per database, a bit per shipper that missed transactions
}

// NewFanout returns a Stager over shippers, one per replica.
func NewFanout(shippers []*Shipper, log *slog.Logger) (*Fanout, error) {
	if len(shippers) == 0 || len(shippers) > MaxReplicas {
		return nil, fmt.Errorf("%d replicas: give 1 to %d", len(shippers), MaxReplicas)
	}
	if log == nil {
		log = slog.Default()
	}
	return &Fanout{shippers: shippers, log: log, behind: map[string]uint32{}}, nil
}

// Shippers returns the shippers, one per replica.
func (f *Fanout) Shippers() []*Shipper { return f.shippers }

func (f *Fanout) behindOf(db string) uint32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.behind[db]
}

// fellBehind records that shipper i missed a transaction of db.
func (f *Fanout) fellBehind(db string, i int, why error) {
	f.mu.Lock()
	was := f.behind[db]&(1<<i) != 0
	f.behind[db] |= 1 << i
	f.mu.Unlock()
	if !was {
		f.log.Warn("a replica missed a transaction: it catches up with the whole database when the capture starts again",
			"db", db, "replica", f.shippers[i].opts.Client.URL(), "err", why)
	}
}

// caughtUp records that shipper i staged a transaction holding every page.
func (f *Fanout) caughtUp(db string, i int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.behind[db] &^= 1 << i; f.behind[db] == 0 {
		delete(f.behind, db)
	}
}

// Position returns the most advanced position of db among the replicas.
// The replicas at another one (or whose position cannot be read) are
// behind: the capture that starts from it begins with the whole database
// (FullNeeded). It fails only when no replica's position can be read.
func (f *Fanout) Position(ctx context.Context, db string) (capture.Pos, error) {
	if len(f.shippers) == 1 {
		return f.shippers[0].Position(ctx, db)
	}
	pos := make([]capture.Pos, len(f.shippers))
	errs := make([]error, len(f.shippers))
	var wg sync.WaitGroup
	for i, s := range f.shippers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pos[i], errs[i] = s.Position(ctx, db)
		}()
	}
	wg.Wait()
	lead := -1
	for i := range f.shippers {
		if errs[i] == nil && (lead < 0 || pos[i].TXID > pos[lead].TXID) {
			lead = i
		}
	}
	if lead < 0 {
		return capture.Pos{}, errors.Join(errs...)
	}
	for i := range f.shippers {
		if errs[i] != nil {
			f.fellBehind(db, i, errs[i])
		} else if pos[i] != pos[lead] {
			f.fellBehind(db, i, fmt.Errorf("at TXID %d while %s is at %d", pos[i].TXID, f.shippers[lead].opts.Client.URL(), pos[lead].TXID))
		}
	}
	return pos[lead], nil
}

// FullNeeded reports whether a replica is behind on db: the capture that
// starts now must begin with the whole database.
func (f *Fanout) FullNeeded(db string) bool { return f.behindOf(db) != 0 }

// Stage stages tx into every replica that is not behind (and, when tx
// holds every page, into those too). It fails only when no replica took
// it; when some did and a replica is behind, it returns capture.ErrResync:
// the capture starts again with the whole database, and the commit goes on.
func (f *Fanout) Stage(db string, tx *capture.Tx) error {
	behind := f.behindOf(db)
	var errs []error // allocated on the first failure only: this runs for every commit
	staged := false
	for i, s := range f.shippers {
		if behind&(1<<i) != 0 && !tx.Full {
			continue
		}
		if err := s.Stage(db, tx); err != nil {
			if errs == nil {
				errs = make([]error, len(f.shippers))
			}
			errs[i] = err
			continue
		}
		staged = true
		if tx.Full && behind&(1<<i) != 0 {
			f.caughtUp(db, i)
			behind &^= 1 << i
		}
	}
	if !staged {
		// None took it, so none is behind: the capture retries it
		// everywhere.
		for _, err := range errs {
			if err != nil {
				return err
			}
		}
		return fmt.Errorf("%s: every replica is behind: %w", db, capture.ErrResync)
	}
	// The replicas that missed what others took are behind.
	for i, err := range errs {
		if err != nil {
			f.fellBehind(db, i, err)
			behind |= 1 << i
		}
	}
	if behind != 0 {
		return fmt.Errorf("%s: a replica is behind: %w", db, capture.ErrResync)
	}
	return nil
}

// Batch runs fn, whose transactions are staged into every replica, and
// writes each replica's staging once. A replica whose write fails falls
// behind; the batch fails only when the write of every replica did.
func (f *Fanout) Batch(db string, fn func() error) error {
	if len(f.shippers) == 1 {
		return f.shippers[0].Batch(db, fn)
	}
	inner := fn
	werrs := make([]error, len(f.shippers))
	failed := 0
	for i := len(f.shippers) - 1; i >= 0; i-- {
		s, next := f.shippers[i], inner
		inner = func() error {
			ferr, werr := s.batch(db, next)
			if werrs[i] = werr; werr != nil {
				failed++
			}
			return ferr
		}
	}
	ferr := inner()
	if failed == len(f.shippers) {
		// Written nowhere: every staged position went back, the capture
		// retries from there.
		return errors.Join(append([]error{ferr}, werrs...)...)
	}
	for i, werr := range werrs {
		if werr != nil {
			f.fellBehind(db, i, werr) // catches up with the whole database (Stage)
		}
	}
	return ferr
}

// Sync makes db's staged transactions durable in every replica's staging;
// a replica whose staging fails falls behind. It fails only when all do.
func (f *Fanout) Sync(db string) error {
	var errs []error // allocated on the first failure only: this runs at every fsync
	failed := 0
	for i, s := range f.shippers {
		if err := s.Sync(db); err != nil {
			if errs == nil {
				errs = make([]error, len(f.shippers))
			}
			errs[i] = err
			failed++
		}
	}
	if failed == len(f.shippers) {
		return errors.Join(errs...)
	}
	for i, err := range errs {
		if err != nil {
			f.fellBehind(db, i, err)
		}
	}
	return nil
}

// StateDir is the first replica's staging directory of db.
func (f *Fanout) StateDir(db string) string { return f.shippers[0].StateDir(db) }

// Shared is nil: several replicas are for one process (the mount).
func (f *Fanout) Shared(db string) capture.Shared { return nil }

// ShipNow ends db's batch window on every replica.
func (f *Fanout) ShipNow(db string) {
	for _, s := range f.shippers {
		s.ShipNow(db)
	}
}

// Unshipped counts, over the replicas, the transactions staged and not
// uploaded and the databases they belong to.
func (f *Fanout) Unshipped() (txs uint64, dbs int) {
	for _, s := range f.shippers {
		t, d := s.Unshipped()
		txs += t
		dbs = max(dbs, d)
	}
	return txs, dbs
}

// Close closes every shipper, at the same time (each bounded by ctx).
func (f *Fanout) Close(ctx context.Context) error {
	errs := make([]error, len(f.shippers))
	var wg sync.WaitGroup
	for i, s := range f.shippers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Close(ctx); err != nil {
				errs[i] = fmt.Errorf("replica %s: %w", s.opts.Client.URL(), err)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

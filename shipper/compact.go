package shipper

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/superfly/ltx"
	"github.com/walsync/walsync/storage"
)

// Compaction keeps restores short and the replica small:
//
//   - level N (1..len(Levels)) merges the files of level N-1 that follow its
//     last file, every Levels[N-1];
//   - a level-9 snapshot (TXID 1 to the latest) is built every SnapshotInterval
//     from the shortest chain to the latest TXID;
//   - retention deletes what no restore point inside the retention window
//     needs: everything up to the newest snapshot that is older than the
//     window, except that snapshot.
//
// It runs in one goroutine for all databases and skips databases that have
// shipped nothing since it last looked.

// DefaultLevels are the compaction intervals of levels 1, 2 and 3.
var DefaultLevels = []time.Duration{30 * time.Second, 5 * time.Minute, time.Hour}

func (s *Shipper) compactLoop() {
	defer s.wg.Done()
	t := time.NewTicker(s.compactTick())
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case now := <-t.C:
			s.expireDue()
			s.compactDue(now)
		case req := <-s.snapshots:
			s.forcedSnapshot(req)
		}
	}
}

// compactTick is how often the compaction loop looks for work: a quarter
// of the shortest default interval, at most a second (a database may have
// shorter intervals of its own, Options.ForDB).
func (s *Shipper) compactTick() time.Duration {
	tick := min(s.opts.SnapshotInterval, 4*time.Second)
	for _, d := range s.opts.Levels {
		tick = min(tick, d)
	}
	return max(tick/4, 10*time.Millisecond)
}

// compactDue runs, for each database, the compactions whose interval (its
// own) has passed since it last ran them.
func (s *Shipper) compactDue(now time.Time) {
	for _, st := range s.allStages() {
		select {
		case <-s.stop:
			return
		default:
		}
		for i, d := range st.o.Levels {
			if st.due(i, d, now) {
				s.compactLogged(st, func(st *stage) error { return s.compactLevel(st, i+1) })
			}
		}
		if st.due(len(st.o.Levels), st.o.SnapshotInterval, now) {
			s.compactLogged(st, s.snapshot)
			s.compactLogged(st, s.enforceRetention)
		}
	}
}

// due reports whether the job i (a level, then snapshots) of a database is
// due at now, every d, and records that it runs.
func (st *stage) due(i int, d time.Duration, now time.Time) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.lastRun == nil {
		st.lastRun = make([]time.Time, len(st.o.Levels)+1)
		for j := range st.lastRun {
			st.lastRun[j] = now // one interval after the database is first seen
		}
	}
	if now.Sub(st.lastRun[i]) < d {
		return false
	}
	st.lastRun[i] = now
	return true
}

func (s *Shipper) compactLogged(st *stage, fn func(st *stage) error) {
	if err := s.compactOne(st, fn); err != nil {
		s.log.Warn("compaction failed; it is retried at the next interval", "db", st.db, "err", err)
	}
}

func (s *Shipper) forEachDB(fn func(st *stage) error) {
	stages := s.allStages()
	for _, st := range stages {
		select {
		case <-s.stop:
			return
		default:
		}
		if err := s.compactOne(st, fn); err != nil {
			s.log.Warn("compaction failed; it is retried at the next interval", "db", st.db, "err", err)
		}
	}
}

// compactOne runs fn on a database; with shared staging only when no other
// process is shipping or compacting it.
func (s *Shipper) compactOne(st *stage, fn func(st *stage) error) error {
	if st.shared {
		ok, err := st.compactLock.tryLock()
		if err != nil || !ok {
			return err
		}
		defer st.compactLock.unlock()
	}
	return fn(st)
}

// upToDate reports whether the database shipped nothing since key last saw
// it, and records what it sees now.
func (st *stage) upToDate(key int) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.compacted == nil {
		st.compacted = map[int]ltx.TXID{}
	}
	seen, ok := st.compacted[key]
	if ok && seen == st.shipped.TXID {
		return true
	}
	st.compacted[key] = st.shipped.TXID
	return false
}

// wroteFile records a file written at level.
func (st *stage) wroteFile(level int) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.newFiles == nil {
		st.newFiles = map[int]int{}
	}
	st.newFiles[level]++
}

// newFilesAt returns how many files this run wrote at level since its last
// compaction into the level above (0 when unknown).
func (st *stage) newFilesAt(level int) int {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.newFiles[level]
}

// compactedInto records a compaction into level of what level-1 held when it
// was listed, counted merged: files written there since, during the
// compaction, still count.
func (st *stage) compactedInto(level, merged int) {
	st.wroteFile(level)
	st.mu.Lock()
	defer st.mu.Unlock()
	st.newFiles[level-1] = max(0, st.newFiles[level-1]-merged)
}

// nothingToMerge reports whether level-1 is known to have fewer than two
// files since the last compaction into level.
func (st *stage) nothingToMerge(level int) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	n, ok := st.newFiles[level-1]
	return ok && n < 2
}

func (st *stage) forget(key int) {
	st.mu.Lock()
	defer st.mu.Unlock()
	delete(st.compacted, key)
}

// compactLevel merges the files of level-1 that follow the last file of
// level. At level 1 it first uploads the per-transaction detail kept since
// the last pass, and records which level-0 files level 1 covers (they
// expire later: expire.go).
func (s *Shipper) compactLevel(st *stage, level int) error {
	if level == 1 {
		if err := s.uploadDetail(s.ctx, st); err != nil {
			return err
		}
	}
	if st.nothingToMerge(level) || st.upToDate(level) {
		return nil
	}
	ctx := s.ctx
	listed := st.newFilesAt(level - 1) // before listing: what is written later counts for the next pass
	dst, err := s.opts.Client.LTXFiles(ctx, st.db, level)
	if err != nil {
		st.forget(level)
		return err
	}
	src, err := s.opts.Client.LTXFiles(ctx, st.db, level-1)
	if err != nil {
		st.forget(level)
		return err
	}
	var from ltx.TXID
	if len(dst) > 0 {
		from = dst[len(dst)-1].MaxTXID
	} else if len(src) > 0 {
		from = src[0].MinTXID - 1
	}
	if level == 1 {
		st.coveredL0(src, dst)
	}
	chain := storage.Chain(src, from, 0)
	if len(chain) < 2 {
		chain, err = s.afterGap(ctx, st, src, from, chain)
		if err != nil {
			st.forget(level)
			return err
		}
	}
	if len(chain) < 2 {
		// Nothing to merge: a single file would only be copied. It is
		// merged with the next one that arrives.
		return nil
	}
	err = s.compactInto(ctx, st, chain, level)
	if errors.Is(err, errPageSizes) {
		// The chain crosses a page-size change: this level starts again
		// after the snapshot written at the change (restores inside the
		// gap use the lower levels).
		chain, err = s.afterPageSizeChange(ctx, st, src, chain)
		if err == nil {
			err = s.compactInto(ctx, st, chain, level)
		}
	}
	if err != nil {
		st.forget(level)
		if errors.Is(err, syscall.ENOSPC) {
			s.dropAllKept(st, "staging is full") // the copies: compaction downloads instead
		}
		return err
	}
	// Files left after the chain (past a restart of the history, afterGap)
	// are not merged: they still count, and the next pass looks even if
	// nothing ships meanwhile.
	left := 0
	for _, fi := range src {
		if fi.MinTXID > chain[len(chain)-1].MaxTXID {
			left++
		}
	}
	st.compactedInto(level, listed-left)
	if left > 0 {
		st.forget(level)
	}
	if level == 1 {
		st.coveredL0(chain, []*ltx.FileInfo{{Level: 1, MinTXID: chain[0].MinTXID, MaxTXID: chain[len(chain)-1].MaxTXID}})
	}
	return nil
}

// afterGap: when the files of src stop following each other after chain
// (from on), because the replica's history started again from a snapshot
// (a replica that fell behind the others, upload), the level goes on from
// that snapshot. It returns chain unchanged when there is no such gap.
func (s *Shipper) afterGap(ctx context.Context, st *stage, src []*ltx.FileInfo, from ltx.TXID, chain []*ltx.FileInfo) ([]*ltx.FileInfo, error) {
	end := from
	if len(chain) > 0 {
		end = chain[len(chain)-1].MaxTXID
	}
	var next *ltx.FileInfo
	for _, fi := range src {
		if fi.MinTXID > end+1 {
			next = fi
			break
		}
	}
	if next == nil {
		return chain, nil
	}
	snaps, err := s.opts.Client.LTXFiles(ctx, st.db, storage.SnapshotLevel)
	if err != nil {
		return nil, err
	}
	for _, fi := range snaps {
		if fi.MinTXID == 1 && fi.MaxTXID == next.MinTXID {
			return storage.Chain(src, next.MinTXID-1, 0), nil
		}
	}
	return chain, nil // not a restart: the files missing may still come
}

// errPageSizes: the files of a chain have different page sizes.
var errPageSizes = errors.New("files of different page sizes")

// afterPageSizeChange returns the files of src from the newest snapshot
// inside chain on: the one written where the page size changed.
func (s *Shipper) afterPageSizeChange(ctx context.Context, st *stage, src, chain []*ltx.FileInfo) ([]*ltx.FileInfo, error) {
	snaps, err := s.opts.Client.LTXFiles(ctx, st.db, storage.SnapshotLevel)
	if err != nil {
		return nil, err
	}
	first, last := chain[0].MinTXID, chain[len(chain)-1].MaxTXID
	var at ltx.TXID
	for _, fi := range snaps {
		if fi.MaxTXID >= first && fi.MaxTXID < last && fi.MaxTXID > at {
			at = fi.MaxTXID
		}
	}
	// The snapshot is of the change's transaction, the first of its
	// level-0 file.
	if after := storage.Chain(src, at-1, 0); at > 0 && len(after) > 0 {
		return after, nil
	}
	return nil, fmt.Errorf("compact %s: %w, and no snapshot where the page size changed", ltx.FormatFilename(first, last), errPageSizes)
}

// snapshot writes a level-9 snapshot of the latest TXID if there is none.
func (s *Shipper) snapshot(st *stage) error {
	if st.upToDate(storage.SnapshotLevel) {
		return nil
	}
	ctx := s.ctx
	all, err := storage.AllLTXFiles(ctx, s.opts.Client, st.db)
	if err != nil {
		st.forget(storage.SnapshotLevel)
		return err
	}
	chain := storage.Chain(all, 0, 0)
	if len(chain) == 0 || len(chain) == 1 && chain[0].Level == storage.SnapshotLevel {
		return nil
	}
	for _, fi := range chain[1:] {
		if fi.MinTXID == 1 {
			return nil
		}
	}
	if err := s.compactInto(ctx, st, chain, storage.SnapshotLevel); err != nil {
		st.forget(storage.SnapshotLevel)
		return err
	}
	return nil
}

// compactInto merges a contiguous chain of files into one file at level.
func (s *Shipper) compactInto(ctx context.Context, st *stage, chain []*ltx.FileInfo, level int) error {
	min, max := chain[0].MinTXID, chain[len(chain)-1].MaxTXID
	rdrs := make([]io.Reader, len(chain))
	for i, fi := range chain {
		rc, ok := st.openKept(fi) // no download when staging has a copy
		if !ok {
			var err error
			if rc, err = s.opts.Client.OpenLTXFile(ctx, st.db, fi.Level, fi.MinTXID, fi.MaxTXID); err != nil {
				return err
			}
		}
		defer rc.Close()
		rdrs[i] = rc
	}
	if err := os.MkdirAll(st.dir, dirMode); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(st.dir, ".compact-*")
	if err != nil {
		return err
	}
	out := &tempFile{File: tmp}
	defer out.Close()
	bw := getBufWriter(tmp)
	defer putBufWriter(bw)
	c, err := ltx.NewCompactor(bw, rdrs)
	if err != nil {
		return err
	}
	storage.SetCompactorSpill(c, st.dir) // a big file's page index goes to disk
	defer c.Cleanup()
	if err := c.Compact(ctx); err != nil {
		if strings.Contains(err.Error(), "mismatched page sizes") {
			err = fmt.Errorf("%w: %v", errPageSizes, err)
		}
		return fmt.Errorf("compact %s into level %d: %w", ltx.FormatFilename(min, max), level, err)
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	ts := time.UnixMilli(c.Header().Timestamp)
	if err := s.opts.Client.WriteLTXFile(ctx, st.db, level, min, max, out, ts); err != nil {
		return fmt.Errorf("upload level %d %s: %w", level, ltx.FormatFilename(min, max), err)
	}
	if level < len(st.o.Levels) {
		st.keepLTX(level, min, max, out) // the level above is compacted from it
	}
	if level != storage.SnapshotLevel {
		st.dropKept(chain)
	}
	s.log.Debug("compacted", "db", st.db, "level", level, "min_txid", min, "max_txid", max, "files", len(chain))
	return nil
}

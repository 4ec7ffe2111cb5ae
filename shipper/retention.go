package shipper

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/superfly/ltx"
	"github.com/walsync/walsync/storage"
)

// Retention deletes what no restore point needs. Kept are:
//
//   - every TXID inside the window (Options.Retention): the newest
//     snapshot older than the window (the base) and every file after it;
//   - grandfather-father-son (Options.Keep): the newest snapshot of each
//     of the newest N hours, days, weeks and months that have one. A
//     snapshot (level 9) holds the whole database from TXID 1, so it
//     restores on its own.
//
// Everything else up to the base goes. PlanRetention decides, without I/O;
// ApplyRetention lists a database, plans and (unless dry) deletes.

// GFS keeps the newest snapshot of each of the newest Hourly hours, Daily
// days, Weekly ISO weeks and Monthly months (UTC) that have a snapshot.
type GFS struct{ Hourly, Daily, Weekly, Monthly int }

// Decision is a file retention deletes or keeps past the window, and why.
type Decision struct {
	File   *ltx.FileInfo
	Reason string
}

// PlanRetention returns, from every file of one database (all levels,
// transaction logs included), what retention deletes at now and which
// snapshots older than the window it keeps. Without a snapshot older than
// the window nothing is deleted: restoring the window's oldest TXID needs
// every file.
func PlanRetention(files []*ltx.FileInfo, now time.Time, window time.Duration, keep GFS) (del, kept []Decision) {
	cutoff := now.Add(-window)
	var snaps []*ltx.FileInfo
	var base *ltx.FileInfo
	for _, fi := range files {
		if fi.Level != storage.SnapshotLevel {
			continue
		}
		snaps = append(snaps, fi)
		if !fi.CreatedAt.After(cutoff) && (base == nil || fi.MaxTXID > base.MaxTXID) {
			base = fi
		}
	}
	if base == nil {
		return nil, nil
	}
	why := gfsKeep(snaps, keep)
	why[base] = append([]string{fmt.Sprintf("the restore point of the window's start (%s)", window)}, why[base]...)
	for _, fi := range files {
		switch {
		case fi.Level == storage.SnapshotLevel && fi.MaxTXID < base.MaxTXID:
			if r, ok := why[fi]; ok {
				kept = append(kept, Decision{fi, joinReasons(r)})
			} else {
				del = append(del, Decision{fi, fmt.Sprintf("a snapshot older than the %s window that no hourly, daily, weekly or monthly slot keeps", window)})
			}
		case fi.Level == storage.SnapshotLevel:
			if fi == base {
				kept = append(kept, Decision{fi, joinReasons(why[fi])})
			}
		case fi.MaxTXID <= base.MaxTXID:
			del = append(del, Decision{fi, fmt.Sprintf("before TXID %d, whose snapshot is the restore point of the %s window's start", base.MaxTXID, window)})
		}
	}
	return del, kept
}

// gfsKeep returns the snapshots each GFS class keeps, with the reasons.
func gfsKeep(snaps []*ltx.FileInfo, keep GFS) map[*ltx.FileInfo][]string {
	newest := slices.Clone(snaps)
	slices.SortFunc(newest, func(a, b *ltx.FileInfo) int {
		if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
			return c
		}
		return int(b.MaxTXID) - int(a.MaxTXID)
	})
	why := map[*ltx.FileInfo][]string{}
	for _, class := range []struct {
		name   string
		n      int
		period func(t time.Time) string
	}{
		{"hourly", keep.Hourly, func(t time.Time) string { return t.Format("2006-01-02T15h") }},
		{"daily", keep.Daily, func(t time.Time) string { return t.Format("2006-01-02") }},
		{"weekly", keep.Weekly, func(t time.Time) string { y, w := t.ISOWeek(); return fmt.Sprintf("%d-W%02d", y, w) }},
		{"monthly", keep.Monthly, func(t time.Time) string { return t.Format("2006-01") }},
	} {
		last, n := "", 0
		for _, fi := range newest {
			if n >= class.n {
				break
			}
			if p := class.period(fi.CreatedAt.UTC()); p != last {
				last, n = p, n+1
				why[fi] = append(why[fi], fmt.Sprintf("%s %d of %d (%s)", class.name, n, class.n, p))
			}
		}
	}
	return why
}

func joinReasons(r []string) string { return strings.Join(r, "; ") }

// ApplyRetention lists every file of db, plans retention at now and,
// unless dryRun, deletes what the plan says. It returns the plan.
func ApplyRetention(ctx context.Context, c storage.Client, db string, now time.Time, window time.Duration, keep GFS, dryRun bool) (del, kept []Decision, err error) {
	var files []*ltx.FileInfo
	for level := storage.TxLogLevel; level <= storage.MaxLevel; level++ {
		infos, err := c.LTXFiles(ctx, db, level)
		if err != nil {
			return nil, nil, err
		}
		files = append(files, infos...)
	}
	del, kept = PlanRetention(files, now, window, keep)
	if dryRun || len(del) == 0 {
		return del, kept, nil
	}
	byLevel := map[int][]*ltx.FileInfo{}
	for _, d := range del {
		byLevel[d.File.Level] = append(byLevel[d.File.Level], d.File)
	}
	for _, level := range slices.Sorted(maps.Keys(byLevel)) {
		if err := c.DeleteLTXFiles(ctx, db, byLevel[level]); err != nil {
			return del, kept, err
		}
	}
	return del, kept, nil
}

// enforceRetention applies retention to one database.
func (s *Shipper) enforceRetention(st *stage) error {
	if st.o.Retention <= 0 {
		return nil
	}
	del, _, err := ApplyRetention(s.ctx, s.opts.Client, st.db, time.Now(), st.o.Retention, st.o.Keep, false)
	if len(del) > 0 {
		s.log.Debug("retention", "db", st.db, "deleted", len(del))
	}
	return err
}

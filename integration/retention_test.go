package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/superfly/ltx"
	"github.com/walsync/walsync/restore"
	"github.com/walsync/walsync/storage"
	"github.com/walsync/walsync/storage/file"
)

// TestRetentionGFS: 30 simulated days of a database (two transactions and
// a snapshot every 6 hours, on a clock the test sets through the objects' times), then
// `walsync retention` with a 24-hour window and hourly, daily, weekly and
// monthly slots as of the simulated end. --dry-run deletes nothing and
// lists exactly what the real run then deletes, each with its reason. After
// it, every snapshot it says it keeps, and every TXID inside the window,
// restores and passes PRAGMA integrity_check with the rows it had; and
// snapshots were deleted (the policy did something).
func TestRetentionGFS(t *testing.T) {
	m := newMount(t, "--retention", "-1s", "--snapshot-interval", "10000h", "--compaction-levels", "10000h")
	db := m.path("g.db")
	shell(t, db, "PRAGMA journal_mode=WAL; CREATE TABLE t(i INTEGER PRIMARY KEY, v TEXT);")
	const steps = 120
	start := time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)
	type point struct {
		txid ltx.TXID
		rows int
		at   time.Time
	}
	var points []point
	for i := 1; i <= steps; i++ {
		// Two transactions a step: restoring the first needs the level-0
		// files after the snapshot before it, not only snapshots.
		shell(t, db, fmt.Sprintf("INSERT INTO t(v) VALUES('step %d'); INSERT INTO t(v) VALUES('step %d, again');", i, i))
		if out, err := runWalsyncStdout(t, "snapshot", db); err != nil {
			t.Fatalf("snapshot at step %d: %v %s", i, err, out)
		}
		points = append(points, point{m.latestTXID("g.db"), 2 * i, start.Add(time.Duration(i) * 6 * time.Hour)})
	}
	m.stop()
	end := points[len(points)-1].at.Add(time.Hour)
	// Each object gets the simulated time of the step that wrote it.
	dbDir := filepath.Join(m.rep, "g.db")
	stepOf := func(max ltx.TXID) point {
		for _, p := range points {
			if p.txid >= max {
				return p
			}
		}
		return points[len(points)-1]
	}
	objects := func() map[string]bool {
		all := map[string]bool{}
		_ = filepath.Walk(dbDir, func(p string, fi os.FileInfo, err error) error {
			if err == nil && !fi.IsDir() {
				all[p] = true
			}
			return nil
		})
		return all
	}
	for p := range objects() {
		level := 0
		if strings.Contains(p, "/ltx/9/") {
			level = storage.SnapshotLevel
		} else if strings.Contains(p, "/txlog/") {
			level = storage.TxLogLevel
		}
		_, max, err := storage.ParseFilename(level, filepath.Base(p))
		if err != nil {
			continue
		}
		at := stepOf(max).at
		if level == storage.SnapshotLevel {
			at = at.Add(time.Minute)
		}
		if err := os.Chtimes(p, at, at); err != nil {
			t.Fatal(err)
		}
	}
	before := objects()
	args := []string{"retention", "file://" + dbDir, "--retention", "24h", "--keep-hourly", "6", "--keep-daily", "7",
		"--keep-weekly", "3", "--keep-monthly", "2", "--now", end.Format(time.RFC3339)}
	dry, err := runWalsyncStdout(t, append(args, "--dry-run")...)
	if err != nil {
		t.Fatalf("retention --dry-run: %v\n%s", err, dry)
	}
	if after := objects(); len(after) != len(before) {
		t.Fatalf("--dry-run deleted %d objects", len(before)-len(after))
	}
	real, err := runWalsyncStdout(t, args...)
	if err != nil {
		t.Fatalf("retention: %v\n%s", err, real)
	}
	lines := func(out, prefix string) []string {
		var a []string
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, prefix) {
				a = append(a, strings.TrimPrefix(l, prefix))
			}
		}
		sort.Strings(a)
		return a
	}
	wouldDelete, deleted := lines(dry, "would delete "), lines(real, "deleted ")
	if strings.Join(wouldDelete, "\n") != strings.Join(deleted, "\n") || len(deleted) == 0 {
		t.Fatalf("--dry-run listed %d deletions, the run made %d:\n%s\n---\n%s", len(wouldDelete), len(deleted), dry, real)
	}
	after := objects()
	for p := range before {
		gone := !after[p]
		listed := strings.Contains(real, "deleted file://"+p+":")
		if gone != listed {
			t.Fatalf("%s: deleted %v, listed %v", p, gone, listed)
		}
	}
	snapsDeleted := 0
	for _, d := range deleted {
		if strings.Contains(d, "/ltx/9/") {
			snapsDeleted++
			if !strings.Contains(d, "no hourly, daily, weekly or monthly slot keeps") {
				t.Fatalf("snapshot deleted for another reason: %s", d)
			}
		}
	}
	if snapsDeleted == 0 {
		t.Fatalf("no snapshot deleted: the policy did nothing\n%s", real)
	}
	// Every kept snapshot and every TXID inside the window restores.
	rowsAt := func(txid ltx.TXID) int {
		for _, p := range points {
			if p.txid == txid {
				return p.rows
			}
			if p.txid > txid {
				return p.rows - 1 // the step's first transaction
			}
		}
		return -1
	}
	c := file.New(dbDir)
	check := func(txid ltx.TXID, what string) {
		t.Helper()
		out := filepath.Join(t.TempDir(), "r.db")
		if _, err := restore.Restore(context.Background(), c, "", out, restore.Options{TXID: txid}); err != nil {
			t.Fatalf("%s: restore TXID %d: %v", what, txid, err)
		}
		if got := shell(t, out, "PRAGMA integrity_check; SELECT count(*) FROM t;"); got != fmt.Sprintf("ok\n%d\n", rowsAt(txid)) {
			t.Fatalf("%s: TXID %d restores %q, want ok and %d rows", what, txid, got, rowsAt(txid))
		}
	}
	kept := lines(real, "keep ")
	if len(kept) < 2 {
		t.Fatalf("%d snapshots kept past the window:\n%s", len(kept), real)
	}
	var base ltx.TXID
	for _, k := range kept {
		_, max, err := storage.ParseFilename(storage.SnapshotLevel, filepath.Base(strings.Fields(k)[0]))
		if err != nil {
			t.Fatalf("keep line %q: %v", k, err)
		}
		check(max, "kept snapshot")
		if strings.Contains(k, "the restore point of the window's start") {
			base = max
		}
	}
	if base == 0 {
		t.Fatalf("no base among the kept snapshots:\n%s", real)
	}
	latest := points[len(points)-1].txid
	for txid := base; txid <= latest; txid++ {
		check(txid, "inside the window")
	}
}

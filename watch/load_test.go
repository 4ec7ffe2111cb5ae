package watch

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/superfly/ltx"
	"github.com/walsync/walsync/restore"
	"github.com/walsync/walsync/storage"
	"github.com/walsync/walsync/storage/file"
)

// TestScanUnderLoad: scans back to back while an application commits one
// row per transaction with its own autocheckpoint, explicit checkpoints of
// every kind (each restarting the WAL under the scans) and a reader holding
// snapshots: every TXID on the replica restores rows 0..k-1 for some k, and
// the last the database.
func TestScanUnderLoad(t *testing.T) {
	f := newFixture(t)
	path := filepath.Join(t.TempDir(), "a.db")
	app := openApp(t, path)
	ctx := context.Background()
	w, err := app.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	reader, err := sql.Open("sqlite3", "file:"+path+"?_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	r, err := reader.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	exec := func(c *sql.Conn, q string, args ...any) {
		t.Helper()
		if _, err := c.ExecContext(ctx, q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	exec(w, "PRAGMA wal_autocheckpoint=10")
	exec(w, "CREATE TABLE u(i INTEGER PRIMARY KEY, v TEXT)")
	if err := f.sc.Add("a.db", path); err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	scanned := make(chan int)
	go func() {
		n := 0
		for !stop.Load() {
			f.scan("a.db")
			n++
		}
		scanned <- n
	}()
	n := 1500
	if testing.Short() {
		n = 400
	}
	kinds := []string{"PASSIVE", "FULL", "RESTART", "TRUNCATE"}
	reading := false
	for i := range n {
		exec(w, "INSERT INTO u VALUES(?, ?)", i, strings.Repeat("x", 100+i%700))
		if i%25 == 0 {
			kind := kinds[(i/25)%4]
			if kind != "PASSIVE" && reading {
				exec(r, "COMMIT") // the others wait for readers
				reading = false
			}
			exec(w, "PRAGMA wal_checkpoint("+kind+")")
		}
		if i%40 == 10 {
			exec(r, "BEGIN")
			var c int
			if err := r.QueryRowContext(ctx, "SELECT count(*) FROM u").Scan(&c); err != nil {
				t.Fatal(err)
			}
			reading = true
		}
		if i%40 == 30 && reading {
			exec(r, "COMMIT")
			reading = false
		}
	}
	stop.Store(true)
	scans := <-scanned
	f.scan("a.db")
	// Everything uploaded, the transactions one by one too, and no
	// compaction deletes a file under the restores that follow.
	if err := f.sh.Close(ctx); err != nil {
		t.Fatal(err)
	}
	c := file.New(filepath.Join(f.root, "a.db"))
	latest, err := storage.Latest(ctx, c, "")
	if err != nil || latest == nil {
		t.Fatalf("nothing on the replica: %v", err)
	}
	t.Logf("%d commits, %d scans, %d TXIDs", n, scans, latest.MaxTXID)
	for txid := ltx.TXID(1); txid <= latest.MaxTXID; txid++ {
		out := filepath.Join(t.TempDir(), "r.db")
		if _, err := restore.Restore(ctx, c, "", out, restore.Options{TXID: txid}); err != nil {
			t.Fatalf("restore TXID %d: %v", txid, err)
		}
		rows, max := restoredRows(t, out)
		if rows != max+1 {
			t.Fatalf("TXID %d: %d rows up to %d: not a state the application committed", txid, rows, max)
		}
		if txid == latest.MaxTXID && rows != n {
			t.Fatalf("the latest TXID %d has %d rows, want %d", txid, rows, n)
		}
	}
}

// restoredRows is the number of rows in u of a restored database and the
// largest i (-1: none, or no table yet).
func restoredRows(t *testing.T, path string) (rows, max int) {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.QueryRow("SELECT count(*), coalesce(max(i), -1) FROM u").Scan(&rows, &max)
	if err != nil && strings.Contains(err.Error(), "no such table") {
		return 0, -1
	}
	if err != nil {
		t.Fatalf("%s: %v", path, fmt.Errorf("read the restored rows: %w", err))
	}
	return rows, max
}

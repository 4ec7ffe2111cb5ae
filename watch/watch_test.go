package watch

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/walsync/walsync/restore"
	"github.com/walsync/walsync/shipper"
	"github.com/walsync/walsync/storage/file"
)

// sidecarFixture is a Sidecar over a shipper to a file replica, scanned by
// hand (no Run): each step is deterministic.
type sidecarFixture struct {
	t    *testing.T
	root string
	sh   *shipper.Shipper
	sc   *Sidecar
}

func newFixture(t *testing.T) *sidecarFixture {
	t.Helper()
	f := &sidecarFixture{t: t, root: t.TempDir()}
	sh, err := shipper.New(shipper.Options{Dir: t.TempDir(), Client: file.New(f.root), SyncInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	f.sh = sh
	sc, err := New(Options{Stager: sh})
	if err != nil {
		t.Fatal(err)
	}
	f.sc = sc
	t.Cleanup(func() { sh.Close(context.Background()) })
	return f
}

func (f *sidecarFixture) scan(name string) {
	f.t.Helper()
	f.sc.mu.Lock()
	e := f.sc.byName[name]
	f.sc.mu.Unlock()
	f.sc.scan(e)
}

// restored is the rows of t at the latest TXID on the replica, and that TXID.
func (f *sidecarFixture) restored(name string) (rows int, txid uint64) {
	f.t.Helper()
	if err := f.sh.FlushDB(context.Background(), name); err != nil {
		f.t.Fatal(err)
	}
	out := filepath.Join(f.t.TempDir(), "r.db")
	at, err := restore.Restore(context.Background(), file.New(filepath.Join(f.root, name)), "", out, restore.Options{})
	if err != nil {
		f.t.Fatal(err)
	}
	db, err := sql.Open("sqlite3", "file:"+out+"?mode=ro")
	if err != nil {
		f.t.Fatal(err)
	}
	defer db.Close()
	if err := db.QueryRow("SELECT count(*) FROM t").Scan(&rows); err != nil {
		f.t.Fatal(err)
	}
	return rows, uint64(at)
}

func openApp(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+path+"?_journal_mode=WAL&_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	for _, q := range []string{"PRAGMA wal_autocheckpoint=0", "CREATE TABLE IF NOT EXISTS t(x)"} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	return db
}

func insert(t *testing.T, db *sql.DB, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if _, err := db.Exec("INSERT INTO t VALUES(?)", fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestScanFollowsWAL: each commit read by a scan is one TXID; a scan that
// finds the WAL restarted after every frame it had read continues one TXID
// per commit (continuity proven from the file); one that finds it
// truncated after commits it never read ships them as one transaction;
// nothing is written into the database.
func TestScanFollowsWAL(t *testing.T) {
	f := newFixture(t)
	path := filepath.Join(t.TempDir(), "a.db")
	app := openApp(t, path)
	if err := f.sc.Add("a.db", path); err != nil {
		t.Fatal(err)
	}
	f.scan("a.db") // first sight: the database as it is
	_, base := f.restored("a.db")
	insert(t, app, 3)
	f.scan("a.db")
	if rows, txid := f.restored("a.db"); rows != 3 || txid != base+3 {
		t.Fatalf("three commits: %d rows at TXID %d, want 3 at %d", rows, txid, base+3)
	}

	// Restarted after a checkpoint of what was read: the next commits
	// are still one TXID each.
	if _, err := app.Exec("PRAGMA wal_checkpoint(PASSIVE)"); err != nil {
		t.Fatal(err)
	}
	insert(t, app, 2) // the first of them restarts the WAL
	f.scan("a.db")
	if rows, txid := f.restored("a.db"); rows != 5 || txid != base+5 {
		t.Fatalf("after a restart: %d rows at TXID %d, want 5 at %d", rows, txid, base+5)
	}

	// Commits never read, then truncated into the database file: they
	// ship together, as one transaction holding the new state.
	insert(t, app, 4)
	if _, err := app.Exec("PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
		t.Fatal(err)
	}
	f.scan("a.db")
	if rows, txid := f.restored("a.db"); rows != 9 || txid != base+6 {
		t.Fatalf("after commits truncated unseen: %d rows at TXID %d, want 9 at %d", rows, txid, base+6)
	}
	var tables int
	if err := app.QueryRow("SELECT count(*) FROM sqlite_schema").Scan(&tables); err != nil || tables != 1 {
		t.Fatalf("the database holds %d schema objects (%v): walsync wrote into it", tables, err)
	}
}

// TestScanFollowsUnreadRestart: commits no scan read before SQLite
// checkpointed and restarted the WAL are still one TXID each: the scan
// reads them from the old generation's frames still in the file.
func TestScanFollowsUnreadRestart(t *testing.T) {
	f := newFixture(t)
	path := filepath.Join(t.TempDir(), "a.db")
	app := openApp(t, path)
	if err := f.sc.Add("a.db", path); err != nil {
		t.Fatal(err)
	}
	f.scan("a.db")
	_, base := f.restored("a.db")
	insert(t, app, 3)
	f.scan("a.db")
	insert(t, app, 2) // not read before the restart
	salts, _, _ := walHeader(path + "-wal")
	if _, err := app.Exec("PRAGMA wal_checkpoint(PASSIVE)"); err != nil {
		t.Fatal(err)
	}
	insert(t, app, 1) // restarts the WAL
	if now, _, _ := walHeader(path + "-wal"); now == salts {
		t.Fatal("the WAL did not restart: the test proves nothing")
	}
	f.scan("a.db")
	if rows, txid := f.restored("a.db"); rows != 6 || txid != base+6 {
		t.Fatalf("%d rows at TXID %d, want 6 at %d (one TXID per commit)", rows, txid, base+6)
	}
}

// TestRestartNoticedHoldsWAL: a write showing the WAL restarted since the
// last scan takes the read slot, so no second restart can overwrite the
// old generation before the scan reads it; the scan releases it.
func TestRestartNoticedHoldsWAL(t *testing.T) {
	f := newFixture(t)
	path := filepath.Join(t.TempDir(), "a.db")
	app := openApp(t, path)
	if err := f.sc.Add("a.db", path); err != nil {
		t.Fatal(err)
	}
	insert(t, app, 2)
	f.scan("a.db")
	_, base := f.restored("a.db")
	f.sc.mu.Lock()
	e := f.sc.byName["a.db"]
	f.sc.mu.Unlock()
	restart := func() uint64 {
		t.Helper()
		if _, err := app.Exec("PRAGMA wal_checkpoint(PASSIVE)"); err != nil {
			t.Fatal(err)
		}
		insert(t, app, 1)
		salts, _, _ := walHeader(path + "-wal")
		return salts
	}
	scanned, _, _ := walHeader(path + "-wal")
	if s1 := restart(); s1 == scanned {
		t.Fatal("the WAL did not restart: the test proves nothing")
	} else if !f.sc.walWritten(e) {
		t.Fatal("a restart since the last scan was not noticed")
	} else if s2 := restart(); s2 != s1 {
		t.Fatal("the WAL restarted a second time while the slot was held")
	}
	f.scan("a.db")
	if rows, txid := f.restored("a.db"); rows != 4 || txid != base+2 {
		t.Fatalf("%d rows at TXID %d, want 4 at %d", rows, txid, base+2)
	}
	salts, _, _ := walHeader(path + "-wal")
	if restart() == salts {
		t.Fatal("the scan did not release the slot: the WAL cannot restart")
	}
}

// TestScanWALCameAndWent: a WAL created, written and deleted between two
// scans (an application that opens, commits and closes) leaves only the
// database file changed: the scan ships it.
func TestScanWALCameAndWent(t *testing.T) {
	f := newFixture(t)
	path := filepath.Join(t.TempDir(), "a.db")
	app := openApp(t, path)
	insert(t, app, 2)
	app.Close() // the last connection: the WAL is checkpointed and deleted
	if err := f.sc.Add("a.db", path); err != nil {
		t.Fatal(err)
	}
	f.scan("a.db")
	f.scan("a.db")
	app = openApp(t, path)
	insert(t, app, 3)
	app.Close()
	if _, err := os.Stat(path + "-wal"); !os.IsNotExist(err) {
		t.Fatalf("the WAL is still there (%v): the test proves nothing", err)
	}
	f.scan("a.db")
	if rows, _ := f.restored("a.db"); rows != 5 {
		t.Fatalf("%d rows on the replica, want 5", rows)
	}
}

// TestRestartNotHeldPastMaxHeldWAL: a WAL larger than MaxHeldWAL is not
// held at a restart (its writer may restart it again).
func TestRestartNotHeldPastMaxHeldWAL(t *testing.T) {
	f := newFixture(t)
	f.sc.opts.MaxHeldWAL = 1
	path := filepath.Join(t.TempDir(), "a.db")
	app := openApp(t, path)
	if err := f.sc.Add("a.db", path); err != nil {
		t.Fatal(err)
	}
	insert(t, app, 2)
	f.scan("a.db")
	f.sc.mu.Lock()
	e := f.sc.byName["a.db"]
	f.sc.mu.Unlock()
	if _, err := app.Exec("PRAGMA wal_checkpoint(PASSIVE)"); err != nil {
		t.Fatal(err)
	}
	insert(t, app, 1) // restarts the WAL
	if f.sc.walWritten(e) || e.held {
		t.Fatal("a restart of a WAL past MaxHeldWAL was held")
	}
}

// TestScanJournalMode: a rollback-journal database ships when its change
// counter moves, and not otherwise.
func TestScanJournalMode(t *testing.T) {
	f := newFixture(t)
	path := filepath.Join(t.TempDir(), "d.db")
	app, err := sql.Open("sqlite3", "file:"+path+"?_journal_mode=DELETE")
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	if _, err := app.Exec("CREATE TABLE t(x)"); err != nil {
		t.Fatal(err)
	}
	if err := f.sc.Add("d.db", path); err != nil {
		t.Fatal(err)
	}
	f.scan("d.db")
	_, base := f.restored("d.db")
	f.scan("d.db")
	if _, txid := f.restored("d.db"); txid != base {
		t.Fatalf("an unchanged database shipped again: TXID %d, was %d", txid, base)
	}
	insert(t, app, 2)
	f.scan("d.db")
	if rows, txid := f.restored("d.db"); rows != 2 || txid != base+1 {
		t.Fatalf("after two commits: %d rows at TXID %d, want 2 at %d (shipped whole, once)", rows, txid, base+1)
	}
	if _, err := os.Stat(path + "-wal"); err == nil {
		t.Fatal("walsync changed the journal mode")
	}
}

// TestCheckpointOption: with CheckpointSize, a WAL larger than it is
// checkpointed after a scan that read every commit (and the capture goes on
// one TXID per commit after the restart that follows); without it, never.
func TestCheckpointOption(t *testing.T) {
	for _, size := range []int64{0, 1} {
		f := newFixture(t)
		calls := 0
		f.sc.opts.CheckpointSize = size
		f.sc.opts.Checkpoint = func(path string) error {
			calls++
			db, err := sql.Open("sqlite3", "file:"+path+"?_busy_timeout=1000")
			if err != nil {
				return err
			}
			defer db.Close()
			_, err = db.Exec("PRAGMA wal_checkpoint(PASSIVE)")
			return err
		}
		path := filepath.Join(t.TempDir(), "c.db")
		app := openApp(t, path)
		if err := f.sc.Add("c.db", path); err != nil {
			t.Fatal(err)
		}
		f.scan("c.db")
		_, base := f.restored("c.db")
		insert(t, app, 3)
		f.scan("c.db")
		insert(t, app, 2) // restarts the WAL if it was checkpointed
		f.scan("c.db")
		if rows, txid := f.restored("c.db"); rows != 5 || txid != base+5 {
			t.Fatalf("checkpoint size %d: %d rows at TXID %d, want 5 at %d", size, rows, txid, base+5)
		}
		if size == 0 && calls != 0 || size > 0 && calls == 0 {
			t.Fatalf("checkpoint size %d: %d checkpoints", size, calls)
		}
	}
}

// TestDirDatabaseGone: a database found under --dir that is deleted is no
// longer watched; created again, the next rescan finds it.
func TestDirDatabaseGone(t *testing.T) {
	f := newFixture(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "a.db")
	app := openApp(t, path)
	insert(t, app, 1)
	if err := f.sc.AddDir(Dir{Path: dir}); err != nil {
		t.Fatal(err)
	}
	f.scan("a.db")
	app.Close()
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		os.Remove(p)
	}
	f.scan("a.db")
	if got := f.sc.Databases(); len(got) != 0 {
		t.Fatalf("a deleted database is still watched: %v", got)
	}
	app = openApp(t, path)
	insert(t, app, 2)
	f.sc.rescan()
	if got := f.sc.Databases(); len(got) != 1 || got[0] != "a.db" {
		t.Fatalf("created again: watched %v", got)
	}
}

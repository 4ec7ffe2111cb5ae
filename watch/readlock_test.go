package watch

import (
	"database/sql"
	"path/filepath"
	"testing"

	_ "github.com/mattn/go-sqlite3"
)

// TestLockWALBlocksRestart: while the scan's lock is held, SQLite's writer
// appends to the WAL instead of restarting it (the frames being read stay
// where they are), and a TRUNCATE checkpoint cannot complete; once it is
// released, the WAL restarts as usual.
func TestLockWALBlocksRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.db")
	db, err := sql.Open("sqlite3", "file:"+path+"?_journal_mode=WAL&_busy_timeout=50")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	exec := func(q string) {
		t.Helper()
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	exec("PRAGMA wal_autocheckpoint=0")
	exec("CREATE TABLE t(x)")
	exec("INSERT INTO t VALUES(1)")
	exec("PRAGMA wal_checkpoint(PASSIVE)") // every frame backfilled: the next writer may restart
	salts0, size0, _ := walHeader(path + "-wal")

	l, err := lockWAL(path)
	if err != nil || l == nil {
		t.Fatalf("lockWAL: %v %v", l, err)
	}
	exec("INSERT INTO t VALUES(2)")
	if salts, size, _ := walHeader(path + "-wal"); salts != salts0 || size <= size0 {
		t.Fatalf("the WAL restarted while the scan's lock was held (salts %x -> %x, size %d -> %d)", salts0, salts, size0, size)
	}
	var busy, logged, done int
	if err := db.QueryRow("PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &logged, &done); err != nil {
		t.Fatal(err)
	}
	if _, size, _ := walHeader(path + "-wal"); busy == 0 || size == 0 {
		t.Fatalf("a TRUNCATE checkpoint completed while the scan's lock was held (busy %d, WAL size %d)", busy, size)
	}
	l.release()

	exec("PRAGMA wal_checkpoint(PASSIVE)")
	exec("INSERT INTO t VALUES(3)")
	if salts, _, _ := walHeader(path + "-wal"); salts == salts0 {
		t.Fatal("the WAL did not restart once the lock was released: the test proves nothing")
	}
}

// TestLockDBBlocksCommit: a rollback-journal database's commit waits while
// the scan reads it.
func TestLockDBBlocksCommit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.db")
	db, err := sql.Open("sqlite3", "file:"+path+"?_busy_timeout=50")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec("CREATE TABLE t(x)"); err != nil {
		t.Fatal(err)
	}
	l, err := lockDB(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("INSERT INTO t VALUES(1)"); err == nil {
		t.Fatal("a commit went through while the scan held its SHARED lock")
	}
	l.release()
	if _, err := db.Exec("INSERT INTO t VALUES(1)"); err != nil {
		t.Fatalf("after the lock: %v", err)
	}
}

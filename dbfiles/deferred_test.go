package dbfiles

import (
	"database/sql"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3"
	"github.com/superfly/ltx"
	"github.com/walsync/walsync/capture"
)

// TestDeferredWALPolled: with the -wal written behind the capture core's
// back (FUSE passthrough, the VFS), commits are captured by the poll of an
// open database, each with its own TXID, and shipped at once; none before
// the poll, and the last close captures what is left.
func TestDeferredWALPolled(t *testing.T) {
	sdb, st, reg, d := deferredDB(t)
	reg.Poll = 150 * time.Millisecond
	if err := d.Open(RoleDB); err != nil {
		t.Fatal(err)
	}
	base := len(st.staged) // the snapshot at first sight
	// SQLite writes the -wal itself: the core sees none of it.
	for i := 0; i < 5; i++ {
		if _, err := sdb.Exec("INSERT INTO t VALUES(?)", fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		st.mu.Lock()
		n, ships := len(st.staged)-base, st.shipNow
		st.mu.Unlock()
		if n == 5 && ships > 0 {
			break
		}
		if n > 5 || time.Now().After(deadline) {
			t.Fatalf("poll staged %d transactions (ShipNow %d), want the 5 commits one by one", n, ships)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for i, tx := range st.staged[base:] {
		if tx.Full || tx.TXID != st.staged[base-1].TXID+1+ltx.TXID(i) {
			t.Fatalf("staged %+v at %d, want incremental transactions in order", tx, i)
		}
	}
	// One more commit, then the last close captures what is left.
	if _, err := sdb.Exec("INSERT INTO t VALUES('last')"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Close(RoleDB); err != nil {
		t.Fatal(err)
	}
	if n := len(st.staged) - base; n != 6 {
		t.Fatalf("after the last close %d transactions staged, want 6", n)
	}
}

// TestDeferredWALCapturedAtClose: without a poll, the last close of the
// database captures what its -wal committed.
func TestDeferredWALCapturedAtClose(t *testing.T) {
	sdb, st, _, d := deferredDB(t)
	if err := d.Open(RoleDB); err != nil {
		t.Fatal(err)
	}
	base := len(st.staged)
	for i := 0; i < 3; i++ {
		if _, err := sdb.Exec("INSERT INTO t VALUES(?)", i); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(st.staged) - base; n != 0 {
		t.Fatalf("%d transactions staged before any barrier", n)
	}
	if _, err := d.Close(RoleDB); err != nil {
		t.Fatal(err)
	}
	if n := len(st.staged) - base; n != 3 {
		t.Fatalf("the last close staged %d transactions, want 3", n)
	}
}

// deferredDB creates a WAL database written by SQLite directly (the core
// sees none of its -wal writes) and a registry that defers WAL capture.
func deferredDB(t *testing.T) (*sql.DB, *fakeStager, *Registry, *Database) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "x.db")
	sdb, err := sql.Open("sqlite3", "file:"+path+"?_journal_mode=WAL")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sdb.Close() })
	sdb.SetMaxOpenConns(1)
	for _, q := range []string{"PRAGMA wal_autocheckpoint=0", "CREATE TABLE t(x)", "PRAGMA wal_checkpoint(TRUNCATE)"} {
		if _, err := sdb.Exec(q); err != nil {
			t.Fatal(q, err)
		}
	}
	st := &fakeStager{dir: dir, positions: []capture.Pos{{}}}
	reg := NewRegistry(st, nil, nil)
	reg.DeferWAL = true
	return sdb, st, reg, reg.Get("x.db", path)
}

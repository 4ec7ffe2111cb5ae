package integration

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/superfly/ltx"
	"github.com/walsync/walsync/restore"
	"github.com/walsync/walsync/storage"
	"github.com/walsync/walsync/storage/file"
	"github.com/walsync/walsync/vfs"
)

// vfsFrontEnd is the in-process VFS, registered once as "walsync".
type vfsFrontEnd struct {
	t       testing.TB
	dir     string // WALSYNC_DIR
	rep     string
	staging string
}

var (
	vfsOnce   sync.Once
	vfsShared *vfsFrontEnd
	vfsErr    error
)

func sharedVFS(t testing.TB) *vfsFrontEnd {
	vfsOnce.Do(func() {
		root, err := os.MkdirTemp("", "walsync-vfs-")
		if err != nil {
			vfsErr = err
			return
		}
		fe := &vfsFrontEnd{dir: filepath.Join(root, "data"), rep: filepath.Join(root, "replica")}
		fe.staging = filepath.Join(fe.dir, ".walsync", "staging")
		v, err := vfs.New(context.Background(), vfs.Config{Replica: "file://" + fe.rep, Dir: fe.dir, SyncInterval: 100 * time.Millisecond,
			CompactionLevels: []time.Duration{300 * time.Millisecond}})
		if err != nil {
			vfsErr = err
			return
		}
		if vfsErr = v.Register("walsync"); vfsErr == nil {
			vfsShared = fe
		}
	})
	if vfsErr != nil {
		t.Fatalf("walsync VFS: %v", vfsErr)
	}
	return &vfsFrontEnd{t: t, dir: vfsShared.dir, rep: vfsShared.rep, staging: vfsShared.staging}
}

func (f *vfsFrontEnd) path(rel string) string {
	p := filepath.Join(f.dir, rel)
	_ = os.MkdirAll(filepath.Dir(p), 0o755)
	return p
}

func (f *vfsFrontEnd) open(t testing.TB, path string, pragmas ...string) *sql.DB {
	return openDSN(t, "file:"+path+"?vfs=walsync&_busy_timeout=10000", pragmas...)
}

func (f *vfsFrontEnd) waitShipped() {
	f.t.Helper()
	if !waitUnstaged(func() int64 { return dirStaged(f.staging) }) {
		f.t.Fatal("the VFS did not ship its staged transactions in time")
	}
}

func (f *vfsFrontEnd) latestTXID(db string) ltx.TXID {
	f.t.Helper()
	fi, err := storage.Latest(context.Background(), file.New(f.rep), db)
	if err != nil {
		f.t.Fatal(err)
	}
	if fi == nil {
		return 0
	}
	return fi.MaxTXID
}

func (f *vfsFrontEnd) restoreDB(db string, txid ltx.TXID) string {
	f.t.Helper()
	out := filepath.Join(f.t.TempDir(), "restored.db")
	if _, err := restore.Restore(context.Background(), file.New(filepath.Join(f.rep, db)), "", out, restore.Options{TXID: txid}); err != nil {
		f.t.Fatalf("restore %s at %d: %v", db, txid, err)
	}
	return out
}

// TestVFSCaptureScenarios runs the mount's scenario table through the VFS:
// every journal mode, WAL with normal and exclusive locking.
func TestVFSCaptureScenarios(t *testing.T) {
	for _, jm := range journalModes {
		for _, sync := range []string{"OFF", "NORMAL", "FULL"} {
			for _, ps := range []int{1024, 4096, 65536} {
				name := fmt.Sprintf("%s/sync=%s/page=%d", jm.name, sync, ps)
				rel := fmt.Sprintf("vscen/%s-%s-%d.db", jm.name, sync, ps)
				t.Run(name, func(t *testing.T) {
					t.Parallel()
					runScenario(t, sharedVFS(t), rel, jm, sync, ps)
				})
			}
		}
	}
}

// TestVFSWALPool: a database/sql pool of 8 connections in WAL mode through
// the VFS, without exclusive locking (SQLite's shared memory): writers and
// readers at once, a reader running while a write transaction is open (the
// point of WAL), checkpoints of every kind; every TXID restores a state the
// application committed, in order, and the latest is the database.
func TestVFSWALPool(t *testing.T) {
	f := sharedVFS(t)
	rel := "vwal/pool.db"
	db := f.open(t, f.path(rel), "journal_mode=WAL")
	db.SetMaxOpenConns(8)
	var mode string
	if err := db.QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode is %q (%v), want wal", mode, err)
	}
	mustExec(t, db, "CREATE TABLE t(w INTEGER, j INTEGER, v BLOB)")

	// A reader runs while a write transaction is open.
	ctx := context.Background()
	w, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"BEGIN IMMEDIATE", "INSERT INTO t VALUES(-1, 0, x'00')"} {
		if _, err := w.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	readDone := make(chan error, 1)
	go func() {
		var n int
		readDone <- db.QueryRow("SELECT count(*) FROM t").Scan(&n)
	}()
	select {
	case err := <-readDone:
		if err != nil {
			t.Fatalf("a read while a write transaction is open: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a read waited for the open write transaction: not WAL's concurrency")
	}
	if _, err := w.ExecContext(ctx, "COMMIT"); err != nil {
		t.Fatal(err)
	}
	w.Close()

	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := 0; g < 4; g++ {
		wg.Add(2)
		go func(g int) { // a writer
			defer wg.Done()
			for j := 0; j < 60; j++ {
				if _, err := db.Exec("INSERT INTO t VALUES(?, ?, randomblob(300))", g, j); err != nil {
					errs <- err
					return
				}
				if j%20 == 19 {
					kind := []string{"PASSIVE", "FULL", "RESTART", "TRUNCATE"}[g]
					if _, err := db.Exec("PRAGMA wal_checkpoint(" + kind + ")"); err != nil {
						errs <- err
						return
					}
				}
			}
		}(g)
		go func() { // a reader: each writer's rows are 0..k-1
			defer wg.Done()
			for i := 0; i < 100; i++ {
				var bad int
				if err := db.QueryRow("SELECT count(*) FROM (SELECT w FROM t WHERE w >= 0 GROUP BY w HAVING count(*) != max(j)+1)").Scan(&bad); err != nil {
					errs <- err
					return
				} else if bad != 0 {
					errs <- fmt.Errorf("a reader saw a writer's rows with a gap")
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	want := contentHash(t, db)
	f.waitShipped()
	last := f.latestTXID(rel)
	prev := map[int]int{}
	for txid := ltx.TXID(1); txid <= last; txid++ {
		out := f.restoreDB(rel, txid)
		r := openDSN(t, "file:"+out+"?mode=ro")
		rows, err := r.Query("SELECT w, count(*), coalesce(max(j), -1) FROM t GROUP BY w")
		if err != nil {
			r.Close()
			continue // before CREATE TABLE
		}
		for rows.Next() {
			var w, n, max int
			if err := rows.Scan(&w, &n, &max); err != nil {
				t.Fatal(err)
			}
			if w >= 0 && n != max+1 {
				t.Fatalf("TXID %d: writer %d has %d rows up to %d: not a committed state", txid, w, n, max)
			}
			if max < prev[w] {
				t.Fatalf("TXID %d: writer %d went back from row %d to %d", txid, w, prev[w], max)
			}
			prev[w] = max
		}
		rows.Close()
		r.Close()
		if txid == last {
			if got := checkRestored(t, out); got != want {
				t.Fatal("the latest TXID differs from the database")
			}
		}
	}
}

// TestVFSManyConnections writes one DELETE-mode database from four
// connections of one process at once.
func TestVFSManyConnections(t *testing.T) {
	f := sharedVFS(t)
	rel := "vconn/shared.db"
	setup := f.open(t, f.path(rel), "journal_mode=DELETE")
	mustExec(t, setup, "CREATE TABLE t(w INTEGER, j INTEGER)")
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			db := f.open(t, f.path(rel))
			for j := 0; j < 50; j++ {
				if _, err := db.Exec("INSERT INTO t VALUES(?, ?)", w, j); err != nil {
					errs <- err
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var n int
	if err := setup.QueryRow("SELECT count(*) FROM t").Scan(&n); err != nil || n != 200 {
		t.Fatalf("%d rows (%v), want 200", n, err)
	}
	want := contentHash(t, setup)
	f.waitShipped()
	if got := checkRestored(t, f.restoreDB(rel, 0)); got != want {
		t.Fatal("restore differs")
	}
}

// pySession is a Python process with its sqlite3 module on a database: the
// default VFS, no extension. Each statement sent is run at once, in
// autocommit mode unless it opens a transaction, with a busy timeout of
// 200 ms; its rows (or "error: ...") come back.
type pySession struct {
	t   *testing.T
	in  io.WriteCloser
	out *bufio.Reader
}

const pyREPL = `
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=0.2)
for line in sys.stdin:
    try:
        for r in c.execute(line).fetchall():
            print('|'.join(map(str, r)))
    except Exception as e:
        print('error:', e)
    print('done', flush=True)
`

func startPython(t *testing.T, db string) *pySession {
	t.Helper()
	cmd := exec.Command(python, "-c", pyREPL, db)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close(); _ = cmd.Wait() })
	return &pySession{t: t, in: in, out: bufio.NewReader(out)}
}

// run runs one statement and returns what it printed.
func (s *pySession) run(stmt string) string {
	s.t.Helper()
	if _, err := fmt.Fprintln(s.in, stmt); err != nil {
		s.t.Fatal(err)
	}
	var b strings.Builder
	for {
		line, err := s.out.ReadString('\n')
		if err != nil {
			s.t.Fatalf("python: %v after %q", err, b.String())
		}
		if line == "done\n" {
			return b.String()
		}
		b.WriteString(line)
	}
}

// TestVFSWALLocksWithDefaultVFS: the VFS's shared memory is SQLite's own
// (the same -shm, lock bytes and dead-man switch), so a process using the
// default VFS (Python's sqlite3) and walsync's connections exclude each other's writers and
// see each other's commits. Turning the VFS's xShmLock into a no-op makes
// this test fail (checked once by mutation).
func TestVFSWALLocksWithDefaultVFS(t *testing.T) {
	f := sharedVFS(t)
	rel := "vwal/shared-shm.db"
	db := f.open(t, f.path(rel), "journal_mode=WAL")
	mustExec(t, db, "CREATE TABLE t(x)")
	ctx := context.Background()
	c, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.ExecContext(ctx, "PRAGMA busy_timeout=200"); err != nil {
		t.Fatal(err)
	}
	sh := startPython(t, f.path(rel))

	// Python's write transaction makes walsync's wait, and the reverse.
	for _, q := range []string{"BEGIN IMMEDIATE", "INSERT INTO t VALUES('python')"} {
		if out := sh.run(q); out != "" {
			t.Fatalf("python: %s: %s", q, out)
		}
	}
	if _, err := c.ExecContext(ctx, "BEGIN IMMEDIATE"); err == nil || !strings.Contains(err.Error(), "locked") {
		t.Fatalf("BEGIN IMMEDIATE through walsync while Python writes: %v, want database is locked", err)
	}
	var n int
	if err := c.QueryRowContext(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil || n != 0 {
		t.Fatalf("walsync read %d rows (%v) while Python's transaction is open, want 0", n, err)
	}
	sh.run("COMMIT")
	if err := c.QueryRowContext(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil || n != 1 {
		t.Fatalf("walsync read %d rows (%v) after Python's commit, want 1", n, err)
	}
	if _, err := c.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ExecContext(ctx, "INSERT INTO t VALUES('walsync')"); err != nil {
		t.Fatal(err)
	}
	if out := sh.run("BEGIN IMMEDIATE"); !strings.Contains(out, "locked") {
		t.Fatalf("BEGIN IMMEDIATE in Python while walsync writes: %q, want database is locked", out)
	}
	if _, err := c.ExecContext(ctx, "COMMIT"); err != nil {
		t.Fatal(err)
	}
	if out := sh.run("SELECT count(*) FROM t"); out != "2\n" {
		t.Fatalf("Python read %q after walsync's commit, want 2", out)
	}
	// A checkpoint by Python, then walsync writes on: captured.
	sh.run("PRAGMA wal_checkpoint(TRUNCATE)")
	if _, err := c.ExecContext(ctx, "INSERT INTO t VALUES('after')"); err != nil {
		t.Fatal(err)
	}
	c.Close() // the pool's one connection, for contentHash
	want := contentHash(t, db)
	f.waitShipped()
	if got := checkRestored(t, f.restoreDB(rel, 0)); got != want {
		t.Fatal("the latest TXID differs from the database")
	}
}

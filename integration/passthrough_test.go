package integration

import (
	"database/sql"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/superfly/ltx"
)

// captureModes are the mount's ways of seeing -wal writes (--capture): in
// passthrough the kernel writes -wal files directly and commits are captured
// at barriers; in write mode every write passes through walsync.
var captureModes = []string{"passthrough", "write"}

// newModeMount starts a mount in a capture mode and checks that the mode is
// the one in effect.
func newModeMount(t *testing.T, mode string, extra ...string) *mount {
	m := newMount(t, append([]string{"--capture=" + mode}, extra...)...)
	m.requireMode(mode)
	return m
}

// requireMode fails unless the mount's log says it captures in mode.
func (m *mount) requireMode(mode string) {
	m.t.Helper()
	want := map[string]string{"passthrough": "-wal files in FUSE passthrough", "write": "capturing every -wal write"}[mode]
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(m.log.String(), want) {
		if time.Now().After(deadline) {
			m.t.Fatalf("the mount does not capture in %s mode (no %q in its log)\n%s", mode, want, m.log)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// checkEveryTXID restores every TXID of db: each must pass integrity_check,
// hold a prefix 1..n of the rows the writers committed (ids in order, none
// rolled back), one row more than the TXID before at most (each commit of
// these workloads inserts one row, and has its own TXID), and the latest
// must equal want.
func checkEveryTXID(t *testing.T, m *mount, db, want string) {
	t.Helper()
	latest := m.latestTXID(db)
	if latest == 0 {
		t.Fatalf("%s: nothing on the replica", db)
	}
	prev := int64(-1)
	for txid := ltx.TXID(1); txid <= latest; txid++ {
		path := m.restoreDB(db, txid)
		h := checkRestored(t, path)
		if txid == latest && h != want {
			t.Fatalf("%s: the latest TXID %d differs from the source", db, txid)
		}
		rdb, err := openRO(path)
		if err != nil {
			t.Fatal(err)
		}
		var n, maxID int64
		err = rdb.QueryRow("SELECT count(*), coalesce(max(id), 0) FROM t").Scan(&n, &maxID)
		rdb.Close()
		if err != nil {
			continue // before the table existed
		}
		if n != maxID {
			t.Fatalf("%s TXID %d: %d rows up to id %d: a committed row is missing", db, txid, n, maxID)
		}
		if maxID < prev {
			t.Fatalf("%s TXID %d: rows went back from %d to %d", db, txid, prev, maxID)
		}
		if prev >= 0 && maxID > prev+1 {
			// Every commit of these workloads inserts one row: two rows in
			// one TXID are two commits captured as one (one was lost and
			// the next carried its pages).
			t.Fatalf("%s TXID %d: rows %d to %d appeared in one transaction; each commit must have its own TXID", db, txid, prev+1, maxID)
		}
		prev = maxID
	}
}

// TestCheckpointStorms commits transactions while checkpoints of every kind
// run, from the writer's connection (wal_autocheckpoint of 1 to 10 pages),
// from a second connection and from a second process, with a reader holding
// an old snapshot and a journal_size_limit, so that the WAL is restarted and
// truncated again and again. Every TXID must restore; the latest must equal
// the source. synchronous=OFF: SQLite never fsyncs the -wal, so in
// passthrough mode the checkpoint's write to the database file is what
// captures the frames before a restart can overwrite them. The batch window
// is long and -wal writes do not wake the capture, so that nothing captures
// them first. Checkpoints give up after 50 ms of waiting (BUSY), as a
// writer must not wait for a checkpoint blocked by the old reader.
func TestCheckpointStorms(t *testing.T) {
	// Passthrough captures only at barriers here (no capture woken by -wal
	// writes), so that the barriers are what is tested.
	t.Setenv("WALSYNC_TEST_BARRIERS_ONLY", "1")
	for _, mode := range captureModes {
		t.Run(mode, func(t *testing.T) {
			m := newModeMount(t, mode, "--sync-interval", "30s")
			var wg sync.WaitGroup
			for _, syncMode := range []string{"OFF", "NORMAL"} {
				for _, kind := range []string{"autocheckpoint", "PASSIVE", "FULL", "RESTART", "TRUNCATE", "process"} {
					rel := fmt.Sprintf("storm/%s-%s.db", kind, syncMode)
					wg.Add(1)
					go func() {
						defer wg.Done()
						checkpointStorm(t, m, rel, kind, syncMode)
					}()
				}
			}
			wg.Wait()
			if t.Failed() {
				return
			}
			m.stop() // flushes every batch
			for _, syncMode := range []string{"OFF", "NORMAL"} {
				for _, kind := range []string{"autocheckpoint", "PASSIVE", "FULL", "RESTART", "TRUNCATE", "process"} {
					rel := fmt.Sprintf("storm/%s-%s.db", kind, syncMode)
					src, err := openRO(filepath.Join(m.data, rel))
					if err != nil {
						t.Fatal(err)
					}
					want := contentHash(t, src)
					src.Close()
					checkEveryTXID(t, m, rel, want)
				}
			}
		})
	}
}

func checkpointStorm(t *testing.T, m *mount, rel, kind, syncMode string) {
	path := m.path(rel)
	w := openDB(t, path, "journal_mode=WAL", "synchronous="+syncMode, "journal_size_limit=8192")
	defer w.Close()
	w.SetMaxOpenConns(1)
	if _, err := w.Exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, b BLOB)"); err != nil {
		t.Error(err)
		return
	}
	if kind == "autocheckpoint" {
		if _, err := w.Exec("PRAGMA wal_autocheckpoint=1"); err != nil {
			t.Error(err)
			return
		}
	} else if _, err := w.Exec("PRAGMA wal_autocheckpoint=0"); err != nil {
		t.Error(err)
		return
	}
	// A reader holding an old snapshot for a while: checkpoints cannot
	// complete past it, and the WAL is restarted only after it ends.
	r := openDB(t, path)
	defer r.Close()
	rtx, err := r.Begin()
	if err != nil {
		t.Error(err)
		return
	}
	var n int
	if err := rtx.QueryRow("SELECT count(*) FROM t").Scan(&n); err != nil {
		t.Error(err)
		return
	}

	stop := make(chan struct{})
	var ckErr atomic.Value
	var ckWG sync.WaitGroup
	ckWG.Add(1)
	go func() {
		defer ckWG.Done()
		switch kind {
		case "autocheckpoint":
			<-stop
		case "process":
			// A second process runs every kind of checkpoint in a loop.
			cmd := exec.Command(python, "-c", `
import sqlite3, sys, os
c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=0.05)
kinds = ["PASSIVE", "FULL", "RESTART", "TRUNCATE"]
i = 0
while not os.path.exists(sys.argv[2]):
    try:
        c.execute("PRAGMA wal_checkpoint(%s)" % kinds[i % 4]).fetchall()
    except sqlite3.OperationalError as e:
        if "locked" not in str(e) and "busy" not in str(e):
            raise
    i += 1
`, path, path+".stop")
			out, err := cmd.CombinedOutput()
			if err != nil {
				ckErr.Store(fmt.Errorf("checkpoint process: %v %s", err, out))
			}
		default:
			c, err := sql.Open("sqlite3", "file:"+path+"?_busy_timeout=50")
			if err != nil {
				ckErr.Store(err)
				return
			}
			defer c.Close()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := c.Exec("PRAGMA wal_checkpoint(" + kind + ")"); err != nil && !strings.Contains(err.Error(), "locked") && !strings.Contains(err.Error(), "busy") {
					ckErr.Store(err)
					return
				}
				time.Sleep(time.Millisecond)
			}
		}
	}()
	for i := 1; i <= 300; i++ {
		var err error
		for try := 0; try < 20; try++ {
			// A checkpoint of another connection can hold the WAL's
			// locks past the busy timeout under load: the commit did not
			// happen, and the application tries again.
			if _, err = w.Exec("INSERT INTO t(id, v, b) VALUES(?, 'row', randomblob(?))", i, 200+i%7*300); err == nil || !strings.Contains(err.Error(), "locked") {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if err != nil {
			t.Errorf("%s: commit %d: %v", rel, i, err)
			break
		}
		if i == 100 {
			rtx.Rollback() // the old snapshot ends
		}
		if i%50 == 0 {
			// A rolled-back transaction among the commits.
			tx, err := w.Begin()
			if err == nil {
				tx.Exec("INSERT INTO t(id, v) VALUES(?, ?)", 100000+i, rolledBackMarker)
				tx.Rollback()
			}
		}
	}
	close(stop)
	os.WriteFile(path+".stop", nil, 0o644)
	ckWG.Wait()
	os.Remove(path + ".stop")
	if err, ok := ckErr.Load().(error); ok && err != nil {
		t.Errorf("%s: %v", rel, err)
	}
}

// TestKill9WithUncapturedFrames kills walsync while the -wal holds commits
// it has not captured yet (passthrough, no fsync, no checkpoint, a long batch
// window, no capture woken by -wal writes), then starts it again on the same --data: at its start, before the
// mount serves anything, it captures them, each with its own TXID; nothing
// rolled back reaches the replica.
func TestKill9WithUncapturedFrames(t *testing.T) {
	t.Setenv("WALSYNC_TEST_BARRIERS_ONLY", "1") // nothing captures the commits before the kill
	m := newModeMount(t, "passthrough", "--sync-interval", "1h")
	rel := "kill/app.db"
	db := openDB(t, m.path(rel), "journal_mode=WAL", "synchronous=NORMAL", "wal_autocheckpoint=0", "cache_size=2")
	db.SetMaxOpenConns(1)
	mustExec(t, db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, b BLOB)")
	// Captured at the last close of the database, later: not here. The
	// first capture of the database (its snapshot) happened at its open.
	for i := 1; i <= 40; i++ {
		mustExec(t, db, "INSERT INTO t(id, v, b) VALUES(?, 'row', randomblob(500))", i)
		if i == 20 {
			tx := mustBegin(t, db)
			for j := 0; j < 50; j++ {
				mustExec(t, tx, "INSERT INTO t(id, v, b) VALUES(?, ?, randomblob(2000))", 1000+j, rolledBackMarker)
			}
			if err := tx.Rollback(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got := m.latestTXIDOrZero(rel); got > 2 {
		t.Fatalf("the replica already has TXID %d: the commits were captured before the kill, the test proves nothing", got)
	}
	m.kill9()
	db.Close()

	m.start()
	m.waitShipped()
	src := openDB(t, m.path(rel))
	var n int
	if err := src.QueryRow("SELECT count(*) FROM t").Scan(&n); err != nil || n != 40 {
		t.Fatalf("the source has %d rows (%v), want the 40 committed", n, err)
	}
	want := contentHash(t, src)
	if latest := m.latestTXID(rel); latest < 41 {
		t.Fatalf("the replica has %d transactions; the 40 commits after the table should each have one", latest)
	}
	checkEveryTXID(t, m, rel, want)
	if c := countMarker(t, m.restoreDB(rel, 0)); c != 0 {
		t.Fatalf("%d rolled-back rows on the replica", c)
	}
	if !strings.Contains(m.log.String(), "capturing what existing -wal files committed") {
		t.Fatalf("walsync did not capture the existing -wal at its start\n%s", m.log)
	}
}

// TestProcessesWriteOneWALDatabase: three processes (Python) commit to one
// WAL database through the passthrough mount at once, with checkpoints.
func TestProcessesWriteOneWALDatabase(t *testing.T) {
	m := newModeMount(t, "passthrough")
	rel := "multi/app.db"
	shell(t, m.path(rel), "PRAGMA journal_mode=WAL; CREATE TABLE t(id INTEGER PRIMARY KEY, w INTEGER, j INTEGER);")
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for w := 0; w < 3; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			cmd := exec.Command(python, "-c", `
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
c.execute("PRAGMA wal_autocheckpoint=20")
for j in range(200):
    c.execute("INSERT INTO t(w, j) VALUES(?, ?)", (int(sys.argv[2]), j))
`, m.path(rel), fmt.Sprint(w))
			if out, err := cmd.CombinedOutput(); err != nil {
				errs <- fmt.Errorf("writer %d: %v %s", w, err, out)
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	m.waitShipped()
	src := openDB(t, m.path(rel))
	var n int
	if err := src.QueryRow("SELECT count(*) FROM t").Scan(&n); err != nil || n != 600 {
		t.Fatalf("%d rows (%v), want 600", n, err)
	}
	checkEveryTXID(t, m, rel, contentHash(t, src))
}

// TestPassthroughFallback: a data directory inside another FUSE mount
// cannot back passthrough files (the kernel limits stacking). The default
// mode falls back to capturing every write, says so once, and every open
// works; --capture=passthrough refuses to start, naming the reason.
func TestPassthroughFallback(t *testing.T) {
	outer := newModeMount(t, "passthrough")
	dir := t.TempDir()
	inner := &mount{t: t, mnt: filepath.Join(dir, "mnt"), data: outer.path("nested/data"), rep: filepath.Join(dir, "replica")}
	if err := os.MkdirAll(inner.mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(walsyncBin, "mount", inner.mnt, "--data", inner.data, "--replica", inner.replicaURL(), "--capture=passthrough")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "passthrough is not available") || !strings.Contains(string(out), "stacked filesystem") {
		t.Fatalf("--capture=passthrough on a nested FUSE data directory: %v\n%s", err, out)
	}
	if isMounted(inner.mnt) {
		t.Fatal("the refused mount is mounted")
	}

	inner.start()
	defer inner.stop()
	inner.requireMode("write") // nothing said yet: the fallback line
	if !strings.Contains(inner.log.String(), "FUSE passthrough is not available") {
		t.Fatalf("the fallback is not logged\n%s", inner.log)
	}
	rel := "app.db"
	db := openDB(t, inner.path(rel), "journal_mode=WAL")
	mustExec(t, db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
	for i := 1; i <= 20; i++ {
		mustExec(t, db, "INSERT INTO t(id, v) VALUES(?, 'x')", i)
	}
	want := contentHash(t, db)
	inner.waitShipped()
	checkEveryTXID(t, inner, rel, want)
}

// TestPassthroughStagingFull: with staging full, WAL commits succeed and
// wait in the -wal (those SQLite fsyncs too: they are durable there), whose
// checkpoints are refused until they are staged; the database still opens.
// Once space is freed, every commit is captured with its own TXID.
func TestPassthroughStagingFull(t *testing.T) {
	dir := t.TempDir()
	m := &mount{t: t, mnt: filepath.Join(dir, "mnt"), data: filepath.Join(dir, "data"), rep: filepath.Join(dir, "replica"),
		args: []string{"--capture=passthrough"}}
	staging := m.stagingOnTmpfs("1m")
	m.start()
	t.Cleanup(func() {
		if m.cmd != nil {
			m.stop()
		}
	})
	m.requireMode("passthrough")
	rel := "full.db"
	db := openDB(t, m.path(rel), "journal_mode=WAL", "synchronous=NORMAL", "wal_autocheckpoint=0")
	db.SetMaxOpenConns(1)
	mustExec(t, db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, b BLOB)")
	m.waitShipped()
	fillers := tortureFill(t, staging)
	for i := 1; i <= 30; i++ {
		mustExec(t, db, "INSERT INTO t(id, v, b) VALUES(?, 'row', randomblob(3000))", i)
	}
	if _, err := db.Exec("PRAGMA wal_checkpoint(TRUNCATE)"); err == nil {
		var n int
		if err := db.QueryRow("SELECT count(*) FROM t").Scan(&n); err != nil || n != 30 {
			t.Fatalf("after a checkpoint with staging full: %d rows (%v)", n, err)
		}
	}
	if fi, err := os.Stat(filepath.Join(m.data, rel+"-wal")); err != nil || fi.Size() == 0 {
		t.Fatalf("the -wal was checkpointed away while its commits could not be staged: %v", err)
	}
	// A commit SQLite fsyncs cannot be staged either: it succeeds, durable
	// in the -wal, and waits there too.
	mustExec(t, db, "PRAGMA synchronous=FULL")
	mustExec(t, db, "INSERT INTO t(id, v) VALUES(31, 'fsynced')")
	mustExec(t, db, "PRAGMA synchronous=NORMAL")
	// Another process opens the database meanwhile.
	other := openDB(t, m.path(rel))
	var n int
	if err := other.QueryRow("SELECT count(*) FROM t").Scan(&n); err != nil {
		t.Fatalf("open with staging full: %v", err)
	}
	other.Close()
	for _, f := range fillers {
		os.Remove(f)
	}
	// Capture is retried after a backoff (at most 2 s): the checkpoint
	// succeeds once it has been.
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := db.Exec("PRAGMA wal_checkpoint(TRUNCATE)")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("checkpoint after space was freed: %v\nwalsync log:\n%s", err, m.log)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var rows int64
	if err := db.QueryRow("SELECT count(*) FROM t").Scan(&rows); err != nil {
		t.Fatal(err)
	}
	want := contentHash(t, db)
	m.waitShipped()
	db.Close()
	checkEveryTXID(t, m, rel, want)
	if rows != 31 {
		t.Fatalf("%d rows, want the 31 acknowledged", rows)
	}
}

// TestRestartWaitsForOrphans: walsync is killed while a process keeps a WAL
// database open through the mount (in passthrough it could go on writing
// the -wal). A new walsync does not mount until that process has closed
// its files, so the two cannot write one WAL each with its own view of it;
// then it serves, and the database is whole.
func TestRestartWaitsForOrphans(t *testing.T) {
	m := newModeMount(t, "passthrough")
	rel := "orphan.db"
	shell(t, m.path(rel), "PRAGMA journal_mode=WAL; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);")
	release := filepath.Join(t.TempDir(), "release")
	cmd := exec.Command(python, "-c", `
import sqlite3, sys, os, time
c = sqlite3.connect(sys.argv[1], isolation_level=None)
for i in range(10):
    c.execute("INSERT INTO t(v) VALUES('before')")
print("ready", flush=True)
while not os.path.exists(sys.argv[2]):
    time.sleep(0.05)
`, m.path(rel), release)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	buf := make([]byte, 6)
	if _, err := io.ReadFull(out, buf); err != nil || string(buf) != "ready\n" {
		t.Fatalf("writer: %q %v", buf, err)
	}
	m.kill9()
	m.startNoWait()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && !strings.Contains(m.log.String(), "waiting for processes still using the previous") {
		time.Sleep(50 * time.Millisecond)
	}
	if isMounted(m.mnt) {
		t.Fatal("walsync mounted while a process still had the database open through the dead mount")
	}
	if !strings.Contains(m.log.String(), fmt.Sprintf("pid %d", cmd.Process.Pid)) {
		t.Fatalf("walsync does not say which process it waits for\n%s", m.log)
	}
	os.WriteFile(release, nil, 0o644)
	cmd.Wait()
	m.waitMounted()
	db := openDB(t, m.path(rel))
	mustExec(t, db, "INSERT INTO t(v) VALUES('after')")
	var n int
	if err := db.QueryRow("SELECT count(*) FROM t").Scan(&n); err != nil || n != 11 {
		t.Fatalf("%d rows (%v), want 11", n, err)
	}
	want := contentHash(t, db)
	m.waitShipped()
	checkEveryTXID(t, m, rel, want)
}

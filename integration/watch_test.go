package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/superfly/ltx"
	"github.com/walsync/walsync/restore"
	"github.com/walsync/walsync/storage"
	"github.com/walsync/walsync/storage/file"
)

// watcher is a running walsync watch.
type watcher struct {
	t    *testing.T
	cmd  *exec.Cmd
	log  *syncBuffer
	done chan error
}

func startWatch(t *testing.T, args ...string) *watcher {
	t.Helper()
	w := &watcher{t: t, log: &syncBuffer{}, done: make(chan error, 1)}
	w.cmd = exec.Command(walsyncBin, append([]string{"watch", "--sync-interval", "100ms", "--compaction-levels", "300ms", "--scan-interval", "500ms"}, args...)...)
	w.cmd.Stdout, w.cmd.Stderr = w.log, w.log
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { w.done <- w.cmd.Wait() }()
	t.Cleanup(func() {
		if w.cmd != nil {
			_ = w.cmd.Process.Kill()
			<-w.done
		}
	})
	return w
}

// stop sends SIGINT and requires a clean exit.
func (w *watcher) stop() {
	w.t.Helper()
	_ = w.cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-w.done:
		if err != nil {
			w.cmd = nil // exited: nothing for the cleanup to wait for
			w.t.Fatalf("walsync watch exited with %v\n%s", err, w.log)
		}
	case <-time.After(60 * time.Second):
		w.t.Fatalf("walsync watch did not exit after SIGINT\n%s", w.log)
	}
	w.cmd = nil
	if strings.Contains(w.log.String(), "DATA RACE") {
		w.t.Fatalf("data race in walsync watch:\n%s", w.log)
	}
}

// watchWriter commits rows 0..n-1 one per transaction into a plain-disk WAL
// database, with its own autocheckpoint, every kind of explicit checkpoint,
// a reader holding snapshots, rollbacks, a VACUUM and a page-size change
// (through a rollback-journal mode and back). It prints each row it saw
// committed.
const watchWriter = `
import sqlite3, sys, time
path, n = sys.argv[1], int(sys.argv[2])
c = sqlite3.connect(path, isolation_level=None, timeout=30)
c.execute('pragma journal_mode=wal'); c.execute('pragma wal_autocheckpoint=10')
c.execute('create table if not exists t(i integer primary key, v text)')
r = sqlite3.connect(path, isolation_level=None, timeout=30)
kinds = ['PASSIVE', 'FULL', 'RESTART', 'TRUNCATE']
start = c.execute('select coalesce(max(i)+1, 0) from t').fetchone()[0]
for i in range(start, start + n):
    c.execute('begin'); c.execute('insert into t values(?, ?)', (i, 'x' * (100 + i % 700))); c.execute('commit')
    print(i, flush=True)
    if i % 37 == 0:
        c.execute('begin'); c.execute("insert into t values(?, 'rolled back')", (1000000 + i,)); c.execute('rollback')
    if i % 25 == 0:
        kind = kinds[(i // 25) % 4]
        if kind != 'PASSIVE' and r.in_transaction:
            r.execute('commit')  # FULL, RESTART and TRUNCATE wait for readers
        c.execute('pragma wal_checkpoint(%s)' % kind).fetchall()
    if i % 40 == 10:
        r.execute('begin'); r.execute('select count(*) from t').fetchone()
    if i % 40 == 30 and r.in_transaction:
        r.execute('commit')
    if i == start + 150:
        c.execute('vacuum')
    if i == start + 200:
        r.close()
        # Leaving WAL mode takes SQLite's exclusive lock without its busy
        # handler: it fails if it falls within one of walsync's reads
        # (milliseconds; see the README), so it is retried.
        for attempt in range(100):
            try:
                c.execute('pragma journal_mode=delete'); break
            except sqlite3.OperationalError as e:
                if 'locked' not in str(e): raise
                time.sleep(0.01)
        c.execute('pragma page_size=8192'); c.execute('vacuum')
        c.execute('begin'); c.execute("insert into t values(?, 'journal mode')", (2000000,)); c.execute('commit')
        c.execute('delete from t where i = 2000000')
        c.execute('pragma journal_mode=wal')
        r = sqlite3.connect(path, isolation_level=None, timeout=30)
`

// checkStates restores every TXID of a database from a file replica: each
// state holds rows 0..k-1 and no rolled-back row; the latest equals want.
func checkStates(t *testing.T, rep, db string, want string) {
	t.Helper()
	c := file.New(filepath.Join(rep, db))
	fi, err := storage.Latest(context.Background(), c, "")
	if err != nil || fi == nil {
		t.Fatalf("%s: nothing on the replica: %v", db, err)
	}
	prev := -1
	for txid := ltx.TXID(1); txid <= fi.MaxTXID; txid++ {
		out := filepath.Join(t.TempDir(), "r.db")
		if _, err := restore.Restore(context.Background(), c, "", out, restore.Options{TXID: txid}); err != nil {
			t.Fatalf("%s: restore TXID %d: %v", db, txid, err)
		}
		rows := shell(t, out, "SELECT count(*), coalesce(max(i), -1), count(*) FILTER (WHERE v = 'rolled back') FROM t WHERE i < 2000000;")
		var n, max, rolled int
		if _, err := fmt.Sscanf(strings.TrimSpace(rows), "%d|%d|%d", &n, &max, &rolled); err != nil {
			if strings.Contains(rows, "no such table") {
				continue
			}
			t.Fatalf("%s at TXID %d: %q", db, txid, rows)
		}
		if rolled != 0 || n != max+1 {
			t.Fatalf("%s at TXID %d: %d rows up to %d, %d rolled back: not a committed state", db, txid, n, max, rolled)
		}
		if max < prev {
			t.Fatalf("%s at TXID %d: row %d, but TXID %d had %d", db, txid, max, txid-1, prev)
		}
		prev = max
		if txid == fi.MaxTXID {
			if got := shell(t, out, ".dump"); got != want {
				t.Fatalf("%s: the latest TXID restores:\n%.2000s\nwant\n%.2000s", db, got, want)
			}
		}
	}
}

// TestWatchSidecar: databases on plain disk, written by Python and the
// sqlite3 shell with their own checkpoints of every kind, readers, VACUUM
// and a page-size change, are followed from outside by walsync watch
// (one named by path, the others found under --dir, one created later):
// every TXID restores a committed state, the latest equals the source, no
// rollback ships, and nothing is written into the databases.
func TestWatchSidecar(t *testing.T) {
	dir := t.TempDir()
	apps, rep, state := filepath.Join(dir, "apps"), filepath.Join(dir, "replica"), filepath.Join(dir, "state")
	if err := os.MkdirAll(filepath.Join(apps, "t1"), 0o755); err != nil {
		t.Fatal(err)
	}
	solo := filepath.Join(dir, "solo.db")
	shell(t, solo, "PRAGMA journal_mode=WAL; CREATE TABLE t(i INTEGER PRIMARY KEY, v TEXT);")
	a := filepath.Join(apps, "t1", "a.db")
	runPython(t, watchWriter, a, "5") // exists before walsync starts
	w := startWatch(t, solo, "--dir", apps, "--recursive", "-b", "file://"+rep, "--state", state, "--log-level", "debug")
	log := w.log
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("walsync watch:\n%s", log)
		}
	})

	done := make(chan string, 2)
	go func() {
		out, err := exec.Command(python, "-c", watchWriter, a, "300").CombinedOutput()
		if err != nil {
			done <- fmt.Sprintf("python: %v\n%s", err, out)
			return
		}
		done <- ""
	}()
	go func() {
		var script strings.Builder
		for i := 0; i < 120; i++ {
			fmt.Fprintf(&script, "INSERT INTO t VALUES(%d, 'shell');\n", i)
			if i%30 == 29 {
				script.WriteString("PRAGMA wal_checkpoint(TRUNCATE);\n")
			}
			if i%17 == 0 {
				fmt.Fprintf(&script, "BEGIN; INSERT INTO t VALUES(%d, 'rolled back'); ROLLBACK;\n", 1000000+i)
			}
		}
		cmd := exec.Command("sqlite3", solo)
		cmd.Stdin = strings.NewReader(script.String())
		if out, err := cmd.CombinedOutput(); err != nil {
			done <- fmt.Sprintf("sqlite3: %v\n%s", err, out)
			return
		}
		done <- ""
	}()
	// A database created under --dir while walsync runs.
	later := filepath.Join(apps, "t2", "later.db")
	if err := os.MkdirAll(filepath.Dir(later), 0o755); err != nil {
		t.Fatal(err)
	}
	runPython(t, watchWriter, later, "40")
	for i := 0; i < 2; i++ {
		if msg := <-done; msg != "" {
			t.Fatal(msg)
		}
	}
	time.Sleep(time.Second) // a scan interval: the last commits are read
	w.stop()

	for db, src := range map[string]string{"solo.db": solo, "t1/a.db": a, "t2/later.db": later} {
		checkStates(t, rep, db, shell(t, src, ".dump"))
		if tables := strings.TrimSpace(shell(t, src, ".tables")); tables != "t" {
			t.Fatalf("%s: tables %q: walsync wrote into the database", src, tables)
		}
	}
	if out, err := runWalsync(t, "verify", "file://"+rep); err != nil {
		t.Fatalf("verify: %v\n%s", err, out)
	}
}

// TestWatchKilled: walsync watch killed with SIGKILL while a writer
// commits, then started again: every commit the writer saw is on the
// replica once it catches up.
func TestWatchKilled(t *testing.T) {
	dir := t.TempDir()
	db, rep, state := filepath.Join(dir, "k.db"), filepath.Join(dir, "replica"), filepath.Join(dir, "state")
	runPython(t, watchWriter, db, "1")
	args := []string{db, "-b", "file://" + rep, "--state", state}
	w := startWatch(t, args...)
	writer := exec.Command(python, "-c", watchWriter, db, "400")
	var acked syncBuffer
	writer.Stdout, writer.Stderr = &acked, &acked
	if err := writer.Start(); err != nil {
		t.Fatal(err)
	}
	for strings.Count(acked.String(), "\n") < 150 {
		time.Sleep(5 * time.Millisecond)
	}
	_ = w.cmd.Process.Kill()
	<-w.done
	w.cmd = nil
	time.Sleep(300 * time.Millisecond) // commits while no walsync runs
	w = startWatch(t, args...)
	if err := writer.Wait(); err != nil {
		t.Fatalf("writer: %v\n%s", err, acked.String())
	}
	time.Sleep(time.Second)
	w.stop()
	lines := strings.Fields(acked.String())
	last := lines[len(lines)-1]
	checkStates(t, rep, "k.db", shell(t, db, ".dump"))
	out := filepath.Join(dir, "latest.db")
	restoreCLI(t, "file://"+rep+"/k.db", out)
	if got := strings.TrimSpace(shell(t, out, "SELECT max(i) FROM t WHERE i < 1000000;")); got != last {
		t.Fatalf("after a kill and a restart the replica's last row is %s; the writer saw %s committed\n%s", got, last, w.log)
	}
}

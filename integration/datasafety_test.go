package integration

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/superfly/ltx"
	"github.com/walsync/walsync/internal/s3test"
	"github.com/walsync/walsync/restore"
	"github.com/walsync/walsync/storage"
	"github.com/walsync/walsync/storage/file"
)

// TestSecondMountOnDataDirRefused: two mounts on one --data would capture
// the same databases into one staging and corrupt the replica; the second
// is refused at startup, naming the directory and the running process.
func TestSecondMountOnDataDirRefused(t *testing.T) {
	m := newMount(t)
	shell(t, m.path("a.db"), "CREATE TABLE t(x); INSERT INTO t VALUES(1);")
	out, err := runWalsync(t, "mount", t.TempDir(), "--data", m.data, "--replica", m.replicaURL())
	if err == nil {
		t.Fatalf("a second mount on the same --data started:\n%s", out)
	}
	if want := fmt.Sprintf("in use by walsync process %d", m.cmd.Process.Pid); !strings.Contains(out, m.data) || !strings.Contains(out, want) {
		t.Fatalf("second mount's error does not name the directory and %q:\n%s", want, out)
	}
	// The first goes on.
	shell(t, m.path("a.db"), "INSERT INTO t VALUES(2);")
	m.waitShipped()
	if got := shell(t, m.restoreDB("a.db", 0), "SELECT count(*) FROM t;"); got != "2\n" {
		t.Fatalf("after the refused second mount: %q", got)
	}
}

// TestLongDatabasePath: a database whose path under the mount is longer
// than a file name (255 bytes) is captured and restores.
func TestLongDatabasePath(t *testing.T) {
	m := newMount(t)
	rel := strings.Repeat("a-rather-long-tenant-directory/", 12) + "app.db"
	shell(t, m.path(rel), "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES('deep');")
	m.waitShipped()
	if got := shell(t, m.restoreDB(rel, 0), "SELECT x FROM t;"); got != "deep\n" {
		t.Fatalf("restore of a %d-byte path: %q", len(rel), got)
	}
}

// TestCopyOverDatabase: `cp other.db MOUNT/app.db` over a WAL-mode database
// whose last connection closed replaces it; the replica follows (to the
// copy, whatever its journal mode), and later transactions continue from it.
func TestCopyOverDatabase(t *testing.T) {
	m := newMount(t)
	for i, mode := range []string{"DELETE", "WAL"} {
		rel := fmt.Sprintf("app%d.db", i)
		shell(t, m.path(rel), "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES('old'), ('older'); CREATE TABLE u(y);")
		other := filepath.Join(t.TempDir(), "other.db")
		shell(t, other, fmt.Sprintf("PRAGMA journal_mode=%s; CREATE TABLE t(x); INSERT INTO t VALUES('copied'); INSERT INTO t SELECT hex(randomblob(500)) FROM generate_series(1, 20);", mode))
		if out, err := exec.Command("cp", other, m.path(rel)).CombinedOutput(); err != nil {
			t.Fatalf("cp: %v %s", err, out)
		}
		m.waitShipped()
		want := shell(t, m.path(rel), ".dump")
		if !strings.Contains(want, "copied") {
			t.Fatalf("the copy is not what the mount serves:\n%s", want)
		}
		if got := shell(t, m.restoreDB(rel, 0), ".dump"); got != want {
			t.Fatalf("%s (copy of a %s database): the replica restores\n%s\nwant\n%s", rel, mode, got, want)
		}
		shell(t, m.path(rel), "INSERT INTO t VALUES('after');")
		m.waitShipped()
		want = shell(t, m.path(rel), ".dump")
		if got := shell(t, m.restoreDB(rel, 0), ".dump"); got != want {
			t.Fatalf("%s after a write on the copy: the replica restores\n%s\nwant\n%s", rel, got, want)
		}
	}
}

// TestPageSizeChange: VACUUM with a new page_size used to stop compaction
// and snapshots for good ("mismatched page sizes"), so retention never
// advanced and replicate stopped. A snapshot is written at the change,
// compaction goes on after it, and replicate follows across it.
func TestPageSizeChange(t *testing.T) {
	m := newMount(t, "--compaction-levels", "300ms", "--snapshot-interval", "1s")
	rel := "ps.db"
	local := filepath.Join(t.TempDir(), "replica.db")
	shell(t, m.path(rel), "CREATE TABLE t(x); INSERT INTO t SELECT hex(randomblob(300)) FROM generate_series(1, 50);")
	write := func(n int) {
		for i := 0; i < n; i++ {
			shell(t, m.path(rel), "INSERT INTO t VALUES(hex(randomblob(100)));")
			time.Sleep(30 * time.Millisecond)
		}
	}
	write(10)
	m.waitShipped()
	rep := exec.Command(walsyncBin, "replicate", m.replicaURL()+"/"+rel, "--local", local, "--interval", "100ms")
	var repLog syncBuffer
	rep.Stdout, rep.Stderr = &repLog, &repLog
	if err := rep.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rep.Process.Kill() })
	write(10)
	shell(t, m.path(rel), "PRAGMA page_size=8192; VACUUM;")
	if got := shell(t, m.path(rel), "PRAGMA page_size;"); got != "8192\n" {
		t.Fatalf("page size after VACUUM: %q", got)
	}
	change := m.latestTXID(rel)
	write(40)
	m.waitShipped()
	time.Sleep(2500 * time.Millisecond) // level-1 compactions and a snapshot after the change
	want := shell(t, m.path(rel), ".dump")
	if got := shell(t, m.restoreDB(rel, 0), ".dump"); got != want {
		t.Fatal("latest restore after the page-size change differs")
	}
	if log := m.log.String(); strings.Contains(log, "compaction failed") {
		t.Fatalf("compaction failed after the page-size change:\n%s", log)
	}
	for _, level := range []int{1, 9} {
		infos, err := file.New(filepath.Join(m.rep, rel)).LTXFiles(context.Background(), "", level)
		if err != nil {
			t.Fatal(err)
		}
		if len(infos) == 0 || infos[len(infos)-1].MaxTXID <= change {
			for _, fi := range infos {
				t.Logf("level %d: %s", level, ltx.FormatFilename(fi.MinTXID, fi.MaxTXID))
			}
			t.Fatalf("level %d has nothing after the page-size change at TXID %d\n%s", level, change, m.log)
		}
	}
	deadline := time.Now().Add(15 * time.Second)
	for checkRestoredRO(t, local) != contentHash(t, openDB(t, m.path(rel))) {
		if time.Now().After(deadline) {
			t.Fatalf("replicate did not follow the page-size change:\n%s", repLog.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := shell(t, local, "PRAGMA page_size;"); got != "8192\n" {
		t.Fatalf("replica page size %q", got)
	}
}

// TestVFSSeveralProcessesOneDatabase: several processes load the extension
// and write one database concurrently (web servers with worker processes).
// Each used to keep its own position and append to the shared staging at
// a size it cached: the replica lost transactions and a process hung in
// Close. Now every transaction of every process is on the replica, in one
// chain, in every rollback journal mode.
func TestVFSSeveralProcessesOneDatabase(t *testing.T) {
	for _, mode := range []string{"DELETE", "TRUNCATE", "PERSIST"} {
		t.Run(mode, func(t *testing.T) {
			dir, rep := t.TempDir(), t.TempDir()
			env := extEnv(dir, rep)
			db := filepath.Join(dir, "shared.db")
			shell(t, db, "PRAGMA journal_mode="+mode+"; CREATE TABLE t(p INTEGER, i INTEGER, pad BLOB);")
			const procs, rows = 3, 100
			var cmds []*exec.Cmd
			var outs []*syncBuffer
			for p := 0; p < procs; p++ {
				cmd := pyExt(t, env, `
import time
c = connect(sys.argv[1], timeout=30)
c.execute("PRAGMA journal_mode=`+mode+`")
p = int(sys.argv[2])
for i in range(`+fmt.Sprint(rows)+`):
    c.execute("INSERT INTO t VALUES(?, ?, randomblob(?))", (p, i, 50 + (i % 7) * 300))
    if i % 10 == 0:
        time.sleep(0.002)
c.close()
`, db, fmt.Sprint(p))
				out := &syncBuffer{}
				cmd.Stdout, cmd.Stderr = out, out
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				cmds, outs = append(cmds, cmd), append(outs, out)
			}
			waitProcesses(t, cmds, outs, 90*time.Second)
			if got := shell(t, db, "SELECT count(*) FROM t;"); got != fmt.Sprintf("%d\n", procs*rows) {
				t.Fatalf("source has %q rows", got)
			}
			out := filepath.Join(t.TempDir(), "r.db")
			restoreCLI(t, "file://"+filepath.Join(rep, "shared.db"), out)
			want := shell(t, db, "SELECT p, i, length(pad) FROM t ORDER BY rowid;")
			if got := shell(t, out, "SELECT p, i, length(pad) FROM t ORDER BY rowid;"); got != want {
				t.Fatalf("restore has %s rows, source %d", strings.TrimSpace(shell(t, out, "SELECT count(*) FROM t;")), procs*rows)
			}
			// One chain: every transaction restores on its own.
			c, err := storage.Open("file://" + filepath.Join(rep, "shared.db"))
			if err != nil {
				t.Fatal(err)
			}
			latest, err := storage.Latest(context.Background(), c, "")
			if err != nil {
				t.Fatal(err)
			}
			if latest.MaxTXID < procs*rows {
				t.Fatalf("latest TXID %d: fewer transactions than the %d inserts", latest.MaxTXID, procs*rows)
			}
			for _, txid := range []ltx.TXID{latest.MaxTXID / 3, latest.MaxTXID / 2, latest.MaxTXID - 1} {
				o := filepath.Join(t.TempDir(), "r.db")
				restoreCLI(t, "file://"+filepath.Join(rep, "shared.db"), o, "--txid", fmt.Sprint(txid))
				if got := shell(t, o, "PRAGMA integrity_check;"); got != "ok\n" {
					t.Fatalf("TXID %d: %s", txid, got)
				}
			}
		})
	}
}

// TestExtensionReplicaCheck: loading the extension with a bucket that does
// not exist fails the load with a message naming it (it used to succeed,
// then block every close); a replica that does not answer only warns.
func TestExtensionReplicaCheck(t *testing.T) {
	srv := s3test.Start(t)
	srv.CreateBucket(t, "ext-bucket")
	dir := t.TempDir()
	load := func(replica string, env []string) (string, error) {
		sh := exec.Command("sqlite3", ":memory:", ".load "+extPath(t), "SELECT 'loaded';")
		sh.Env = append(append(os.Environ(), srv.Env()...), append(env, "WALSYNC_REPLICA="+replica, "WALSYNC_DIR="+dir)...)
		out, err := sh.CombinedOutput()
		return string(out), err
	}
	out, err := load("s3://no-such-bucket/x", nil)
	if err == nil && strings.Contains(out, "loaded") || !strings.Contains(out, `"no-such-bucket"`) {
		t.Fatalf("loading with a missing bucket: %v\n%s", err, out)
	}
	if out, err := load("s3://ext-bucket/x", nil); err != nil || !strings.Contains(out, "loaded") {
		t.Fatalf("loading with a good bucket: %v\n%s", err, out)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	out, err = load("s3://ext-bucket/x", []string{"AWS_ENDPOINT_URL_S3=http://" + addr})
	if err != nil || !strings.Contains(out, "loaded") || !strings.Contains(out, "does not answer") {
		t.Fatalf("loading while the replica does not answer: %v\n%s", err, out)
	}
}

// TestReplicaChangedOrEmptied: restarted with another --replica, or after
// the replica was emptied, walsync starts the databases there from a
// snapshot (logged) instead of uploading increments that cannot be
// restored.
func TestReplicaChangedOrEmptied(t *testing.T) {
	m := newMount(t)
	shell(t, m.path("a.db"), "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES(1);")
	m.waitShipped()
	m.stop()

	// Another replica.
	m.url = "file://" + filepath.Join(t.TempDir(), "other")
	m.start()
	if !strings.Contains(m.log.String(), "the staging was for another replica") {
		t.Fatalf("a replica change is not logged:\n%s", m.log)
	}
	shell(t, m.path("a.db"), "INSERT INTO t VALUES(2);")
	m.waitShipped()
	want := shell(t, m.path("a.db"), ".dump")
	out := filepath.Join(t.TempDir(), "r.db")
	restoreCLI(t, m.url+"/a.db", out)
	if got := shell(t, out, ".dump"); got != want {
		t.Fatalf("restore from the new replica:\n%s\nwant\n%s", got, want)
	}

	// The replica emptied while walsync was stopped.
	m.stop()
	if err := os.RemoveAll(strings.TrimPrefix(m.url, "file://")); err != nil {
		t.Fatal(err)
	}
	m.start()
	shell(t, m.path("a.db"), "INSERT INTO t VALUES(3);")
	m.waitShipped()
	if !strings.Contains(m.log.String(), "staging disagrees with the replica") {
		t.Fatalf("an emptied replica is not logged:\n%s", m.log)
	}
	want = shell(t, m.path("a.db"), ".dump")
	out = filepath.Join(t.TempDir(), "r2.db")
	restoreCLI(t, m.url+"/a.db", out)
	if got := shell(t, out, ".dump"); got != want {
		t.Fatalf("restore from the emptied replica:\n%s\nwant\n%s", got, want)
	}
}

// TestVFSWALSeveralProcesses: two processes load the extension and write one
// WAL database (normal locking: SQLite's shared memory), moving money between
// accounts with synchronous=NORMAL and running checkpoints of every kind,
// while a third reads it with the default VFS in a loop and checkpoints it
// too, of every kind, behind walsync's back (without capture.Config.Outside
// in the VFS, a TRUNCATE there lost commits walsync had not read yet and a
// TXID restored a torn state, 1 run in 4): every read sees the constant
// total and passes PRAGMA integrity_check; every TXID on the replica
// restores the constant total, each writer's rows without a gap, never
// fewer rows than the TXID before; the latest is the database. Each writer
// reads the -wal on from where the last capture of either stopped (the
// shared head carries the WAL position, capture.Head): before it did, the
// second writer shipped frames the first had already shipped over a later
// state, and restores were malformed (2 runs in 3).
func TestVFSWALSeveralProcesses(t *testing.T) {
	dir, rep := t.TempDir(), t.TempDir()
	env := extEnv(dir, rep)
	db := filepath.Join(dir, "bank.db")
	shell(t, db, `PRAGMA journal_mode=WAL; CREATE TABLE t(p INTEGER, i INTEGER, pad BLOB);
CREATE TABLE acct(id INTEGER PRIMARY KEY, bal INTEGER);
WITH RECURSIVE n(x) AS (SELECT 0 UNION ALL SELECT x+1 FROM n WHERE x < 9) INSERT INTO acct SELECT x, 100 FROM n;`)
	const writers, rows = 2, 300
	stop := filepath.Join(dir, "stop")
	reader := exec.Command(python, "-c", `
import sqlite3, sys, os, time
c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
n, t0 = 0, time.time()
while not os.path.exists(sys.argv[2]) or n < 20:
    if time.time() - t0 > 180:
        print('no stop file after 180 s'); sys.exit(1)
    c.execute('BEGIN')
    total = c.execute('SELECT sum(bal) FROM acct').fetchone()[0]
    gaps = c.execute('SELECT count(*) FROM (SELECT p FROM t GROUP BY p HAVING count(*) != max(i)+1)').fetchone()[0]
    c.execute('COMMIT')
    if total != 1000 or gaps != 0:
        print('inconsistent read: total', total, 'gaps', gaps); sys.exit(1)
    if n % 10 == 0:
        ok = c.execute('PRAGMA integrity_check').fetchall()
        if ok != [('ok',)]:
            print('integrity_check:', ok); sys.exit(1)
    if n % 50 == 25:
        c.execute('PRAGMA wal_checkpoint(%s)' % ['PASSIVE', 'FULL', 'RESTART', 'TRUNCATE'][n // 50 % 4]).fetchall()
    n += 1
print('reads', n)
`, db, stop)
	var readOut syncBuffer
	reader.Stdout, reader.Stderr = &readOut, &readOut
	if err := reader.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reader.Process.Kill() }) // a failed test leaves no reader looping
	var cmds []*exec.Cmd
	var outs []*syncBuffer
	for p := 0; p < writers; p++ {
		cmd := pyExt(t, env, `
import time
c = connect(sys.argv[1], timeout=30)
c.execute("PRAGMA wal_autocheckpoint=20")
c.execute("PRAGMA synchronous=NORMAL")
p = int(sys.argv[2])
kinds = ['PASSIVE', 'FULL', 'RESTART', 'TRUNCATE']
for i in range(`+fmt.Sprint(rows)+`):
    a, b = (i * 7 + p) % 10, (i * 3 + 1 + p) % 10
    c.execute("BEGIN IMMEDIATE")
    c.execute("INSERT INTO t VALUES(?, ?, randomblob(?))", (p, i, 50 + (i % 7) * 300))
    c.execute("UPDATE acct SET bal = bal - 1 WHERE id = ?", (a,))
    c.execute("UPDATE acct SET bal = bal + 1 WHERE id = ?", (b,))
    c.execute("COMMIT")
    if i % 25 == 24:
        c.execute("PRAGMA wal_checkpoint(%s)" % kinds[(i // 25 + p) % 4]).fetchall()
c.close()
`, db, fmt.Sprint(p))
		out := &syncBuffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill() })
		cmds, outs = append(cmds, cmd), append(outs, out)
	}
	waitProcesses(t, cmds, outs, 120*time.Second)
	if err := os.WriteFile(stop, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := reader.Wait(); err != nil {
		t.Fatalf("the default-VFS reader: %v\n%s", err, readOut.String())
	}
	t.Logf("default-VFS reader: %s", strings.TrimSpace(readOut.String()))
	want := shell(t, db, "SELECT p, i, length(pad) FROM t ORDER BY rowid; SELECT * FROM acct;")
	prevRows := 0
	restoreEach(t, "file://"+filepath.Join(rep, "bank.db"), func(txid ltx.TXID, last bool, o string) {
		var total, gaps, n int
		got := shell(t, o, "SELECT sum(bal), (SELECT count(*) FROM (SELECT p FROM t GROUP BY p HAVING count(*) != max(i)+1)), (SELECT count(*) FROM t) FROM acct;")
		if _, err := fmt.Sscanf(got, "%d|%d|%d", &total, &gaps, &n); err != nil || total != 1000 || gaps != 0 {
			t.Fatalf("TXID %d: total, writers with a gap, rows %q, want 1000|0|...", txid, got)
		}
		if n < prevRows {
			t.Fatalf("TXID %d: %d rows, TXID %d had %d: the replica went back in time", txid, n, txid-1, prevRows)
		}
		prevRows = n
		if last {
			if got := shell(t, o, "SELECT p, i, length(pad) FROM t ORDER BY rowid; SELECT * FROM acct;"); got != want {
				t.Fatalf("the latest TXID %d differs from the database: rows per writer %q, the database %q", txid,
					shell(t, o, "SELECT p, count(*) FROM t GROUP BY p"), shell(t, db, "SELECT p, count(*) FROM t GROUP BY p"))
			}
		}
	})
}

// restoreEach restores every TXID of the replica at url, in order, and
// calls check with the restored file (last: the latest TXID); every 20th
// and the latest also pass PRAGMA integrity_check.
func restoreEach(t *testing.T, url string, check func(txid ltx.TXID, last bool, path string)) {
	t.Helper()
	c, err := storage.Open(url)
	if err != nil {
		t.Fatal(err)
	}
	latest, err := storage.Latest(context.Background(), c, "")
	if err != nil || latest == nil {
		t.Fatalf("nothing on the replica %s: %v", url, err)
	}
	for txid := ltx.TXID(1); txid <= latest.MaxTXID; txid++ {
		o := filepath.Join(t.TempDir(), "r.db")
		if _, err := restore.Restore(context.Background(), c, "", o, restore.Options{TXID: txid}); err != nil {
			t.Fatalf("restore TXID %d: %v", txid, err)
		}
		if txid%20 == 0 || txid == latest.MaxTXID {
			if got := shell(t, o, "PRAGMA integrity_check;"); got != "ok\n" {
				t.Fatalf("TXID %d: %s", txid, got)
			}
		}
		check(txid, txid == latest.MaxTXID, o)
	}
}

// TestVFSWALKillOneWriter: two processes with the extension write one WAL
// database; one is killed (kill -9) in the middle of a transaction whose
// frames are in the -wal, and the other goes on writing and checkpointing.
// The survivor's connection recovers the WAL (the dead writer's frames are
// never committed); nothing either writer saw committed is missing from
// the replica, nothing uncommitted is on it, and every TXID restores each
// writer's rows without a gap.
func TestVFSWALKillOneWriter(t *testing.T) {
	dir, rep := t.TempDir(), t.TempDir()
	env := extEnv(dir, rep)
	db := filepath.Join(dir, "k.db")
	shell(t, db, "PRAGMA journal_mode=WAL; CREATE TABLE t(p INTEGER, i INTEGER, b BLOB);")
	killed := filepath.Join(dir, "killed")
	writer := func(p int, script string) (*exec.Cmd, *bufio.Scanner) {
		cmd := pyExt(t, env, `
import time
c = connect(sys.argv[1], timeout=30)
c.execute("PRAGMA cache_size=10")
p = int(sys.argv[2])
def commit(i):
    c.execute("BEGIN IMMEDIATE")
    c.execute("INSERT INTO t VALUES(?, ?, randomblob(300))", (p, i))
    c.execute("COMMIT")
    print(i, flush=True)
`+script, db, fmt.Sprint(p), killed)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill() })
		return cmd, bufio.NewScanner(stdout)
	}
	// The survivor commits until the other is killed, then 100 more with
	// checkpoints of every kind.
	survivor, survOut := writer(0, `
i = 0
while not os.path.exists(sys.argv[3]) and i < 20000:
    commit(i); i += 1
    time.sleep(0.002)
for k in range(100):
    commit(i); i += 1
    if k % 20 == 19:
        c.execute("PRAGMA wal_checkpoint(%s)" % ['PASSIVE', 'FULL', 'RESTART', 'TRUNCATE'][k // 20 % 4]).fetchall()
c.close()
`)
	victim, victOut := writer(1, `
for i in range(150):
    commit(i)
c.execute("BEGIN IMMEDIATE")
for i in range(1000, 1300):
    c.execute("INSERT INTO t VALUES(?, ?, randomblob(2000))", (p, i))
print("open", flush=True)
time.sleep(60)
`)
	acked, open := -1, false
	for victOut.Scan() {
		if victOut.Text() == "open" {
			open = true
			break
		}
		acked, _ = strconv.Atoi(victOut.Text())
	}
	if fi, err := os.Stat(db + "-wal"); err != nil || fi.Size() < 300000 {
		t.Fatalf("the open transaction left no frames in the -wal (%v): the test proves nothing", err)
	}
	_ = victim.Process.Signal(syscall.SIGKILL)
	_ = victim.Wait()
	if acked != 149 || !open {
		t.Fatalf("the writer to kill acknowledged up to %d (open transaction: %v)", acked, open)
	}
	if err := os.WriteFile(killed, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	survAcked := -1
	for survOut.Scan() {
		survAcked, _ = strconv.Atoi(survOut.Text())
	}
	if err := survivor.Wait(); err != nil {
		t.Fatalf("the surviving writer: %v", err)
	}
	// The next opener ships what is left staged.
	py := pyExt(t, extEnv(dir, rep), `
c = connect(sys.argv[1])
print(c.execute("PRAGMA integrity_check").fetchone()[0], c.execute("SELECT count(*) FROM t WHERE i >= 1000").fetchone()[0])
c.close()
`, db)
	if out, err := py.CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "ok 0" {
		t.Fatalf("reopen: %q (%v), want the database ok and nothing uncommitted", out, err)
	}
	want := fmt.Sprintf("%d|%d\n%d|%d\n", 0, survAcked, 1, acked)
	if got := shell(t, db, "SELECT p, max(i) FROM t GROUP BY p ORDER BY p;"); got != want {
		t.Fatalf("SQLite has %q, the writers saw %q committed", got, want)
	}
	restoreEach(t, "file://"+filepath.Join(rep, "k.db"), func(txid ltx.TXID, last bool, o string) {
		if got := shell(t, o, "SELECT (SELECT count(*) FROM (SELECT p FROM t GROUP BY p HAVING count(*) != max(i)+1)), (SELECT count(*) FROM t WHERE i >= 1000);"); got != "0|0\n" {
			t.Fatalf("TXID %d: writers with a gap, uncommitted rows: %q, want 0|0", txid, got)
		}
		if last {
			if got := shell(t, o, "SELECT p, max(i) FROM t GROUP BY p ORDER BY p;"); got != want {
				t.Fatalf("the latest TXID %d has %q, the writers saw %q committed", txid, got, want)
			}
		}
	})
}

// waitProcesses waits for each process to exit successfully within limit
// (one that hangs, in a close for instance, is killed and fails the test).
func waitProcesses(t *testing.T, cmds []*exec.Cmd, outs []*syncBuffer, limit time.Duration) {
	t.Helper()
	for i, cmd := range cmds {
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("process %d: %v\n%s", i, err, outs[i])
			}
		case <-time.After(limit):
			_ = cmd.Process.Kill()
			t.Fatalf("process %d did not finish (hung in close?)\n%s", i, outs[i])
		}
	}
}

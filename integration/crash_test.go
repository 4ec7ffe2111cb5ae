package integration

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestKill9MidWorkload kills walsync with SIGKILL while an application
// commits transactions, restarts it on the same --data, and checks that every
// transaction the application saw committed is on the replica, that nothing
// rolled back is, and that the replica restores to exactly what SQLite has.
func TestKill9MidWorkload(t *testing.T) {
	for _, c := range []struct{ capture, mode string }{{"passthrough", "WAL"}, {"write", "WAL"}, {"passthrough", "DELETE"}} {
		capture, mode := c.capture, c.mode
		t.Run(capture+"/"+mode, func(t *testing.T) {
			m := newModeMount(t, capture)
			rel := "crash/app.db"
			db := openDB(t, m.path(rel), "journal_mode="+mode, "cache_size=2")
			mustExec(t, db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, b BLOB)")
			tx := mustBegin(t, db)
			for i := 0; i < 100; i++ {
				mustExec(t, tx, "INSERT INTO t(v, b) VALUES(?, randomblob(1000))", rolledBackMarker)
			}
			if err := tx.Rollback(); err != nil {
				t.Fatal(err)
			}
			var acked atomic.Int64
			done := make(chan struct{})
			go func() {
				defer close(done)
				for i := int64(1); ; i++ {
					if _, err := db.Exec("INSERT INTO t(id, v, b) VALUES(?, 'row', randomblob(300))", i); err != nil {
						return // the mount is gone
					}
					acked.Store(i)
				}
			}()
			time.Sleep(700 * time.Millisecond)
			m.kill9()
			<-done
			db.Close()
			if acked.Load() < 10 {
				t.Fatalf("only %d transactions before the kill", acked.Load())
			}

			m.start()
			src := openDB(t, m.path(rel))
			var n, maxID int64
			if err := src.QueryRow("SELECT count(*), coalesce(max(id),0) FROM t").Scan(&n, &maxID); err != nil {
				t.Fatal(err)
			}
			if maxID < acked.Load() || n != maxID {
				t.Fatalf("after restart SQLite has %d rows up to id %d; the application saw %d committed", n, maxID, acked.Load())
			}
			want := contentHash(t, src)
			m.waitShipped()
			path := m.restoreDB(rel, 0)
			if got := checkRestored(t, path); got != want {
				t.Fatalf("restore after kill -9 differs from the source (acked %d, source has %d)", acked.Load(), maxID)
			}
			if c := countMarker(t, path); c != 0 {
				t.Fatalf("%d rolled-back rows on the replica", c)
			}
			// The database keeps being captured after the restart.
			mustExec(t, src, "INSERT INTO t(v) VALUES('after restart')")
			want = contentHash(t, src)
			m.waitShipped()
			if got := checkRestored(t, m.restoreDB(rel, 0)); got != want {
				t.Fatal("transaction after restart not captured")
			}
		})
	}
}

// TestResyncWhenContinuityUnproven changes a database behind walsync's back
// (directly in --data while walsync is stopped): at the next start walsync
// cannot prove continuity and ships the whole database as the next TXID.
func TestResyncWhenContinuityUnproven(t *testing.T) {
	m := newMount(t)
	rel := "resync.db"
	shell(t, m.path(rel), "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES('before');")
	m.waitShipped()
	before := m.latestTXID(rel)
	m.stop()

	shell(t, filepath.Join(m.data, rel), "INSERT INTO t VALUES('behind walsync''s back');")

	m.start()
	want := shell(t, m.path(rel), "SELECT group_concat(x, '|') FROM t;")
	m.waitShipped()
	after := m.latestTXID(rel)
	if after != before+1 {
		t.Fatalf("latest TXID %d after resync, want %d", after, before+1)
	}
	if got := shell(t, m.restoreDB(rel, 0), "SELECT group_concat(x, '|') FROM t;"); got != want {
		t.Fatalf("resynced restore has %q, want %q", got, want)
	}
	if got := shell(t, m.restoreDB(rel, before), "SELECT group_concat(x, '|') FROM t;"); got != "before\n" {
		t.Fatalf("restore at TXID %d has %q", before, got)
	}
	if !strings.Contains(m.log.String(), "resync") {
		t.Fatalf("resync not logged:\n%s", m.log)
	}
}

// TestSignalFlushesAndUnmounts checks that SIGTERM ships what is pending even
// with a long batch window, unmounts and exits 0.
func TestSignalFlushesAndUnmounts(t *testing.T) {
	m := newMount(t, "--sync-interval", "1h")
	rel := "flush.db"
	shell(t, m.path(rel), "CREATE TABLE t(x); INSERT INTO t VALUES(1); INSERT INTO t VALUES(2);")
	time.Sleep(200 * time.Millisecond)
	if got := m.latestTXID(rel); got != 0 {
		t.Fatalf("shipped before the batch window ended: TXID %d", got)
	}
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	if err := <-m.done; err != nil {
		t.Fatalf("walsync exited with %v\n%s", err, m.log)
	}
	m.cmd = nil
	if isMounted(m.mnt) {
		t.Fatal("still mounted after SIGTERM")
	}
	if got := m.latestTXID(rel); got != 3 {
		t.Fatalf("latest TXID after SIGTERM %d, want 3", got)
	}
}

func runWalsync(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return runWalsyncEnv(t, nil, args...)
}

// runWalsyncStdout runs walsync and returns its standard output alone
// (logs go to stderr): for --json.
func runWalsyncStdout(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(walsyncBin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		err = fmt.Errorf("%w: %s", err, stderr.String())
	}
	return string(out), err
}

func runWalsyncEnv(t *testing.T, env []string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(walsyncBin, args...)
	cmd.Env = append(os.Environ(), env...)
	done := make(chan struct{})
	var out []byte
	var err error
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("walsync %v did not exit", args)
	}
	return string(out), err
}

// TestBadMountInput checks the errors for a bad mount point and --data.
func TestBadMountInput(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	rep := "file://" + filepath.Join(dir, "rep")
	m := newMount(t)
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"missing mount point", []string{"mount", filepath.Join(dir, "nope"), "--data", dir + "/d", "--replica", rep}, "does not exist"},
		{"mount point not a directory", []string{"mount", file, "--data", dir + "/d", "--replica", rep}, "is not a directory"},
		{"already mounted", []string{"mount", m.mnt, "--data", dir + "/d", "--replica", rep}, "already mounted"},
		{"data unwritable", []string{"mount", t.TempDir(), "--data", file + "/sub", "--replica", rep}, "--data"},
		{"replica unparsable", []string{"mount", t.TempDir(), "--data", dir + "/d", "--replica", "://bad"}, "cannot be parsed"},
		{"replica relative", []string{"mount", t.TempDir(), "--data", dir + "/d", "--replica", "file://rel/dir"}, "absolute"},
		{"replica through a file", []string{"mount", t.TempDir(), "--data", dir + "/d", "--replica", "file://" + file + "/rep"}, file + " is not a directory"},
		{"ls of a missing replica", []string{"ls", "file://" + dir + "/missing"}, "no backup under file://" + dir + "/missing"},
		{"ls of an empty replica", []string{"ls", "file://" + t.TempDir()}, "no backup under"},
		{"unknown capture mode", []string{"mount", t.TempDir(), "--data", dir + "/d", "--replica", rep, "--capture", "kernel"}, `--capture: unknown capture mode "kernel"`},
		{"restore bad txid", []string{"restore", rep, "-o", dir + "/out.db", "--txid", "abc"}, "--txid"},
		{"restore nothing there", []string{"restore", rep, "-o", dir + "/out.db"}, "no backup"},
	}
	for _, c := range cases {
		out, err := runWalsync(t, c.args...)
		if err == nil {
			t.Fatalf("%s: walsync succeeded:\n%s", c.name, out)
		}
		if !strings.Contains(out, c.want) {
			t.Fatalf("%s: error does not say %q:\n%s", c.name, c.want, out)
		}
	}
	if _, err := os.Stat(dir + "/out.db"); !os.IsNotExist(err) {
		t.Fatal("a failed restore left an output file")
	}
}

// TestReplicaUnwritableThenRecovers starts with a replica on a filesystem
// mounted read-only (a backup disk not ready yet): walsync warns and
// starts, keeps capturing, and catches up by itself once it can write.
func TestReplicaUnwritableThenRecovers(t *testing.T) {
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk")
	if err := os.MkdirAll(disk, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "ro,size=64m", "tmpfs", disk).CombinedOutput(); err != nil {
		t.Fatalf("mount a read-only tmpfs (needs root): %v\n%s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", disk).Run() })
	m := &mount{t: t, mnt: filepath.Join(dir, "mnt"), data: filepath.Join(dir, "data"), rep: filepath.Join(disk, "root")}
	if err := os.MkdirAll(m.mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	m.args = []string{"--log-level", "info"}
	m.start()
	t.Cleanup(func() {
		if m.cmd != nil {
			m.stop()
		}
	})
	rel := "x.db"
	shell(t, m.path(rel), "PRAGMA journal_mode=WAL; CREATE TABLE t(x);")
	for i := 0; i < 20; i++ {
		shell(t, m.path(rel), fmt.Sprintf("INSERT INTO t VALUES(%d);", i))
	}
	// Uploads fail, logged by database, and are retried.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(m.log.String(), "upload failed") {
		if time.Now().After(deadline) {
			t.Fatalf("replica failure not logged:\n%s", m.log)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(m.log.String(), "db="+rel) {
		t.Fatalf("the failure log does not name the database:\n%s", m.log)
	}
	if !strings.Contains(m.log.String(), "cannot be written now") {
		t.Fatalf("no startup warning about the replica:\n%s", m.log)
	}
	if out, err := exec.Command("mount", "-o", "remount,rw", disk).CombinedOutput(); err != nil {
		t.Fatalf("remount read-write: %v\n%s", err, out)
	}
	// Capture resumes at a write after the retry backoff (at most a minute).
	deadline = time.Now().Add(90 * time.Second)
	for i := 20; m.latestTXIDOrZero(rel) == 0; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("no catch-up after the replica became writable:\n%s", m.log)
		}
		shell(t, m.path(rel), fmt.Sprintf("INSERT INTO t VALUES(%d);", i))
		time.Sleep(300 * time.Millisecond)
	}
	want := shell(t, m.path(rel), ".dump")
	m.waitShipped()
	if got := shell(t, m.restoreDB(rel, 0), ".dump"); got != want {
		t.Fatalf("after recovery the restore differs:\n%s\nwant\n%s", got, want)
	}
}

// TestGarbageWAL writes garbage into a -wal: no transaction appears and
// SQLite reads the database as before.
func TestGarbageWAL(t *testing.T) {
	m := newMount(t)
	rel := "g.db"
	shell(t, m.path(rel), "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES('a');")
	m.waitShipped()
	before := m.latestTXID(rel)
	garbage := make([]byte, 3*4096+57)
	for i := range garbage {
		garbage[i] = byte(i*7 + 3)
	}
	// A valid-looking WAL magic followed by nonsense, then pure noise.
	copy(garbage, []byte{0x37, 0x7f, 0x06, 0x82, 0, 0x2d, 0xe2, 0x18, 0, 0, 0x10, 0})
	if err := os.WriteFile(m.path(rel+"-wal"), garbage, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(m.path(rel+"-wal"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(garbage[100:], 32); err != nil {
		t.Fatal(err)
	}
	f.Close()
	m.waitShipped()
	if after := m.latestTXID(rel); after != before {
		t.Fatalf("garbage in the WAL produced transactions: %d -> %d", before, after)
	}
	if got := shell(t, m.path(rel), "SELECT group_concat(x) FROM t;"); got != "a\n" {
		t.Fatalf("SQLite reads %q after garbage in the WAL", got)
	}
	shell(t, m.path(rel), "INSERT INTO t VALUES('b');")
	want := shell(t, m.path(rel), ".dump")
	m.waitShipped()
	if got := shell(t, m.restoreDB(rel, 0), ".dump"); got != want {
		t.Fatalf("restore differs after garbage WAL:\n%s\nwant\n%s", got, want)
	}
}

// TestUncapturableJournalModesWarn checks that journal_mode OFF and MEMORY
// are warned about by database name, and that the state is captured when the
// last connection closes.
func TestUncapturableJournalModesWarn(t *testing.T) {
	m := newMount(t)
	for _, c := range []struct{ mode, script string }{
		{"OFF", "CREATE TABLE t(x); PRAGMA journal_mode=OFF; INSERT INTO t VALUES(1); INSERT INTO t VALUES(2);"},
		{"MEMORY", "CREATE TABLE t(x); PRAGMA journal_mode=MEMORY; INSERT INTO t VALUES(1); INSERT INTO t VALUES(2);"},
		// A new database that never had a journal: its first page 1 arrives unjournaled.
		{"OFF-new", "PRAGMA journal_mode=OFF; CREATE TABLE t(x); INSERT INTO t VALUES(1);"},
	} {
		rel := "modes/" + strings.ToLower(c.mode) + ".db"
		shell(t, m.path(rel), c.script)
		want := shell(t, m.path(rel), ".dump")
		m.waitShipped()
		if !strings.Contains(m.log.String(), "database "+rel+" is written without a rollback journal or WAL") {
			t.Fatalf("no warning naming %s:\n%s", rel, m.log)
		}
		if got := shell(t, m.restoreDB(rel, 0), ".dump"); got != want {
			t.Fatalf("%s: state at close not captured:\n%s\nwant\n%s", rel, got, want)
		}
	}
}

// TestDirectorySyncSyncsStaging: with synchronous=EXTRA in DELETE mode,
// SQLite makes a commit durable by fsyncing the directory after deleting the
// journal; through the mount a directory fsync also fsyncs the staging of
// the databases in that directory (seen in the debug log). With OFF SQLite
// syncs nothing, and walsync adds nothing.
func TestDirectorySyncSyncsStaging(t *testing.T) {
	m := newMount(t)
	const line = `msg="staging synced with its directory" db=`
	shell(t, m.path("off/a.db"), "PRAGMA journal_mode=DELETE; PRAGMA synchronous=OFF; CREATE TABLE t(x); INSERT INTO t VALUES(1);")
	shell(t, m.path("extra/b.db"), "PRAGMA journal_mode=DELETE; PRAGMA synchronous=EXTRA; CREATE TABLE t(x); INSERT INTO t VALUES(1);")
	m.waitShipped()
	log := m.log.String()
	if !strings.Contains(log, line+"extra/b.db") {
		t.Fatalf("no staging sync for extra/b.db after its directory syncs:\n%s", log)
	}
	if strings.Contains(log, line+"off/a.db") {
		t.Fatalf("staging of off/a.db synced without a directory sync:\n%s", log)
	}
	if got := shell(t, m.restoreDB("extra/b.db", 0), "SELECT x FROM t;"); strings.TrimSpace(got) != "1" {
		t.Fatalf("restored extra/b.db: %q", got)
	}
}

// TestDeadMountCleanedAtStart: walsync killed with SIGKILL leaves its
// mount point dead ("transport endpoint is not connected"); the next
// walsync unmounts it, says so, and serves the databases whole.
func TestDeadMountCleanedAtStart(t *testing.T) {
	m := newMount(t)
	rel := "dead.db"
	shell(t, m.path(rel), "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES(1);")
	want := shell(t, filepath.Join(m.data, rel), ".dump")
	_ = m.cmd.Process.Kill()
	<-m.done
	m.cmd = nil
	if _, err := os.ReadDir(m.mnt); !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("after SIGKILL the mount point answers %v, want ENOTCONN", err)
	}
	// The dead mount is in the mount table: wait for the new one's word.
	m.startNoWait()
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(m.log.String(), "msg=mounted") {
		if time.Now().After(deadline) {
			t.Fatalf("walsync did not mount over the dead mount:\n%s", m.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(m.log.String(), "a dead walsync mount") {
		t.Fatalf("the cleanup is not logged:\n%s", m.log)
	}
	if got := shell(t, m.path(rel), ".dump"); got != want {
		t.Fatalf("after the restart the database reads:\n%s\nwant\n%s", got, want)
	}
	m.waitShipped()
	if got := shell(t, m.restoreDB(rel, 0), ".dump"); got != want {
		t.Fatalf("restore differs:\n%s\nwant\n%s", got, want)
	}
}

// TestSignalDuringStartup: SIGINT while walsync is still starting stops it
// the same way as later (it exits, unmounted), not by the signal's
// default action, which would leave a dead mount.
func TestSignalDuringStartup(t *testing.T) {
	dir := t.TempDir()
	m := &mount{t: t, mnt: filepath.Join(dir, "mnt"), data: filepath.Join(dir, "data"), rep: filepath.Join(dir, "replica")}
	if err := os.MkdirAll(m.mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	m.startNoWait()
	// Once main has begun (it says so), before the mount is up.
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(m.log.String(), "msg=starting") {
		if time.Now().After(deadline) {
			t.Fatalf("walsync did not start:\n%s", m.log)
		}
		time.Sleep(time.Millisecond)
	}
	_ = m.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-m.done:
	case <-time.After(60 * time.Second):
		_ = m.cmd.Process.Kill()
		t.Fatalf("walsync did not stop after SIGINT during startup\n%s", m.log)
	}
	ps := m.cmd.ProcessState
	m.cmd = nil
	if !ps.Exited() {
		t.Fatalf("walsync was killed by the signal (%v), not stopped by it\n%s", ps, m.log)
	}
	if isMounted(m.mnt) {
		_ = exec.Command("umount", "-l", m.mnt).Run()
		t.Fatalf("%s still mounted after walsync stopped", m.mnt)
	}
}

package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestReplicateWithReaders starts `walsync replicate` before the database
// has any backup, writes thousands of transactions that keep a sum constant,
// and runs four reader processes on the replica the whole time: no reader
// ever sees a torn state (integrity_check fails or the sum changes) or an
// error other than SQLite's busy. replicate is restarted midway and resumes;
// at the end the replica equals the source.
func TestReplicateWithReaders(t *testing.T) {
	m := newMount(t)
	rel := "rep/bank.db"
	local := filepath.Join(t.TempDir(), "replica.db")
	url := m.replicaURL() + "/" + rel
	startRep := func() (*exec.Cmd, *syncBuffer) {
		cmd := exec.Command(walsyncBin, "replicate", url, "--local", local, "--interval", "100ms")
		var log syncBuffer
		cmd.Stdout, cmd.Stderr = &log, &log
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill() }) // also when the test fails early
		return cmd, &log
	}
	rep, repLog := startRep()
	time.Sleep(300 * time.Millisecond)
	if !strings.Contains(repLog.String(), "waiting for the first backup") {
		t.Fatalf("replicate does not wait for the first backup:\n%s", repLog)
	}

	const accounts, total = 20, 20 * 1000
	db := openDB(t, m.path(rel), "journal_mode=WAL")
	// One transaction: a replica either has no table or all the accounts.
	tx := mustBegin(t, db)
	mustExec(t, tx, "CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER, pad BLOB)")
	for i := 0; i < accounts; i++ {
		mustExec(t, tx, "INSERT INTO accounts(id, balance, pad) VALUES(?, 1000, randomblob(300))", i)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(local); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica never created:\n%s", repLog)
		}
		time.Sleep(50 * time.Millisecond)
	}

	var wg sync.WaitGroup
	readerErrs := make(chan string, 100)
	for r := 0; r < 4; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command(python, "-c", `
import sqlite3, sys, time
want_sum, want_n = int(sys.argv[2]), int(sys.argv[3])
reads = 0
deadline = time.time() + 60
while time.time() < deadline:
    try:
        c = sqlite3.connect("file:" + sys.argv[1] + "?mode=ro", uri=True, timeout=10)
        ok = c.execute("PRAGMA integrity_check").fetchone()[0]
        s, n = c.execute("SELECT sum(balance), count(*) FROM accounts").fetchone()
        c.close()
    except sqlite3.OperationalError as e:
        if "locked" in str(e) or "busy" in str(e):
            continue
        if "no such table" in str(e):
            continue
        print("ERROR", e, flush=True); sys.exit(1)
    if ok != "ok" or s != want_sum or n != want_n:
        print("TORN", ok, s, n, flush=True); sys.exit(1)
    reads += 1
    try:
        open(sys.argv[4]).close()
        break
    except FileNotFoundError:
        pass
print("READS", reads, flush=True)
`, local, fmt.Sprint(total), fmt.Sprint(accounts), filepath.Join(filepath.Dir(local), "stop"))
			out, err := cmd.CombinedOutput()
			if err != nil || !strings.Contains(string(out), "READS") {
				readerErrs <- fmt.Sprintf("%v: %s", err, out)
			}
		}()
	}

	// 5,000 transfers; replicate restarted halfway.
	for i := 0; i < 5000; i++ {
		from, to := i%accounts, (i*7+3)%accounts
		mustExec(t, db, "UPDATE accounts SET balance = balance + CASE id WHEN ? THEN -5 WHEN ? THEN 5 ELSE 0 END WHERE id IN (?, ?)", from, to, from, to)
		if i == 2500 {
			// A restart (SIGINT finishes the update in progress; a kill in
			// the middle of one would leave a hot journal that read-only
			// readers cannot roll back until replicate runs again).
			_ = rep.Process.Signal(syscall.SIGINT)
			_ = rep.Wait()
			rep, repLog = startRep()
		}
	}
	want := contentHash(t, db)
	m.waitShipped()
	deadline = time.Now().Add(30 * time.Second)
	for {
		if checkRestoredRO(t, local) == want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the replica did not catch up with the source\n%s", repLog)
		}
		time.Sleep(100 * time.Millisecond)
	}
	os.WriteFile(filepath.Join(filepath.Dir(local), "stop"), nil, 0o644)
	wg.Wait()
	close(readerErrs)
	for e := range readerErrs {
		t.Fatalf("a reader failed: %s\nreplicate log:\n%s", e, repLog)
	}
	_ = rep.Process.Signal(syscall.SIGINT)
	_ = rep.Wait()
	if !strings.Contains(repLog.String(), "lag=") {
		t.Fatalf("replicate does not report its lag:\n%s", repLog)
	}
	// Its own state is private; the replica has SQLite's default mode.
	if fi, err := os.Stat(local + "-walsync.json"); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("replicate's position file: %v %v, want mode 600", err, fi)
	}
	if fi, err := os.Stat(local); err != nil || fi.Mode().Perm() != 0o644&^umask() {
		t.Fatalf("the replica: %v %v, want mode %o", err, fi, 0o644&^umask())
	}
}

// umask is this process's file mode creation mask.
func umask() os.FileMode {
	m := syscall.Umask(0)
	syscall.Umask(m)
	return os.FileMode(m)
}

// checkRestoredRO hashes a database opened read-only, "" if it cannot yet.
func checkRestoredRO(t *testing.T, path string) string {
	db, err := openRO(path)
	if err != nil {
		return ""
	}
	defer db.Close()
	var n int
	if err := db.QueryRow("SELECT count(*) FROM sqlite_master").Scan(&n); err != nil {
		return ""
	}
	return contentHash(t, db)
}

// TestReplicateResyncsAfterCompaction stops replicate, lets retention delete
// the files it would need next, and restarts it: it resyncs from a snapshot
// by itself and catches up.
func TestReplicateResyncsAfterCompaction(t *testing.T) {
	m := newMount(t, "--compaction-levels", "300ms", "--snapshot-interval", "500ms", "--retention", "1s")
	rel := "resync/r.db"
	local := filepath.Join(t.TempDir(), "replica.db")
	db := openDB(t, m.path(rel), "journal_mode=WAL")
	mustExec(t, db, "CREATE TABLE t(x)")
	write := func(n int) {
		for i := 0; i < n; i++ {
			mustExec(t, db, "INSERT INTO t VALUES(?)", i)
			time.Sleep(20 * time.Millisecond)
		}
	}
	write(10)
	m.waitShipped()
	cmd := exec.Command(walsyncBin, "replicate", m.replicaURL()+"/"+rel, "--local", local, "--interval", "100ms")
	if out, err := runFor(cmd, 2*time.Second); err != nil {
		t.Fatalf("replicate: %v\n%s", err, out)
	}
	write(150) // about 3 s: several snapshots and retention passes
	m.waitShipped()
	time.Sleep(1500 * time.Millisecond)
	want := contentHash(t, db)
	cmd = exec.Command(walsyncBin, "replicate", m.replicaURL()+"/"+rel, "--local", local, "--interval", "100ms")
	out, err := runFor(cmd, 3*time.Second)
	if err != nil {
		t.Fatalf("replicate: %v\n%s", err, out)
	}
	if !strings.Contains(out, "resyncing from a snapshot") {
		t.Fatalf("replicate did not resync after the chain was compacted away:\n%s", out)
	}
	if got := checkRestoredRO(t, local); got != want {
		t.Fatalf("replica differs from the source after the resync:\n%s", out)
	}
}

// runFor runs cmd for d, then stops it with SIGINT and returns its output.
func runFor(cmd *exec.Cmd, d time.Duration) (string, error) {
	var log syncBuffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		return "", err
	}
	time.Sleep(d)
	_ = cmd.Process.Signal(syscall.SIGINT)
	err := cmd.Wait()
	return log.String(), err
}

package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/superfly/ltx"
	"github.com/walsync/walsync/storage/file"
)

// peakRSS follows a running process's VmHWM (the high-water mark of its
// own address space) until stop is called, and returns the highest read.
// The rusage of a waited child is no measure here: Linux counts in it the
// parent's resident set at the time the child execs (Go starts children
// with CLONE_VM), and the test process is the bigger one.
func peakRSS(pid int) (stop func() int64) {
	var mu sync.Mutex
	var peak int64
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for {
			if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
				for _, line := range strings.Split(string(b), "\n") {
					if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
						kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
						mu.Lock()
						peak = max(peak, kb<<10)
						mu.Unlock()
					}
				}
			}
			select {
			case <-done:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	return func() int64 {
		close(done)
		<-finished
		mu.Lock()
		defer mu.Unlock()
		return peak
	}
}

// runPeak runs cmd to its end and returns its output and peak RSS.
func runPeak(cmd *exec.Cmd) ([]byte, int64, error) {
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return nil, 0, err
	}
	// A zombie keeps its /proc status readable until it is reaped, but
	// not its memory: the last reads before Wait see the final mark.
	stop := peakRSS(cmd.Process.Pid)
	err := cmd.Wait()
	return out.b.Bytes(), stop(), err
}

// TestLargeDatabaseMemory: a database of more than 1 GiB costs no more
// memory than a small one. It is snapshotted at first sight, compacted into
// level 1 and a new snapshot, restored, verified, and resynced by replicate,
// each process (built without the race detector) peaking under 64 MB.
func TestLargeDatabaseMemory(t *testing.T) {
	const limit = 64 << 20
	checkRSS := func(command string, rss int64) {
		t.Helper()
		if rss == 0 {
			t.Fatalf("walsync %s: no peak RSS read", command)
		}
		if rss > limit {
			t.Errorf("walsync %s peaked at %d MB with a 1 GiB database", command, rss>>20)
		} else {
			t.Logf("walsync %s: peak RSS %d MB", command, rss>>20)
		}
	}
	dir := t.TempDir()
	m := &mount{t: t, mnt: filepath.Join(dir, "mnt"), data: filepath.Join(dir, "data"), rep: filepath.Join(dir, "replica"),
		bin: walsyncPlainBin, args: []string{"--compaction-levels", "2s", "--snapshot-interval", "4s", "--log-level", "info"}}
	for _, d := range []string{m.mnt, m.data} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Made outside the mount: walsync sees it first when it is opened.
	big := filepath.Join(m.data, "big.db")
	shell(t, big, `PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA journal_mode=DELETE;
CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB);
INSERT INTO t(b) SELECT randomblob(4000) FROM generate_series(1, 275000);`)
	if fi, err := os.Stat(big); err != nil || fi.Size() < 1<<30 {
		t.Fatalf("the database is not over 1 GiB: %v %v", fi, err)
	}
	m.start()
	mountPeak := peakRSS(m.cmd.Process.Pid)
	t.Cleanup(func() {
		if m.cmd != nil {
			m.stop()
		}
	})
	for i := 0; i < 4; i++ {
		shell(t, m.path("big.db"), fmt.Sprintf("INSERT INTO t(b) VALUES(randomblob(%d));", 100+i))
		m.waitShipped()
		time.Sleep(1500 * time.Millisecond)
	}
	// Level 1 and a snapshot after TXID 1 cover the whole database.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		l1, _ := file.New(filepath.Join(m.rep, "big.db")).LTXFiles(t.Context(), "", 1)
		l9, _ := file.New(filepath.Join(m.rep, "big.db")).LTXFiles(t.Context(), "", 9)
		if len(l1) > 0 && len(l9) > 0 && l9[len(l9)-1].MaxTXID > ltx.TXID(1) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no compaction and snapshot of the large database:\n%s", m.log)
		}
		time.Sleep(500 * time.Millisecond)
	}
	want := shell(t, m.path("big.db"), "SELECT count(*), sum(length(b)), max(id) FROM t;")
	m.stop()
	checkRSS("mount", mountPeak())

	out := filepath.Join(t.TempDir(), "restored.db")
	b, rss, err := runPeak(exec.Command(walsyncPlainBin, "restore", "file://"+filepath.Join(m.rep, "big.db"), "-o", out))
	if err != nil {
		t.Fatalf("restore: %v\n%s", err, b)
	}
	checkRSS("restore", rss)
	if got := shell(t, out, "SELECT count(*), sum(length(b)), max(id) FROM t;"); got != want {
		t.Fatalf("restored %q, want %q", got, want)
	}

	b, rss, err = runPeak(exec.Command(walsyncPlainBin, "verify", "file://"+filepath.Join(m.rep, "big.db")))
	if err != nil {
		t.Fatalf("verify: %v\n%s", err, b)
	}
	checkRSS("verify", rss)

	local := filepath.Join(t.TempDir(), "replica.db")
	rep := exec.Command(walsyncPlainBin, "replicate", "file://"+filepath.Join(m.rep, "big.db"), "--local", local, "--interval", "200ms")
	var log syncBuffer
	rep.Stdout, rep.Stderr = &log, &log
	if err := rep.Start(); err != nil {
		t.Fatal(err)
	}
	repPeak := peakRSS(rep.Process.Pid)
	deadline = time.Now().Add(3 * time.Minute)
	for !strings.Contains(log.String(), "replica updated") {
		if time.Now().After(deadline) {
			_ = rep.Process.Kill()
			t.Fatalf("replicate did not resync:\n%s", log.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	_ = rep.Process.Signal(syscall.SIGINT)
	_ = rep.Wait()
	checkRSS("replicate", repPeak())
	if got := shell(t, local, "SELECT count(*), sum(length(b)), max(id) FROM t;"); got != want {
		t.Fatalf("replica %q, want %q", got, want)
	}
}

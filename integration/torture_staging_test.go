package integration

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/walsync/walsync/internal/s3test"
)

// The torture suite's staging-full phase.

// tortureStagingFull: walsync's staging is a 2 MiB tmpfs of its own; the
// mount captures every write (--capture=write).
//
// (a1) The filesystem fills up with another file (a disk shared with other
// data): commits must fail with an I/O error ("disk I/O error" or "database
// or disk is full" from SQLite), never be acknowledged and lost; walsync is
// killed and restarted while the disk is full; once the file is removed,
// commits succeed again and staging drains.
//
// (a2) The replica is down until walsync's own staging fills the
// filesystem: commits fail the same way; when the replica is back, staging
// must drain by itself and commits succeed again.
//
// Every acknowledged transaction must be in the restores.
func tortureStagingFull(t *testing.T, srv *s3test.Server, ls string, rnd *rand.Rand, keep string, deadline time.Time, fig *tortureFigures) {
	proxy := startFaultProxy(t, srv.Endpoint)
	dir := t.TempDir()
	m := &mount{t: t, mnt: filepath.Join(dir, "mnt"), data: filepath.Join(dir, "data"),
		env: append(srv.Env(), "AWS_ENDPOINT_URL_S3="+proxy.endpoint()), url: "s3://torture/full",
		// Write capture: every commit is staged before it returns, so a full
		// staging fails commits. (In passthrough, WAL commits that SQLite
		// does not fsync succeed and wait in the -wal:
		// TestPassthroughStagingFull.)
		args: []string{"--retry-max-backoff", "1s", "--capture=write"}}
	staging := m.stagingOnTmpfs("2m")
	m.start()
	t.Cleanup(func() {
		if m.cmd != nil {
			m.stop()
		}
	})
	logPath := filepath.Join(keep, "walsync-full.log")
	dbs := []tortureDB{{"full/wal.db", "WAL"}, {"full/delete.db", "DELETE"}}
	for _, d := range dbs {
		shell(t, m.path(d.rel), "PRAGMA journal_mode="+d.mode+";\n"+tortureSchema+
			"INSERT INTO scratch SELECT value, 'init', randomblob(800) FROM generate_series(1, 60);\n")
	}
	var writers []*tortureWriter
	for _, d := range dbs {
		name := "full-" + strings.ToLower(d.mode)
		writers = append(writers, &tortureWriter{name: name, db: d, path: filepath.Join(m.mnt, d.rel),
			log: filepath.Join(keep, name+".log"), profile: "fill", stopFile: filepath.Join(keep, "stop-full")})
	}
	var lostTx, rolledBack int64
	defer func() {
		fig.faults += proxy.faults.Load()
		fig.acked += tortureAckedTotal(t, writers)
		fig.lost += lostTx
		fig.rolledBack += rolledBack
		if m.cmd != nil {
			m.stop()
			tortureSaveLog(t, m, logPath, "last run, stopped")
		}
	}()
	if !tortureDrained(t, m, "staging full: the new databases") {
		return
	}

	// round runs every writer once with these bounds and returns the
	// failed transactions of each and their errors.
	round := func(when string, maxTx, maxFail int) (failures map[string]int64, errs map[string]int64) {
		failures, errs = map[string]int64{}, map[string]int64{}
		until := time.Now().Add(2 * time.Minute)
		if deadline.Before(until) {
			until = deadline
		}
		var wg sync.WaitGroup
		var never atomic.Bool
		before := make([]int64, len(writers))
		for i, w := range writers {
			w.mu.Lock()
			before[i] = w.failures
			w.errors = nil
			w.mu.Unlock()
			w.seed = rnd.Uint64()
			w.maxTx, w.maxFail = maxTx, maxFail
			wg.Add(1)
			go func() { defer wg.Done(); w.run(&never, until) }()
		}
		wg.Wait()
		for i, w := range writers {
			t.Logf("%s: %s", when, w.summary())
			w.mu.Lock()
			failures[w.name] = w.failures - before[i]
			for msg, n := range w.errors {
				errs[msg] += n
			}
			if w.crashes > 0 {
				t.Errorf("%s: writer %s crashed", when, w.name)
			}
			w.mu.Unlock()
		}
		return failures, errs
	}
	mustFail := func(when string, failures, errs map[string]int64) {
		for name, n := range failures {
			if n == 0 {
				t.Errorf("%s: no commit of %s failed", when, name)
			}
		}
		for msg := range errs {
			if !strings.Contains(msg, "disk I/O error") && !strings.Contains(msg, "database or disk is full") {
				t.Errorf("%s: a transaction failed with %q, not an I/O error", when, msg)
			}
		}
	}
	mustSucceed := func(when string, failures, errs map[string]int64) {
		for name, n := range failures {
			if n != 0 {
				t.Errorf("%s: %s had %d failed commits: %v", when, name, n, errs)
			}
		}
	}

	var sfs syscall.Statfs_t
	// (a1) Another file fills the filesystem.
	fillers := tortureFill(t, staging)
	t.Logf("staging filled with %d files of 4 KiB", len(fillers))
	failures, errs := round("filesystem full", 200, 4)
	mustFail("filesystem full", failures, errs)
	tortureKill9(t, m, logPath, "filesystem full")
	fig.kills++
	m.start()
	_, errs = round("filesystem full, after a restart", 20, 2)
	mustFail("filesystem full, after a restart", nil, errs)
	for _, f := range fillers {
		if err := os.Remove(f); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	// walsync catches up by itself, then commits succeed again (a few: 2
	// MiB fill up in a second).
	if !tortureDrained(t, m, "space freed") {
		return
	}
	failures, errs = round("space freed", 10, 0)
	mustSucceed("space freed", failures, errs)
	if !tortureDrained(t, m, "space freed, new commits") {
		return
	}
	var ok bool
	if lostTx, rolledBack, ok = tortureVerify(t, srv, ls, m, "full", dbs, writers); !ok {
		return
	}

	// (a2) walsync's own staging fills the filesystem while the replica is
	// down, to the last bytes (big transactions, then one-row ones); walsync
	// is killed and restarted while it is full; then the replica is back.
	proxy.mode.Store("down")
	failures, errs = round("replica down, staging full", 400, 4)
	mustFail("replica down, staging full", failures, errs)
	for _, w := range writers {
		w.profile = "small"
	}
	failures, errs = round("replica down, staging full to the last bytes", 400, 4)
	mustFail("replica down, staging full to the last bytes", failures, errs)
	tortureKill9(t, m, logPath, "replica down, staging full")
	fig.kills++
	m.start()
	_, errs = round("replica down, staging full, after a restart", 20, 2)
	mustFail("replica down, staging full, after a restart", nil, errs)
	if err := syscall.Statfs(staging, &sfs); err == nil {
		t.Logf("replica down, staging full: %d of %d KiB free", sfs.Bavail*uint64(sfs.Bsize)>>10, sfs.Blocks*uint64(sfs.Bsize)>>10)
	}
	proxy.mode.Store("")
	if !tortureDrained(t, m, "replica back after staging filled up") {
		var free uint64
		if err := syscall.Statfs(staging, &sfs); err == nil {
			free = sfs.Bavail * uint64(sfs.Bsize) >> 10
		}
		failures, errs = round("replica back, staging still full", 10, 3)
		t.Errorf("replica back after staging filled up: walsync does not catch up by itself (%d KiB free in staging; "+
			"commits a minute after the replica came back: failures %v, errors %v)", free, failures, errs)
		return
	}
	for _, w := range writers {
		w.profile = "fill"
	}
	failures, errs = round("replica back after staging filled up", 10, 0)
	mustSucceed("replica back after staging filled up", failures, errs)
	if !tortureDrained(t, m, "replica back after staging filled up, new commits") {
		return
	}
	l, r, ok := tortureVerify(t, srv, ls, m, "full", dbs, writers)
	if ok {
		lostTx, rolledBack = l, r
	}
}

// tortureFill writes 4 KiB files into dir until its filesystem is full.
func tortureFill(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	block := make([]byte, 4096)
	for i := 0; i < 100_000; i++ {
		p := filepath.Join(dir, fmt.Sprintf("filler-%d", i))
		err := os.WriteFile(p, block, 0o600)
		files = append(files, p)
		if errors.Is(err, syscall.ENOSPC) {
			return files
		} else if err != nil {
			t.Fatal(err)
		}
	}
	t.Fatalf("%s did not fill up", dir)
	return nil
}

// stagingOnTmpfs gives the mount's staging a tmpfs of its own of size (as
// mount(8) writes it: "2m"), so that it can fill up, and returns its path.
// The mount is not started.
func (m *mount) stagingOnTmpfs(size string) string {
	m.t.Helper()
	staging := filepath.Join(m.data, ".walsync", "staging")
	for _, d := range []string{m.mnt, staging} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			m.t.Fatal(err)
		}
	}
	if err := syscall.Mount("tmpfs", staging, "tmpfs", 0, "size="+size+",mode=0700"); err != nil {
		m.t.Fatalf("mount a %s tmpfs at %s: %v", size, staging, err)
	}
	m.t.Cleanup(func() { _ = syscall.Unmount(staging, syscall.MNT_DETACH) })
	return staging
}

package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/superfly/ltx"
	"github.com/walsync/walsync/internal/s3test"
	"github.com/walsync/walsync/storage"
)

// TestSeveralReplicas: a config with two replicas (the S3 server, behind a
// proxy that can cut it off, and a file:// directory) and a per-database
// override. The S3 replica is down for 30 s: the file replica's uploads go
// on at their own pace (measured lag); afterwards S3 catches up, both
// replicas restore what the database holds, status lists both with the
// TXIDs ls shows, and the override's window is honoured on both.
func TestSeveralReplicas(t *testing.T) {
	srv := s3test.Start(t)
	srv.CreateBucket(t, "multi")
	srv.SetEnv(t)
	p := startFaultProxy(t, srv.Endpoint)
	dir := t.TempDir()
	m := &mount{t: t, mnt: filepath.Join(dir, "mnt"), data: filepath.Join(dir, "data"), rep: filepath.Join(dir, "replica"), env: srv.Env()}
	if err := os.MkdirAll(m.mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "walsync.yml")
	if err := os.WriteFile(cfg, []byte(`
mount-point: `+m.mnt+`
data: `+m.data+`
replicas:
  - url: s3://multi/m
    endpoint: `+p.endpoint()+`
  - url: file://`+m.rep+`
log:
  level: info
defaults:
  sync-interval: 100ms
  compaction-levels: [300ms]
databases:
  - match: "slow/*.db"
    sync-interval: 4s
`), 0o644); err != nil {
		t.Fatal(err)
	}
	m.startExact("mount", "--config", cfg, "--retry-max-backoff", "1s")
	s3Latest := func(db string) ltx.TXID {
		c, err := storage.OpenWith(context.Background(), "s3://multi/m/"+db, storage.Options{Endpoint: srv.Endpoint})
		if err != nil {
			t.Fatal(err)
		}
		fi, err := storage.Latest(context.Background(), c, "")
		if err != nil || fi == nil {
			return 0
		}
		return fi.MaxTXID
	}
	fast := "fast.db"
	shell(t, m.path(fast), "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES(0);")
	m.waitShipped()
	if a, b := s3Latest(fast), m.latestTXID(fast); a == 0 || a != b {
		t.Fatalf("before the outage: S3 at TXID %d, the file replica at %d", a, b)
	}

	// S3 down for 30 s: each commit reaches the file replica within its
	// window all the same.
	p.mode.Store("down")
	var lags []time.Duration
	outage := time.Now()
	for i := 1; time.Since(outage) < 30*time.Second; i++ {
		shell(t, m.path(fast), fmt.Sprintf("INSERT INTO t VALUES(%d);", i))
		want := ltx.TXID(i + 3) // TXIDs 1-3: journal mode, table, first row (checked below)
		committed := time.Now()
		for m.latestTXIDOrZero(fast) < want {
			if time.Since(committed) > 30*time.Second {
				t.Fatalf("commit %d did not reach the file replica in 30 s while S3 is down\n%s", i, m.log)
			}
			time.Sleep(10 * time.Millisecond)
		}
		lags = append(lags, time.Since(committed))
		time.Sleep(400 * time.Millisecond)
	}
	slices.Sort(lags)
	maxLag := lags[len(lags)-1]
	t.Logf("S3 down for 30 s: %d commits reached the file replica, lag p50 %v, max %v", len(lags), lags[len(lags)/2], maxLag)
	if maxLag > 5*time.Second {
		t.Fatalf("the file replica lagged %v behind while the other replica was down (its window is 100 ms)", maxLag)
	}
	if got := s3Latest(fast); got >= m.latestTXID(fast) {
		t.Fatalf("S3 reached TXID %d while it was down", got)
	}

	// S3 back: it catches up.
	p.mode.Store("")
	want := shell(t, m.path(fast), ".dump")
	latest := m.latestTXID(fast)
	for deadline := time.Now().Add(60 * time.Second); s3Latest(fast) != latest; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("S3 at TXID %d a minute after the outage, the file replica at %d\n%s", s3Latest(fast), latest, m.log)
		}
	}
	if got := shell(t, restoreS3(t, srv, "multi/m", fast), ".dump"); got != want {
		t.Fatalf("S3 restores:\n%s\nwant\n%s", got, want)
	}
	if got := shell(t, m.restoreDB(fast, 0), ".dump"); got != want {
		t.Fatalf("the file replica restores:\n%s\nwant\n%s", got, want)
	}

	// The override's window, on both replicas.
	if err := os.MkdirAll(m.path("slow"), 0o755); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	shell(t, m.path("slow/s.db"), "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES(1);")
	for m.latestTXIDOrZero("slow/s.db") == 0 || s3Latest("slow/s.db") == 0 {
		if time.Since(start) > 30*time.Second {
			t.Fatalf("slow/s.db not on both replicas in 30 s\n%s", m.log)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if d := time.Since(start); d < 3*time.Second {
		t.Fatalf("slow/s.db reached both replicas after %v, inside its own 4 s window", d)
	}

	// status lists both replicas with the TXIDs ls shows.
	m.waitShipped()
	st, out := statusJSON(t, m)
	if len(st.Replicas) != 2 || len(st.Databases) != 2 {
		t.Fatalf("status --json: %s", out)
	}
	for _, d := range st.Databases {
		onFile, onS3 := uint64(m.latestTXID(d.DB)), uint64(s3Latest(d.DB))
		if len(d.Replicas) != 2 || d.TXID != onFile || d.Replicas[0].TXID != onS3 || d.Replicas[1].TXID != onFile ||
			!strings.HasPrefix(d.Replicas[0].URL, "s3://") || !strings.HasPrefix(d.Replicas[1].URL, "file://") {
			t.Fatalf("status of %s: %+v; S3 holds %d, the file replica %d", d.DB, d, onS3, onFile)
		}
	}
}

package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestConfigFile: walsync mount --config FILE alone: the mount point, data
// directory and replica come from the file (with ${VAR} from the
// environment), logs are JSON, and a database matched by an override ships
// at its own batch window while the others keep the default.
func TestConfigFile(t *testing.T) {
	dir := t.TempDir()
	m := &mount{t: t, mnt: filepath.Join(dir, "mnt"), data: filepath.Join(dir, "data"), rep: filepath.Join(dir, "replica")}
	if err := os.MkdirAll(m.mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "walsync.yml")
	if err := os.WriteFile(cfg, []byte(`
mount-point: `+m.mnt+`
data: ${WALSYNC_TEST_ROOT}/data
replicas:
  - url: file://${WALSYNC_TEST_ROOT}/replica
log:
  level: debug
  format: json
defaults:
  sync-interval: 100ms
  compaction-levels: [300ms]
databases:
  - match: "slow/*.db"
    sync-interval: 4s
`), 0o644); err != nil {
		t.Fatal(err)
	}
	m.env = []string{"WALSYNC_TEST_ROOT=" + dir}
	m.startExact("mount", "--config", cfg)
	for _, rel := range []string{"fast/a.db", "slow/b.db"} {
		if err := os.MkdirAll(filepath.Dir(m.path(rel)), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	shell(t, m.path("fast/a.db"), "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES(1);")
	shell(t, m.path("slow/b.db"), "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES(1);")
	for m.latestTXIDOrZero("fast/a.db") == 0 {
		if time.Since(start) > 10*time.Second {
			t.Fatalf("fast/a.db (default window 100ms) not shipped\n%s", m.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if time.Since(start) < 2*time.Second && m.latestTXIDOrZero("slow/b.db") != 0 {
		t.Fatalf("slow/b.db shipped before its own 4 s window")
	}
	for m.latestTXIDOrZero("slow/b.db") == 0 {
		if time.Since(start) > 20*time.Second {
			t.Fatalf("slow/b.db never shipped\n%s", m.log)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if d := time.Since(start); d < 3*time.Second {
		t.Fatalf("slow/b.db shipped after %v, inside its own 4 s window", d)
	}
	if !strings.Contains(m.log.String(), `"msg":"mounted"`) {
		t.Fatalf("logs are not JSON:\n%s", m.log)
	}
}

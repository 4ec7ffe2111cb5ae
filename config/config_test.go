package config

import (
	"strings"
	"testing"
	"time"
)

// TestExample: the example configuration in the repository parses, and
// its overrides resolve per database.
func TestExample(t *testing.T) {
	t.Setenv("WALSYNC_BUCKET", "backups")
	c, err := Load("../examples/walsync.yml")
	if err != nil {
		t.Fatal(err)
	}
	if c.MountPoint != "/mnt/walsync" || len(c.Replicas) != 1 || c.Replicas[0].URL != "s3://backups/prod" || c.Log.Format != "text" {
		t.Fatalf("parsed %+v", c)
	}
	if d := c.Override("tenants/42/app.db"); d.SyncInterval.D() != 5*time.Second || d.Retention.D() != 168*time.Hour || d.SnapshotInterval != 0 {
		t.Fatalf("tenants/42/app.db: %+v", d)
	}
	if d := c.Override("tenants/42/other.db"); d.SyncInterval != 0 || d.Retention != 0 {
		t.Fatalf("tenants/42/other.db matched an override: %+v", d)
	}
	if d := c.Override("cache/x.db"); d.Retention.D() != time.Hour || d.SyncInterval != 0 {
		t.Fatalf("cache/x.db: %+v", d)
	}
	if d := c.Defaults; d.SyncInterval.D() != time.Second || len(d.CompactionLevels) != 3 || d.L0Retention.D() != 15*time.Second {
		t.Fatalf("defaults: %+v", d)
	}
	if m := c.Metrics; m.Addr != "127.0.0.1:9090" || m.PerDatabase == nil || !*m.PerDatabase || m.ReadyMaxLag.D() != time.Minute || c.Log.SummaryInterval.D() != time.Minute {
		t.Fatalf("metrics and log: %+v %+v", m, c.Log)
	}
}

// TestErrors: what is wrong is named, with its line.
func TestErrors(t *testing.T) {
	for _, c := range []struct{ name, yaml, want string }{
		{"unknown key", "data: /d\nsync-intervall: 1s\n", `line 2: unknown key "sync-intervall"`},
		{"unknown nested key", "defaults:\n  retention: 1h\n  retension: 2h\n", `line 3: unknown key "retension"`},
		{"unset variable", "data: /d\nmount-point: ${WALSYNC_TEST_SURELY_UNSET}\n", "line 2: ${WALSYNC_TEST_SURELY_UNSET} is not set"},
		{"bad duration", "defaults:\n  sync-interval: soon\n", `line 2: "soon" is not a duration`},
		{"bad log format", "log:\n  format: xml\n", `log.format "xml"`},
		{"override without match", "databases:\n  - retention: 1h\n", "databases[0]: match is missing"},
		{"bad glob", "databases:\n  - match: \"[\"\n", "databases[0]: match"},
		{"replica twice", "replicas:\n  - url: file:///a\n  - url: file:///a/\n", "replicas[1]: file:///a/ is given twice"},
		{"replica without url", "replicas:\n  - endpoint: http://127.0.0.1:9000\n", "replicas[0]: url is missing"},
		{"too many levels", "databases:\n  - match: a.db\n    compaction-levels: [1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s]\n", "databases[0]: compaction-levels: 9 given, at most 8"},
		{"zero level", "defaults:\n  compaction-levels: [0s]\n", "defaults: compaction-levels: 0s is not a positive duration"},
		{"negative interval", "databases:\n  - match: a.db\n    sync-interval: -1s\n", "databases[0]: sync-interval and snapshot-interval must be positive"},
		{"negative ready lag", "metrics:\n  ready-max-lag: -5s\n", "metrics.ready-max-lag -5s: must not be negative"},
		{"unknown metrics key", "metrics:\n  adress: 127.0.0.1:9090\n", `line 2: unknown key "adress"`},
	} {
		_, err := Parse([]byte(c.yaml))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
	if c, err := Parse(nil); err != nil || c.Data != "" {
		t.Fatalf("an empty file: %v", err)
	}
	t.Setenv("WALSYNC_TEST_DIR", "/srv/x")
	if c, err := Parse([]byte("data: ${WALSYNC_TEST_DIR}/data # ${NOT_A_REF\n")); err != nil || c.Data != "/srv/x/data" {
		t.Fatalf("expansion: %+v %v", c, err)
	}
}

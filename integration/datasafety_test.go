package integration

import (
	"fmt"
	"strings"
	"testing"
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

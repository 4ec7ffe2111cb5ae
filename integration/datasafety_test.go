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

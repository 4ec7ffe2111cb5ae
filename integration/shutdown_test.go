package integration

import (
	"errors"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/walsync/walsync/internal/s3test"
)

// TestShutdownWithReplicaDown: SIGTERM while the replica does not answer
// waits --shutdown-timeout, then exits with status 1 naming what stays
// staged; the next start ships it.
func TestShutdownWithReplicaDown(t *testing.T) {
	srv := s3test.Start(t)
	srv.CreateBucket(t, "down")
	srv.SetEnv(t)
	p := startFaultProxy(t, srv.Endpoint)
	m := newS3Mount(t, srv, p.endpoint(), "s3://down/d", "--shutdown-timeout", "2s")
	rel := "d.db"
	shell(t, m.path(rel), "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES(1);")
	m.waitShipped()
	p.mode.Store("down")
	shell(t, m.path(rel), "INSERT INTO t VALUES(2); INSERT INTO t VALUES(3);")
	want := shell(t, m.path(rel), ".dump")

	start := time.Now()
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	var err error
	select {
	case err = <-m.done:
	case <-time.After(60 * time.Second):
		_ = m.cmd.Process.Kill()
		t.Fatalf("walsync did not exit after SIGTERM\n%s", m.log)
	}
	m.cmd = nil
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("exit with the replica down and transactions staged: %v, want status 1\n%s", err, m.log)
	}
	if log := m.log.String(); !strings.Contains(log, "transactions not on the replica") || !strings.Contains(log, "(databases: 1)") || !strings.Contains(log, "ship at the next start") {
		t.Fatalf("the exit message does not say what stays staged:\n%s", log)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("shutdown took %v with --shutdown-timeout 2s", d)
	}

	p.mode.Store("")
	m.start()
	m.waitShipped()
	if got := shell(t, restoreS3(t, srv, "down/d", rel), ".dump"); got != want {
		t.Fatalf("after the next start, the replica holds:\n%s\nwant\n%s", got, want)
	}
}

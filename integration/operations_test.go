package integration

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/walsync/walsync/internal/s3test"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// scrape reads /metrics with the Prometheus text parser.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	return fams
}

// metricValue is the value of the family's series whose labels include
// labels (name=value pairs); it fails the test when there is none.
func metricValue(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	fam, ok := fams[name]
	if !ok {
		t.Fatalf("/metrics has no %s", name)
	}
next:
	for _, m := range fam.Metric {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.Label {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	t.Fatalf("/metrics has no %s with %v", name, labels)
	return 0
}

func httpGet(addr, path string) (int, string) {
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitStatus polls an endpoint until it answers code.
func waitStatus(t *testing.T, m *mount, addr, path string, code int, within time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got, body := httpGet(addr, path)
		if got == code {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s answered %d (%s) for %s, want %d\n%s", path, got, body, within, code, m.log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestMetricsAndReadiness: /metrics parses and its counters follow the
// workload; /healthz answers; /readyz turns unready while the S3 server is
// stopped and ready again once the staged work caught up, which the log
// tells as the outage's start, end and catch-up.
func TestMetricsAndReadiness(t *testing.T) {
	srv := s3test.Start(t)
	srv.CreateBucket(t, "metrics")
	srv.SetEnv(t)
	addr := freeAddr(t)
	m := newS3Mount(t, srv, srv.Endpoint, "s3://metrics/m", "--metrics-addr", addr,
		"--retry-max-backoff", "500ms", "--ready-max-lag", "1h", "--log-level", "info", "--log-summary-interval", "1s")
	rel := "d.db"
	shell(t, m.path(rel), "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES(1);")
	m.waitShipped()
	waitStatus(t, m, addr, "/healthz", 200, 10*time.Second)
	waitStatus(t, m, addr, "/readyz", 200, 10*time.Second)

	before := scrape(t, addr)
	shipped0 := metricValue(t, before, "walsync_transactions_shipped_total")
	puts0 := metricValue(t, before, "walsync_replica_requests_total", "op", "put")
	for i := 0; i < 5; i++ {
		shell(t, m.path(rel), fmt.Sprintf("INSERT INTO t VALUES(%d);", i+10))
	}
	m.waitShipped()
	after := scrape(t, addr)
	if got := metricValue(t, after, "walsync_transactions_shipped_total"); got < shipped0+5 {
		t.Fatalf("walsync_transactions_shipped_total went from %v to %v after 5 transactions shipped", shipped0, got)
	}
	if got := metricValue(t, after, "walsync_replica_requests_total", "op", "put"); got <= puts0 {
		t.Fatalf("no upload counted: put requests %v then %v", puts0, got)
	}
	if got := metricValue(t, after, "walsync_replica_bytes_total", "direction", "up"); got <= 0 {
		t.Fatalf("walsync_replica_bytes_total{direction=up} = %v", got)
	}
	latest := float64(m.latestTXIDOn(srv, "metrics/m", rel))
	if got := metricValue(t, after, "walsync_database_shipped_txid", "db", rel); got != latest {
		t.Fatalf("walsync_database_shipped_txid{db=%q} = %v, the replica holds %v", rel, got, latest)
	}
	if got := metricValue(t, after, "walsync_database_txid", "db", rel); got != latest {
		t.Fatalf("walsync_database_txid{db=%q} = %v after a flush, want %v", rel, got, latest)
	}

	// The S3 server stops: uploads fail, /readyz says so.
	srvAddr := strings.TrimPrefix(srv.Endpoint, "http://")
	srv.Stop()
	shell(t, m.path(rel), "INSERT INTO t VALUES(100);")
	body := waitStatus(t, m, addr, "/readyz", 503, 30*time.Second)
	if !strings.Contains(body, "unreachable") {
		t.Fatalf("/readyz while the replica is down says %q", body)
	}
	if code, _ := httpGet(addr, "/healthz"); code != 200 {
		t.Fatalf("/healthz answered %d while only the replica is down", code)
	}
	shell(t, m.path(rel), "INSERT INTO t VALUES(101);")
	want := shell(t, m.path(rel), ".dump")
	if errs := metricValue(t, scrape(t, addr), "walsync_replica_errors_total"); errs == 0 {
		t.Fatal("no replica error counted while the server is stopped")
	}

	// Back: ready again after catch-up, and the replica holds everything.
	srv2, err := s3test.LaunchAt(srv.Dir, srvAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv2.Stop)
	waitStatus(t, m, addr, "/readyz", 200, 60*time.Second)
	m.waitShipped()
	if got := shell(t, restoreS3(t, srv2, "metrics/m", rel), ".dump"); got != want {
		t.Fatalf("after the outage the replica holds:\n%s\nwant\n%s", got, want)
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, line := range []string{"replica unreachable", "replica reachable again", "caught up", "msg=summary"} {
		for !strings.Contains(m.log.String(), line) {
			if time.Now().After(deadline) {
				t.Fatalf("the log does not tell %q:\n%s", line, m.log)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	if n := strings.Count(m.log.String(), "level=ERROR msg=\"upload failed"); n > 1 {
		t.Fatalf("the outage logged %d upload errors at error level; once is enough:\n%s", n, m.log)
	}
}

// TestStatusAndSnapshot: walsync status --json lists every database with
// the TXIDs ls shows after a flush; walsync snapshot writes a level-9
// snapshot at the latest TXID; the control socket is walsync's user's alone.
func TestStatusAndSnapshot(t *testing.T) {
	m := newMount(t)
	dbs := []string{"a.db", "t/b.db", "t/c.db"}
	if err := os.MkdirAll(m.path("t"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i, rel := range dbs {
		shell(t, m.path(rel), "PRAGMA journal_mode=WAL; CREATE TABLE t(x);")
		for j := 0; j <= i; j++ {
			shell(t, m.path(rel), "INSERT INTO t VALUES(1);")
		}
	}
	m.waitShipped()
	st, out := statusJSON(t, m)
	lsOut, err := runWalsyncStdout(t, "ls", "--json", m.replicaURL())
	if err != nil {
		t.Fatal(err)
	}
	var ls []struct {
		Database string `json:"database"`
		MaxTXID  uint64 `json:"max_txid"`
	}
	if err := json.Unmarshal([]byte(lsOut), &ls); err != nil {
		t.Fatal(err)
	}
	if len(st.Databases) != len(dbs) || len(ls) != len(dbs) {
		t.Fatalf("status lists %d databases, ls %d, want %d\n%s\n%s", len(st.Databases), len(ls), len(dbs), out, lsOut)
	}
	for i, d := range st.Databases {
		if d.DB != ls[i].Database || d.TXID != ls[i].MaxTXID || len(d.Replicas) != 1 || d.Replicas[0].TXID != ls[i].MaxTXID || d.Replicas[0].URL != m.replicaURL() {
			t.Fatalf("status says %+v, ls says %+v", d, ls[i])
		}
	}
	// By mount point, as text.
	text, err := runWalsyncStdout(t, "status", m.mnt)
	if err != nil || !strings.Contains(text, "t/c.db") || !strings.Contains(text, m.replicaURL()) {
		t.Fatalf("status %s: %v\n%s", m.mnt, err, text)
	}

	// A snapshot now, by the database's path under the mount.
	shell(t, m.path("t/b.db"), "INSERT INTO t VALUES(2);")
	snap, err := runWalsyncStdout(t, "snapshot", m.path("t/b.db"))
	if err != nil {
		t.Fatal(err)
	}
	latest := m.latestTXID("t/b.db")
	if !strings.Contains(snap, fmt.Sprintf("at TXID %d", latest)) {
		t.Fatalf("snapshot says %q; the latest TXID is %d", snap, latest)
	}
	if _, err := os.Stat(filepath.Join(m.rep, "t/b.db", "ltx", "9", fmt.Sprintf("%016x-%016x.ltx", 1, uint64(latest)))); err != nil {
		t.Fatalf("no level-9 snapshot at TXID %d: %v", latest, err)
	}
	if out, err := runWalsync(t, "snapshot", "--data", m.data, "nope.db"); err == nil || !strings.Contains(out, `no database "nope.db"`) {
		t.Fatalf("snapshot of an unknown database: %v %s", err, out)
	}

	// Only walsync's user reaches the socket.
	sock := filepath.Join(m.data, ".walsync", "control.sock")
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("control socket: %v %v", fi.Mode(), err)
	}
	reachable(t, m.data)
	bin := binaryFor(t, t.TempDir())
	reachable(t, filepath.Dir(bin))
	if out, err := asUser(t, bin+" status --data "+m.data); err == nil || !strings.Contains(out, "permission denied") {
		t.Fatalf("as %s, walsync status: %v %s", unprivileged, err, out)
	}

	m.stop()
	if out, err := runWalsync(t, "status", "--data", m.data); err == nil || !strings.Contains(out, "no walsync mount is running") {
		t.Fatalf("status with no mount running: %v %s", err, out)
	}
}

// TestMountExec: walsync runs the --exec command once mounted, flushes when
// it exits and exits with its status; SIGTERM goes to the command.
func TestMountExec(t *testing.T) {
	dir := t.TempDir()
	mnt, data, rep := filepath.Join(dir, "mnt"), filepath.Join(dir, "data"), filepath.Join(dir, "replica")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	run := func(command string, signal bool) (int, string) {
		cmd := exec.Command(walsyncBin, "mount", mnt, "--data", data, "--replica", "file://"+rep, "--sync-interval", "10s", "--exec", command)
		log := &syncBuffer{}
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		if signal {
			deadline := time.Now().Add(30 * time.Second)
			for !strings.Contains(log.String(), "started the --exec command") && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			time.Sleep(200 * time.Millisecond)
			_ = cmd.Process.Signal(syscall.SIGTERM)
		}
		var err error
		select {
		case err = <-done:
		case <-time.After(60 * time.Second):
			_ = cmd.Process.Kill()
			t.Fatalf("walsync did not exit\n%s", log)
		}
		if isMounted(mnt) {
			_ = exec.Command("umount", "-l", mnt).Run()
			t.Fatalf("still mounted after walsync exited\n%s", log)
		}
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode(), log.String()
		} else if err != nil {
			t.Fatal(err)
		}
		return 0, log.String()
	}
	// The batch window is 10 s: only the flush at the child's exit ships.
	code, log := run(`sqlite3 "$WALSYNC_MOUNT/app.db" "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES(42);" >/dev/null && exit 3`, false)
	if code != 3 {
		t.Fatalf("exit status %d, want the command's 3\n%s", code, log)
	}
	restored := filepath.Join(dir, "r.db")
	restoreCLI(t, "file://"+rep+"/app.db", restored)
	if got := shell(t, restored, "SELECT x FROM t;"); strings.TrimSpace(got) != "42" {
		t.Fatalf("the replica holds %q after the command exited", got)
	}
	code, log = run(`trap 'exit 5' TERM; while :; do sleep 0.05; done`, true)
	if code != 5 || !strings.Contains(log, "passed to the --exec command") {
		t.Fatalf("SIGTERM: exit status %d, want the command's 5 (the signal passed on)\n%s", code, log)
	}
	// A command line, not a single command: /bin/sh stays the parent, and
	// the signal must reach what it runs too.
	pidFile := filepath.Join(dir, "sleep.pid")
	code, log = run(`sleep 300 & echo $! > `+pidFile+`; wait`, true)
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatalf("%v\n%s", err, log)
	}
	var pid int
	fmt.Sscan(string(b), &pid)
	time.Sleep(100 * time.Millisecond)
	if pid > 0 && alive(pid) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		t.Fatalf("SIGTERM reached the shell but not the command it runs (pid %d still alive; exit %d)\n%s", pid, code, log)
	}
	if code, log = run(`true`, false); code != 0 {
		t.Fatalf("exit status %d after a command that succeeded\n%s", code, log)
	}
}

// alive reports whether a process runs (a zombie, dead but not reaped by
// an init that does not reap, does not).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) state ...: the state follows the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}

// statusOut is what walsync status --json prints (the fields the tests read).
type statusOut struct {
	MountPoint string   `json:"mount_point"`
	Replicas   []string `json:"replicas"`
	Databases  []struct {
		DB       string `json:"db"`
		TXID     uint64 `json:"txid"`
		Replicas []struct {
			URL  string `json:"url"`
			TXID uint64 `json:"txid"`
		} `json:"replicas"`
	} `json:"databases"`
}

// statusJSON runs walsync status --json on a running mount.
func statusJSON(t *testing.T, m *mount) (statusOut, string) {
	t.Helper()
	out, err := runWalsyncStdout(t, "status", "--json", "--data", m.data)
	if err != nil {
		t.Fatal(err)
	}
	var st statusOut
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	return st, out
}

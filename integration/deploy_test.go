package integration

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	systemdUnit      = "../examples/systemd/walsync.service"
	entrypointScript = "../examples/container/entrypoint.sh"
	dockerfile       = "../examples/container/Dockerfile"
)

// unitDirectives parses a systemd unit file: section, key, values in order.
func unitDirectives(t *testing.T, text string) map[string]map[string][]string {
	t.Helper()
	units := map[string]map[string][]string{}
	var section string
	sc := bufio.NewScanner(strings.NewReader(text))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			units[section] = map[string][]string{}
		case strings.HasSuffix(line, "\\"):
			t.Fatalf("line %d: continuation lines are not parsed here: %s", n, line)
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("line %d: not a directive: %s", n, line)
			}
			units[section][strings.TrimSpace(k)] = append(units[section][strings.TrimSpace(k)], strings.TrimSpace(v))
		}
	}
	return units
}

// unitValue returns the single value of a directive.
func unitValue(t *testing.T, section map[string][]string, key string) string {
	t.Helper()
	if len(section[key]) != 1 {
		t.Fatalf("%s= is set %d times, want once: %q", key, len(section[key]), section[key])
	}
	return section[key][0]
}

// systemdTimespan parses a systemd time span with systemd-analyze itself.
func systemdTimespan(t *testing.T, analyze, span string) time.Duration {
	t.Helper()
	out, err := exec.Command(analyze, "timespan", span).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze timespan %q: %v\n%s", span, err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "μs:"); ok {
			us, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				t.Fatalf("systemd-analyze timespan %q: %v\n%s", span, err, out)
			}
			return time.Duration(us) * time.Microsecond
		}
	}
	t.Fatalf("systemd-analyze timespan %q printed no μs line:\n%s", span, out)
	return 0
}

// TestSystemdUnit: examples/systemd/walsync.service passes systemd-analyze
// verify (with ExecStart pointed at the walsync just built), gives walsync
// SIGTERM and more time to stop than its default --shutdown-timeout, uses no
// setting that would hide the mount from the host or shut out /dev/fuse, and
// its ExecStartPost waits for a live mount: not a bare directory, not the
// dead mount a SIGKILL leaves.
func TestSystemdUnit(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatal("systemd-analyze is not installed (apt-get install systemd): the unit cannot be verified")
	}
	b, err := os.ReadFile(systemdUnit)
	if err != nil {
		t.Fatal(err)
	}
	unit := string(b)
	d := unitDirectives(t, unit)
	svc := d["Service"]
	if svc == nil || d["Unit"] == nil || d["Install"] == nil {
		t.Fatalf("the unit lacks [Unit], [Service] or [Install]: %v", d)
	}
	for key, want := range map[string]string{
		"Type":       "simple",
		"ExecStart":  "/usr/local/bin/walsync mount --config /etc/walsync/walsync.yml",
		"KillSignal": "SIGTERM",
		"Restart":    "on-failure",
	} {
		if got := unitValue(t, svc, key); got != want {
			t.Errorf("%s=%s, want %s", key, got, want)
		}
	}
	if got := unitValue(t, d["Install"], "WantedBy"); got != "multi-user.target" {
		t.Errorf("WantedBy=%s", got)
	}
	for _, key := range []string{"After", "Wants"} {
		if !strings.Contains(strings.Join(d["Unit"][key], " "), "network-online.target") {
			t.Errorf("%s= does not name network-online.target", key)
		}
	}
	const shutdownTimeout = 30 * time.Second // walsync mount's default --shutdown-timeout
	if stop := systemdTimespan(t, analyze, unitValue(t, svc, "TimeoutStopSec")); stop <= shutdownTimeout {
		t.Errorf("TimeoutStopSec is %v: systemd's SIGKILL would cut short walsync's %v --shutdown-timeout", stop, shutdownTimeout)
	}
	// A mount made in a mount namespace of the service's own is not seen
	// by the host; a device allow list shuts out /dev/fuse;
	// RestrictSUIDSGID= refuses a set-group-ID directory's inheritance.
	for _, key := range []string{"PrivateDevices", "PrivateTmp", "PrivateMounts", "ProtectSystem", "ProtectHome",
		"ReadWritePaths", "ReadOnlyPaths", "InaccessiblePaths", "ExecPaths", "NoExecPaths", "BindPaths", "BindReadOnlyPaths",
		"TemporaryFileSystem", "RootDirectory", "RootImage", "MountImages", "MountFlags", "MountAPIVFS", "ProtectProc", "ProcSubset",
		"ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups", "PrivateNetwork", "PrivateIPC",
		"ProtectClock", "DeviceAllow", "DevicePolicy", "RestrictSUIDSGID", "DynamicUser", "User", "PrivateUsers"} {
		if v, ok := svc[key]; ok {
			t.Errorf("%s=%s: walsync's FUSE mount would not work or not be seen", key, v)
		}
	}

	// systemd-analyze verify requires ExecStart's binary: point it at the
	// one built for the tests. Its warnings about other units of this host
	// are not ours: only lines naming our unit count.
	verify := func(text string) ([]string, error) {
		t.Helper()
		dir := t.TempDir()
		path := filepath.Join(dir, "walsync.service")
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(analyze, "verify", path).CombinedOutput()
		var ours []string
		for _, line := range strings.Split(string(out), "\n") {
			if strings.Contains(line, "walsync.service") || strings.Contains(line, dir) {
				ours = append(ours, line)
			}
		}
		if err != nil {
			err = errors.New(err.Error() + "\n" + string(out))
		}
		return ours, err
	}
	const exe = "ExecStart=/usr/local/bin/walsync "
	if n := strings.Count(unit, "\n"+exe); n != 1 {
		t.Fatalf("%d lines start with %q, want 1", n, exe)
	}
	local := strings.Replace(unit, "\n"+exe, "\nExecStart="+walsyncBin+" ", 1)
	if ours, err := verify(local); err != nil || len(ours) > 0 {
		t.Errorf("systemd-analyze verify reports on the unit:\n%s\n(exit: %v)", strings.Join(ours, "\n"), err)
	}
	// The check can fail: a misspelt key is reported.
	if ours, _ := verify(strings.Replace(local, "\nKillSignal=", "\nKilSignal=", 1)); len(ours) == 0 {
		t.Errorf("systemd-analyze verify reports nothing about a misspelt KillSignal=")
	}

	// ExecStartPost, run on a test mount point, returns once walsync has
	// mounted and waits while there is no mount or a dead one.
	post := unitValue(t, svc, "ExecStartPost")
	script, ok := strings.CutPrefix(post, "/bin/sh -c '")
	if !ok || !strings.HasSuffix(script, "'") || strings.Count(script, "'") != 1 || !strings.Contains(script, "/mnt/walsync") {
		t.Fatalf("ExecStartPost=%s: want /bin/sh -c '...' waiting for /mnt/walsync", post)
	}
	script = strings.TrimSuffix(script, "'")
	// waits reports whether the script is still waiting after a second.
	waits := func(mnt string, within time.Duration) bool {
		t.Helper()
		cmd := exec.Command("/bin/sh", "-c", strings.ReplaceAll(script, "/mnt/walsync", mnt))
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("ExecStartPost on %s: %v\n%s", mnt, err, out.String())
			}
			return false
		case <-time.After(within):
			_ = cmd.Process.Kill()
			<-done
			return true
		}
	}
	if !waits(t.TempDir(), time.Second) {
		t.Errorf("ExecStartPost does not wait for the mount: it returned on a bare directory")
	}
	m := newMount(t)
	if waits(m.mnt, 10*time.Second) {
		t.Errorf("ExecStartPost still waits with walsync mounted")
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", m.mnt).Run() })
	_ = m.cmd.Process.Kill()
	<-m.done
	m.cmd = nil
	if !isMounted(m.mnt) {
		t.Fatal("no dead mount left after SIGKILL")
	}
	if !waits(m.mnt, time.Second) {
		t.Errorf("ExecStartPost does not wait: it returned on the dead mount a SIGKILL leaves")
	}
}

// entrypointEnv is the environment without the variables the entrypoint
// reads, then env.
func entrypointEnv(env ...string) []string {
	var out []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch name {
		case "WALSYNC", "WALSYNC_REPLICA", "WALSYNC_DATA", "WALSYNC_MOUNT", "WALSYNC_DATABASES":
			continue
		}
		out = append(out, kv)
	}
	return append(out, env...)
}

// entrypointRun is one run of examples/container/entrypoint.sh.
type entrypointRun struct {
	t              *testing.T
	mnt            string
	cmd            *exec.Cmd
	stdout, stderr *syncBuffer
	done           chan error
}

// startEntrypoint runs the entrypoint with env (WALSYNC_MOUNT=mnt is added)
// and args, in its own process group.
func startEntrypoint(t *testing.T, mnt string, env []string, args ...string) *entrypointRun {
	t.Helper()
	script, err := filepath.Abs(entrypointScript)
	if err != nil {
		t.Fatal(err)
	}
	r := &entrypointRun{t: t, mnt: mnt, stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan error, 1)}
	// Run as the container runs it: the file itself (its mode must allow it).
	r.cmd = exec.Command(script, args...)
	r.cmd.Env = entrypointEnv(append(env, "WALSYNC_MOUNT="+mnt)...)
	r.cmd.Stdout, r.cmd.Stderr = r.stdout, r.stderr
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", script, err)
	}
	go func() { r.done <- r.cmd.Wait() }()
	t.Cleanup(func() {
		if r.cmd.ProcessState == nil {
			_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
			<-r.done
		}
		if isMounted(mnt) {
			_ = exec.Command("umount", "-l", mnt).Run()
		}
	})
	return r
}

// wait waits for the entrypoint's exit and returns its status. walsync must
// have unmounted, and run without a data race.
func (r *entrypointRun) wait() int {
	r.t.Helper()
	var err error
	select {
	case err = <-r.done:
	case <-time.After(120 * time.Second):
		_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
		<-r.done
		_ = exec.Command("umount", "-l", r.mnt).Run()
		r.t.Fatalf("the entrypoint did not exit in 120 s\nstdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
	}
	code := 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() < 0 {
			r.t.Fatalf("the entrypoint: %v\nstderr:\n%s", err, r.stderr)
		}
		code = ee.ExitCode()
	}
	if isMounted(r.mnt) {
		_ = exec.Command("umount", "-l", r.mnt).Run()
		r.t.Fatalf("%s still mounted after the entrypoint exited\nstderr:\n%s", r.mnt, r.stderr)
	}
	if strings.Contains(r.stderr.String(), "DATA RACE") {
		r.t.Fatalf("data race in walsync:\n%s", r.stderr)
	}
	return code
}

// runEntrypoint runs the entrypoint to its end: exit status, stdout, stderr.
func runEntrypoint(t *testing.T, mnt string, env []string, args ...string) (int, string, string) {
	t.Helper()
	r := startEntrypoint(t, mnt, env, args...)
	code := r.wait()
	return code, r.stdout.String(), r.stderr.String()
}

// TestContainerEntrypoint runs examples/container/entrypoint.sh as the
// container would, with a file:// replica: the first boot starts empty and
// its application's database reaches the replica; a boot on a new, empty
// data directory restores it before the application reads it, and what
// that application writes continues the backup; the application's exit
// status is the container's; SIGTERM (docker stop) reaches the application
// and what it wrote is flushed; a missing WALSYNC_REPLICA exits 2.
func TestContainerEntrypoint(t *testing.T) {
	df, err := os.ReadFile(dockerfile)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"COPY examples/container/entrypoint.sh /usr/local/bin/walsync-entrypoint",
		`ENTRYPOINT ["/usr/local/bin/walsync-entrypoint"]`, "COPY bin/walsync /usr/local/bin/walsync", "fuse3", "ca-certificates", "sqlite3"} {
		if !strings.Contains(string(df), want) {
			t.Errorf("the Dockerfile does not have %q", want)
		}
	}

	dir := t.TempDir()
	mnt := filepath.Join(dir, "mnt")
	rep := filepath.Join(dir, "replica")
	url := "file://" + rep
	env := func(data string) []string {
		return []string{"WALSYNC=" + walsyncBin, "WALSYNC_REPLICA=" + url, "WALSYNC_DATA=" + filepath.Join(dir, data),
			"WALSYNC_DATABASES=app.db tenants/a.db"}
	}
	restoredApp := func(query string) string {
		t.Helper()
		out := filepath.Join(t.TempDir(), "app.db")
		restoreCLI(t, url+"/app.db", out)
		return shell(t, out, query)
	}

	// No replica: a message naming the variable, status 2, nothing mounted.
	code, _, stderr := runEntrypoint(t, mnt, []string{"WALSYNC=" + walsyncBin, "WALSYNC_DATA=" + filepath.Join(dir, "none")}, "true")
	if code != 2 || !strings.Contains(stderr, "WALSYNC_REPLICA is not set") {
		t.Fatalf("without WALSYNC_REPLICA: status %d, want 2, stderr:\n%s", code, stderr)
	}

	// First boot: the replica is empty, nothing is restored; the
	// application (shell syntax through sh -c, WALSYNC_MOUNT exported)
	// creates two databases, and they are on the replica when it exits.
	code, _, stderr = runEntrypoint(t, mnt, env("data1"), "sh", "-c",
		`mkdir -p "$WALSYNC_MOUNT/tenants" &&
		sqlite3 "$WALSYNC_MOUNT/app.db" "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (42);" &&
		sqlite3 "$WALSYNC_MOUNT/tenants/a.db" "CREATE TABLE u(y); INSERT INTO u VALUES ('it''s tenant a');"`)
	if code != 0 {
		t.Fatalf("first boot: status %d\n%s", code, stderr)
	}
	ls, err := runWalsync(t, "ls", url)
	if err != nil || !strings.Contains(ls, "app.db") || !strings.Contains(ls, "tenants/a.db") {
		t.Fatalf("after the first boot, walsync ls %s: %v\n%s", url, err, ls)
	}
	if got := restoredApp("SELECT x FROM t;"); got != "42\n" {
		t.Fatalf("after the first boot the replica holds %q, want 42", got)
	}

	// Second boot on a new, empty data directory (a new host): both
	// databases are restored, the application (its words passed as they
	// are: spaces, quotes and semicolons) reads app.db through the mount
	// and writes to it, and that write reaches the replica too.
	code, stdout, stderr := runEntrypoint(t, mnt, env("data2"), "sqlite3", filepath.Join(mnt, "app.db"), "SELECT x FROM t; INSERT INTO t VALUES ('it''s 43');")
	if code != 0 {
		t.Fatalf("second boot: status %d\n%s", code, stderr)
	}
	if stdout != "42\n" {
		t.Fatalf("second boot: the application printed %q, want \"42\\n\"\nstderr:\n%s", stdout, stderr)
	}
	if got := shell(t, filepath.Join(dir, "data2", "tenants", "a.db"), "SELECT y FROM u;"); got != "it's tenant a\n" {
		t.Fatalf("second boot restored tenants/a.db with %q", got)
	}
	if got := restoredApp("SELECT x FROM t;"); got != "42\nit's 43\n" {
		t.Fatalf("after the second boot the replica holds %q", got)
	}

	// Third boot, same data directory: nothing is restored over it, and
	// the application's exit status is the container's.
	code, _, stderr = runEntrypoint(t, mnt, env("data2"), "sh", "-c", "exit 3")
	if code != 3 {
		t.Fatalf("an application exiting 3: the entrypoint exited %d\n%s", code, stderr)
	}
	if n := strings.Count(stderr, "nothing restored (--if-db-not-exists)"); n != 2 {
		t.Fatalf("a boot on the data directory in place: %d databases kept, want 2:\n%s", n, stderr)
	}

	// docker stop: SIGTERM to the container's main process reaches the
	// application, which exits 0; what it wrote just before is flushed.
	ready := filepath.Join(dir, "ready")
	r := startEntrypoint(t, mnt, env("data2"), "sh", "-c",
		`trap 'exit 0' TERM
		sqlite3 "$WALSYNC_MOUNT/app.db" "INSERT INTO t VALUES (44);"
		: > '`+ready+`'
		while :; do sleep 0.1; done`)
	for start := time.Now(); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		if time.Since(start) > 60*time.Second {
			t.Fatalf("the application did not start\n%s", r.stderr)
		}
	}
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	if code := r.wait(); code != 0 {
		t.Fatalf("after SIGTERM (the application exits 0): status %d\n%s", code, r.stderr)
	}
	if got := restoredApp("SELECT max(x) FROM t WHERE typeof(x) = 'integer';"); got != "44\n" {
		t.Fatalf("after SIGTERM the replica's highest row is %q, want 44\n%s", got, r.stderr)
	}
}

// TestContainerEntrypointWithoutApp: without an application the entrypoint
// only mounts (until SIGTERM, which flushes); a boot on an empty data
// directory restores first, and the database is there through the mount.
func TestContainerEntrypointWithoutApp(t *testing.T) {
	script, err := filepath.Abs(entrypointScript)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	boot := func(data string) *mount {
		m := &mount{t: t, mnt: filepath.Join(dir, "mnt"), data: filepath.Join(dir, data), rep: filepath.Join(dir, "replica")}
		m.bin, m.exact = script, []string{}
		m.env = []string{"WALSYNC=" + walsyncBin, "WALSYNC_REPLICA=" + m.replicaURL(), "WALSYNC_DATA=" + m.data,
			"WALSYNC_MOUNT=" + m.mnt, "WALSYNC_DATABASES=app.db"}
		m.start()
		t.Cleanup(func() {
			if m.cmd != nil {
				m.stop()
			}
		})
		return m
	}
	term := func(m *mount) {
		_ = m.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-m.done:
			if err != nil {
				t.Fatalf("after SIGTERM: %v\n%s", err, m.log)
			}
		case <-time.After(60 * time.Second):
			_ = m.cmd.Process.Kill()
			t.Fatalf("walsync did not exit after SIGTERM\n%s", m.log)
		}
		m.cmd = nil
		if isMounted(m.mnt) {
			_ = exec.Command("umount", "-l", m.mnt).Run()
			t.Fatalf("%s still mounted after SIGTERM", m.mnt)
		}
		if strings.Contains(m.log.String(), "DATA RACE") {
			t.Fatalf("data race in walsync:\n%s", m.log)
		}
	}

	m := boot("data1")
	shell(t, m.path("app.db"), "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (7);")
	term(m)

	m = boot("data2")
	if got := shell(t, m.path("app.db"), "SELECT x FROM t;"); got != "7\n" {
		t.Fatalf("a boot on an empty data directory: app.db holds %q, want 7\n%s", got, m.log)
	}
	shell(t, m.path("app.db"), "INSERT INTO t VALUES (8);")
	term(m)
	if got := shell(t, m.restoreDB("app.db", 0), "SELECT x FROM t;"); got != "7\n8\n" {
		t.Fatalf("after the second boot the replica holds %q", got)
	}
}

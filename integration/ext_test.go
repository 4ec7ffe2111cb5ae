package integration

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// extPath is the loadable extension built by `make ext` at the repository root.
func extPath(t testing.TB) string {
	t.Helper()
	p, err := filepath.Abs("../walsync.so")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s is missing: run `make ext` (make test does)", p)
	}
	return p
}

// extEnv is the environment of a process that loads the extension.
func extEnv(dir, rep string) []string {
	return append(os.Environ(), "WALSYNC_REPLICA=file://"+rep, "WALSYNC_DIR="+dir, "WALSYNC_SYNC_INTERVAL=100ms", "WALSYNC_COMPACTION_LEVELS=300ms")
}

const pyLoad = `
import sqlite3, sys, os
boot = sqlite3.connect(":memory:")
boot.enable_load_extension(True)
boot.load_extension(os.environ["WALSYNC_EXT"])
def connect(path, **kw):
    return sqlite3.connect("file:" + path + "?vfs=walsync", uri=True, isolation_level=None, **kw)
`

func pyExt(t testing.TB, env []string, script string, args ...string) *exec.Cmd {
	cmd := exec.Command(python, append([]string{"-c", pyLoad + script}, args...)...)
	cmd.Env = append(env, "WALSYNC_EXT="+strings.TrimSuffix(extPath(t), ".so"))
	return cmd
}

// TestExtensionShellAndPython loads walsync.so into the sqlite3 shell and
// Debian's Python, writes through the VFS, and restores what they wrote.
func TestExtensionShellAndPython(t *testing.T) {
	dir, rep := t.TempDir(), t.TempDir()
	env := extEnv(dir, rep)
	sh := exec.Command("sqlite3")
	sh.Dir = dir
	sh.Env = env
	sh.Stdin = strings.NewReader(".load " + extPath(t) + `
.open 'file:sub/shell.db?vfs=walsync'
PRAGMA locking_mode=EXCLUSIVE;
PRAGMA journal_mode=WAL;
CREATE TABLE t(x);
INSERT INTO t VALUES('shell 1');
BEGIN; INSERT INTO t VALUES('` + rolledBackMarker + `'); ROLLBACK;
INSERT INTO t VALUES('shell 2');
`)
	os.MkdirAll(filepath.Join(dir, "sub"), 0o755)
	if out, err := sh.CombinedOutput(); err != nil {
		t.Fatalf("sqlite3 with the extension: %v\n%s", err, out)
	}
	py := pyExt(t, env, `
c = connect(sys.argv[1])
c.execute("PRAGMA journal_mode=TRUNCATE")
c.execute("CREATE TABLE t(x)")
for i in range(30):
    c.execute("INSERT INTO t VALUES(?)", ("py %d" % i,))
c.close()
`, filepath.Join(dir, "py.db"))
	if out, err := py.CombinedOutput(); err != nil {
		t.Fatalf("python with the extension: %v\n%s", err, out)
	}
	// The closes shipped: no staging left, and the replica restores both.
	if n := dirStaged(filepath.Join(dir, ".walsync", "staging")); n != 0 {
		t.Fatalf("%d bytes still staged after the last connection closed", n)
	}
	for rel, src := range map[string]string{"sub/shell.db": filepath.Join(dir, "sub/shell.db"), "py.db": filepath.Join(dir, "py.db")} {
		out := filepath.Join(t.TempDir(), "r.db")
		restoreCLI(t, "file://"+filepath.Join(rep, rel), out)
		if got, want := shell(t, out, "SELECT group_concat(x, '|') FROM t;"), shell(t, src, "SELECT group_concat(x, '|') FROM t;"); got != want {
			t.Fatalf("%s: restored %q, source %q", rel, got, want)
		}
	}
	// A database outside WALSYNC_DIR replicates under its absolute path.
	outside := filepath.Join(t.TempDir(), "outside.db")
	py = pyExt(t, env, `
c = connect(sys.argv[1])
c.execute("CREATE TABLE t(x)")
c.execute("INSERT INTO t VALUES('outside')")
c.close()
`, outside)
	if out, err := py.CombinedOutput(); err != nil {
		t.Fatalf("python: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(rep, strings.TrimPrefix(outside, "/"), "ltx", "9")); err != nil {
		t.Fatalf("a database outside WALSYNC_DIR is not at <replica>/<absolute path>: %v", err)
	}
}

// TestExtensionBadConfig checks the errors at load and open time.
func TestExtensionBadConfig(t *testing.T) {
	dir := t.TempDir()
	blocker := filepath.Join(dir, "file")
	os.WriteFile(blocker, []byte("x"), 0o644)
	cases := []struct {
		name string
		env  []string
		want string
	}{
		{"no replica", []string{"WALSYNC_REPLICA="}, "WALSYNC_REPLICA is not set"},
		{"unparsable replica", []string{"WALSYNC_REPLICA=::nope"}, "cannot be parsed"},
		{"bad interval", []string{"WALSYNC_REPLICA=file://" + dir + "/rep", "WALSYNC_SYNC_INTERVAL=soon"}, "WALSYNC_SYNC_INTERVAL"},
		{"unwritable data dir", []string{"WALSYNC_REPLICA=file://" + dir + "/rep", "WALSYNC_DIR=" + blocker + "/sub"}, "staging directory"},
	}
	for _, c := range cases {
		sh := exec.Command("sqlite3", ":memory:", ".load "+extPath(t))
		sh.Env = append(os.Environ(), c.env...)
		out, err := sh.CombinedOutput()
		if err == nil || !strings.Contains(string(out), c.want) {
			t.Fatalf("%s: %v\n%s", c.name, err, out)
		}
	}
	// Opening with vfs=walsync before the extension is loaded.
	sh := exec.Command("sqlite3", ":memory:", ".open 'file:"+dir+"/x.db?vfs=walsync'", "CREATE TABLE t(x);")
	out, _ := sh.CombinedOutput() // the shell reports but exits 0
	if !strings.Contains(string(out), "no such vfs: walsync") {
		t.Fatalf("vfs=walsync without the extension:\n%s", out)
	}
}

// TestExtensionKill9 kills a Python process that writes through the VFS,
// in the middle of a transaction whose pages already reached the journal or
// the -wal, in DELETE mode and in WAL mode with normal locking (SQLite's
// shared memory), and checks that, once a process opens the database again
// (SQLite recovers the WAL or rolls the journal back), nothing the writer
// saw committed is missing from the replica and nothing uncommitted is on
// it.
func TestExtensionKill9(t *testing.T) {
	for _, mode := range []string{"DELETE", "WAL"} {
		t.Run(mode, func(t *testing.T) {
			dir, rep := t.TempDir(), t.TempDir()
			env := append(extEnv(dir, rep), "WALSYNC_SYNC_INTERVAL=1h") // nothing ships before the kill
			db := filepath.Join(dir, "k.db")
			cmd := pyExt(t, env, `
import time
c = connect(sys.argv[1])
c.execute("PRAGMA journal_mode=`+mode+`")
c.execute("PRAGMA cache_size=10")
c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, b BLOB)")
for i in range(1, 201):
    c.execute("INSERT INTO t(id, v) VALUES(?, 'row')", (i,))
    print(i, flush=True)
c.execute("BEGIN")
for i in range(1000, 1300):
    c.execute("INSERT INTO t(id, v, b) VALUES(?, 'uncommitted', randomblob(2000))", (i,))
print("open", flush=True)
time.sleep(60)
`, db)
			stdout, _ := cmd.StdoutPipe()
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			sc := bufio.NewScanner(stdout)
			acked, open := 0, false
			for sc.Scan() {
				if sc.Text() == "open" {
					open = true
					break
				}
				acked, _ = strconv.Atoi(sc.Text())
			}
			_ = cmd.Process.Signal(syscall.SIGKILL)
			_ = cmd.Wait()
			if acked < 200 || !open {
				t.Fatalf("writer acknowledged only %d transactions (open transaction: %v)", acked, open)
			}
			if mode == "WAL" {
				if fi, err := os.Stat(db + "-wal"); err != nil || fi.Size() < 100000 {
					t.Fatalf("the open transaction left no frames in the -wal (%v): the test proves nothing", err)
				}
			}
			// The next process: its VFS ships what the killed one staged, and
			// the capture of the database it opens continues the chain.
			py := pyExt(t, extEnv(dir, rep), `
c = connect(sys.argv[1])
print(c.execute("SELECT max(id) FROM t WHERE v = 'row'").fetchone()[0], c.execute("SELECT count(*) FROM t WHERE v = 'uncommitted'").fetchone()[0])
c.close()
`, db)
			out, err := py.CombinedOutput()
			if err != nil {
				t.Fatalf("reopen: %v\n%s", err, out)
			}
			var have, uncommitted int
			if _, err := fmt.Sscanf(strings.TrimSpace(string(out)), "%d %d", &have, &uncommitted); err != nil || uncommitted != 0 {
				t.Fatalf("reopened: %q (%v)", out, err)
			}
			if have < acked {
				t.Fatalf("SQLite has %d rows, the writer saw %d committed", have, acked)
			}
			r := filepath.Join(t.TempDir(), "r.db")
			restoreCLI(t, "file://"+filepath.Join(rep, "k.db"), r)
			if got := strings.TrimSpace(shell(t, r, "SELECT max(id) FROM t WHERE v = 'row'; SELECT count(*) FROM t WHERE v = 'uncommitted';")); got != fmt.Sprintf("%d\n0", have) {
				t.Fatalf("replica: %q, want %d rows and nothing uncommitted (writer saw %d)", got, have, acked)
			}
		})
	}
}

// TestExtensionHotJournalRollback kills a writer in the middle of a
// transaction whose page cache spilled into the database file: the next
// opener must see the hot journal and roll it back (which needs
// xCheckReservedLock right, through the inverting bridge), and the replica
// never gets the rolled-back rows.
func TestExtensionHotJournalRollback(t *testing.T) {
	dir, rep := t.TempDir(), t.TempDir()
	env := extEnv(dir, rep)
	db := filepath.Join(dir, "hot.db")
	cmd := pyExt(t, env, `
import time
c = connect(sys.argv[1])
c.execute("PRAGMA journal_mode=DELETE")
c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, b BLOB)")
for i in range(10):
    c.execute("INSERT INTO t(v, b) VALUES('committed', randomblob(100))")
c.execute("PRAGMA cache_size=2")
print(os.path.getsize(sys.argv[1]), flush=True)
c.execute("BEGIN")
# Dirty the existing pages first: they are the first to spill into the file.
c.execute("UPDATE t SET v = ? WHERE id <= 10", ("`+rolledBackMarker+`",))
for i in range(300):
    c.execute("INSERT INTO t(v, b) VALUES(?, randomblob(2000))", ("`+rolledBackMarker+`",))
print("spilled", flush=True)
time.sleep(600)
`, db)
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	sc.Scan()
	sizeBefore, _ := strconv.ParseInt(sc.Text(), 10, 64)
	if !sc.Scan() || sc.Text() != "spilled" {
		_ = cmd.Process.Kill()
		t.Fatalf("writer did not reach the spilled transaction")
	}
	time.Sleep(200 * time.Millisecond)
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
	if _, err := os.Stat(db + "-journal"); err != nil {
		t.Fatalf("no hot journal after the kill: %v", err)
	}
	py := pyExt(t, env, `
c = connect(sys.argv[1])
print(c.execute("PRAGMA integrity_check").fetchone()[0], c.execute("SELECT count(*) FROM t WHERE v = 'committed'").fetchone()[0], c.execute("SELECT count(*) FROM t").fetchone()[0])
c.close()
`, db)
	out, err := py.CombinedOutput()
	if err != nil {
		t.Fatalf("reopen: %v\n%s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != "ok 10 10" {
		t.Fatalf("after the crash the next opener sees %q, want \"ok 10 10\" (hot journal rolled back)", got)
	}
	// Rolled back means: the journal played back and gone, the file cut
	// back to its size before the transaction.
	if _, err := os.Stat(db + "-journal"); !os.IsNotExist(err) {
		t.Fatalf("the hot journal was not rolled back (still there: %v)", err)
	}
	if fi, err := os.Stat(db); err != nil || fi.Size() != sizeBefore {
		t.Fatalf("database is %d bytes after rollback, %d before the transaction (%v)", fi.Size(), sizeBefore, err)
	}
	r := filepath.Join(t.TempDir(), "r.db")
	restoreCLI(t, "file://"+filepath.Join(rep, "hot.db"), r)
	if got := shell(t, r, "PRAGMA integrity_check; SELECT count(*) FROM t;"); got != "ok\n10\n" {
		t.Fatalf("replica: %q", got)
	}
}

// TestExampleVFS runs the README's Go example.
func TestExampleVFS(t *testing.T) {
	out, err := exec.Command("go", "run", "../examples/vfs").CombinedOutput()
	if err != nil || !strings.Contains(string(out), ": 2 notes") {
		t.Fatalf("go run ./examples/vfs: %v\n%s", err, out)
	}
}

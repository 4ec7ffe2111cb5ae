package integration

import (
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/walsync/walsync/internal/s3test"
)

// The security tests run commands as a real unprivileged user through a real
// mount: the kernel, not walsync, must refuse what the modes refuse.
const unprivileged = "nobody"

// asUser runs a shell script as the unprivileged user and returns its output.
func asUser(t testing.TB, script string) (string, error) {
	t.Helper()
	cmd := exec.Command("su", unprivileged, "-s", "/bin/sh", "-c", script)
	cmd.Dir = "/"
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// unprivilegedIDs returns the uid and gid of the unprivileged user.
func unprivilegedIDs(t testing.TB) (uint32, uint32) {
	t.Helper()
	u, err := user.Lookup(unprivileged)
	if err != nil {
		t.Fatalf("the security tests need the user %q: %v", unprivileged, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return uint32(uid), uint32(gid)
}

// reachable lets every user traverse the directories from / down to dir
// (test temp directories are 0700).
func reachable(t testing.TB, dir string) {
	t.Helper()
	for d := dir; d != "/" && d != "."; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o005 != 0o005 {
			if err := os.Chmod(d, fi.Mode().Perm()|0o055); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func readFile(t testing.TB, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func statOwner(t testing.TB, p string) (uid, gid uint32) {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Uid, st.Gid
}

// TestMountEnforcesModes: an unprivileged user reaches the mount, but only
// where the files' modes let it: a 0600 file of root's can be neither read
// nor written; what it creates is its own (database, -wal, -shm, -journal,
// directories, symlinks), and the sqlite3 shell and Python work on its own
// databases as on a plain disk.
func TestMountEnforcesModes(t *testing.T) {
	uid, gid := unprivilegedIDs(t)
	m := newMount(t)
	reachable(t, m.mnt)
	reachable(t, m.data)

	const marker = "TOPSECRET-7d1f"
	secret := m.path("secret.db")
	shell(t, secret, fmt.Sprintf(`PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES('%s');`, marker))
	if err := os.Chmod(secret, 0o600); err != nil {
		t.Fatal(err)
	}
	public := m.path("public.txt")
	if err := os.WriteFile(public, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	shared := m.path("shared")
	if err := os.Mkdir(shared, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Chmod(shared, 0o1777); err != nil { // sticky, as /tmp
		t.Fatal(err)
	}
	before := readFile(t, filepath.Join(m.data, "secret.db"))

	// Another user's private file: no read, no write, by any client.
	for _, script := range []string{
		"cat " + secret,
		"sqlite3 " + secret + " 'SELECT * FROM t'",
		"echo junk >> " + secret,
		"echo junk > " + secret,
		python + " -c 'open(\"" + secret + "\", \"rb\").read()'",
		python + " -c 'import sqlite3; print(sqlite3.connect(\"" + secret + "\").execute(\"SELECT * FROM t\").fetchall())'",
		"truncate -s 0 " + secret,
		"rm " + secret,
	} {
		out, err := asUser(t, script)
		if err == nil || strings.Contains(out, marker) {
			t.Errorf("as %s, %q succeeded through the mount: %v\n%s", unprivileged, script, err, out)
		} else if !strings.Contains(strings.ToLower(out), "permission denied") && !strings.Contains(out, "unable to open") {
			t.Errorf("as %s, %q failed without EACCES:\n%s", unprivileged, script, out)
		}
	}
	if got := readFile(t, filepath.Join(m.data, "secret.db")); got != before {
		t.Fatal("the private database changed after another user's attempts")
	}
	// What the modes allow is allowed: a public file reads.
	if out, err := asUser(t, "cat "+public); err != nil || out != "hello" {
		t.Fatalf("as %s, reading a 0644 file: %v %q", unprivileged, err, out)
	}

	// Its own directory, databases and files belong to it.
	mine := filepath.Join(shared, "mine")
	script := fmt.Sprintf(`set -e
umask 022
mkdir %[1]s
sqlite3 -bail %[1]s/shell.db 'CREATE TABLE t(x); INSERT INTO t VALUES(1); INSERT INTO t VALUES(2);'
sqlite3 -bail %[1]s/shell.db 'SELECT count(*) FROM t'
ln -s shell.db %[1]s/link.db
echo note > %[1]s/note.txt
%[2]s - <<'EOF'
import os, sqlite3
d = %[3]q
out = []
w = sqlite3.connect(d + "/wal.db")
w.execute("PRAGMA journal_mode=WAL")
w.execute("CREATE TABLE t(x)")
w.execute("INSERT INTO t VALUES ('wal')")
w.commit()
j = sqlite3.connect(d + "/journal.db")
j.execute("PRAGMA journal_mode=PERSIST")
j.execute("CREATE TABLE t(x)")
j.execute("INSERT INTO t VALUES ('journal')")
j.commit()
for f in ["wal.db", "wal.db-wal", "wal.db-shm", "journal.db", "journal.db-journal"]:
    st = os.stat(d + "/" + f)
    out.append("%%s %%d %%d %%o" %% (f, st.st_uid, st.st_gid, st.st_mode & 0o7777))
print(w.execute("SELECT x FROM t").fetchone()[0], j.execute("SELECT x FROM t").fetchone()[0])
print("\n".join(out))
EOF
`, mine, python, mine)
	out, err := asUser(t, script)
	if err != nil {
		t.Fatalf("as %s, using its own databases under the mount: %v\n%s", unprivileged, err, out)
	}
	if !strings.Contains(out, "\n2\n") && !strings.HasPrefix(out, "2\n") {
		t.Fatalf("the sqlite3 shell as %s did not count its rows:\n%s", unprivileged, out)
	}
	if !strings.Contains(out, "wal journal") {
		t.Fatalf("Python as %s did not read its rows back:\n%s", unprivileged, out)
	}
	// As seen through the mount (by the user's own process) ...
	for _, f := range []string{"wal.db", "wal.db-wal", "wal.db-shm", "journal.db", "journal.db-journal"} {
		want := fmt.Sprintf("%s %d %d 644", f, uid, gid)
		if !strings.Contains(out, want) {
			t.Errorf("through the mount, want %q in:\n%s", want, out)
		}
	}
	// ... and on the data directory itself.
	for _, f := range []string{"", "shell.db", "link.db", "note.txt", "wal.db", "journal.db", "journal.db-journal"} {
		p := filepath.Join(m.data, "shared", "mine", f)
		if u, g := statOwner(t, p); u != uid || g != gid {
			t.Errorf("%s created by %s is owned by %d:%d, want %d:%d", p, unprivileged, u, g, uid, gid)
		}
	}
	// Another user cannot reach into them either: root's files stay root's.
	if u, _ := statOwner(t, filepath.Join(m.data, "public.txt")); u != 0 {
		t.Errorf("public.txt owned by %d", u)
	}
	// The user's databases were captured like any other.
	m.waitShipped()
	for db, want := range map[string]string{"shared/mine/shell.db": "1\n2\n", "shared/mine/wal.db": "wal\n", "shared/mine/journal.db": "journal\n"} {
		out := filepath.Join(t.TempDir(), "r.db")
		if o, err := runWalsync(t, "restore", m.replicaURL()+"/"+db, "-o", out); err != nil {
			t.Fatalf("restore %s: %v\n%s", db, err, o)
		}
		if got := shell(t, out, "SELECT x FROM t;"); got != want {
			t.Errorf("%s restored: %q, want %q", db, got, want)
		}
		// A restored database gets SQLite's default mode, or --mode.
		if fi, _ := os.Stat(out); fi.Mode().Perm() != 0o644&^umask() {
			t.Errorf("restored %s has mode %o, want %o", db, fi.Mode().Perm(), 0o644&^umask())
		}
	}
	private := filepath.Join(t.TempDir(), "private.db")
	if o, err := runWalsync(t, "restore", m.replicaURL()+"/secret.db", "-o", private, "--mode", "0600"); err != nil {
		t.Fatalf("restore --mode 0600: %v\n%s", err, o)
	}
	if fi, _ := os.Stat(private); fi.Mode().Perm() != 0o600 {
		t.Errorf("restore --mode 0600 wrote mode %o", fi.Mode().Perm())
	}
	if o, err := runWalsync(t, "restore", m.replicaURL()+"/secret.db", "-o", private+"2", "--mode", "rw"); err == nil || !strings.Contains(o, "--mode") {
		t.Errorf("restore --mode rw: %v %s", err, o)
	}

	// Staging holds copies of every page: none of it is readable by others.
	assertPrivate(t, filepath.Join(m.data, ".walsync"))
	out, _ = asUser(t, "grep -rl "+marker+" "+m.data)
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line != "" && !strings.Contains(line, "Permission denied") {
			t.Errorf("as %s, found the private database's content in %s", unprivileged, line)
		}
	}
	sums := filepath.Join(m.data, ".walsync", "staging", "secret.db", "page-checksums")
	if _, err := os.Stat(sums); err != nil {
		t.Fatal(err)
	}
	if out, err := asUser(t, "cat "+sums+" >/dev/null"); err == nil || !strings.Contains(out, "Permission denied") {
		t.Fatalf("as %s, read %s: %v %s", unprivileged, sums, err, out)
	}

	// Staging left with wider modes (by an earlier version) is made private
	// at the next start.
	m.stop()
	if err := filepath.WalkDir(filepath.Join(m.data, ".walsync"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.Chmod(p, 0o755)
		}
		return os.Chmod(p, 0o644)
	}); err != nil {
		t.Fatal(err)
	}
	m.start()
	assertPrivate(t, filepath.Join(m.data, ".walsync"))
}

// assertPrivate fails unless every directory and file under dir has no
// group or other permission bits, and dir has files in it.
func assertPrivate(t testing.TB, dir string) {
	t.Helper()
	files := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if info.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s has mode %o: readable by other users", p, info.Mode().Perm())
		}
		if !d.IsDir() {
			files++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files == 0 {
		t.Fatalf("no file under %s: nothing was checked", dir)
	}
}

// TestMountOwnerOnly: with --owner-only nobody but the user running walsync
// reaches the mount, whatever the modes.
func TestMountOwnerOnly(t *testing.T) {
	m := newMount(t, "--owner-only")
	reachable(t, m.mnt)
	if err := os.WriteFile(m.path("public.txt"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := asUser(t, "cat "+m.path("public.txt")); err == nil || strings.Contains(out, "hello") {
		t.Fatalf("as %s, read a file of an --owner-only mount: %v %s", unprivileged, err, out)
	}
	if out, err := asUser(t, "ls "+m.mnt); err == nil {
		t.Fatalf("as %s, listed an --owner-only mount: %s", unprivileged, out)
	}
}

// TestVFSJournalFollowsDatabaseMode: the VFS creates a database's -journal and
// -wal with the database file's mode, as SQLite's unix VFS does, whatever
// the process's umask; its staging is private.
func TestVFSJournalFollowsDatabaseMode(t *testing.T) {
	fe := sharedVFS(t)
	for _, tc := range []struct {
		name, mode string
		perm       os.FileMode
		side       string
	}{
		{"vfsmode/persist.db", "PRAGMA journal_mode=PERSIST", 0o600, "-journal"},
		{"vfsmode/wal.db", "PRAGMA locking_mode=EXCLUSIVE; PRAGMA journal_mode=WAL", 0o640, "-wal"},
	} {
		p := fe.path(tc.name)
		if err := os.WriteFile(p, nil, tc.perm); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, tc.perm); err != nil {
			t.Fatal(err)
		}
		db, err := sql.Open("sqlite3", "file:"+p+"?vfs=walsync")
		if err != nil {
			t.Fatal(err)
		}
		db.SetMaxOpenConns(1)
		ctx := context.Background()
		for _, s := range append(strings.Split(tc.mode, "; "), "CREATE TABLE t(x)", "INSERT INTO t VALUES(1)") {
			if _, err := db.ExecContext(ctx, s); err != nil {
				t.Fatalf("%s: %s: %v", tc.name, s, err)
			}
		}
		fi, err := os.Stat(p + tc.side)
		if err != nil {
			t.Fatalf("%s%s: %v", tc.name, tc.side, err)
		}
		if fi.Mode().Perm() != tc.perm {
			t.Errorf("%s%s created %o, want the database's %o", tc.name, tc.side, fi.Mode().Perm(), tc.perm)
		}
		db.Close()
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(fe.staging, "vfsmode%2Fwal.db", "page-checksums")); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	assertPrivate(t, filepath.Dir(fe.staging))
}

// TestNoSecretsInOutput runs the whole flow against a real S3 server with
// credentials in the environment at debug level, then with a wrong secret key
// and with a session token (which versitygw refuses): neither the secret
// keys nor the token appear in any output.
func TestNoSecretsInOutput(t *testing.T) {
	srv := s3test.Start(t)
	srv.CreateBucket(t, "walsync-secrets")
	const token = "SESSIONTOKEN-do-not-print-4c1e"
	env := srv.Env()
	dir := t.TempDir()
	m := &mount{t: t, mnt: filepath.Join(dir, "mnt"), data: filepath.Join(dir, "data"), env: env, url: "s3://walsync-secrets/p"}
	if err := os.MkdirAll(m.mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	m.start()
	shell(t, m.path("a.db"), `PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES(1);`)
	m.waitShipped()
	m.stop()
	outputs := []string{m.log.String()}
	run := func(env []string, args ...string) string {
		out, _ := runWalsyncEnv(t, env, append(args, "--log-level", "debug")...)
		outputs = append(outputs, out)
		return out
	}
	restored := filepath.Join(t.TempDir(), "r.db")
	if out := run(env, "restore", "s3://walsync-secrets/p/a.db", "-o", restored); !strings.Contains(out, "restored") {
		t.Fatalf("restore failed:\n%s", out)
	}
	run(env, "ls", "s3://walsync-secrets/p")
	run(env, "verify", "s3://walsync-secrets/p")
	const wrong = "WRONGSECRET-do-not-print-9a2b"
	bad := append(srv.Env(), "AWS_SECRET_ACCESS_KEY="+wrong, "AWS_SESSION_TOKEN="+token)
	withToken := append(srv.Env(), "AWS_SESSION_TOKEN="+token)
	for _, env := range [][]string{bad, withToken} {
		run(env, "ls", "s3://walsync-secrets/p")
		run(env, "restore", "s3://walsync-secrets/p/a.db", "-o", filepath.Join(t.TempDir(), "x.db"))
		if out := run(env, "mount", t.TempDir(), "--data", t.TempDir(), "--replica", "s3://walsync-secrets/p"); !strings.Contains(out, "walsync-secrets") {
			t.Fatalf("mount with bad credentials did not fail naming the bucket:\n%s", out)
		}
	}
	for i, out := range outputs {
		for _, secret := range []string{srv.SecretKey, token, wrong} {
			if strings.Contains(out, secret) {
				t.Errorf("output %d contains a secret (%s...):\n%s", i, secret[:4], out)
			}
		}
	}
}

// binaryFor copies walsync into dir (which the unprivileged user reaches)
// and returns its path.
func binaryFor(t testing.TB, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "walsync")
	b, err := os.ReadFile(walsyncBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

// TestMountAsUnprivilegedUser: a user who cannot mount is told what is
// missing (root, or fusermount3 and /dev/fuse), not a path of a helper.
func TestMountAsUnprivilegedUser(t *testing.T) {
	dir := t.TempDir()
	reachable(t, dir)
	bin := binaryFor(t, dir)
	// No helper on its PATH, whatever this machine has installed.
	out, err := asUser(t, "PATH="+dir+"/nothing "+bin+" mount "+dir+"/mnt --data "+dir+"/data --replica file://"+dir+"/rep")
	if err == nil {
		t.Fatalf("walsync mounted as %s:\n%s", unprivileged, out)
	}
	if !strings.Contains(out, "needs root, or fusermount3") || !strings.Contains(out, "fuse3") {
		t.Fatalf("the error does not say what is missing:\n%s", out)
	}
	if strings.Contains(out, "/bin/fusermount") {
		t.Fatalf("the error names a helper path instead:\n%s", out)
	}
}

package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/walsync/walsync/internal/s3test"
)

// TestS3EndToEnd mounts with an s3:// replica on a real S3 server (versitygw)
// and restores with the CLI from it; a wrong bucket fails at startup with an
// error naming it.
func TestS3EndToEnd(t *testing.T) {
	srv := s3test.Start(t)
	srv.CreateBucket(t, "walsync-e2e")
	dir := t.TempDir()
	m := &mount{t: t, mnt: filepath.Join(dir, "mnt"), data: filepath.Join(dir, "data"), env: srv.Env(), url: "s3://walsync-e2e/prod"}
	if err := os.MkdirAll(m.mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	m.start()
	rel := "tenant1/app.db"
	shell(t, m.path(rel), `PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES('one'); INSERT INTO t VALUES('two');`)
	shell(t, m.path("tenant2/app.db"), `CREATE TABLE t(x); INSERT INTO t VALUES('three');`)
	want1 := shell(t, m.path(rel), ".dump")
	want2 := shell(t, m.path("tenant2/app.db"), ".dump")
	m.stop()

	for db, want := range map[string]string{rel: want1, "tenant2/app.db": want2} {
		out := filepath.Join(t.TempDir(), "r.db")
		cmdOut, err := runWalsyncEnv(t, srv.Env(), "restore", "s3://walsync-e2e/prod/"+db, "-o", out)
		if err != nil {
			t.Fatalf("restore %s: %v\n%s", db, err, cmdOut)
		}
		if got := shell(t, out, ".dump"); got != want {
			t.Fatalf("%s restored from S3 differs:\n%s\nwant\n%s", db, got, want)
		}
	}

	// A flipped byte in an object: restore names the object and writes nothing.
	objs, _ := filepath.Glob(filepath.Join(srv.Dir, "walsync-e2e", "prod", "tenant1", "app.db", "0000", "*.ltx"))
	if len(objs) == 0 {
		t.Fatal("no level-0 object in the bucket directory")
	}
	flipByte(t, objs[0], 150)
	bad := filepath.Join(t.TempDir(), "bad.db")
	cmdOut, err := runWalsyncEnv(t, srv.Env(), "restore", "s3://walsync-e2e/prod/"+rel, "-o", bad)
	if err == nil || !strings.Contains(cmdOut, "s3://walsync-e2e/prod/tenant1/app.db/0000/"+filepath.Base(objs[0])) {
		t.Fatalf("restore of a corrupt object: %v\n%s", err, cmdOut)
	}
	if _, err := os.Stat(bad); !os.IsNotExist(err) {
		t.Fatal("a failed restore left an output file")
	}

	out, err := runWalsyncEnv(t, srv.Env(), "mount", t.TempDir(), "--data", t.TempDir(), "--replica", "s3://no-such-bucket/x")
	if err == nil || !strings.Contains(out, `"no-such-bucket"`) || !strings.Contains(out, srv.Endpoint) {
		t.Fatalf("mount with an unknown bucket: %v\n%s", err, out)
	}
}

// flipByte inverts one byte of a file in place.
func flipByte(t testing.TB, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// TestS3ServerSideEncryptionCLI: the mount uploads with an SSE-C key from a
// file and restore reads back with it (versitygw accepts SSE-C requests but
// stores plaintext and serves without the key, so what the server must
// receive is checked by storage/s3's TestServerSideEncryptionHeaders); so
// does a config file's replica with its own key file; and options that
// cannot work fail before anything starts, naming what is wrong.
func TestS3ServerSideEncryptionCLI(t *testing.T) {
	srv := s3test.Start(t)
	srv.CreateBucket(t, "walsync-sse")
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "sse-c.key")
	if err := os.WriteFile(keyFile, []byte(strings.Repeat("k", 32)), 0o600); err != nil {
		t.Fatal(err)
	}
	m := &mount{t: t, mnt: filepath.Join(dir, "mnt"), data: filepath.Join(dir, "data"), env: srv.Env(), url: "s3://walsync-sse/c",
		args: []string{"--s3-sse-c-key-file", keyFile}}
	if err := os.MkdirAll(m.mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	m.start()
	shell(t, m.path("a.db"), `CREATE TABLE t(x); INSERT INTO t VALUES('secret');`)
	want := shell(t, m.path("a.db"), ".dump")
	m.stop()
	out := filepath.Join(t.TempDir(), "r.db")
	if cmdOut, err := runWalsyncEnv(t, srv.Env(), "restore", "--s3-sse-c-key-file", keyFile, "s3://walsync-sse/c/a.db", "-o", out); err != nil {
		t.Fatalf("restore with the SSE-C key: %v\n%s", err, cmdOut)
	}
	if got := shell(t, out, ".dump"); got != want {
		t.Fatalf("restored with SSE-C:\n%s\nwant\n%s", got, want)
	}
	// A config file's replica with its own SSE-C key file.
	cm := &mount{t: t, mnt: filepath.Join(dir, "mnt2"), data: filepath.Join(dir, "data2"), env: srv.Env()}
	if err := os.MkdirAll(cm.mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "walsync.yml")
	if err := os.WriteFile(cfg, []byte("mount-point: "+cm.mnt+"\ndata: "+cm.data+"\nreplicas:\n  - url: s3://walsync-sse/cfg\n    sse-c-key-file: "+keyFile+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cm.startExact("mount", "--config", cfg)
	shell(t, cm.path("b.db"), `CREATE TABLE t(x); INSERT INTO t VALUES('from the config');`)
	want = shell(t, cm.path("b.db"), ".dump")
	cm.stop()
	out = filepath.Join(t.TempDir(), "r2.db")
	if cmdOut, err := runWalsyncEnv(t, srv.Env(), "restore", "--s3-sse-c-key-file", keyFile, "s3://walsync-sse/cfg/b.db", "-o", out); err != nil {
		t.Fatalf("restore of the config file's replica: %v\n%s", err, cmdOut)
	}
	if got := shell(t, out, ".dump"); got != want {
		t.Fatalf("restored from the config file's replica:\n%s\nwant\n%s", got, want)
	}

	badCfg := filepath.Join(dir, "bad.yml")
	if err := os.WriteFile(badCfg, []byte("mount-point: "+cm.mnt+"\ndata: "+cm.data+"\nreplicas:\n  - url: s3://walsync-sse/cfg\n    sse-c-key-file: "+dir+"/missing.key\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if cmdOut, err := runWalsyncEnv(t, srv.Env(), "mount", "--config", badCfg); err == nil || !strings.Contains(cmdOut, "replica s3://walsync-sse/cfg: SSE-C key: open "+dir+"/missing.key") {
		t.Fatalf("mount with a replica whose SSE-C key file is missing: %v\n%s", err, cmdOut)
	}

	short := filepath.Join(dir, "short.key")
	if err := os.WriteFile(short, []byte("c2hvcnQ="), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--s3-sse", "sse-s3"}, `server-side encryption "sse-s3": use AES256 (SSE-S3) or aws:kms (SSE-KMS)`},
		{[]string{"--s3-sse-kms-key-id", "alias/x"}, "a KMS key id is given without server-side encryption aws:kms"},
		{[]string{"--s3-sse-c-key-file", short}, "SSE-C key in " + short + ": want 32 bytes"},
		{[]string{"--s3-sse", "AES256", "--s3-sse-c-key-file", keyFile}, "SSE-C and server-side encryption AES256 exclude each other"},
	} {
		args := append(append([]string{"restore"}, tc.args...), "s3://walsync-sse/c/a.db", "-o", filepath.Join(t.TempDir(), "x.db"))
		cmdOut, err := runWalsyncEnv(t, srv.Env(), args...)
		if err == nil || !strings.Contains(cmdOut, tc.want) {
			t.Errorf("walsync %v: %v\n%s\nwant an error saying %q", args, err, cmdOut, tc.want)
		}
	}
}

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

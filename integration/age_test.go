package integration

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"
	"github.com/walsync/walsync/internal/s3test"
)

// writeIdentity writes a new age identity file, as age-keygen does.
func writeIdentity(t *testing.T, path string) *age.X25519Identity {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("# public key: "+id.Recipient().String()+"\n"+id.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return id
}

// bucketObjects returns the content of every object under dir of the S3
// server's storage.
func bucketObjects(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	objs := map[string][]byte{}
	_ = filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() && (strings.HasSuffix(p, ".ltx") || strings.HasSuffix(p, ".wtx")) {
			b, rerr := os.ReadFile(p)
			if rerr != nil {
				t.Fatal(rerr)
			}
			objs[p] = b
		}
		return nil
	})
	return objs
}

// TestAgeEncryptionEndToEnd, against the real S3 server: a database whose
// rows carry a unique marker is written through the mount with and without
// --age-identity. Without encryption the marker is in the bucket (so the
// check can fail); with it, no object holds it. The replica restores with
// the identity and with a second recipient's identity (a key rotation), and
// equals the source; without an identity, or with another, restore and
// verify fail naming an object, and restore writes no output. A replica
// that had plaintext objects before encryption was turned on restores
// across both.
func TestAgeEncryptionEndToEnd(t *testing.T) {
	srv := s3test.Start(t)
	srv.CreateBucket(t, "walsync-age")
	dir := t.TempDir()
	idA := filepath.Join(dir, "a.key")
	writeIdentity(t, idA)
	idB := filepath.Join(dir, "b.key")
	b := writeIdentity(t, idB)
	idC := filepath.Join(dir, "c.key")
	writeIdentity(t, idC)
	raw := make([]byte, 16)
	_, _ = rand.Read(raw)
	marker := "MARKER-" + hex.EncodeToString(raw)

	write := func(prefix string, args ...string) (string, string) {
		t.Helper()
		m := &mount{t: t, mnt: filepath.Join(dir, prefix, "mnt"), data: filepath.Join(dir, prefix, "data"), env: srv.Env(),
			url: "s3://walsync-age/" + prefix, args: args}
		if err := os.MkdirAll(m.mnt, 0o755); err != nil {
			t.Fatal(err)
		}
		m.start()
		shell(t, m.path("a.db"), `CREATE TABLE t(x); INSERT INTO t VALUES('`+marker+`'); INSERT INTO t VALUES('two');`)
		want := shell(t, m.path("a.db"), ".dump")
		m.stop()
		return filepath.Join(srv.Dir, "walsync-age", prefix), want
	}
	plainDir, _ := write("plain")
	found := false
	for _, content := range bucketObjects(t, plainDir) {
		found = found || bytes.Contains(content, []byte(marker))
	}
	if !found {
		t.Fatal("without encryption no object holds the marker: the check below could not fail")
	}

	encDir, want := write("enc", "--age-identity", idA, "--age-recipient", b.Recipient().String())
	objs := bucketObjects(t, encDir)
	if len(objs) == 0 {
		t.Fatal("no object in the encrypted replica")
	}
	for p, content := range objs {
		if bytes.Contains(content, []byte(marker)) {
			t.Errorf("%s holds the marker in plaintext", p)
		}
		if !bytes.HasPrefix(content, []byte("age-encryption.org/v1\n")) {
			t.Errorf("%s is not an age file", p)
		}
	}
	url := "s3://walsync-age/enc/a.db"
	for _, id := range []string{idA, idB} {
		out := filepath.Join(t.TempDir(), "r.db")
		if cmdOut, err := runWalsyncEnv(t, srv.Env(), "restore", "--age-identity", id, url, "-o", out); err != nil {
			t.Fatalf("restore with %s: %v\n%s", filepath.Base(id), err, cmdOut)
		}
		if got := shell(t, out, ".dump"); got != want {
			t.Fatalf("restored with %s:\n%s\nwant\n%s", filepath.Base(id), got, want)
		}
	}
	if cmdOut, err := runWalsyncEnv(t, srv.Env(), "verify", "--age-identity", idB, url); err != nil {
		t.Fatalf("verify with an identity: %v\n%s", err, cmdOut)
	}
	for name, args := range map[string][]string{"no identity": nil, "another identity": {"--age-identity", idC}} {
		out := filepath.Join(t.TempDir(), "r.db")
		cmdOut, err := runWalsyncEnv(t, srv.Env(), append(append([]string{"restore"}, args...), url, "-o", out)...)
		if err == nil || !strings.Contains(cmdOut, url+"/") || !strings.Contains(cmdOut, "encrypted with age") {
			t.Errorf("restore with %s: %v\n%s\nwant an error naming the object", name, err, cmdOut)
		}
		if _, serr := os.Stat(out); !os.IsNotExist(serr) {
			t.Errorf("restore with %s left an output file", name)
		}
		cmdOut, err = runWalsyncEnv(t, srv.Env(), append(append([]string{"verify"}, args...), url)...)
		if err == nil || !strings.Contains(cmdOut, "encrypted with age") {
			t.Errorf("verify with %s: %v\n%s", name, err, cmdOut)
		}
	}

	// Encryption turned on for a replica that has plaintext objects.
	m := &mount{t: t, mnt: filepath.Join(dir, "plain", "mnt"), data: filepath.Join(dir, "plain", "data"), env: srv.Env(),
		url: "s3://walsync-age/plain", args: []string{"--age-identity", idA}}
	m.start()
	shell(t, m.path("a.db"), `INSERT INTO t VALUES('after encryption');`)
	want = shell(t, m.path("a.db"), ".dump")
	m.stop()
	out := filepath.Join(t.TempDir(), "mixed.db")
	if cmdOut, err := runWalsyncEnv(t, srv.Env(), "restore", "--age-identity", idA, "s3://walsync-age/plain/a.db", "-o", out); err != nil {
		t.Fatalf("restore of a replica encrypted part of the way: %v\n%s", err, cmdOut)
	}
	if got := shell(t, out, ".dump"); got != want {
		t.Fatalf("restored across plaintext and encrypted objects:\n%s\nwant\n%s", got, want)
	}
	plainLeft, encrypted := 0, 0
	for _, content := range bucketObjects(t, plainDir) {
		if bytes.HasPrefix(content, []byte("age-encryption.org/v1\n")) {
			encrypted++
		} else {
			plainLeft++
		}
	}
	if encrypted == 0 || plainLeft == 0 {
		t.Fatalf("the mixed replica has %d plaintext and %d encrypted objects; want both", plainLeft, encrypted)
	}
}

// TestAgeEncryptionExtension: the loadable extension encrypts with the
// identity in WALSYNC_AGE_IDENTITY; its replica restores with it and holds
// no object in plaintext.
func TestAgeEncryptionExtension(t *testing.T) {
	dir, rep := t.TempDir(), t.TempDir()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	idFile := filepath.Join(t.TempDir(), "id.key")
	if err := os.WriteFile(idFile, []byte(id.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := append(extEnv(dir, rep), "WALSYNC_AGE_IDENTITY="+id.String())
	py := pyExt(t, env, `
c = connect(sys.argv[1])
c.execute("CREATE TABLE t(x)")
c.execute("INSERT INTO t VALUES('ext-secret-7d2f')")
c.close()
`, filepath.Join(dir, "e.db"))
	if out, err := py.CombinedOutput(); err != nil {
		t.Fatalf("extension writer: %v\n%s", err, out)
	}
	objs := bucketObjects(t, rep)
	if len(objs) == 0 {
		t.Fatal("the extension shipped nothing")
	}
	for p, content := range objs {
		if !bytes.HasPrefix(content, []byte("age-encryption.org/v1\n")) || bytes.Contains(content, []byte("ext-secret-7d2f")) {
			t.Errorf("%s is not encrypted", p)
		}
	}
	out := filepath.Join(t.TempDir(), "r.db")
	restoreCLI(t, "file://"+filepath.Join(rep, "e.db"), out, "--age-identity", idFile)
	if got := shell(t, out, "SELECT x FROM t;"); got != "ext-secret-7d2f\n" {
		t.Fatalf("restored %q", got)
	}
	// WALSYNC_AGE_RECIPIENTS without the identity: the extension does not load.
	py = pyExt(t, append(extEnv(t.TempDir(), t.TempDir()), "WALSYNC_AGE_RECIPIENTS="+id.Recipient().String()), `
print("loaded")
`)
	if b, err := py.CombinedOutput(); err == nil || !strings.Contains(string(b), "age recipients are given without an identity") {
		t.Fatalf("extension with recipients and no identity: %v\n%s", err, b)
	}
}

package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/walsync/walsync/internal/testtools"
	"github.com/walsync/walsync/storage/file"
)

// litestreamModule is the Litestream the compatibility tests run. 0.5.18 is
// the first 0.5 release whose restore accepts LTX files that carry
// checksums (earlier ones force NoChecksum on the compacted output and reject
// walsync's files).
const litestreamModule = "github.com/benbjohnson/litestream/cmd/litestream@v0.5.18"

func litestream(t *testing.T) string {
	t.Helper()
	bin, err := testtools.Install(litestreamModule)
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// TestLitestreamRestoresWalsync: `litestream restore` of a walsync replica
// produces the source database.
func TestLitestreamRestoresWalsync(t *testing.T) {
	ls := litestream(t)
	m := newMount(t)
	rel := "compat/app.db"
	shell(t, m.path(rel), `PRAGMA journal_mode=WAL; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
INSERT INTO t(v) VALUES('one'); INSERT INTO t(v) VALUES('two');`)
	time.Sleep(300 * time.Millisecond) // another batch
	shell(t, m.path(rel), `INSERT INTO t(v) SELECT 'x' || value FROM generate_series(1, 500); DELETE FROM t WHERE id % 7 = 0;`)
	want := shell(t, m.path(rel), ".dump")
	m.waitShipped()
	out := filepath.Join(t.TempDir(), "ls.db")
	if b, err := exec.Command(ls, "restore", "-o", out, m.replicaURL()+"/"+rel).CombinedOutput(); err != nil {
		t.Fatalf("litestream restore of a walsync replica: %v\n%s", err, b)
	}
	if got := shell(t, out, ".dump"); got != want {
		t.Fatalf("Litestream's restore differs from the source:\n%s\nwant\n%s", got, want)
	}
}

// TestLitestreamRestoresAfterLevel0Expired: once level 0 has expired (level
// 1 and the transaction logs cover it), Litestream still restores the
// latest state from levels 1 and 9 alone.
func TestLitestreamRestoresAfterLevel0Expired(t *testing.T) {
	ls := litestream(t)
	m := newMount(t, "--compaction-levels", "300ms", "--l0-retention", "1ms")
	rel := "expired/app.db"
	shell(t, m.path(rel), `PRAGMA journal_mode=WAL; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);`)
	for i := 0; i < 5; i++ {
		shell(t, m.path(rel), fmt.Sprintf("INSERT INTO t(v) VALUES('batch %d');", i))
		time.Sleep(150 * time.Millisecond) // separate batches
	}
	want := shell(t, m.path(rel), ".dump")
	m.waitShipped()
	// Every level-0 file that level 1 covers expires (a last one alone
	// since the last pass is not compacted yet, and stays).
	c := file.New(filepath.Join(m.rep, rel))
	deadline := time.Now().Add(20 * time.Second)
	for {
		l0, _ := c.LTXFiles(t.Context(), "", 0)
		l1, _ := c.LTXFiles(t.Context(), "", 1)
		covered := 0
		for _, f := range l0 {
			for _, g := range l1 {
				if g.MinTXID <= f.MinTXID && f.MaxTXID <= g.MaxTXID {
					covered++
					break
				}
			}
		}
		if len(l1) > 0 && covered == 0 && len(l0) <= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("level 0 did not expire: %d files, %d covered by level 1\n%s", len(l0), covered, m.log)
		}
		time.Sleep(100 * time.Millisecond)
	}
	out := filepath.Join(t.TempDir(), "ls.db")
	if b, err := exec.Command(ls, "restore", "-o", out, m.replicaURL()+"/"+rel).CombinedOutput(); err != nil {
		t.Fatalf("litestream restore without level 0: %v\n%s", err, b)
	}
	if got := shell(t, out, ".dump"); got != want {
		t.Fatalf("Litestream's restore without level 0 differs from the source:\n%s\nwant\n%s", got, want)
	}
}

// TestWalsyncRestoresLitestream: `walsync restore` of a replica written by
// Litestream 0.5 produces the source database, and says the files carry no
// checksums.
func TestWalsyncRestoresLitestream(t *testing.T) {
	ls := litestream(t)
	dir := t.TempDir()
	db, rep := filepath.Join(dir, "src.db"), filepath.Join(dir, "replica")
	shell(t, db, "PRAGMA journal_mode=WAL; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t(v) VALUES('before');")
	cfg := filepath.Join(dir, "litestream.yml")
	os.WriteFile(cfg, []byte("dbs:\n  - path: "+db+"\n    replicas:\n      - url: file://"+rep+"\n        sync-interval: 100ms\n"), 0o644)
	cmd := exec.Command(ls, "replicate", "-config", cfg)
	var logBuf syncBuffer
	cmd.Stdout, cmd.Stderr = &logBuf, &logBuf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	for i := 0; i < 20; i++ {
		// Litestream takes locks on the database (checkpoints): wait for them
		// as an application with a busy timeout would.
		shell(t, db, ".timeout 5000\nINSERT INTO t(v) VALUES('row "+strings.Repeat("x", i)+"');")
		time.Sleep(50 * time.Millisecond)
	}
	want := shell(t, db, ".timeout 5000\n.dump")
	// Wait until Litestream has shipped the last write.
	deadline := time.Now().Add(20 * time.Second)
	for {
		out := filepath.Join(t.TempDir(), "probe.db")
		if b, err := exec.Command(walsyncBin, "restore", "file://"+rep, "-o", out).CombinedOutput(); err == nil {
			if shell(t, out, ".dump") == want {
				if !strings.Contains(string(b), "no checksums") {
					t.Fatalf("restore of Litestream files did not say they carry no checksums:\n%s", b)
				}
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("walsync never restored Litestream's replica to the source\n%s", logBuf.String())
		}
		time.Sleep(300 * time.Millisecond)
	}
	_ = cmd.Process.Signal(os.Interrupt)
	_ = cmd.Wait()
}

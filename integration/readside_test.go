package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/superfly/ltx"
)

// TestRestoreTimestamp restores with --timestamp at points between and
// inside batches: each equals the source as it was then.
func TestRestoreTimestamp(t *testing.T) {
	m := newMount(t)
	rel := "ts.db"
	// synchronous=FULL: each commit is captured (and timestamped) before
	// it returns, also when the -wal is in passthrough; with NORMAL the
	// capture, and its time, may trail the commit by a few milliseconds.
	db := openDB(t, m.path(rel), "journal_mode=WAL", "synchronous=FULL")
	mustExec(t, db, "CREATE TABLE t(x)")
	type point struct {
		at   time.Time
		hash string
	}
	var points []point
	for g := 0; g < 4; g++ {
		for i := 0; i < 3; i++ {
			mustExec(t, db, "INSERT INTO t VALUES(?)", fmt.Sprintf("g%d i%d", g, i))
			time.Sleep(5 * time.Millisecond)
			points = append(points, point{time.Now(), contentHash(t, db)})
			time.Sleep(15 * time.Millisecond) // inside one 100 ms batch window
		}
		time.Sleep(300 * time.Millisecond) // the next group is another batch
	}
	m.waitShipped()
	for i, p := range points {
		out := filepath.Join(t.TempDir(), "r.db")
		restoreCLI(t, m.replicaURL()+"/"+rel, out, "--timestamp", p.at.UTC().Format(time.RFC3339Nano))
		if got := checkRestored(t, out); got != p.hash {
			t.Fatalf("--timestamp at point %d differs from the source then", i)
		}
	}
	out, err := runWalsync(t, "restore", m.replicaURL()+"/"+rel, "-o", filepath.Join(t.TempDir(), "x.db"), "--timestamp", "2001-01-01T00:00:00Z")
	if err == nil || !strings.Contains(out, "no transaction at or before") {
		t.Fatalf("a time before the first transaction: %v\n%s", err, out)
	}
}

// TestLsAndVerify lists a replica root and one database, verifies a sound
// replica, then damages it three ways (a flipped byte, a missing file in the
// middle of the chain, a truncated file): verify and restore fail naming the
// object, and restore writes nothing.
func TestLsAndVerify(t *testing.T) {
	// No compaction: the damage below is done to level-0 files, which
	// restore uses only until level 1 covers them. Stopping walsync
	// uploads everything, transaction logs included.
	m := newMount(t, "--compaction-levels", "1h")
	for _, rel := range []string{"v/one.db", "v/two.db"} {
		for i := 0; i < 4; i++ {
			shell(t, m.path(rel), fmt.Sprintf("CREATE TABLE IF NOT EXISTS t(x); INSERT INTO t VALUES(%d);", i))
			time.Sleep(250 * time.Millisecond) // separate batches
		}
	}
	m.stop()
	out, err := runWalsync(t, "ls", m.replicaURL())
	if err != nil || !strings.Contains(out, "v/one.db") || !strings.Contains(out, "v/two.db") {
		t.Fatalf("ls root: %v\n%s", err, out)
	}
	out, err = runWalsync(t, "ls", m.replicaURL()+"/v/one.db")
	if err != nil || !strings.Contains(out, "TXIDs") || !strings.Contains(out, "level 0") {
		t.Fatalf("ls database: %v\n%s", err, out)
	}
	if out, err := runWalsync(t, "verify", m.replicaURL()); err != nil || strings.Count(out, "ok ") != 2 {
		t.Fatalf("verify of a sound replica: %v\n%s", err, out)
	}
	// --json: the same TXIDs as the replica holds, and verify's verdicts.
	out, err = runWalsyncStdout(t, "ls", "--json", m.replicaURL())
	var dbs []struct {
		Database string `json:"database"`
		MaxTXID  uint64 `json:"max_txid"`
	}
	if err != nil || json.Unmarshal([]byte(out), &dbs) != nil || len(dbs) != 2 {
		t.Fatalf("ls --json root: %v\n%s", err, out)
	}
	for _, d := range dbs {
		if d.MaxTXID != uint64(m.latestTXID(d.Database)) {
			t.Fatalf("ls --json says %s is at TXID %d, the replica holds %d", d.Database, d.MaxTXID, m.latestTXID(d.Database))
		}
	}
	out, err = runWalsyncStdout(t, "ls", "--json", m.replicaURL()+"/v/one.db")
	var one struct {
		MaxTXID uint64 `json:"max_txid"`
		Levels  []struct {
			Level string `json:"level"`
		} `json:"levels"`
	}
	if err != nil || json.Unmarshal([]byte(out), &one) != nil || one.MaxTXID == 0 || len(one.Levels) == 0 {
		t.Fatalf("ls --json database: %v\n%s", err, out)
	}
	out, err = runWalsyncStdout(t, "verify", "--json", m.replicaURL())
	var verdicts []struct {
		OK bool `json:"ok"`
	}
	if err != nil || json.Unmarshal([]byte(out), &verdicts) != nil || len(verdicts) != 2 || !verdicts[0].OK || !verdicts[1].OK {
		t.Fatalf("verify --json of a sound replica: %v\n%s", err, out)
	}

	l0, _ := filepath.Glob(filepath.Join(m.rep, "v", "one.db", "ltx", "0", "*.ltx"))
	if len(l0) < 3 {
		t.Fatalf("want at least 3 level-0 files, have %d", len(l0))
	}
	middle := l0[len(l0)/2]
	txlog := filepath.Join(m.rep, "v", "one.db", "txlog")
	damage := []struct {
		name string
		do   func()
		undo func()
		want string
	}{
		{"flipped byte", func() { flipByte(t, middle, 110) }, func() { flipByte(t, middle, 110) }, filepath.Base(middle)},
		// The transaction log would bridge the gap: it goes too.
		{"missing file", func() { os.Rename(middle, middle+".away"); os.Rename(txlog, txlog+".away") },
			func() { os.Rename(middle+".away", middle); os.Rename(txlog+".away", txlog) }, "gap"},
		{"truncated file", func() {
			b, _ := os.ReadFile(middle)
			os.WriteFile(middle+".orig", b, 0o644)
			os.WriteFile(middle, b[:len(b)/2], 0o644)
		}, func() { os.Rename(middle+".orig", middle) }, filepath.Base(middle)},
	}
	for _, d := range damage {
		d.do()
		out, err := runWalsync(t, "verify", m.replicaURL()+"/v/one.db")
		if err == nil || !strings.Contains(out, "BAD") || !strings.Contains(out, d.want) {
			t.Fatalf("verify with a %s: %v\n%s", d.name, err, out)
		}
		// Restore of the latest state must not use a damaged chain; a
		// missing file is named by the TXIDs no file continues.
		want := filepath.Base(middle)
		if d.name == "missing file" {
			want = "no file continuing after TXID"
		}
		dst := filepath.Join(t.TempDir(), "r.db")
		out, err = runWalsync(t, "restore", m.replicaURL()+"/v/one.db", "-o", dst)
		if err == nil || !strings.Contains(out, want) {
			t.Fatalf("restore with a %s: %v\n%s", d.name, err, out)
		}
		if ents, _ := os.ReadDir(filepath.Dir(dst)); len(ents) != 0 {
			t.Fatalf("restore with a %s left files behind: %v", d.name, ents)
		}
		d.undo()
	}
	if out, err := runWalsync(t, "verify", m.replicaURL()); err != nil {
		t.Fatalf("verify after repair: %v\n%s", err, out)
	}
}

// TestRestoreEveryTenthTXID restores every 10th TXID of a 1,000-transaction
// history and compares each with the source as it was then.
func TestRestoreEveryTenthTXID(t *testing.T) {
	m := newMount(t)
	rel := "h.db"
	db := openDB(t, m.path(rel), "journal_mode=WAL")
	mustExec(t, db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
	m.waitShipped()
	base := m.latestTXID(rel)
	hashes := map[uint64]string{}
	for i := 1; i <= 1000; i++ {
		mustExec(t, db, "INSERT INTO t(v) VALUES(?)", fmt.Sprintf("row %d", i))
		if i%10 == 0 {
			hashes[uint64(base)+uint64(i)] = contentHash(t, db)
		}
	}
	m.waitShipped()
	if got := m.latestTXID(rel); uint64(got) != uint64(base)+1000 {
		t.Fatalf("latest TXID %d, want %d", got, uint64(base)+1000)
	}
	for txid, want := range hashes {
		if got := checkRestored(t, m.restoreDB(rel, ltx.TXID(txid))); got != want {
			t.Fatalf("restore at TXID %d differs from the source then", txid)
		}
	}
}

// TestRestoreProgress shows a progress bar on a terminal and quiet lines
// otherwise.
func TestRestoreProgress(t *testing.T) {
	m := newMount(t)
	shell(t, m.path("p.db"), "CREATE TABLE t(x); INSERT INTO t VALUES(1);")
	m.waitShipped()
	url := m.replicaURL() + "/p.db"
	out, err := runWalsync(t, "restore", url, "-o", filepath.Join(t.TempDir(), "a.db"))
	if err != nil || !strings.Contains(out, "restore progress") || !strings.Contains(out, "rate_mb_s") {
		t.Fatalf("restore without a terminal: %v\n%s", err, out)
	}
	// script(1) gives the restore a pseudo-terminal.
	cmd := exec.Command("script", "-qfec", walsyncBin+" restore "+url+" -o "+filepath.Join(t.TempDir(), "b.db"), "/dev/null")
	b, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(b), "restoring, file 1 of") {
		t.Fatalf("restore on a terminal: %v\n%q", err, b)
	}
}

// TestRestoreEntrypointFlags: the flags a container entrypoint uses to
// restore on first boot only: --if-db-not-exists keeps an existing database,
// --if-replica-exists starts empty when there is no backup yet, and both
// still restore when there is something to restore.
func TestRestoreEntrypointFlags(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "app.db")
	missing := "file://" + filepath.Join(dir, "no-replica", "app.db")
	if o, err := runWalsync(t, "restore", missing, "-o", out); err == nil || !strings.Contains(o, "no backup at") {
		t.Fatalf("restore without a backup: %v\n%s", err, o)
	}
	if o, err := runWalsync(t, "restore", missing, "-o", out, "--if-replica-exists"); err != nil || !strings.Contains(o, "nothing restored") {
		t.Fatalf("--if-replica-exists without a backup: %v\n%s", err, o)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatal("--if-replica-exists without a backup wrote a file")
	}

	m := newMount(t)
	shell(t, m.path("app.db"), "CREATE TABLE t(x); INSERT INTO t VALUES('backed up');")
	m.waitShipped()
	url := m.replicaURL() + "/app.db"
	if o, err := runWalsync(t, "restore", url, "-o", out, "--if-db-not-exists", "--if-replica-exists"); err != nil {
		t.Fatalf("first boot: %v\n%s", err, o)
	}
	if got := shell(t, out, "SELECT x FROM t;"); got != "backed up\n" {
		t.Fatalf("first boot restored %q", got)
	}
	shell(t, out, "INSERT INTO t VALUES('local');")
	if o, err := runWalsync(t, "restore", url, "-o", out, "--if-db-not-exists"); err != nil || !strings.Contains(o, "nothing restored") {
		t.Fatalf("--if-db-not-exists with the database there: %v\n%s", err, o)
	}
	if got := shell(t, out, "SELECT count(*) FROM t;"); got != "2\n" {
		t.Fatalf("--if-db-not-exists changed the database: %q rows", got)
	}
}

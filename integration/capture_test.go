package integration

import (
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/superfly/ltx"
)

// journalMode is how a scenario opens its database.
type journalMode struct {
	name    string
	pragmas []string
	wal     bool
}

var journalModes = []journalMode{
	{"wal", []string{"journal_mode=WAL"}, true},
	{"wal-exclusive", []string{"locking_mode=EXCLUSIVE", "journal_mode=WAL"}, true},
	{"delete", []string{"journal_mode=DELETE"}, false},
	{"truncate", []string{"journal_mode=TRUNCATE"}, false},
	{"persist", []string{"journal_mode=PERSIST"}, false},
	{"delete-exclusive", []string{"locking_mode=EXCLUSIVE", "journal_mode=DELETE"}, false},
}

const rolledBackMarker = "ROLLED-BACK"

// TestCaptureScenarios runs one workload in every journal mode, synchronous
// setting and page size, and checks that every state the application
// committed can be restored by TXID, in order, that every TXID restores to a
// sound database, and that nothing rolled back is ever on the replica.
//
// It runs in both capture modes of the mount: passthrough (commits captured
// at barriers) and write (every write seen).
func TestCaptureScenarios(t *testing.T) {
	for _, mode := range captureModes {
		t.Run(mode, func(t *testing.T) {
			m := newModeMount(t, mode)
			for _, jm := range journalModes {
				for _, sync := range []string{"OFF", "NORMAL", "FULL"} {
					for _, ps := range []int{1024, 4096, 65536} {
						name := fmt.Sprintf("%s/sync=%s/page=%d", jm.name, sync, ps)
						rel := fmt.Sprintf("scen/%s-%s-%d.db", jm.name, sync, ps)
						t.Run(name, func(t *testing.T) {
							t.Parallel()
							runScenario(t, m, rel, jm, sync, ps)
						})
					}
				}
			}
		})
	}
}

// frontEnd is what a capture scenario needs from the mount or the VFS.
type frontEnd interface {
	path(rel string) string
	open(t testing.TB, path string, pragmas ...string) *sql.DB
	waitShipped()
	latestTXID(db string) ltx.TXID
	restoreDB(db string, txid ltx.TXID) string
}

func (m *mount) open(t testing.TB, path string, pragmas ...string) *sql.DB {
	return openDB(t, path, pragmas...)
}

func runScenario(t *testing.T, m frontEnd, rel string, jm journalMode, sync string, pageSize int) {
	pragmas := append([]string{fmt.Sprintf("page_size=%d", pageSize)}, jm.pragmas...)
	pragmas = append(pragmas, "synchronous="+sync)
	db := m.open(t, m.path(rel), pragmas...)
	var states []string
	record := func() { states = append(states, contentHash(t, db)) }

	mustExec(t, db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, b BLOB)")
	record()
	for i := 0; i < 10; i++ {
		mustExec(t, db, "INSERT INTO t(v, b) VALUES(?, randomblob(100))", fmt.Sprintf("row %d", i))
		record()
	}
	// A rollback without a spill.
	tx := mustBegin(t, db)
	mustExec(t, tx, "INSERT INTO t(v) VALUES(?)", rolledBackMarker)
	mustExec(t, tx, "UPDATE t SET v = ? WHERE id = 1", rolledBackMarker)
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	// A rollback after the page cache spilled to the database file.
	mustExec(t, db, "PRAGMA cache_size=2")
	tx = mustBegin(t, db)
	for i := 0; i < 200; i++ {
		mustExec(t, tx, "INSERT INTO t(v, b) VALUES(?, randomblob(2000))", rolledBackMarker)
	}
	mustExec(t, tx, "UPDATE t SET v = ? WHERE id <= 5", rolledBackMarker)
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	// A large transaction that spills and commits.
	tx = mustBegin(t, db)
	for i := 0; i < 200; i++ {
		mustExec(t, tx, "INSERT INTO t(v, b) VALUES(?, randomblob(2000))", fmt.Sprintf("big %d", i))
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	record()
	mustExec(t, db, "PRAGMA cache_size=-2000")
	mustExec(t, db, "UPDATE t SET v = v || ' updated' WHERE id % 3 = 0")
	record()
	mustExec(t, db, "DELETE FROM t WHERE id > 20")
	record()
	mustExec(t, db, "VACUUM") // shrinks the file
	record()
	if jm.wal {
		// Capture can trail a commit (passthrough: the watcher, the VFS:
		// its poll); wait until the replica's latest is the last state,
		// so that anything new after the checkpoint came from it.
		before := waitLatestIs(t, m, rel, states[len(states)-1])
		mustExec(t, db, "PRAGMA wal_checkpoint(TRUNCATE)")
		m.waitShipped()
		if after := m.latestTXID(rel); after != before {
			t.Fatalf("a checkpoint created transactions: latest TXID %d -> %d", before, after)
		}
	}
	for i := 0; i < 3; i++ {
		mustExec(t, db, "INSERT INTO t(v) VALUES(?)", fmt.Sprintf("after %d", i))
		record()
	}
	m.waitShipped()

	latest := m.latestTXID(rel)
	if latest < ltx.TXID(len(states)) {
		t.Fatalf("replica has %d transactions, the application committed at least %d", latest, len(states))
	}
	next := 0
	for txid := ltx.TXID(1); txid <= latest; txid++ {
		path := m.restoreDB(rel, txid)
		h := checkRestored(t, path)
		if n := countMarker(t, path); n != 0 {
			t.Fatalf("TXID %d holds %d rolled-back rows", txid, n)
		}
		for next < len(states) && states[next] == h {
			next++
		}
	}
	if next != len(states) {
		t.Fatalf("committed state %d of %d was never restorable by TXID (restored up to TXID %d)", next+1, len(states), latest)
	}
	if h := checkRestored(t, m.restoreDB(rel, 0)); h != states[len(states)-1] {
		t.Fatalf("latest restore differs from the source")
	}
}

// waitLatestIs waits until the latest TXID on the replica restores to the
// state hashed as want, and returns that TXID.
func waitLatestIs(t *testing.T, m frontEnd, rel, want string) ltx.TXID {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		m.waitShipped()
		latest := m.latestTXID(rel)
		if latest != 0 && checkRestored(t, m.restoreDB(rel, latest)) == want {
			return latest
		}
		if time.Now().After(deadline) {
			t.Fatalf("the replica's latest TXID %d never restored to the last committed state", latest)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func mustBegin(t testing.TB, db *sql.DB) *sql.Tx {
	t.Helper()
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	return tx
}

func countMarker(t testing.TB, path string) int {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow("SELECT count(*) FROM t WHERE v = ?", rolledBackMarker).Scan(&n); err != nil {
		return 0 // before the table exists
	}
	return n
}

// TestShellAndPython drives the mount with the sqlite3 shell and Python's
// sqlite3 module, and restores with the CLI, by decimal and 16-hex TXID.
func TestShellAndPython(t *testing.T) {
	// No compaction: the damage below is done to a level-0 file, which
	// restore uses only until level 1 covers it.
	m := newMount(t, "--compaction-levels", "1h")
	shellDB := m.path("lang/shell.db")
	shell(t, shellDB, `PRAGMA journal_mode=WAL;
CREATE TABLE kv(k TEXT PRIMARY KEY, v TEXT);
INSERT INTO kv VALUES('a','1');
INSERT INTO kv VALUES('b','2');
BEGIN; INSERT INTO kv VALUES('zz','`+rolledBackMarker+`'); ROLLBACK;
UPDATE kv SET v='3' WHERE k='a';
`)
	pyDB := m.path("lang/py.db")
	runPython(t, `
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("PRAGMA journal_mode=DELETE")
c.execute("CREATE TABLE kv(k TEXT PRIMARY KEY, v TEXT)")
for i in range(20):
    c.execute("INSERT INTO kv VALUES(?, ?)", ("k%d" % i, "v%d" % i))
c.execute("BEGIN")
c.execute("INSERT INTO kv VALUES('zz', ?)", ("`+rolledBackMarker+`",))
c.execute("ROLLBACK")
c.execute("BEGIN")
c.executemany("INSERT INTO kv VALUES(?, ?)", [("m%d" % i, "x" * 500) for i in range(100)])
c.execute("COMMIT")
c.close()
`, pyDB)
	m.stop() // uploads everything, transaction logs included

	for _, c := range []struct{ rel, src string }{{"lang/shell.db", filepath.Join(m.data, "lang/shell.db")}, {"lang/py.db", filepath.Join(m.data, "lang/py.db")}} {
		out := filepath.Join(t.TempDir(), "r.db")
		restoreCLI(t, m.replicaURL()+"/"+c.rel, out)
		if got, want := shell(t, out, ".dump"), shell(t, c.src, ".dump"); got != want {
			t.Fatalf("%s: restored .dump differs:\n%s\nwant:\n%s", c.rel, got, want)
		}
		if got := shell(t, out, "PRAGMA integrity_check;"); got != "ok\n" {
			t.Fatalf("integrity_check: %s", got)
		}
	}
	// A flipped byte in the replica: restore names the file and writes nothing.
	l0, _ := filepath.Glob(filepath.Join(m.rep, "lang", "py.db", "ltx", "0", "*.ltx"))
	if len(l0) == 0 {
		t.Fatal("no level-0 file")
	}
	flipByte(t, l0[len(l0)-1], 120)
	bad := filepath.Join(t.TempDir(), "bad.db")
	out, err := runWalsync(t, "restore", m.replicaURL()+"/lang/py.db", "-o", bad)
	if err == nil || !strings.Contains(out, l0[len(l0)-1]) {
		t.Fatalf("restore of a corrupt file: %v\n%s", err, out)
	}
	if _, err := os.Stat(bad); !os.IsNotExist(err) {
		t.Fatal("a failed restore left an output file")
	}

	// The shell database: TXID 1 journal_mode, 2 CREATE, 3 and 4 inserts, 5 update.
	dec, hex := filepath.Join(t.TempDir(), "dec.db"), filepath.Join(t.TempDir(), "hex.db")
	restoreCLI(t, m.replicaURL()+"/lang/shell.db", dec, "--txid", "4")
	restoreCLI(t, m.replicaURL()+"/lang/shell.db", hex, "--txid", "0000000000000004")
	if got := shell(t, dec, "SELECT group_concat(k||'='||v) FROM kv;"); got != "a=1,b=2\n" {
		t.Fatalf("restore at TXID 4: %q", got)
	}
	if shell(t, dec, ".dump") != shell(t, hex, ".dump") {
		t.Fatal("--txid 4 and --txid 0000000000000004 restore different databases")
	}
}

// TestNotDatabasesPassThrough checks that ordinary files behave as files and
// are not shipped.
func TestNotDatabasesPassThrough(t *testing.T) {
	m := newMount(t)
	files := map[string][]byte{
		"notes.txt":          []byte("hello\n"),
		"dir/data.bin":       {0, 1, 2, 3, 255},
		"dir/x-journal":      []byte("not a journal"),
		"empty":              nil,
		"fake.db":            []byte("SQLite format 2 but not really a database, long enough to be read"),
		"dir/deeper/big.dat": make([]byte, 3<<20),
	}
	for rel, b := range files {
		if err := os.WriteFile(m.path(rel), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.OpenFile(m.path("notes.txt"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("world\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	files["notes.txt"] = []byte("hello\nworld\n")
	if err := os.Truncate(m.path("dir/data.bin"), 2); err != nil {
		t.Fatal(err)
	}
	files["dir/data.bin"] = []byte{0, 1}
	if err := os.Rename(m.path("empty"), m.path("renamed")); err != nil {
		t.Fatal(err)
	}
	delete(files, "empty")
	files["renamed"] = nil
	m.waitShipped()
	for rel, want := range files {
		got, err := os.ReadFile(m.path(rel))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Fatalf("%s reads back %d bytes, want %d", rel, len(got), len(want))
		}
		under, err := os.ReadFile(filepath.Join(m.data, rel))
		if err != nil || string(under) != string(want) {
			t.Fatalf("%s in the data directory differs: %v", rel, err)
		}
	}
	if ents, _ := os.ReadDir(m.rep); len(ents) != 0 {
		t.Fatalf("plain files reached the replica: %v", ents)
	}
	if ents, _ := os.ReadDir(m.mnt); len(ents) != 4 {
		t.Fatalf("mount root lists %d entries, want 4 (the staging directory must be hidden)", len(ents))
	}
	if _, err := os.Stat(filepath.Join(m.mnt, ".walsync")); !os.IsNotExist(err) {
		t.Fatalf("staging directory visible under the mount: %v", err)
	}
}

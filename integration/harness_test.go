// Package integration holds end-to-end tests: the real walsync binary mounted
// with FUSE, real SQLite clients (the sqlite3 shell, Python's sqlite3 module
// and Go's mattn/go-sqlite3) writing through the mount, and restores compared
// with the source databases. Missing prerequisites fail the tests; they are
// never skipped.
package integration

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3"
	"github.com/superfly/ltx"
	"github.com/walsync/walsync/restore"
	"github.com/walsync/walsync/storage"
	"github.com/walsync/walsync/storage/file"
)

var (
	walsyncBin      string // built with -race under make test
	walsyncPlainBin string // built without, for memory measurements
)

const python = "/usr/bin/python3" // Debian's: the one with the sqlite3 module we expect

func TestMain(m *testing.M) {
	if err := checkPrereqs(); err != nil {
		fmt.Fprintln(os.Stderr, "integration tests cannot run:", err)
		os.Exit(1)
	}
	dir, err := os.MkdirTemp("", "walsync-bin-")
	if err != nil {
		panic(err)
	}
	walsyncBin = filepath.Join(dir, "walsync")
	walsyncPlainBin = walsyncBin
	args := []string{"build", "-o", walsyncBin}
	if os.Getenv("WALSYNC_TEST_RACE") != "" {
		// The mount and the shipper run concurrently: run them under the
		// race detector; a race makes walsync exit non-zero, failing stop().
		args = append(args, "-race")
		// Memory is measured without it (it multiplies memory use).
		walsyncPlainBin = filepath.Join(dir, "walsync-plain")
		build := exec.Command("go", "build", "-o", walsyncPlainBin, "../cmd/walsync")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build walsync:", err)
			os.Exit(1)
		}
	}
	build := exec.Command("go", append(args, "../cmd/walsync")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build walsync:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func checkPrereqs() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("must run as root to mount FUSE directly")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return fmt.Errorf("/dev/fuse: %w", err)
	}
	if _, err := exec.LookPath("sqlite3"); err != nil {
		return fmt.Errorf("the sqlite3 shell is not installed (apt-get install sqlite3)")
	}
	if out, err := exec.Command(python, "-c", "import sqlite3").CombinedOutput(); err != nil {
		return fmt.Errorf("%s with the sqlite3 module is required: %v %s", python, err, out)
	}
	return nil
}

// mount is one running `walsync mount`.
type mount struct {
	t    testing.TB
	mnt  string
	data string
	rep  string // replica directory
	args []string
	// exact, if set, are walsync's whole arguments (mount --config FILE)
	exact []string
	env   []string // extra environment, e.g. S3 credentials
	url   string   // replica URL; default file://<rep>
	bin   string   // walsync binary; default walsyncBin
	cmd   *exec.Cmd
	log   *syncBuffer
	done  chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// newMount starts walsync on fresh directories.
func newMount(t testing.TB, extra ...string) *mount {
	dir := t.TempDir()
	m := &mount{t: t, mnt: filepath.Join(dir, "mnt"), data: filepath.Join(dir, "data"), rep: filepath.Join(dir, "replica")}
	if err := os.MkdirAll(m.mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	m.args = extra
	m.start()
	t.Cleanup(func() {
		if m.cmd != nil {
			m.stop()
		}
	})
	return m
}

func (m *mount) replicaURL() string {
	if m.url != "" {
		return m.url
	}
	return "file://" + m.rep
}

// startExact starts walsync with exactly args (mount --config FILE) and
// stops it with the test.
func (m *mount) startExact(args ...string) {
	m.t.Helper()
	m.exact = args
	m.start()
	m.t.Cleanup(func() {
		if m.cmd != nil {
			m.stop()
		}
	})
}

func (m *mount) start() {
	m.t.Helper()
	m.startNoWait()
	m.waitMounted()
}

// startNoWait starts walsync; waitMounted waits until it has mounted.
func (m *mount) startNoWait() {
	m.t.Helper()
	args := append([]string{"mount", m.mnt, "--data", m.data, "--replica", m.replicaURL(), "--sync-interval", "100ms", "--log-level", "debug"}, m.args...)
	if !slices.Contains(m.args, "--compaction-levels") {
		// Transactions one by one reach the replica with level 1: soon.
		args = append(args, "--compaction-levels", "300ms")
	}
	if m.exact != nil {
		args = m.exact
	}
	bin := walsyncBin
	if m.bin != "" {
		bin = m.bin
	}
	m.cmd = exec.Command(bin, args...)
	m.cmd.Env = append(os.Environ(), m.env...)
	m.log = &syncBuffer{}
	m.cmd.Stdout, m.cmd.Stderr = m.log, m.log
	if err := m.cmd.Start(); err != nil {
		m.t.Fatal(err)
	}
	m.done = make(chan error, 1)
	go func() { m.done <- m.cmd.Wait() }()
}

func (m *mount) waitMounted() {
	m.t.Helper()
	// Long enough for a start against a replica that injects faults: the
	// bucket check retries (about 6 s), then each -wal left committed is
	// captured from a position read with a 10 s bound.
	deadline := time.Now().Add(60 * time.Second)
	for !isMounted(m.mnt) {
		select {
		case err := <-m.done:
			m.t.Fatalf("walsync exited before mounting: %v\n%s", err, m.log)
		default:
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("walsync did not mount %s in time\n%s", m.mnt, m.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop sends SIGINT and requires a clean exit and a gone mount.
func (m *mount) stop() {
	m.t.Helper()
	_ = m.cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-m.done:
		if err != nil {
			m.t.Errorf("walsync exited with %v\n%s", err, m.log)
		}
		if strings.Contains(m.log.String(), "DATA RACE") {
			m.t.Errorf("data race in walsync:\n%s", m.log)
		}
	case <-time.After(60 * time.Second):
		_ = m.cmd.Process.Kill()
		m.t.Errorf("walsync did not exit after SIGINT\n%s", m.log)
	}
	m.cmd = nil
	if isMounted(m.mnt) {
		m.t.Errorf("%s still mounted after walsync exited", m.mnt)
		_ = exec.Command("umount", "-l", m.mnt).Run()
	}
}

// kill9 kills walsync without letting it flush, and clears the dead mount.
func (m *mount) kill9() {
	m.t.Helper()
	_ = m.cmd.Process.Kill()
	<-m.done
	m.cmd = nil
	if out, err := exec.Command("umount", "-l", m.mnt).CombinedOutput(); err != nil {
		m.t.Fatalf("umount -l %s: %v %s", m.mnt, err, out)
	}
}

func isMounted(mp string) bool {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && fields[4] == mp {
			return true
		}
	}
	return false
}

// path returns the path of a file under the mount.
func (m *mount) path(rel string) string {
	p := filepath.Join(m.mnt, rel)
	_ = os.MkdirAll(filepath.Dir(p), 0o755)
	return p
}

// waitShipped waits until everything staged has been uploaded.
func (m *mount) waitShipped() {
	m.t.Helper()
	if !waitUnstaged(m.stagedBytes) {
		m.t.Fatalf("staged transactions were not shipped in time\n%s", m.log)
	}
}

// waitUnstaged waits until staged() reads zero twice in a row, 50 ms apart:
// a sealed batch leaves staging only after its upload, but a directory walk
// can miss a log in the instant it is renamed from pending to batch-*, and
// then sees it (or nothing, because it was uploaded) the second time.
func waitUnstaged(staged func() int64) bool {
	deadline := time.Now().Add(60 * time.Second)
	zeros := 0
	for zeros < 2 {
		if staged() == 0 {
			zeros++
		} else {
			zeros = 0
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}

// stagedBytes is what every replica's staging holds (staging,
// staging-<hash> for the others).
func (m *mount) stagedBytes() int64 {
	dirs, _ := filepath.Glob(filepath.Join(m.data, ".walsync", "staging*"))
	var n int64
	for _, d := range dirs {
		n += dirStaged(d)
	}
	return n
}

// dirStaged is what a staging directory holds that is not on the replica
// yet: transactions staged, and transactions whose level-0 file is
// uploaded but whose transaction log is not (kept/txlog).
func dirStaged(dir string) int64 {
	var n int64
	_ = filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() && (fi.Name() == "pending" || strings.HasPrefix(fi.Name(), "batch-") ||
			filepath.Base(filepath.Dir(p)) == "txlog" && filepath.Base(filepath.Dir(filepath.Dir(p))) == "kept") {
			n += fi.Size()
		}
		return nil
	})
	return n
}

// latestTXID is the highest TXID on the replica for a database.
func (m *mount) latestTXID(db string) ltx.TXID {
	m.t.Helper()
	fi, err := storage.Latest(context.Background(), file.New(m.rep), db)
	if err != nil {
		m.t.Fatal(err)
	}
	if fi == nil {
		return 0
	}
	return fi.MaxTXID
}

// latestTXIDOrZero is latestTXID, 0 while the replica cannot be read.
func (m *mount) latestTXIDOrZero(db string) ltx.TXID {
	fi, err := storage.Latest(context.Background(), file.New(m.rep), db)
	if err != nil || fi == nil {
		return 0
	}
	return fi.MaxTXID
}

// restoreDB restores a database in-process (0: latest) and returns the path.
func (m *mount) restoreDB(db string, txid ltx.TXID) string {
	m.t.Helper()
	out := filepath.Join(m.t.TempDir(), "restored.db")
	if _, err := restore.Restore(context.Background(), file.New(filepath.Join(m.rep, db)), "", out, restore.Options{TXID: txid}); err != nil {
		m.t.Fatalf("restore %s at %d: %v", db, txid, err)
	}
	return out
}

// restoreCLI restores with the walsync binary.
func restoreCLI(t testing.TB, url, out string, args ...string) {
	t.Helper()
	cmd := exec.Command(walsyncBin, append([]string{"restore", url, "-o", out}, args...)...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("walsync restore %s: %v\n%s", url, err, b)
	}
}

// openDB opens a database with Go's driver.
func openDB(t testing.TB, path string, pragmas ...string) *sql.DB {
	t.Helper()
	return openDSN(t, "file:"+path+"?_busy_timeout=10000", pragmas...)
}

// openDSN opens a database with Go's driver, one connection.
func openDSN(t testing.TB, dsn string, pragmas ...string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite3", dsn)
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	for _, p := range pragmas {
		mustExec(t, db, "PRAGMA "+p)
	}
	return db
}

func mustExec(t testing.TB, db interface {
	Exec(string, ...any) (sql.Result, error)
}, q string, args ...any) {
	t.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

type querier interface {
	Query(string, ...any) (*sql.Rows, error)
	QueryRow(string, ...any) *sql.Row
}

// contentHash hashes every row of every table and index definition, in a
// stable order: two databases with the same hash hold the same data.
func contentHash(t testing.TB, db querier) string {
	t.Helper()
	h := sha256.New()
	rows, err := db.Query("SELECT type, name, tbl_name, coalesce(sql,'') FROM sqlite_master ORDER BY type, name")
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var typ, name, tbl, q string
		if err := rows.Scan(&typ, &name, &tbl, &q); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(h, "%s|%s|%s|%s\n", typ, name, tbl, q)
		if typ == "table" && !strings.HasPrefix(name, "sqlite_") {
			tables = append(tables, name)
		}
	}
	rows.Close()
	sort.Strings(tables)
	for _, tbl := range tables {
		r, err := db.Query(fmt.Sprintf("SELECT * FROM %q ORDER BY rowid", tbl))
		if err != nil {
			t.Fatal(err)
		}
		cols, _ := r.Columns()
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		for r.Next() {
			if err := r.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(h, "%s:%v\n", tbl, vals)
		}
		r.Close()
	}
	return hex.EncodeToString(h.Sum(nil))
}

// checkRestored opens a restored file, runs integrity_check and returns its content hash.
func checkRestored(t testing.TB, path string) string {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var res string
	if err := db.QueryRow("PRAGMA integrity_check").Scan(&res); err != nil {
		t.Fatalf("integrity_check of %s: %v", path, err)
	}
	if res != "ok" {
		t.Fatalf("integrity_check of %s: %s", path, res)
	}
	return contentHash(t, db)
}

// shell runs the sqlite3 shell on a database with sql on stdin.
func shell(t testing.TB, db, script string) string {
	t.Helper()
	cmd := exec.Command("sqlite3", "-bail", db)
	cmd.Stdin = strings.NewReader(script)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("sqlite3 %s: %v\n%s", db, err, out)
	}
	return string(out)
}

// runPython runs a Python script with Debian's python3.
func runPython(t testing.TB, script string, args ...string) string {
	t.Helper()
	cmd := exec.Command(python, append([]string{"-c", script}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("python3: %v\n%s", err, out)
	}
	return string(out)
}

func readAll(t testing.TB, r io.Reader) string {
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func stringsReader(s string) io.Reader { return strings.NewReader(s) }

func openRO(path string) (*sql.DB, error) {
	return sql.Open("sqlite3", "file:"+path+"?mode=ro&_busy_timeout=10000")
}

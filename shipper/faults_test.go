package shipper_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/superfly/ltx"
	"github.com/walsync/walsync/shipper"
	"github.com/walsync/walsync/storage/file"
)

// smallFS mounts a tmpfs of size bytes for a test (walsync's tests run as root).
func smallFS(t *testing.T, size int) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d", size)); err != nil {
		t.Fatalf("mount a small tmpfs for the ENOSPC test (needs root): %v", err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) })
	return dir
}

// fill writes 4 KiB files into dir until it is full and returns them.
func fill(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	block := bytes.Repeat([]byte{0xAA}, 4096)
	for i := 0; ; i++ {
		p := filepath.Join(dir, fmt.Sprintf("filler-%d", i))
		err := os.WriteFile(p, block, 0o600)
		files = append(files, p)
		if errors.Is(err, syscall.ENOSPC) {
			return files
		} else if err != nil {
			t.Fatal(err)
		}
	}
}

// TestStagingWriteFailureDoesNotWedge: a transaction whose staging fails
// half-way (ENOSPC) fails its commit and leaves nothing of itself in the
// log; the next, smaller transaction stages after the last whole record, and
// everything ships and restores.
func TestStagingWriteFailureDoesNotWedge(t *testing.T) {
	stageDir := smallFS(t, 512<<10)
	root := t.TempDir()
	s, err := shipper.New(shipper.Options{Dir: stageDir, Client: file.New(root), SyncInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	m := newMemDB(64)
	core := openCore(t, s, "x.db", m) // TXID 1: a 64 KiB snapshot
	m.change(t, core, 2, 1)           // TXID 2
	fillers := fill(t, stageDir)
	for _, f := range fillers[len(fillers)-5:] {
		os.Remove(f) // about 16 KiB free: less than the next transaction
	}
	// A transaction of 40 pages cannot be staged whole.
	for pgno := 3; pgno < 43; pgno++ {
		off := int64(pgno-1)*pageSize + 300
		if err := core.WriteDB(off, 1, func() error { m.data[off] = 7; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	if err := core.Closed(); err == nil {
		t.Fatal("staging a transaction on a full filesystem did not fail its commit")
	}
	for _, f := range fillers {
		os.Remove(f)
	}
	// Rolled back by the application: only a one-page change commits.
	for pgno := 3; pgno < 43; pgno++ {
		m.data[int64(pgno-1)*pageSize+300] = 0
	}
	m.change(t, core, 2, 9)
	want := m.bytes()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Fatalf("a failed staging write wedged the database: %v", err)
	}
	if got := restoreBytes(t, root, "x.db", 0); !bytes.Equal(got, want) {
		t.Fatal("restore after a failed staging write differs")
	}
}

// failingClient fails every write and counts the attempts.
type failingClient struct {
	countingClient
	attempts atomic.Int64
}

func (c *failingClient) WriteLTXFile(ctx context.Context, db string, level int, min, max ltx.TXID, r io.ReadSeeker, ts time.Time) error {
	c.attempts.Add(1)
	return errors.New("injected outage")
}

// TestOneRetryScheduleDuringOutage: during an outage every batch window
// used to start its own retry chain, so attempts grew with the outage's
// length. A database has one schedule, with backoff.
func TestOneRetryScheduleDuringOutage(t *testing.T) {
	client := &failingClient{countingClient: countingClient{Client: file.New(t.TempDir())}}
	s, err := shipper.New(shipper.Options{Dir: t.TempDir(), Client: client, SyncInterval: 5 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	m := newMemDB(4)
	core := openCore(t, s, "x.db", m)
	// 100 batch windows of one transaction each during the outage.
	for j := 0; j < 100; j++ {
		m.change(t, core, 2, byte(j+1))
		time.Sleep(10 * time.Millisecond)
	}
	before := client.attempts.Load()
	time.Sleep(time.Second)
	rate := client.attempts.Load() - before
	// One schedule with a backoff of 50..100 ms is at most ~20 attempts a
	// second (each shipment tries the snapshot once); one chain per window
	// would be hundreds.
	if rate > 40 {
		t.Fatalf("%d upload attempts in one second after 100 windows of an outage: retries multiply", rate)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_ = s.Close(ctx)
}

// TestCloseWithoutDeadlineIsBounded: Close with a context that never ends,
// while nothing can be uploaded, returns after FlushTimeout, saying which
// transactions stay staged.
func TestCloseWithoutDeadlineIsBounded(t *testing.T) {
	client := &failingClient{countingClient: countingClient{Client: file.New(t.TempDir())}}
	stageDir := t.TempDir()
	s, err := shipper.New(shipper.Options{Dir: stageDir, Client: client, SyncInterval: 10 * time.Millisecond, FlushTimeout: 300 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	m := newMemDB(4)
	core := openCore(t, s, "x.db", m)
	m.change(t, core, 2, 1)
	done := make(chan error, 1)
	go func() { done <- s.Close(context.Background()) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "transactions 1 to 2 stay staged in "+stageDir) {
			t.Fatalf("Close during an outage: %v, want it to say what stays staged", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close(context.Background()) during an outage did not return")
	}
}

// TestDamagedStagingSetAside: one database's unreadable staging (a torn
// shipped.json) does not stop the shipper: it is set aside with an error
// naming it, the database is captured anew, the others ship.
func TestDamagedStagingSetAside(t *testing.T) {
	root, stageDir := t.TempDir(), t.TempDir()
	client := &countingClient{Client: file.New(root)}
	client.fail.Store(true)
	s, err := shipper.New(shipper.Options{Dir: stageDir, Client: client, SyncInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	good, bad := newMemDB(3), newMemDB(3)
	gcore, bcore := openCore(t, s, "good.db", good), openCore(t, s, "bad.db", bad)
	good.change(t, gcore, 2, 1)
	bad.change(t, bcore, 2, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_ = s.Close(ctx)
	if err := os.WriteFile(filepath.Join(stageDir, "bad.db", "shipped.json"), []byte(`{"txid":`), 0o600); err != nil {
		t.Fatal(err)
	}

	client.fail.Store(false)
	var log bytes.Buffer
	var mu sync.Mutex
	s2, err := shipper.New(shipper.Options{Dir: stageDir, Client: client, SyncInterval: time.Hour,
		Logger: slog.New(slog.NewTextHandler(lockedWriter{&mu, &log}, nil))})
	if err != nil {
		t.Fatalf("one damaged staging stopped the shipper: %v", err)
	}
	mu.Lock()
	msg := log.String()
	mu.Unlock()
	if !strings.Contains(msg, "damaged staging set aside") || !strings.Contains(msg, "db=bad.db") || !strings.Contains(msg, "shipped.json") {
		t.Fatalf("the set-aside staging is not reported by name:\n%s", msg)
	}
	aside, _ := filepath.Glob(filepath.Join(stageDir+".set-aside", "bad.db.*"))
	if len(aside) != 1 {
		t.Fatalf("set-aside directories: %v", aside)
	}
	// The damaged database is captured anew (from the replica, empty here).
	if pos, err := s2.Position(context.Background(), "bad.db"); err != nil || pos.TXID != 0 {
		t.Fatalf("position of the set-aside database: %+v %v", pos, err)
	}
	bcore = openCore(t, s2, "bad.db", bad)
	if err := s2.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := restoreBytes(t, root, "good.db", 0); !bytes.Equal(got, good.bytes()) {
		t.Fatal("the undamaged database did not ship")
	}
	if got := restoreBytes(t, root, "bad.db", 0); !bytes.Equal(got, bad.bytes()) {
		t.Fatal("the set-aside database was not captured anew")
	}
	_ = bcore
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// TestLongDatabaseName: a database path far longer than a file name (255
// bytes) stages in a directory with a short name, and what it staged ships
// after a restart under its real name.
func TestLongDatabaseName(t *testing.T) {
	root, stageDir := t.TempDir(), t.TempDir()
	name := strings.Repeat("tenant-with-a-long-name/", 20) + "app.db"
	client := &countingClient{Client: file.New(root)}
	client.fail.Store(true)
	s, err := shipper.New(shipper.Options{Dir: stageDir, Client: client, SyncInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if base := filepath.Base(s.StateDir(name)); len(base) > 255 {
		t.Fatalf("staging directory name of %d bytes", len(base))
	}
	if s.StateDir(name) == s.StateDir(name+"x") {
		t.Fatal("two long names share a staging directory")
	}
	m := newMemDB(3)
	core := openCore(t, s, name, m)
	m.change(t, core, 2, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_ = s.Close(ctx)

	client.fail.Store(false)
	s2, err := shipper.New(shipper.Options{Dir: stageDir, Client: client, SyncInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if pos, err := s2.Position(context.Background(), name); err != nil || pos.TXID != 2 {
		t.Fatalf("position after restart: %+v %v", pos, err)
	}
	if err := s2.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := restoreBytes(t, root, name, 0); !bytes.Equal(got, m.bytes()) {
		t.Fatal("restore of a long-named database differs")
	}
}

// TestStagingBelongsToItsReplica: staging made for one replica is never
// shipped to another: started with another replica URL, the staging is set
// aside and the database starts again there from a snapshot.
func TestStagingBelongsToItsReplica(t *testing.T) {
	rootA, rootB, stageDir := t.TempDir(), t.TempDir(), t.TempDir()
	clientA := &countingClient{Client: file.New(rootA)}
	clientA.fail.Store(true) // the wrong bucket: nothing reaches it
	s, err := shipper.New(shipper.Options{Dir: stageDir, Client: clientA, SyncInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	m := newMemDB(3)
	core := openCore(t, s, "x.db", m)
	m.change(t, core, 2, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_ = s.Close(ctx)

	clientB := &countingClient{Client: file.New(rootB)}
	var log bytes.Buffer
	var mu sync.Mutex
	s2, err := shipper.New(shipper.Options{Dir: stageDir, Client: clientB, SyncInterval: time.Hour,
		Logger: slog.New(slog.NewTextHandler(lockedWriter{&mu, &log}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := clientB.l0PUTs.Load(); n != 0 {
		t.Fatalf("%d level-0 files staged for replica A were uploaded to replica B", n)
	}
	mu.Lock()
	msg := log.String()
	mu.Unlock()
	if !strings.Contains(msg, "another replica") || !strings.Contains(msg, rootA) {
		t.Fatalf("the set-aside staging is not reported:\n%s", msg)
	}
	// The database starts again on B from a snapshot of its current state.
	if pos, err := s2.Position(context.Background(), "x.db"); err != nil || pos.TXID != 0 {
		t.Fatalf("position on the new replica: %+v %v", pos, err)
	}
	core = openCore(t, s2, "x.db", m)
	m.change(t, core, 3, 4)
	if err := s2.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := restoreBytes(t, rootB, "x.db", 0); !bytes.Equal(got, m.bytes()) {
		t.Fatal("restore from the new replica differs")
	}
}

// TestReplicaEmptied: the replica lost what was uploaded from here (its
// prefix emptied): at the database's first capture the staging is set aside
// and the database starts again there from a snapshot, instead of uploading
// increments that can never be restored.
func TestReplicaEmptied(t *testing.T) {
	root, stageDir := t.TempDir(), t.TempDir()
	s, err := shipper.New(shipper.Options{Dir: stageDir, Client: file.New(root), SyncInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	m := newMemDB(3)
	core := openCore(t, s, "x.db", m)
	m.change(t, core, 2, 1)
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(root, "x.db")); err != nil {
		t.Fatal(err)
	}
	s2, err := shipper.New(shipper.Options{Dir: stageDir, Client: file.New(root), SyncInterval: time.Hour, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	core = openCore(t, s2, "x.db", m)
	m.change(t, core, 3, 2)
	if err := s2.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := restoreBytes(t, root, "x.db", 0); !bytes.Equal(got, m.bytes()) {
		t.Fatal("restore after the replica was emptied differs")
	}
}

// TestStaleStagingNotShipped: a staging copied from an old machine (it
// holds transactions 4..5 that never reached the replica, whose history
// went on from 3 elsewhere) must not upload old TXIDs on top of the newer
// history.
func TestStaleStagingNotShipped(t *testing.T) {
	root, stageDir := t.TempDir(), t.TempDir()
	client := &countingClient{Client: file.New(root)}
	s, err := shipper.New(shipper.Options{Dir: stageDir, Client: client, SyncInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	m := newMemDB(3)
	core := openCore(t, s, "x.db", m)
	m.change(t, core, 2, 1)
	m.change(t, core, 2, 2)
	if err := s.Flush(context.Background()); err != nil { // TXIDs 1..3 up
		t.Fatal(err)
	}
	client.fail.Store(true)
	m.change(t, core, 2, 3)
	m.change(t, core, 2, 4) // 4..5 staged only
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_ = s.Close(ctx)
	old := filepath.Join(t.TempDir(), "old-staging")
	if out, err := exec.Command("cp", "-a", stageDir, old).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	// Another machine goes on from the replica (TXID 3) with a staging of
	// its own: its state is shipped whole as TXID 4, then 5..7.
	client.fail.Store(false)
	if err := os.RemoveAll(stageDir); err != nil {
		t.Fatal(err)
	}
	s2, err := shipper.New(shipper.Options{Dir: stageDir, Client: client, SyncInterval: time.Hour, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	m.mu.Lock()
	m.data[2*pageSize+200] = 50 // a change the old machine never staged
	m.mu.Unlock()
	core = openCore(t, s2, "x.db", m)
	for v := byte(5); v < 8; v++ {
		m.change(t, core, 2, v)
	}
	if err := s2.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := m.bytes()
	files, _ := filepath.Glob(filepath.Join(root, "x.db", "ltx", "0", "*.ltx"))

	// The old copy comes back.
	s3, err := shipper.New(shipper.Options{Dir: old, Client: client, SyncInterval: time.Hour, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := s3.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if after, _ := filepath.Glob(filepath.Join(root, "x.db", "ltx", "0", "*.ltx")); len(after) != len(files) {
		t.Fatalf("the old staging uploaded level-0 files %v on top of %v", after, files)
	}
	if got := restoreBytes(t, root, "x.db", 0); !bytes.Equal(got, want) {
		t.Fatal("the replica was changed by an old staging")
	}
}

// TestFullStagingDrains: staging on a filesystem with no byte left (filled
// during an outage, then restarted) still uploads, and so frees itself:
// building an upload must not need space in staging.
func TestFullStagingDrains(t *testing.T) {
	stageDir := smallFS(t, 256<<10)
	root := t.TempDir()
	client := &countingClient{Client: file.New(root)}
	client.fail.Store(true)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := shipper.New(shipper.Options{Dir: stageDir, Client: client, SyncInterval: time.Hour, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	m := newMemDB(16)
	core := openCore(t, s, "x.db", m)
	var want []byte
	for v := byte(1); ; v++ {
		off := int64(1+int(v)%15)*pageSize + 100
		if err := core.WriteDB(off, 1, func() error { m.data[off] = v; return nil }); err != nil {
			t.Fatal(err)
		}
		if err := core.Closed(); err != nil {
			m.data[off] = 0 // the commit failed: the application rolls it back
			break
		}
		want = m.bytes()
		if v == 255 {
			t.Fatal("staging never filled")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_ = s.Close(ctx)
	fill(t, stageDir) // not one byte left

	client.fail.Store(false)
	s2, err := shipper.New(shipper.Options{Dir: stageDir, Client: client, SyncInterval: time.Hour, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s2.Close(ctx); err != nil {
		t.Fatalf("a full staging did not drain: %v", err)
	}
	if got := restoreBytes(t, root, "x.db", 0); !bytes.Equal(got, want) {
		t.Fatal("restore after draining a full staging differs")
	}
}

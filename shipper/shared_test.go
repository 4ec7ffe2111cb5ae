package shipper_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/walsync/walsync/capture"
	"github.com/walsync/walsync/dbfiles"
	"github.com/walsync/walsync/shipper"
	"github.com/walsync/walsync/storage/file"
)

// process is one process staging a database into a shared staging
// directory: its own Shipper (its own locks on their own descriptors) and
// its own capture core, on the same database file and page checksums.
type process struct {
	s    *shipper.Shipper
	core *capture.DB
}

func startProcess(t *testing.T, stageDir, root string, m *memDB) *process {
	t.Helper()
	s, err := shipper.New(shipper.Options{Dir: stageDir, Client: file.New(root), SyncInterval: time.Hour, Shared: true,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	pos, err := s.Position(context.Background(), "x.db")
	if err != nil {
		t.Fatal(err)
	}
	core, err := capture.Open(capture.Config{
		Name: "x.db", Files: m, Pos: pos, Shared: s.Shared("x.db"),
		Sums: &dbfiles.SumsFile{Path: filepath.Join(s.StateDir("x.db"), "page-checksums")},
		Sink: func(tx *capture.Tx) error { return s.Stage("x.db", tx) },
	})
	if err != nil {
		t.Fatal(err)
	}
	return &process{s: s, core: core}
}

// TestSharedStagingTwoProcesses: two processes write one database in turn;
// the replica holds one chain with every transaction of both.
func TestSharedStagingTwoProcesses(t *testing.T) {
	stageDir, root := t.TempDir(), t.TempDir()
	m := newMemDB(6)
	a := startProcess(t, stageDir, root, m)
	b := startProcess(t, stageDir, root, m)
	for i := 0; i < 20; i++ {
		p := []*process{a, b}[i%2]
		m.change(t, p.core, 2+i%4, byte(i+1))
		if i == 9 {
			if err := a.s.Flush(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, p := range []*process{a, b} {
		if err := p.s.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if got := restoreBytes(t, root, "x.db", 0); !bytes.Equal(got, m.bytes()) {
		t.Fatal("restore of a database written by two processes differs")
	}
}

// TestSharedStagingResetReachesOtherProcesses: the replica lost its newest
// file; a process started afterwards resets the shared staging to the
// replica's position. A process already capturing must not go on with an
// increment computed against what the replica lost: its next capture ships
// the database whole, and the replica restores.
func TestSharedStagingResetReachesOtherProcesses(t *testing.T) {
	stageDir, root := t.TempDir(), t.TempDir()
	m := newMemDB(6)
	b := startProcess(t, stageDir, root, m)
	for i := 0; i < 3; i++ { // TXIDs 2, 3, 4, each in its own file
		m.change(t, b.core, 2+i, byte(i+1))
		if err := b.s.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	lost := filepath.Join(root, "x.db", "ltx", "0", "0000000000000004-0000000000000004.ltx")
	if err := os.Remove(lost); err != nil {
		t.Fatal(err)
	}
	// A process starting now finds the replica behind and resets; before
	// it captures anything, the process that was already running does.
	sa, err := shipper.New(shipper.Options{Dir: stageDir, Client: file.New(root), SyncInterval: time.Hour, Shared: true,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sa.Position(context.Background(), "x.db"); err != nil {
		t.Fatal(err)
	}
	m.change(t, b.core, 5, 9) // TXID 4 now follows the replica's 3
	afterB := m.bytes()
	if err := sa.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	a := startProcess(t, stageDir, root, m)
	m.change(t, a.core, 6, 8)
	for _, p := range []*process{a, b} {
		if err := p.s.Close(context.Background()); err != nil {
			t.Fatalf("close: %v", err)
		}
	}
	if got := restoreBytes(t, root, "x.db", 4); !bytes.Equal(got, afterB) {
		t.Fatal("the running process's transaction after the reset restores wrong")
	}
	if got := restoreBytes(t, root, "x.db", 0); !bytes.Equal(got, m.bytes()) {
		t.Fatal("restore after a reset by another process differs")
	}
}

// TestSharedCaptureMarksHead: a capture's transactions and the new head
// are written when its lock is released (one write each for the whole
// capture); until then, from the first transaction staged on, staged.pos
// asks a process that follows to resync, because the page checksums
// already describe the new transactions. A process dying inside the
// capture leaves exactly that.
func TestSharedCaptureMarksHead(t *testing.T) {
	stageDir, root := t.TempDir(), t.TempDir()
	m := newMemDB(6)
	s, err := shipper.New(shipper.Options{Dir: stageDir, Client: file.New(root), SyncInterval: time.Hour, Shared: true,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	var during []capture.Head
	core, err := capture.Open(capture.Config{
		Name: "x.db", Files: m, Shared: s.Shared("x.db"),
		Sums: &dbfiles.SumsFile{Path: filepath.Join(s.StateDir("x.db"), "page-checksums")},
		Sink: func(tx *capture.Tx) error {
			if err := s.Stage("x.db", tx); err != nil {
				return err
			}
			h, _, err := shipper.StagedHead(s, "x.db")
			during = append(during, h)
			return err
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		m.change(t, core, 2+i, byte(i+1))
		if len(during) != i+2 || !during[i+1].Resync {
			t.Fatalf("capture %d: staged.pos while the capture held its lock: %+v; want the resync mark", i+1, during)
		}
		h, ok, err := shipper.StagedHead(s, "x.db")
		if err != nil || !ok || h.Resync || h.Pos != core.Pos() {
			t.Fatalf("capture %d: staged.pos after it: %+v (%v, %v); want %+v without the mark", i+1, h, ok, err, core.Pos())
		}
	}
}

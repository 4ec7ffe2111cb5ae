package shipper_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/walsync/walsync/capture"
	"github.com/walsync/walsync/shipper"
	"github.com/walsync/walsync/storage/file"
)

// pendingSize is the size of a database's pending log.
func pendingSize(t *testing.T, stageDir string) int64 {
	t.Helper()
	var n int64
	filepath.Walk(stageDir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Name() == "pending" {
			n += fi.Size()
		}
		return nil
	})
	return n
}

// TestBatchWritesTogether: transactions staged inside Batch reach the
// pending log when Batch returns, not before, and ship and restore.
func TestBatchWritesTogether(t *testing.T) {
	stageDir, root := t.TempDir(), t.TempDir()
	s, err := shipper.New(shipper.Options{Dir: stageDir, Client: file.New(root), SyncInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	m := newMemDB(8)
	core := openCore(t, s, "x.db", m) // TXID 1
	before := pendingSize(t, stageDir)
	if err := s.Batch("x.db", func() error {
		for i := 0; i < 3; i++ {
			m.change(t, core, 2, byte(10+i))
		}
		if got := pendingSize(t, stageDir); got != before {
			t.Errorf("the batch wrote %d bytes before it ended", got-before)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if pendingSize(t, stageDir) == before {
		t.Fatal("the batch wrote nothing")
	}
	want := m.bytes()
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := restoreBytes(t, root, "x.db", 0); string(got) != string(want) {
		t.Fatal("restore after a batch differs")
	}
	if got := restoreBytes(t, root, "x.db", 3); got[pageSize+200] != 11 {
		t.Fatalf("TXID 3 restores page 2 byte %d, want 11: each transaction of a batch keeps its TXID", got[pageSize+200])
	}
}

// TestBatchWriteFailure: when a batch cannot be written (ENOSPC), Batch
// says the captured transactions are not staged (capture.ErrUnstaged) and
// the staged position goes back to the last one written.
func TestBatchWriteFailure(t *testing.T) {
	stageDir := smallFS(t, 256<<10)
	root := t.TempDir()
	s, err := shipper.New(shipper.Options{Dir: stageDir, Client: file.New(root), SyncInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	m := newMemDB(16)
	core := openCore(t, s, "x.db", m) // TXID 1, written
	staged, err := s.Position(context.Background(), "x.db")
	if err != nil {
		t.Fatal(err)
	}
	fill(t, stageDir)
	err = s.Batch("x.db", func() error {
		for i := 0; i < 40; i++ {
			m.change(t, core, 2+i%8, byte(5+i)) // buffered: the core takes them as staged
		}
		return nil
	})
	if !errors.Is(err, capture.ErrUnstaged) {
		t.Fatalf("a batch that could not be written returned %v, want ErrUnstaged", err)
	}
	if pos, err := s.Position(context.Background(), "x.db"); err != nil || pos != staged {
		t.Fatalf("after the failed batch the staged position is %+v (%v), want %+v", pos, err, staged)
	}
}

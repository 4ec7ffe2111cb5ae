package shipper_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/walsync/walsync/shipper"
	"github.com/walsync/walsync/storage"
	"github.com/walsync/walsync/storage/file"
)

// TestStatusAndStats: counters, per-database positions and the age of the
// oldest unshipped transaction follow staging and shipping, through an
// outage; the outage is logged once at its start and once at its end, not
// per failed shipment.
func TestStatusAndStats(t *testing.T) {
	root := t.TempDir()
	client := &countingClient{Client: file.New(root)}
	var (
		mu  sync.Mutex
		log bytes.Buffer
	)
	s, err := shipper.New(shipper.Options{Dir: t.TempDir(), Client: client, SyncInterval: 10 * time.Millisecond,
		MaxBackoff: 20 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(lockedWriter{&mu, &log}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	m := newMemDB(3)
	core := openCore(t, s, "a.db", m)
	for j := 0; j < 3; j++ {
		m.change(t, core, 2, byte(j+1))
	}
	if err := s.FlushDB(context.Background(), "a.db"); err != nil {
		t.Fatal(err)
	}
	st := s.Status()
	if len(st) != 1 || st[0].DB != "a.db" || st[0].Captured != 4 || st[0].Shipped != 4 || !st[0].OldestUnshipped.IsZero() || st[0].Failing {
		t.Fatalf("after a flush: %+v (TXID 1 is the first capture, then 3 changes)", st)
	}
	if got := s.Stats(); got.TransactionsStaged != 4 || got.TransactionsShipped != 4 || got.Databases != 1 || got.StagedBytes != 0 || !got.OldestUnshipped.IsZero() {
		t.Fatalf("stats after a flush: %+v", got)
	}

	// Outage: staged, not shipped, the lag grows and the error is kept.
	client.fail.Store(true)
	before := time.Now()
	m.change(t, core, 3, 9)
	m.change(t, core, 3, 10)
	deadline := time.Now().Add(10 * time.Second)
	for {
		st = s.Status()
		if st[0].Failing || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	d := st[0]
	if !d.Failing || !strings.Contains(d.LastError, "injected outage") || d.Captured != 6 || d.Shipped != 4 {
		t.Fatalf("during the outage: %+v", d)
	}
	if d.OldestUnshipped.Before(before.Add(-time.Millisecond)) || d.Lag(time.Now()) <= 0 {
		t.Fatalf("oldest unshipped %v, staged after %v", d.OldestUnshipped, before)
	}
	if s.StagedBytes("a.db") == 0 || s.Stats().StagedBytes == 0 {
		t.Fatal("staged bytes are zero while two transactions wait")
	}
	if down, _ := s.Down(); !down {
		t.Fatal("the shipper does not know the replica is down")
	}
	for s.Stats().FailedShipments < 3 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}

	client.fail.Store(false)
	if err := s.FlushDB(context.Background(), "a.db"); err != nil {
		t.Fatal(err)
	}
	for down, _ := s.Down(); down && time.Now().Before(deadline); down, _ = s.Down() {
		time.Sleep(5 * time.Millisecond)
	}
	st = s.Status()
	if st[0].Shipped != 6 || !st[0].OldestUnshipped.IsZero() || st[0].Lag(time.Now()) != 0 {
		t.Fatalf("after the outage: %+v", st[0])
	}
	if got := s.Stats(); got.TransactionsShipped != 6 || got.FailedShipments < 3 {
		t.Fatalf("stats after the outage: %+v", got)
	}
	s.Close(context.Background())
	mu.Lock()
	out := log.String()
	mu.Unlock()
	if n := strings.Count(out, "replica unreachable"); n != 1 {
		t.Fatalf("the outage start was logged %d times:\n%s", n, out)
	}
	if n := strings.Count(out, "level=ERROR"); n > 1 {
		t.Fatalf("%d failed shipments logged as errors; the outage is told once:\n%s", n, out)
	}
}

// TestSnapshotNow: a forced snapshot uploads what is staged and writes a
// level-9 file of the latest TXID; an unknown database is refused.
func TestSnapshotNow(t *testing.T) {
	root := t.TempDir()
	s, err := shipper.New(shipper.Options{Dir: t.TempDir(), Client: file.New(root), SyncInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	m := newMemDB(3)
	core := openCore(t, s, "a.db", m)
	for j := 0; j < 4; j++ {
		m.change(t, core, 2, byte(j+1))
	}
	txid, err := s.SnapshotNow(context.Background(), "a.db")
	if err != nil || txid != 5 {
		t.Fatalf("SnapshotNow = %d, %v; want 5", txid, err)
	}
	snaps, err := file.New(root).LTXFiles(context.Background(), "a.db", storage.SnapshotLevel)
	if err != nil || len(snaps) == 0 || snaps[len(snaps)-1].MinTXID != 1 || snaps[len(snaps)-1].MaxTXID != 5 {
		t.Fatalf("level 9 after SnapshotNow: %v %v", snaps, err)
	}
	if got := restoreBytes(t, root, "a.db", 0); !bytes.Equal(got, m.bytes()) {
		t.Fatal("the snapshot does not restore the database")
	}
	if _, err := s.SnapshotNow(context.Background(), "nope.db"); err != shipper.ErrUnknownDB {
		t.Fatalf("SnapshotNow of an unknown database: %v", err)
	}
}

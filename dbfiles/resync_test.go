package dbfiles

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/superfly/ltx"
	"github.com/walsync/walsync/capture"
)

// fakeStager injects the shipper's answers (fault injection): positions to
// return and a staging reset.
type fakeStager struct {
	mu        sync.Mutex
	dir       string
	positions []capture.Pos // returned by successive Position calls
	posErr    error
	resetNext bool // the next Stage answers ErrResync
	staged    []*capture.Tx
	shipNow   int // ShipNow calls
}

func (f *fakeStager) Position(ctx context.Context, db string) (capture.Pos, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.posErr != nil {
		return capture.Pos{}, f.posErr
	}
	p := f.positions[0]
	if len(f.positions) > 1 {
		f.positions = f.positions[1:]
	}
	return p, nil
}

func (f *fakeStager) Stage(db string, tx *capture.Tx) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.resetNext {
		f.resetNext = false
		return fmt.Errorf("%s: %w", db, capture.ErrResync)
	}
	f.staged = append(f.staged, &capture.Tx{TXID: tx.TXID, Full: tx.Full, PreChecksum: tx.PreChecksum})
	return nil
}

func (f *fakeStager) ShipNow(db string) {
	f.mu.Lock()
	f.shipNow++
	f.mu.Unlock()
}

func (f *fakeStager) Batch(db string, fn func() error) error { return fn() }

func (f *fakeStager) Sync(db string) error            { return nil }
func (f *fakeStager) Shared(db string) capture.Shared { return nil }
func (f *fakeStager) StateDir(db string) string       { return filepath.Join(f.dir, "state", db) }

func (f *fakeStager) last() *capture.Tx {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.staged[len(f.staged)-1]
}

// writeDB writes a rollback-mode database of n 1 KiB pages.
func writeDB(t *testing.T, path string, n int) {
	t.Helper()
	b := make([]byte, n*1024)
	copy(b, capture.DBHeaderMagic)
	binary.BigEndian.PutUint16(b[16:], 1024)
	b[18], b[19] = 1, 1
	binary.BigEndian.PutUint32(b[24:], 1)
	binary.BigEndian.PutUint32(b[28:], uint32(n))
	binary.BigEndian.PutUint32(b[92:], 1)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestResyncReplacesCore: when the shipper resets a database's staging
// (capture.ErrResync), the commit is not failed, and the next operation
// captures again from the replica's position, shipping the database whole.
func TestResyncReplacesCore(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "x.db")
	writeDB(t, path, 3)
	remote := capture.Pos{TXID: 10, Checksum: ltx.ChecksumFlag | 0x1234, PageSize: 1024, Commit: 3}
	st := &fakeStager{dir: dir, positions: []capture.Pos{{}, remote}}
	reg := NewRegistry(st, nil, nil)
	d := reg.Get("x.db", path)
	if err := d.Open(RoleDB); err != nil {
		t.Fatal(err)
	}
	if tx := st.last(); tx.TXID != 1 || !tx.Full {
		t.Fatalf("first sight staged %+v, want the snapshot", tx)
	}
	// A write without a journal, captured at the last close; the shipper
	// answers that the staging was reset.
	st.mu.Lock()
	st.resetNext = true
	st.mu.Unlock()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := d.Write(RoleDB, 1024+100, []byte{7}, func() error { _, err := f.WriteAt([]byte{7}, 1024+100); return err }); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Close(RoleDB); err != nil {
		t.Fatalf("a reset staging failed the commit: %v", err)
	}
	// The next open captures from the replica's position: the whole
	// database as the transaction after it.
	if err := d.Open(RoleDB); err != nil {
		t.Fatal(err)
	}
	if tx := st.last(); tx.TXID != remote.TXID+1 || !tx.Full || tx.PreChecksum != remote.Checksum {
		t.Fatalf("after the reset staged %+v, want TXID %d holding every page", tx, remote.TXID+1)
	}
}

// TestPositionUnreadable: while the replica position cannot be read, the
// database is not captured (never from a guessed TXID 1), and is captured
// once it can be, after the backoff.
func TestPositionUnreadable(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "x.db")
	writeDB(t, path, 3)
	remote := capture.Pos{TXID: 5, Checksum: ltx.ChecksumFlag | 0x99, PageSize: 1024, Commit: 3}
	st := &fakeStager{dir: dir, positions: []capture.Pos{remote}, posErr: fmt.Errorf("injected: replica unreachable")}
	now := testClock{d: new(time.Duration)}
	reg := NewRegistry(st, nil, now.Now)
	d := reg.Get("x.db", path)
	if err := d.Open(RoleDB); err != nil {
		t.Fatalf("open while the replica cannot be read: %v", err)
	}
	if d.Core() != nil || len(st.staged) != 0 {
		t.Fatalf("captured without a position: %+v", st.staged)
	}
	st.mu.Lock()
	st.posErr = nil
	st.mu.Unlock()
	if err := d.Write(RoleWAL, 0, []byte{0}, func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	if d.Core() != nil {
		t.Fatal("retried before the backoff")
	}
	now.advance(2 * minPosBackoff)
	if err := d.Write(RoleWAL, 0, []byte{0}, func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	if d.Core() == nil {
		t.Fatal("not captured once the position could be read")
	}
	if tx := st.last(); tx.TXID != remote.TXID+1 || !tx.Full {
		t.Fatalf("staged %+v, want the database whole as TXID %d", tx, remote.TXID+1)
	}
}

// testClock is a clock the test moves.
type testClock struct{ d *time.Duration }

func (c testClock) Now() time.Time { return time.Unix(1e9, 0).Add(*c.d) }

func (c testClock) advance(d time.Duration) { *c.d += d }

// TestPositionRetriedWithoutWrites: a database whose replica position could
// not be read at its first open, and that is not written again, is
// captured once the position can be read, by itself.
func TestPositionRetriedWithoutWrites(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "x.db")
	writeDB(t, path, 3)
	st := &fakeStager{dir: dir, positions: []capture.Pos{{}}, posErr: fmt.Errorf("injected: replica unreachable")}
	reg := NewRegistry(st, nil, nil)
	d := reg.Get("x.db", path)
	if err := d.Open(RoleDB); err != nil {
		t.Fatal(err)
	}
	st.mu.Lock()
	st.posErr = nil
	st.mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for d.Core() == nil {
		if time.Now().After(deadline) {
			t.Fatal("not captured after the replica position became readable")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if tx := st.last(); tx.TXID != 1 || !tx.Full {
		t.Fatalf("staged %+v, want the snapshot", tx)
	}
}

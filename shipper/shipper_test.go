package shipper_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/superfly/ltx"
	"github.com/walsync/walsync/capture"
	"github.com/walsync/walsync/restore"
	"github.com/walsync/walsync/shipper"
	"github.com/walsync/walsync/storage"
	"github.com/walsync/walsync/storage/file"
)

const pageSize = 1024

// memDB is a database file in memory, written without a journal, so that
// every Closed() of its capture core captures its current state.
type memDB struct {
	mu   sync.Mutex
	data []byte
}

func (m *memDB) ReadAt(k capture.Kind, p []byte, off int64) (int, error) {
	if k != capture.DBFile {
		return 0, io.EOF
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if off >= int64(len(m.data)) {
		return 0, io.EOF
	}
	n := copy(p, m.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m *memDB) WriteAt(k capture.Kind, p []byte, off int64) (int, error) {
	return 0, errors.New("read-only")
}

func (m *memDB) Size(k capture.Kind) int64 {
	if k != capture.DBFile {
		return -1
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return int64(len(m.data))
}

func newMemDB(pages int) *memDB {
	b := make([]byte, pages*pageSize)
	copy(b, capture.DBHeaderMagic)
	binary.BigEndian.PutUint16(b[16:], pageSize)
	b[18], b[19] = 1, 1
	binary.BigEndian.PutUint32(b[24:], 1)
	binary.BigEndian.PutUint32(b[28:], uint32(pages))
	binary.BigEndian.PutUint32(b[92:], 1)
	return &memDB{data: b}
}

// change writes a byte into page pgno (not page 1) and captures it.
func (m *memDB) change(t testing.TB, core *capture.DB, pgno int, v byte) {
	t.Helper()
	off := int64(pgno-1)*pageSize + 200
	if err := core.WriteDB(off, 1, func() error {
		m.mu.Lock()
		m.data[off] = v
		m.mu.Unlock()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := core.Closed(); err != nil {
		t.Fatal(err)
	}
}

func (m *memDB) bytes() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return bytes.Clone(m.data)
}

func openCore(t testing.TB, s *shipper.Shipper, name string, m *memDB) *capture.DB {
	t.Helper()
	pos, err := s.Position(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	core, err := capture.Open(capture.Config{
		Name: name, Files: m, Pos: pos,
		Sink: func(tx *capture.Tx) error { return s.Stage(name, tx) },
	})
	if err != nil {
		t.Fatal(err)
	}
	return core
}

func restoreBytes(t testing.TB, root, db string, txid ltx.TXID) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "r.db")
	if _, err := restore.Restore(context.Background(), file.New(filepath.Join(root, db)), "", out, restore.Options{TXID: txid}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// countingClient counts level-0 writes and can be made to fail.
type countingClient struct {
	storage.Client
	fail   atomic.Bool
	l0PUTs atomic.Int64
}

func (c *countingClient) WriteLTXFile(ctx context.Context, db string, level int, min, max ltx.TXID, r io.ReadSeeker, ts time.Time) error {
	if c.fail.Load() {
		return errors.New("injected outage")
	}
	if level == 0 {
		c.l0PUTs.Add(1)
	}
	return c.Client.WriteLTXFile(ctx, db, level, min, max, r, ts)
}

// TestConcurrentDatabases stages transactions of many databases from many
// goroutines while the workers ship, then restores every state.
func TestConcurrentDatabases(t *testing.T) {
	root := t.TempDir()
	s, err := shipper.New(shipper.Options{Dir: t.TempDir(), Client: file.New(root), SyncInterval: 5 * time.Millisecond, Concurrency: 4})
	if err != nil {
		t.Fatal(err)
	}
	const dbs, txs = 8, 40
	finals := make([][]byte, dbs)
	mids := make([][]byte, dbs)
	var wg sync.WaitGroup
	for i := 0; i < dbs; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			name := fmt.Sprintf("tenant%d/app.db", i)
			m := newMemDB(4)
			core := openCore(t, s, name, m)
			for j := 0; j < txs; j++ {
				m.change(t, core, 2+j%3, byte(j+1))
				if j == txs/2 {
					mids[i] = m.bytes()
				}
			}
			finals[i] = m.bytes()
		}(i)
	}
	wg.Wait()
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < dbs; i++ {
		name := fmt.Sprintf("tenant%d/app.db", i)
		if got := restoreBytes(t, root, name, 0); !bytes.Equal(got, finals[i]) {
			t.Fatalf("%s: latest restore differs", name)
		}
		// TXID 1 is the snapshot; the change made at j is TXID j+2.
		if got := restoreBytes(t, root, name, ltx.TXID(txs/2+2)); !bytes.Equal(got, mids[i]) {
			t.Fatalf("%s: restore inside a batch differs", name)
		}
	}
}

// TestOutageTornTailAndRestart keeps staged work through an outage and a
// restart with a torn record at the end of the log, then ships it once.
func TestOutageTornTailAndRestart(t *testing.T) {
	root, stageDir := t.TempDir(), t.TempDir()
	client := &countingClient{Client: file.New(root)}
	client.fail.Store(true)
	s, err := shipper.New(shipper.Options{Dir: stageDir, Client: client, SyncInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	m := newMemDB(3)
	core := openCore(t, s, "x.db", m)
	for j := 0; j < 5; j++ {
		m.change(t, core, 2, byte(j+1))
	}
	want := m.bytes()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.Close(ctx); err == nil {
		t.Fatal("Close reported success during an outage")
	}
	// A crash in the middle of staging a sixth transaction.
	staged, err := filepath.Glob(filepath.Join(stageDir, "*", "batch-*.log"))
	if err != nil || len(staged) != 1 {
		t.Fatalf("staged batches: %v %v", staged, err)
	}
	f, err := os.OpenFile(filepath.Join(filepath.Dir(staged[0]), "pending"), os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("WTX2 torn record from a crash"))
	f.Close()

	client.fail.Store(false)
	s2, err := shipper.New(shipper.Options{Dir: stageDir, Client: client, SyncInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	pos, err := s2.Position(context.Background(), "x.db")
	if err != nil || pos.TXID != 6 {
		t.Fatalf("position after restart: %+v %v, want TXID 6", pos, err)
	}
	if err := s2.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := restoreBytes(t, root, "x.db", 0); !bytes.Equal(got, want) {
		t.Fatal("restore after outage and restart differs")
	}
	if n := client.l0PUTs.Load(); n != 1 {
		t.Fatalf("%d level-0 uploads, want 1 (one batch, uploaded once)", n)
	}
}

func dirBytes(t testing.TB, dir string) int64 {
	var n int64
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			n += fi.Size()
		}
		return nil
	})
	return n
}

// TestMaxStagingMergesAndLosesNothing keeps staging under --max-staging
// during an outage by merging batches, then ships everything.
func TestMaxStagingMergesAndLosesNothing(t *testing.T) {
	root, stageDir := t.TempDir(), t.TempDir()
	client := &countingClient{Client: file.New(root)}
	client.fail.Store(true)
	const limit = 64 << 10
	s, err := shipper.New(shipper.Options{Dir: stageDir, Client: client, SyncInterval: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, MaxStaging: limit})
	if err != nil {
		t.Fatal(err)
	}
	m := newMemDB(32)
	core := openCore(t, s, "big.db", m)
	for j := 0; j < 200; j++ {
		m.change(t, core, 2+j%31, byte(j))
	}
	want := m.bytes()
	deadline := time.Now().Add(10 * time.Second)
	for dirBytes(t, stageDir) > limit {
		if time.Now().After(deadline) {
			t.Fatalf("staging holds %d bytes, limit %d", dirBytes(t, stageDir), limit)
		}
		m.change(t, core, 2, byte(time.Now().UnixNano())|1) // new work keeps arriving during the outage
		want = m.bytes()
		time.Sleep(20 * time.Millisecond)
	}
	if merged, _ := filepath.Glob(filepath.Join(stageDir, "*", "batch-*.merged")); len(merged) == 0 {
		t.Fatal("staging went under the limit without merging")
	}
	client.fail.Store(false)
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := restoreBytes(t, root, "big.db", 0); !bytes.Equal(got, want) {
		t.Fatal("restore after merged staging differs")
	}
}

// listCountingClient counts listings of level 0.
type listCountingClient struct {
	storage.Client
	l0Lists atomic.Int64
}

func (c *listCountingClient) LTXFiles(ctx context.Context, db string, level int) ([]*ltx.FileInfo, error) {
	if level == 0 {
		c.l0Lists.Add(1)
	}
	return c.Client.LTXFiles(ctx, db, level)
}

// TestCompactionSkipsSingleFiles: a database that shipped one level-0 file
// since the last compaction is not listed by level-1 passes (many databases
// that shipped once cost no LIST requests); once two or more files are
// there, they are merged into level 1.
func TestCompactionSkipsSingleFiles(t *testing.T) {
	root := t.TempDir()
	c := &listCountingClient{Client: file.New(root)}
	s, err := shipper.New(shipper.Options{Dir: t.TempDir(), Client: c, SyncInterval: 5 * time.Millisecond,
		Levels: []time.Duration{40 * time.Millisecond}, SnapshotInterval: time.Hour, Retention: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	ctx := context.Background()
	m := newMemDB(4)
	core := openCore(t, s, "a.db", m)
	if err := s.FlushDB(ctx, "a.db"); err != nil {
		t.Fatal(err)
	}
	before := c.l0Lists.Load()
	time.Sleep(300 * time.Millisecond) // several level-1 passes
	if n := c.l0Lists.Load() - before; n != 0 {
		t.Fatalf("level 0 listed %d times for a database with one level-0 file", n)
	}
	for j := 0; j < 3; j++ {
		m.change(t, core, 2+j, byte(j+1))
		if err := s.FlushDB(ctx, "a.db"); err != nil {
			t.Fatal(err)
		}
	}
	// Every level-0 file but possibly the last (alone since the last
	// compaction: it waits for the next one) ends up in level 1.
	want := core.Pos().TXID - 1
	deadline := time.Now().Add(5 * time.Second)
	for {
		l1, err := c.Client.LTXFiles(ctx, "a.db", 1)
		if err != nil {
			t.Fatal(err)
		}
		if len(l1) > 0 && l1[len(l1)-1].MaxTXID >= want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("level 1 never reached TXID %d: %v", want, l1)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := restoreBytes(t, root, "a.db", 0); !bytes.Equal(got, m.bytes()) {
		t.Fatal("restore after compaction differs")
	}
}

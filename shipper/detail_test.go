package shipper_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/superfly/ltx"
	"github.com/walsync/walsync/restore"
	"github.com/walsync/walsync/shipper"
	"github.com/walsync/walsync/storage"
	"github.com/walsync/walsync/storage/file"
)

// requestLog counts a client's requests by kind and level.
type requestLog struct {
	storage.Client
	mu      sync.Mutex
	puts    map[int]int // by level (storage.TxLogLevel: transaction logs)
	gets    int
	deletes int
}

func (c *requestLog) WriteLTXFile(ctx context.Context, db string, level int, min, max ltx.TXID, r io.ReadSeeker, ts time.Time) error {
	c.mu.Lock()
	c.puts[level]++
	c.mu.Unlock()
	return c.Client.WriteLTXFile(ctx, db, level, min, max, r, ts)
}

func (c *requestLog) OpenLTXFile(ctx context.Context, db string, level int, min, max ltx.TXID) (io.ReadCloser, error) {
	c.mu.Lock()
	c.gets++
	c.mu.Unlock()
	return c.Client.OpenLTXFile(ctx, db, level, min, max)
}

func (c *requestLog) DeleteLTXFiles(ctx context.Context, db string, files []*ltx.FileInfo) error {
	c.mu.Lock()
	c.deletes++
	c.mu.Unlock()
	return c.Client.DeleteLTXFiles(ctx, db, files)
}

func (c *requestLog) counts() (puts map[int]int, gets, deletes int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	puts = map[int]int{}
	for k, v := range c.puts {
		puts[k] = v
	}
	return puts, c.gets, c.deletes
}

// TestDetailWithLevelOne: each batch costs one PUT (its level-0 file); the
// transactions one by one stay in staging and go up at the level-1 pass, in
// one transaction-log object for all the batches, beside the level-1 file
// built from staging's copies (no download). Until then a restore inside a
// batch names the restorable TXIDs around it; afterwards every TXID
// restores, and once level 0 has expired it still does (level 1 and the
// transaction log hold everything).
func TestDetailWithLevelOne(t *testing.T) {
	root := t.TempDir()
	c := &requestLog{Client: file.New(root), puts: map[int]int{}}
	s, err := shipper.New(shipper.Options{Dir: t.TempDir(), Client: c, SyncInterval: time.Hour,
		Levels: []time.Duration{time.Second}, L0Retention: time.Millisecond, SnapshotInterval: time.Hour, Retention: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	ctx := context.Background()
	m := newMemDB(8)
	core := openCore(t, s, "a.db", m)
	states := map[ltx.TXID][]byte{core.Pos().TXID: m.bytes()}
	times := map[ltx.TXID]time.Time{}
	const batches = 4
	var ends []ltx.TXID
	for b := 0; b < batches; b++ {
		for k := 0; k < 3; k++ {
			time.Sleep(3 * time.Millisecond) // timestamps are in ms
			m.change(t, core, 2+k, byte(10*b+k+1))
			states[core.Pos().TXID] = m.bytes()
			time.Sleep(3 * time.Millisecond)
			times[core.Pos().TXID] = time.Now()
		}
		if err := s.FlushDB(ctx, "a.db"); err != nil {
			t.Fatal(err)
		}
		ends = append(ends, core.Pos().TXID)
	}
	last := core.Pos().TXID

	puts, gets, _ := c.counts()
	if puts[0] != batches || puts[storage.TxLogLevel] != 0 || gets != 0 {
		t.Fatalf("after %d batches: %d level-0 PUTs, %d transaction-log PUTs, %d GETs; want %d, 0, 0", batches, puts[0], puts[storage.TxLogLevel], gets, batches)
	}
	// Inside the second batch, before its detail is up.
	inside := ends[0] + 2
	out := filepath.Join(t.TempDir(), "early.db")
	_, err = restore.Restore(ctx, file.New(filepath.Join(root, "a.db")), "", out, restore.Options{TXID: inside})
	if err == nil || !strings.Contains(err.Error(), "not on the replica yet") ||
		!strings.Contains(err.Error(), "nearest restorable are TXID "+itoa(ends[0])+" and TXID "+itoa(ends[1])) {
		t.Fatalf("restore of TXID %d inside a batch without its detail: %v", inside, err)
	}
	if got := restoreBytes(t, root, "a.db", ends[1]); !bytes.Equal(got, states[ends[1]]) {
		t.Fatal("a batch boundary does not restore")
	}
	// --timestamp inside that batch: the last restorable transaction then.
	replica := file.New(filepath.Join(root, "a.db"))
	if got, err := restore.TXIDAt(ctx, replica, "", times[inside]); err != nil || got != ends[0] {
		t.Fatalf("TXID at the time of %d, before its detail is up: %d, %v; want %d", inside, got, err, ends[0])
	}

	// The level-1 pass: one transaction log, one level-1 file, no GET.
	waitFor(t, func() bool {
		logs, err := c.Client.LTXFiles(ctx, "a.db", storage.TxLogLevel)
		return err == nil && len(logs) > 0 && logs[len(logs)-1].MaxTXID == last
	})
	logs, _ := c.Client.LTXFiles(ctx, "a.db", storage.TxLogLevel)
	if len(logs) != 1 || logs[0].MinTXID != 1 {
		t.Fatalf("transaction logs %v: want one from TXID 1 to %d", logs, last)
	}
	waitFor(t, func() bool {
		l1, err := c.Client.LTXFiles(ctx, "a.db", 1)
		return err == nil && len(l1) == 1 && l1[0].MaxTXID == last
	})
	for txid := ltx.TXID(1); txid <= last; txid++ {
		if got := restoreBytes(t, root, "a.db", txid); !bytes.Equal(got, states[txid]) {
			t.Fatalf("TXID %d restores to another state", txid)
		}
	}
	if got, err := restore.TXIDAt(ctx, replica, "", times[inside]); err != nil || got != inside {
		t.Fatalf("TXID at the time of %d, once its detail is up: %d, %v", inside, got, err)
	}
	// Level 0 expires at the next pass.
	waitFor(t, func() bool {
		l0, err := c.Client.LTXFiles(ctx, "a.db", 0)
		return err == nil && len(l0) == 0
	})
	for txid := ltx.TXID(1); txid <= last; txid++ {
		if got := restoreBytes(t, root, "a.db", txid); !bytes.Equal(got, states[txid]) {
			t.Fatalf("after level 0 expired, TXID %d restores to another state", txid)
		}
	}
	puts, gets, deletes := c.counts()
	if gets != 0 || puts[storage.TxLogLevel] != 1 || puts[1] != 1 || deletes == 0 {
		t.Fatalf("requests: PUTs %v, %d GETs, %d DELETEs; want one transaction log, one level-1 file, no GET", puts, gets, deletes)
	}
	// Nothing is left kept in staging once it is up.
	kept, _ := filepath.Glob(filepath.Join(s.StateDir("a.db"), "kept", "txlog", "*"))
	if len(kept) != 0 {
		t.Fatalf("kept logs left after their upload: %v", kept)
	}
}

// TestDetailAtClose: the per-transaction detail of the last batches goes up
// when the shipper closes, not at the next start.
func TestDetailAtClose(t *testing.T) {
	root := t.TempDir()
	s, err := shipper.New(shipper.Options{Dir: t.TempDir(), Client: file.New(root), SyncInterval: time.Hour,
		Levels: []time.Duration{time.Hour}, SnapshotInterval: time.Hour, Retention: -1})
	if err != nil {
		t.Fatal(err)
	}
	m := newMemDB(4)
	core := openCore(t, s, "a.db", m)
	states := map[ltx.TXID][]byte{}
	for k := 0; k < 3; k++ {
		m.change(t, core, 2, byte(k+1))
		states[core.Pos().TXID] = m.bytes()
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	for txid, want := range states {
		if got := restoreBytes(t, root, "a.db", txid); !bytes.Equal(got, want) {
			t.Fatalf("TXID %d restores to another state", txid)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "a.db", "txlog")); err != nil {
		t.Fatal(err)
	}
}

func itoa(txid ltx.TXID) string { return strconv.FormatUint(uint64(txid), 10) }

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestPerDatabaseOptions: a database's own settings (Options.ForDB) are
// the ones its batches and compactions follow; the others keep the
// defaults.
func TestPerDatabaseOptions(t *testing.T) {
	root := t.TempDir()
	s, err := shipper.New(shipper.Options{Dir: t.TempDir(), Client: file.New(root), SyncInterval: 10 * time.Millisecond,
		Levels: []time.Duration{time.Hour}, SnapshotInterval: time.Hour, Retention: -1,
		ForDB: func(db string) shipper.DBOptions {
			switch db {
			case "slow.db":
				return shipper.DBOptions{SyncInterval: time.Hour}
			case "compacted.db":
				return shipper.DBOptions{Levels: []time.Duration{100 * time.Millisecond}}
			}
			return shipper.DBOptions{}
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	ctx := context.Background()
	for _, name := range []string{"fast.db", "slow.db", "compacted.db"} {
		m := newMemDB(4)
		core := openCore(t, s, name, m)
		for k := 0; k < 3; k++ {
			m.change(t, core, 2, byte(k+1))
		}
	}
	latest := func(db string, level int) ltx.TXID {
		infos, err := file.New(root).LTXFiles(ctx, db, level)
		if err != nil || len(infos) == 0 {
			return 0
		}
		return infos[len(infos)-1].MaxTXID
	}
	waitFor(t, func() bool { return latest("fast.db", 0) > 0 && latest("compacted.db", 0) > 0 })
	// compacted.db's own level-1 interval uploads its transaction log;
	// fast.db's (the default, an hour) does not.
	waitFor(t, func() bool { return latest("compacted.db", storage.TxLogLevel) > 0 })
	time.Sleep(300 * time.Millisecond)
	if latest("slow.db", 0) != 0 {
		t.Fatal("slow.db shipped inside its own one-hour batch window")
	}
	if latest("fast.db", storage.TxLogLevel) != 0 {
		t.Fatal("fast.db uploaded its transaction log before its own level-1 interval")
	}
}

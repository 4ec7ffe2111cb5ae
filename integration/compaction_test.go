package integration

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/superfly/ltx"
	"github.com/walsync/walsync/internal/s3test"
	"github.com/walsync/walsync/restore"
	"github.com/walsync/walsync/storage"
)

// TestS3CompactionAndRetention runs with short compaction, snapshot and
// retention intervals: the latest TXID and a TXID inside the retention
// window restore to the source as it was then, compacted levels and newer
// snapshots exist, and the files outside the window are gone.
func TestS3CompactionAndRetention(t *testing.T) {
	srv := s3test.Start(t)
	srv.CreateBucket(t, "compact")
	srv.SetEnv(t)
	m := newS3Mount(t, srv, srv.Endpoint, "s3://compact/p",
		"--compaction-levels", "1s,2s", "--snapshot-interval", "3s", "--retention", "6s")
	rel := "c.db"
	db := openDB(t, m.path(rel), "journal_mode=WAL")
	mustExec(t, db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
	m.waitShipped()
	base := m.latestTXIDOn(srv, "compact/p", rel)

	type point struct {
		txid ltx.TXID
		at   time.Time
		hash string
	}
	var points []point
	end := time.Now().Add(14 * time.Second)
	for i := 1; time.Now().Before(end); i++ {
		mustExec(t, db, "INSERT INTO t(v) VALUES(?)", time.Now().String())
		points = append(points, point{base + ltx.TXID(i), time.Now(), contentHash(t, db)})
		time.Sleep(150 * time.Millisecond)
	}
	m.waitShipped()
	time.Sleep(3500 * time.Millisecond) // a snapshot and a retention pass (every 3 s) after the last write

	c, err := storage.OpenWith(context.Background(), "s3://compact/p/"+rel, storage.Options{Endpoint: srv.Endpoint})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	restoreAt := func(txid ltx.TXID) string {
		out := filepath.Join(t.TempDir(), "r.db")
		if _, err := restore.Restore(ctx, c, "", out, restore.Options{TXID: txid}); err != nil {
			t.Fatalf("restore at TXID %d: %v", txid, err)
		}
		return checkRestored(t, out)
	}
	last := points[len(points)-1]
	if got := restoreAt(0); got != last.hash {
		t.Fatal("latest restore differs from the source")
	}
	// A point committed less than 6 s before now (the restore) is inside
	// the retention window; half a second of margin for the restore itself.
	inside := time.Now().Add(-5500 * time.Millisecond)
	if !last.at.After(inside) {
		t.Fatalf("the test took too long: its last write is %v old", time.Since(last.at))
	}
	for _, p := range points {
		if p.at.After(inside) {
			if got := restoreAt(p.txid); got != p.hash {
				t.Fatalf("restore at TXID %d (inside the retention window) differs", p.txid)
			}
			break
		}
	}
	for level := 1; level <= 2; level++ {
		if infos, _ := c.LTXFiles(ctx, "", level); len(infos) == 0 {
			t.Fatalf("no level-%d file: compaction did not run", level)
		}
	}
	snaps, _ := c.LTXFiles(ctx, "", storage.SnapshotLevel)
	if len(snaps) == 0 || snaps[len(snaps)-1].MaxTXID <= base {
		t.Fatalf("no recent snapshot: %v", snaps)
	}
	l0, _ := c.LTXFiles(ctx, "", 0)
	if len(l0) == 0 {
		t.Fatal("no level-0 files at all")
	}
	if l0[0].MinTXID <= points[0].txid {
		t.Fatalf("level 0 still starts at TXID %d: files older than the retention window were not deleted", l0[0].MinTXID)
	}
	if snaps[0].MaxTXID == 1 {
		t.Fatal("the first snapshot is still there after retention")
	}
	// Restoring before the window is no longer possible.
	out := filepath.Join(t.TempDir(), "old.db")
	if _, err := restore.Restore(ctx, c, "", out, restore.Options{TXID: points[0].txid}); err == nil {
		t.Fatalf("TXID %d outside the retention window still restorable", points[0].txid)
	}
}

// latestTXIDOn is the highest TXID of a database on an S3 replica.
func (m *mount) latestTXIDOn(srv *s3test.Server, bucketPrefix, db string) ltx.TXID {
	m.t.Helper()
	c, err := storage.OpenWith(context.Background(), "s3://"+bucketPrefix+"/"+db, storage.Options{Endpoint: srv.Endpoint})
	if err != nil {
		m.t.Fatal(err)
	}
	fi, err := storage.Latest(context.Background(), c, "")
	if err != nil || fi == nil {
		m.t.Fatalf("latest TXID: %v %v", fi, err)
	}
	return fi.MaxTXID
}

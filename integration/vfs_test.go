package integration

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/superfly/ltx"
	"github.com/walsync/walsync/restore"
	"github.com/walsync/walsync/storage"
	"github.com/walsync/walsync/storage/file"
	"github.com/walsync/walsync/vfs"
)

// vfsFrontEnd is the in-process VFS, registered once as "walsync".
type vfsFrontEnd struct {
	t       testing.TB
	dir     string // WALSYNC_DIR
	rep     string
	staging string
}

var (
	vfsOnce   sync.Once
	vfsShared *vfsFrontEnd
	vfsErr    error
)

func sharedVFS(t testing.TB) *vfsFrontEnd {
	vfsOnce.Do(func() {
		root, err := os.MkdirTemp("", "walsync-vfs-")
		if err != nil {
			vfsErr = err
			return
		}
		fe := &vfsFrontEnd{dir: filepath.Join(root, "data"), rep: filepath.Join(root, "replica")}
		fe.staging = filepath.Join(fe.dir, ".walsync", "staging")
		v, err := vfs.New(context.Background(), vfs.Config{Replica: "file://" + fe.rep, Dir: fe.dir, SyncInterval: 100 * time.Millisecond,
			CompactionLevels: []time.Duration{300 * time.Millisecond}})
		if err != nil {
			vfsErr = err
			return
		}
		if vfsErr = v.Register("walsync"); vfsErr == nil {
			vfsShared = fe
		}
	})
	if vfsErr != nil {
		t.Fatalf("walsync VFS: %v", vfsErr)
	}
	return &vfsFrontEnd{t: t, dir: vfsShared.dir, rep: vfsShared.rep, staging: vfsShared.staging}
}

func (f *vfsFrontEnd) path(rel string) string {
	p := filepath.Join(f.dir, rel)
	_ = os.MkdirAll(filepath.Dir(p), 0o755)
	return p
}

func (f *vfsFrontEnd) open(t testing.TB, path string, pragmas ...string) *sql.DB {
	return openDSN(t, "file:"+path+"?vfs=walsync&_busy_timeout=10000", pragmas...)
}

func (f *vfsFrontEnd) waitShipped() {
	f.t.Helper()
	if !waitUnstaged(func() int64 { return dirStaged(f.staging) }) {
		f.t.Fatal("the VFS did not ship its staged transactions in time")
	}
}

func (f *vfsFrontEnd) latestTXID(db string) ltx.TXID {
	f.t.Helper()
	fi, err := storage.Latest(context.Background(), file.New(f.rep), db)
	if err != nil {
		f.t.Fatal(err)
	}
	if fi == nil {
		return 0
	}
	return fi.MaxTXID
}

func (f *vfsFrontEnd) restoreDB(db string, txid ltx.TXID) string {
	f.t.Helper()
	out := filepath.Join(f.t.TempDir(), "restored.db")
	if _, err := restore.Restore(context.Background(), file.New(filepath.Join(f.rep, db)), "", out, restore.Options{TXID: txid}); err != nil {
		f.t.Fatalf("restore %s at %d: %v", db, txid, err)
	}
	return out
}

// TestVFSCaptureScenarios runs the mount's scenario table through the VFS:
// rollback-journal modes with any connection, WAL with exclusive locking.
func TestVFSCaptureScenarios(t *testing.T) {
	for _, jm := range journalModes {
		if jm.name == "wal" {
			continue // needs shared memory: see TestVFSWALNeedsExclusive
		}
		for _, sync := range []string{"OFF", "NORMAL", "FULL"} {
			for _, ps := range []int{1024, 4096, 65536} {
				name := fmt.Sprintf("%s/sync=%s/page=%d", jm.name, sync, ps)
				rel := fmt.Sprintf("vscen/%s-%s-%d.db", jm.name, sync, ps)
				t.Run(name, func(t *testing.T) {
					t.Parallel()
					runScenario(t, sharedVFS(t), rel, jm, sync, ps)
				})
			}
		}
	}
}

// TestVFSWALNeedsExclusive: without exclusive locking SQLite keeps the
// database in its rollback journal, and everything is still captured.
func TestVFSWALNeedsExclusive(t *testing.T) {
	f := sharedVFS(t)
	rel := "vwal/plain.db"
	db := f.open(t, f.path(rel))
	var mode string
	if err := db.QueryRow("PRAGMA journal_mode=WAL").Scan(&mode); err != nil {
		t.Fatal(err)
	}
	if mode != "delete" {
		t.Fatalf("journal_mode=WAL without exclusive locking gave %q, want delete", mode)
	}
	mustExec(t, db, "CREATE TABLE t(x)")
	mustExec(t, db, "INSERT INTO t VALUES(1)")
	want := contentHash(t, db)
	f.waitShipped()
	if got := checkRestored(t, f.restoreDB(rel, 0)); got != want {
		t.Fatal("restore differs")
	}
}

// TestVFSManyConnections writes one DELETE-mode database from four
// connections of one process at once.
func TestVFSManyConnections(t *testing.T) {
	f := sharedVFS(t)
	rel := "vconn/shared.db"
	setup := f.open(t, f.path(rel), "journal_mode=DELETE")
	mustExec(t, setup, "CREATE TABLE t(w INTEGER, j INTEGER)")
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			db := f.open(t, f.path(rel))
			for j := 0; j < 50; j++ {
				if _, err := db.Exec("INSERT INTO t VALUES(?, ?)", w, j); err != nil {
					errs <- err
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var n int
	if err := setup.QueryRow("SELECT count(*) FROM t").Scan(&n); err != nil || n != 200 {
		t.Fatalf("%d rows (%v), want 200", n, err)
	}
	want := contentHash(t, setup)
	f.waitShipped()
	if got := checkRestored(t, f.restoreDB(rel, 0)); got != want {
		t.Fatal("restore differs")
	}
}

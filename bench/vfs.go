package main

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/walsync/walsync/vfs"
)

const targetVFSRatio = 0.8

type vfsResult struct {
	Mode   string  `json:"mode"`
	Plain  float64 `json:"plain_tx_per_s"`
	VFS    float64 `json:"vfs_tx_per_s"`
	Ratio  float64 `json:"ratio"`
	Target float64 `json:"target_min"`
	Pass   bool    `json:"pass"`
}

// measureVFS runs the small-transaction workload with the same driver
// (mattn/go-sqlite3) on the plain unix VFS and through the walsync VFS, in
// DELETE mode, WAL with normal locking (SQLite's shared memory) and
// exclusive WAL (synchronous=NORMAL); and one writer beside 4 readers in WAL
// (operations per second: commits plus queries).
func measureVFS(ctx context.Context, root string, dur time.Duration) ([]vfsResult, error) {
	dir := filepath.Join(root, "vfs")
	v, err := vfs.New(ctx, vfs.Config{Replica: "file://" + filepath.Join(root, "vfs-replica"), Dir: dir})
	if err != nil {
		return nil, err
	}
	defer v.Close(context.Background())
	if err := v.Register("walsync"); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	modes := []struct {
		name    string
		pragmas []string
		readers int
	}{
		{"DELETE", []string{"PRAGMA journal_mode=DELETE", "PRAGMA synchronous=NORMAL"}, 0},
		{"WAL", []string{"PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL"}, 0},
		{"WAL exclusive", []string{"PRAGMA locking_mode=EXCLUSIVE", "PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL"}, 0},
		{"WAL, 4 readers + 1 writer", []string{"PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL"}, 4},
	}
	var out []vfsResult
	for mi, m := range modes {
		unit := "tx/s"
		if m.readers > 0 {
			unit = "ops/s"
		}
		plains, vfss, err := alternate(m.name, "vfs", unit, func(ws bool, run int) (float64, error) {
			side, query := "plain", ""
			if ws {
				side, query = "vfs", "vfs=walsync&"
			}
			path := filepath.Join(dir, fmt.Sprintf("%s-m%d-run%d.db", side, mi, run))
			db, err := sql.Open("sqlite3", "file:"+path+"?"+query+"_busy_timeout=5000")
			if err != nil {
				return 0, err
			}
			defer db.Close()
			if m.readers > 0 {
				return timedReadersAndWriter(ctx, db, m.pragmas, m.readers, dur)
			}
			db.SetMaxOpenConns(1)
			return timedInserts(ctx, db, m.pragmas, dur)
		})
		if err != nil {
			return nil, err
		}
		r := vfsResult{Mode: m.name, Plain: median(plains), VFS: median(vfss), Target: targetVFSRatio}
		r.Ratio = r.VFS / r.Plain
		r.Pass = r.Ratio >= targetVFSRatio
		out = append(out, r)
	}
	return out, nil
}

func timedInserts(ctx context.Context, db *sql.DB, pragmas []string, dur time.Duration) (float64, error) {
	for _, p := range pragmas {
		if _, err := db.Exec(p); err != nil {
			return 0, fmt.Errorf("%s: %w", p, err)
		}
	}
	if _, err := db.Exec(`CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)`); err != nil {
		return 0, err
	}
	n, start := 0, time.Now()
	for time.Since(start) < dur {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		if _, err := db.Exec(`INSERT INTO t(v) VALUES(randomblob(100))`); err != nil {
			return 0, err
		}
		n++
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// timedReadersAndWriter runs timedInserts on one connection while readers
// more query the table in a loop, and returns commits plus queries per
// second.
func timedReadersAndWriter(ctx context.Context, db *sql.DB, pragmas []string, readers int, dur time.Duration) (float64, error) {
	db.SetMaxOpenConns(readers + 1)
	w, err := db.Conn(ctx)
	if err != nil {
		return 0, err
	}
	defer w.Close()
	for _, p := range pragmas {
		if _, err := w.ExecContext(ctx, p); err != nil {
			return 0, fmt.Errorf("%s: %w", p, err)
		}
	}
	if _, err := w.ExecContext(ctx, `CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)`); err != nil {
		return 0, err
	}
	var reads atomic.Int64
	stop := make(chan struct{})
	errs := make(chan error, readers)
	var wg sync.WaitGroup
	for range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				var n, max int64
				if err := db.QueryRowContext(ctx, `SELECT count(*), coalesce(max(id), 0) FROM (SELECT id FROM t ORDER BY id DESC LIMIT 10)`).Scan(&n, &max); err != nil {
					errs <- err
					return
				}
				reads.Add(1)
			}
		}()
	}
	n, start := 0, time.Now()
	var werr error
	for time.Since(start) < dur && werr == nil {
		_, werr = w.ExecContext(ctx, `INSERT INTO t(v) VALUES(randomblob(100))`)
		n++
	}
	elapsed := time.Since(start).Seconds()
	close(stop)
	wg.Wait()
	close(errs)
	if werr != nil {
		return 0, werr
	}
	for err := range errs {
		return 0, err
	}
	return (float64(n) + float64(reads.Load())) / elapsed, nil
}

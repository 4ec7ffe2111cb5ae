package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"
)

const (
	readsDBMB       = 100 // size of the database the point selects run on
	readsRowBytes   = 100
	targetReadRatio = 0.9
)

type readsResult struct {
	SizeMB    float64   `json:"size_mb"`
	Plain     float64   `json:"plain_selects_per_s"`
	Mount     float64   `json:"mount_selects_per_s"`
	Ratio     float64   `json:"ratio"`
	PlainRuns []float64 `json:"plain_runs"`
	MountRuns []float64 `json:"mount_runs"`
	Target    float64   `json:"target_min"`
	Pass      bool      `json:"pass"`
}

// measureReads builds a 100 MB database in the plain directory and one
// through the mount (the same way, with SQLite), warms both (every page read once) and runs point selects
// by random rowid on one connection each, alternating plain and mount.
func measureReads(ctx context.Context, plain, mnt string, dur time.Duration) (readsResult, error) {
	r := readsResult{Target: targetReadRatio}
	src := filepath.Join(plain, "reads.db")
	rows, err := buildRowsDB(src, readsDBMB)
	if err != nil {
		return r, err
	}
	fi, err := os.Stat(src)
	if err != nil {
		return r, err
	}
	r.SizeMB = float64(fi.Size()) / 1e6
	dst := filepath.Join(mnt, "reads.db")
	if _, err := buildRowsDB(dst, readsDBMB); err != nil {
		return r, fmt.Errorf("build the reads database in the mount: %w", err)
	}
	r.PlainRuns, r.MountRuns, err = alternate("reads", "mount", "selects/s", func(ws bool, _ int) (float64, error) {
		if ws {
			return pointSelects(ctx, dst, rows, dur)
		}
		return pointSelects(ctx, src, rows, dur)
	})
	if err != nil {
		return r, err
	}
	r.Plain, r.Mount = median(r.PlainRuns), median(r.MountRuns)
	r.Ratio = r.Mount / r.Plain
	r.Pass = r.Ratio >= targetReadRatio
	return r, nil
}

// buildRowsDB creates a WAL database of about sizeMB of 100-byte rows,
// checkpointed, and returns its row count.
func buildRowsDB(path string, sizeMB int) (int, error) {
	os.Remove(path)
	db, err := openDB(path, "NORMAL")
	if err != nil {
		return 0, err
	}
	defer db.Close()
	rows := sizeMB * 1e6 / (readsRowBytes + 10) // about sizeMB with the b-tree overhead
	if _, err := db.Exec(`CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)`); err != nil {
		return 0, err
	}
	if _, err := db.Exec(`WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM c WHERE n < ?) INSERT INTO t(v) SELECT randomblob(?) FROM c`, rows, readsRowBytes); err != nil {
		return 0, err
	}
	_, err = db.Exec(`PRAGMA wal_checkpoint(TRUNCATE)`)
	return rows, err
}

// pointSelects warms the database (reads every page) and then runs
// SELECT v FROM t WHERE id=? with random ids for dur; it returns selects per second.
func pointSelects(ctx context.Context, path string, rows int, dur time.Duration) (float64, error) {
	db, err := openDB(path, "NORMAL")
	if err != nil {
		return 0, err
	}
	defer db.Close()
	var total int64
	if err := db.QueryRowContext(ctx, `SELECT sum(length(v)) FROM t`).Scan(&total); err != nil {
		return 0, err
	}
	if total != int64(rows)*readsRowBytes {
		return 0, fmt.Errorf("%s holds %d bytes of rows, want %d", path, total, rows*readsRowBytes)
	}
	q, err := db.Prepare(`SELECT v FROM t WHERE id=?`)
	if err != nil {
		return 0, err
	}
	defer q.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	var v []byte
	n, start := 0, time.Now()
	for time.Since(start) < dur {
		if n%1000 == 0 && ctx.Err() != nil {
			return 0, ctx.Err()
		}
		if err := q.QueryRow(1 + rng.IntN(rows)).Scan(&v); err != nil {
			return 0, err
		}
		if len(v) != readsRowBytes {
			return 0, fmt.Errorf("row of %d bytes", len(v))
		}
		n++
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// Command bench measures walsync against its targets:
//
//   - write speed: small autocommit WAL transactions (synchronous=NORMAL, one
//     INSERT of a 100-byte blob each) through the mount, relative to the same
//     workload in a plain directory on the same filesystem (target: ratio >= 0.3);
//   - memory: walsync's resident set with 100 databases open under the mount
//     (target: < 30 MB).
//
// Usage:
//
//	go run ./bench --walsync bin/walsync [--out bench.json] [--duration 5s]
//
// It starts `walsync mount` on temporary directories with a file:// replica,
// runs each write measurement 3 times, alternating plain and mount, and
// reports the medians. It prints a table and writes the same figures as JSON
// to --out. Targets are printed as PASS or MISS; they do not change the exit
// status, which is non-zero only if the benchmark itself fails (including an
// unclean exit of walsync).
package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	_ "github.com/mattn/go-sqlite3"
)

const (
	runs         = 3   // write measurements per side; the median is reported
	openDBs      = 100 // databases held open for the memory measurement
	syncInterval = time.Second
	targetRatio  = 0.3  // mount tx/s over plain tx/s, at least
	targetRSSMB  = 30.0 // walsync's VmRSS with openDBs open, below
)

// results is what --out holds.
type results struct {
	Write   writeResult   `json:"mount_wal_small_tx"`
	RSS     rssResult     `json:"rss_100_open_dbs_mb"`
	S3      s3Result      `json:"s3_100_dbs_20_tx_per_s"`
	VFS     []vfsResult   `json:"vfs_small_tx"`
	Restore restoreResult `json:"restore_from_s3"`
}

type writeResult struct {
	Plain     float64   `json:"plain_tx_per_s"`
	Mount     float64   `json:"mount_tx_per_s"`
	Ratio     float64   `json:"ratio"`
	PlainRuns []float64 `json:"plain_runs_tx_per_s"`
	MountRuns []float64 `json:"mount_runs_tx_per_s"`
	Duration  float64   `json:"run_duration_s"`
	Target    float64   `json:"target_min"`
	Pass      bool      `json:"pass"`
}

type rssResult struct {
	RSS    float64 `json:"rss"`
	Peak   float64 `json:"peak"`
	Target float64 `json:"target_max"`
	Pass   bool    `json:"pass"`
}

func main() {
	bin := flag.String("walsync", "bin/walsync", "walsync binary")
	out := flag.String("out", "bench.json", "write the results as JSON to this file")
	dur := flag.Duration("duration", 5*time.Second, "length of each write measurement")
	restoreMB = flag.Int("restore-mb", 1024, "size of the database restored from S3 by walsync and Litestream (0: skip)")
	s3Duration = flag.Duration("s3-duration", 10*time.Second, "length of the S3 workload (100 databases at 20 tx/s each)")
	flag.Parse()
	if flag.NArg() > 0 || *dur <= 0 {
		flag.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *bin, *out, *dur); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, bin, out string, dur time.Duration) (err error) {
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("--walsync: %w (build it with: go build -o bin/walsync ./cmd/walsync)", err)
	}
	// One temporary root: data and plain are siblings on the same filesystem.
	root, err := os.MkdirTemp("", "walsync-bench-")
	if err != nil {
		return err
	}
	dirs := map[string]string{}
	for _, d := range []string{"mnt", "data", "replica", "plain"} {
		dirs[d] = filepath.Join(root, d)
		if err := os.Mkdir(dirs[d], 0o755); err != nil {
			os.RemoveAll(root)
			return err
		}
	}
	w, err := startWalsync(bin, dirs["mnt"], dirs["data"], "file://"+dirs["replica"], syncInterval)
	if err != nil {
		os.RemoveAll(root)
		return err
	}
	defer func() {
		stopErr := w.stop()
		if p := w.problems(); len(p) > 0 {
			fmt.Fprintf(os.Stderr, "walsync logged %d warning/error lines:\n  %s\n", len(p), strings.Join(p, "\n  "))
		}
		if stopErr != nil {
			err = errors.Join(err, stopErr, errors.New(w.logText()))
		}
		if mounted(dirs["mnt"]) {
			err = errors.Join(err, fmt.Errorf("left %s in place: %s is still mounted", root, dirs["mnt"]))
			return
		}
		os.RemoveAll(root)
	}()
	fmt.Fprintf(os.Stderr, "walsync (pid %d) mounted %s\n", w.pid(), dirs["mnt"])

	var res results
	if res.Write, err = measureWrites(ctx, dirs["plain"], dirs["mnt"], dur); err != nil {
		return err
	}
	dbs, err := openMany(ctx, dirs["mnt"], openDBs)
	defer func() {
		for _, db := range dbs {
			db.Close()
		}
	}()
	if err != nil {
		return err
	}
	// Let the batch window close so the first uploads are part of the figure.
	if err := sleep(ctx, 2*syncInterval); err != nil {
		return err
	}
	if res.RSS, err = measureRSS(w.pid()); err != nil {
		return err
	}

	for _, db := range dbs {
		db.Close()
	}
	dbs = nil
	if res.S3, err = measureS3(ctx, bin, root, *s3Duration); err != nil {
		return err
	}
	if res.VFS, err = measureVFS(ctx, root, dur); err != nil {
		return err
	}
	if *restoreMB > 0 {
		if res.Restore, err = measureRestore(ctx, bin, root, *restoreMB); err != nil {
			return err
		}
	}

	report(res)
	b, _ := json.MarshalIndent(res, "", "  ")
	if err := os.WriteFile(out, append(b, '\n'), 0o644); err != nil {
		return err
	}
	fmt.Printf("wrote %s\n", out)
	return nil
}

// measureWrites runs the small-transaction workload runs times in plain and
// through the mount, alternating, each on a fresh database.
func measureWrites(ctx context.Context, plain, mnt string, dur time.Duration) (writeResult, error) {
	r := writeResult{Duration: dur.Seconds(), Target: targetRatio}
	for i := 1; i <= runs; i++ {
		for _, side := range []struct {
			name, dir string
			into      *[]float64
		}{{"plain", plain, &r.PlainRuns}, {"mount", mnt, &r.MountRuns}} {
			tps, err := smallTx(ctx, filepath.Join(side.dir, fmt.Sprintf("run%d.db", i)), dur)
			if err != nil {
				return r, fmt.Errorf("%s run %d: %w", side.name, i, err)
			}
			fmt.Fprintf(os.Stderr, "%s run %d/%d: %.0f tx/s\n", side.name, i, runs, tps)
			*side.into = append(*side.into, tps)
		}
	}
	r.Plain, r.Mount = median(r.PlainRuns), median(r.MountRuns)
	r.Ratio = r.Mount / r.Plain
	r.Pass = r.Ratio >= targetRatio
	return r, nil
}

// smallTx creates a database at path and commits one INSERT of a 100-byte
// blob per transaction for dur; it returns transactions per second.
func smallTx(ctx context.Context, path string, dur time.Duration) (float64, error) {
	db, err := openDB(path)
	if err != nil {
		return 0, err
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)`); err != nil {
		return 0, err
	}
	ins, err := db.Prepare(`INSERT INTO t(v) VALUES(randomblob(100))`)
	if err != nil {
		return 0, err
	}
	defer ins.Close()
	n, start := 0, time.Now()
	for time.Since(start) < dur {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		if _, err := ins.Exec(); err != nil {
			return 0, fmt.Errorf("transaction %d: %w", n+1, err)
		}
		n++
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// openMany creates n databases under dir, t000/app.db and so on, each with a
// table and one row, and returns them open. The caller closes them, also on
// error.
func openMany(ctx context.Context, dir string, n int) ([]*sql.DB, error) {
	var dbs []*sql.DB
	for i := 0; i < n; i++ {
		if err := ctx.Err(); err != nil {
			return dbs, err
		}
		path := filepath.Join(dir, fmt.Sprintf("t%03d", i), "app.db")
		if err := os.Mkdir(filepath.Dir(path), 0o755); err != nil {
			return dbs, err
		}
		db, err := openDB(path)
		if err != nil {
			return dbs, err
		}
		dbs = append(dbs, db)
		for _, q := range []string{`CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)`, `INSERT INTO t(v) VALUES(randomblob(100))`} {
			if _, err := db.Exec(q); err != nil {
				return dbs, fmt.Errorf("%s: %w", path, err)
			}
		}
	}
	return dbs, nil
}

// openDB opens path on one connection in WAL mode with synchronous=NORMAL,
// and checks that both took effect.
func openDB(path string) (*sql.DB, error) {
	db, err := sql.Open("sqlite3", "file:"+path+"?_journal_mode=WAL&_synchronous=NORMAL&_busy_timeout=5000")
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	var mode string
	var syncLevel int
	if err := db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil {
		db.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	if err := db.QueryRow(`PRAGMA synchronous`).Scan(&syncLevel); err != nil {
		db.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	if mode != "wal" || syncLevel != 1 {
		db.Close()
		return nil, fmt.Errorf("open %s: journal_mode=%s synchronous=%d, want wal and 1 (NORMAL)", path, mode, syncLevel)
	}
	return db, nil
}

// measureRSS reads VmRSS and VmHWM of process pid, in MB.
func measureRSS(pid int) (rssResult, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return rssResult{}, err
	}
	kB := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		// "VmRSS:	   12345 kB"
		if f := strings.Fields(line); len(f) == 3 && f[2] == "kB" {
			if v, err := strconv.ParseFloat(f[1], 64); err == nil {
				kB[strings.TrimSuffix(f[0], ":")] = v
			}
		}
	}
	if kB["VmRSS"] == 0 || kB["VmHWM"] == 0 {
		return rssResult{}, fmt.Errorf("no VmRSS or VmHWM in /proc/%d/status", pid)
	}
	r := rssResult{RSS: kB["VmRSS"] / 1024, Peak: kB["VmHWM"] / 1024, Target: targetRSSMB}
	r.Pass = r.RSS < targetRSSMB
	return r, nil
}

func report(r results) {
	fmt.Printf("\nwalsync bench: WAL small transactions, median of %d runs of %gs each (plain and mount alternating)\n\n", runs, r.Write.Duration)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 3, ' ', 0)
	fmt.Fprintln(tw, "METRIC\tRESULT\tTARGET\t")
	fmt.Fprintf(tw, "plain dir, tx/s\t%.0f\t\t\n", r.Write.Plain)
	fmt.Fprintf(tw, "mount, tx/s\t%.0f\t\t\n", r.Write.Mount)
	fmt.Fprintf(tw, "ratio mount/plain\t%.3f\t>= %.1f\t%s\n", r.Write.Ratio, targetRatio, verdict(r.Write.Pass))
	fmt.Fprintf(tw, "RSS, %d open dbs (VmRSS)\t%.1f MB\t< %.0f MB\t%s\n", openDBs, r.RSS.RSS, targetRSSMB, verdict(r.RSS.Pass))
	fmt.Fprintf(tw, "peak RSS (VmHWM)\t%.1f MB\t\t\n", r.RSS.Peak)
	for _, v := range r.VFS {
		fmt.Fprintf(tw, "VFS %s: plain / walsync tx/s\t%.0f / %.0f\t\t\n", v.Mode, v.Plain, v.VFS)
		fmt.Fprintf(tw, "VFS %s: ratio\t%.3f\t>= %.1f\t%s\n", v.Mode, v.Ratio, v.Target, verdict(v.Pass))
	}
	if r.Restore.SizeMB > 0 {
		if r.Restore.LitestreamError != "" {
			fmt.Fprintf(tw, "restore %.0f MB from S3: walsync\t%.1f MB/s\t\t(litestream failed: see bench.json)\n", r.Restore.SizeMB, r.Restore.WalsyncMBps)
		} else {
			fmt.Fprintf(tw, "restore %.0f MB from S3: walsync / litestream\t%.1f / %.1f MB/s\t>= litestream\t%s\n", r.Restore.SizeMB, r.Restore.WalsyncMBps, r.Restore.LitestreamMBps, verdict(r.Restore.Pass))
		}
	}
	fmt.Fprintf(tw, "S3: transactions (%d dbs x %d tx/s)\t%d\t\t\n", s3DBs, s3Rate, r.S3.Transactions)
	fmt.Fprintf(tw, "S3: PUTs per 1,000 transactions\t%.1f\t~ dbs/interval\t\n", r.S3.PUTsPer1000Tx)
	fmt.Fprintf(tw, "S3: PUTs per second\t%.1f\t~ %d\t\n", r.S3.PUTsPerSecond, s3DBs)
	fmt.Fprintf(tw, "S3: commit -> durable lag p50\t%.0f ms\t\t\n", r.S3.LagP50ms)
	fmt.Fprintf(tw, "S3: commit -> durable lag p99\t%.0f ms\t<= %.0f ms\t%s\n", r.S3.LagP99ms, r.S3.TargetP99ms, verdict(r.S3.Pass))
	tw.Flush()
	fmt.Println()
}

func verdict(pass bool) string {
	if pass {
		return "PASS"
	}
	return "MISS"
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// sleep waits for d, or returns early with ctx's error.
func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

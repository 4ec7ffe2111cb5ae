// Command bench measures walsync against its targets, in one run on this
// machine, and prints one table (the same figures go to --out as JSON, so
// they can be compared between commits):
//
//   - writes: small autocommit WAL transactions (one INSERT of a 100-byte
//     blob each, synchronous=NORMAL and FULL) through the mount in both
//     capture modes (passthrough, write) and through the VFS, each relative
//     to the same workload on plain disk (targets: mount in passthrough
//     >= 0.8, VFS >= 0.8);
//   - reads: point selects by rowid on a warm 100 MB database, through the
//     mount relative to plain disk (target >= 0.9);
//   - scale: walsync's memory with 1, 100 and 1,000 databases under one mount
//     (each created, written once and left open and idle), then with 100 of
//     the 1,000 active at 10 tx/s, against a local S3 server (versitygw):
//     RSS (target <= 40 MB), S3 PUTs per 1,000 transactions and commit ->
//     durable lag p50/p99 (target p99 <= sync interval + 250 ms);
//   - restore: a large database restored from S3, walsync beside Litestream;
//   - s3cost: S3 requests per 1,000 transactions (by class), startup
//     requests per database and replica bytes, with 50 WAL databases at
//     10 tx/s each, walsync beside Litestream 0.5.18, one after the other,
//     each behind a counting proxy (targets: PUTs and all requests per 1,000
//     tx and replica bytes <= Litestream's, startup <= 5 requests per
//     database; s3cost.go);
//   - age: the scale scenario twice, without and with age encryption
//     (--age-identity): walsync's RSS with 100 active (target <= 1.1x).
//
// Usage:
//
//	go run ./bench --walsync bin/walsync [--out bench.json] [--duration 5s] [--only writes,reads,scale,vfs,restore,s3cost,watch,age]
//
// `--only s3cost` runs just the S3 request count (about 3 minutes;
// --s3cost-duration and --s3cost-compaction shorten it).
//
// Each speed measurement runs 3 times, alternating plain and walsync, and
// the medians are reported. Targets are printed as PASS or MISS; they do not
// change the exit status, which is non-zero only if the benchmark itself
// fails (including an unclean exit of walsync).
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
	runs         = 3 // speed measurements per side; the median is reported
	syncInterval = time.Second
	targetRatio  = 0.8 // mount (passthrough) tx/s over plain tx/s, at least
)

// captureModes are the mount's --capture values measured; the first one
// also serves the read measurement.
var captureModes = []string{"passthrough", "write"}

// results is what --out holds.
type results struct {
	Writes  []writeResult  `json:"mount_small_wal_tx,omitempty"`
	VFS     []vfsResult    `json:"vfs_small_tx,omitempty"`
	Reads   *readsResult   `json:"mount_warm_point_selects,omitempty"`
	Scale   *scaleResult   `json:"scale,omitempty"`
	Restore *restoreResult `json:"restore_from_s3,omitempty"`
	S3Cost  *s3costResult  `json:"s3_requests_vs_litestream,omitempty"`
	Watch   *watchResult   `json:"watch_vs_litestream,omitempty"`
	Age     *ageResult     `json:"scale_age_encrypted,omitempty"`
}

type writeResult struct {
	Capture   string    `json:"capture"`     // the mount's --capture
	Sync      string    `json:"synchronous"` // NORMAL or FULL
	Plain     float64   `json:"plain_tx_per_s"`
	Mount     float64   `json:"mount_tx_per_s"`
	Ratio     float64   `json:"ratio"`
	PlainRuns []float64 `json:"plain_runs_tx_per_s"`
	MountRuns []float64 `json:"mount_runs_tx_per_s"`
	Duration  float64   `json:"run_duration_s"`
	Target    float64   `json:"target_min,omitempty"` // 0: no target (informational)
	Pass      bool      `json:"pass"`
}

var allParts = []string{"writes", "vfs", "reads", "scale", "restore", "s3cost", "watch", "age"}

func main() {
	bin := flag.String("walsync", "bin/walsync", "walsync binary")
	out := flag.String("out", "bench.json", "write the results as JSON to this file")
	dur := flag.Duration("duration", 5*time.Second, "length of each speed measurement")
	only := flag.String("only", strings.Join(allParts, ","), "measure only these parts (comma-separated)")
	restoreMB = flag.Int("restore-mb", 1024, "size of the database restored from S3 by walsync and Litestream")
	activeDuration = flag.Duration("active-duration", 20*time.Second, "length of the scale scenario's active phase")
	costDuration = flag.Duration("s3cost-duration", 30*time.Second, "length of the s3cost scenario's load")
	costCompaction = flag.Duration("s3cost-compaction", 35*time.Second, "s3cost: how long each tool runs idle after the load, counted (one level-1 compaction cycle)")
	flag.Parse()
	parts := map[string]bool{}
	for _, p := range strings.Split(*only, ",") {
		if !slices.Contains(allParts, p) {
			fmt.Fprintf(os.Stderr, "bench: --only: unknown part %q (parts: %s)\n", p, strings.Join(allParts, ","))
			os.Exit(2)
		}
		parts[p] = true
	}
	if flag.NArg() > 0 || *dur <= 0 || *restoreMB <= 0 || *activeDuration <= 0 || *costDuration <= 0 || *costCompaction < 0 {
		flag.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *bin, *out, *dur, parts); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, bin, out string, dur time.Duration, parts map[string]bool) (err error) {
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("--walsync: %w (build it with: go build -o bin/walsync ./cmd/walsync)", err)
	}
	// One temporary root: data and plain are siblings on the same filesystem.
	root, err := os.MkdirTemp("", "walsync-bench-")
	if err != nil {
		return err
	}
	defer func() {
		if err == nil {
			os.RemoveAll(root)
		}
	}()
	var res results
	if parts["writes"] || parts["reads"] {
		if err := measureMount(ctx, bin, root, dur, parts, &res); err != nil {
			return err
		}
	}
	if parts["vfs"] {
		if res.VFS, err = measureVFS(ctx, root, dur); err != nil {
			return err
		}
	}
	if parts["scale"] {
		sc, err := measureScale(ctx, bin, root)
		if err != nil {
			return err
		}
		res.Scale = &sc
	}
	if parts["restore"] {
		rr, err := measureRestore(ctx, bin, root, *restoreMB)
		if err != nil {
			return err
		}
		res.Restore = &rr
	}
	if parts["s3cost"] {
		sc, err := measureS3Cost(ctx, bin, root)
		if err != nil {
			return err
		}
		res.S3Cost = &sc
	}
	if parts["age"] {
		ar, err := measureAgeScale(ctx, bin, root)
		if err != nil {
			return err
		}
		res.Age = &ar
	}
	if parts["watch"] {
		wr, err := measureWatch(ctx, bin, root, dur)
		if err != nil {
			return err
		}
		res.Watch = &wr
	}

	report(res)
	b, _ := json.MarshalIndent(res, "", "  ")
	if err := os.WriteFile(out, append(b, '\n'), 0o644); err != nil {
		return err
	}
	fmt.Printf("wrote %s\n", out)
	return nil
}

// measureMount runs the write measurements through a mount in each capture
// mode, and the read measurement through the first, with a file:// replica.
func measureMount(ctx context.Context, bin, root string, dur time.Duration, parts map[string]bool, res *results) (err error) {
	for i, mode := range captureModes {
		if !parts["writes"] && i > 0 {
			break
		}
		if err := measureMountMode(ctx, bin, filepath.Join(root, mode), mode, dur, parts, i == 0, res); err != nil {
			return err
		}
	}
	return nil
}

func measureMountMode(ctx context.Context, bin, root, mode string, dur time.Duration, parts map[string]bool, reads bool, res *results) (err error) {
	dirs := map[string]string{}
	for _, d := range []string{"mnt", "data", "replica", "plain"} {
		dirs[d] = filepath.Join(root, d)
		if err := os.MkdirAll(dirs[d], 0o755); err != nil {
			return err
		}
	}
	w, err := startWalsync(bin, dirs["mnt"], dirs["data"], "file://"+dirs["replica"], syncInterval, []string{"--capture=" + mode})
	if err != nil {
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
			err = errors.Join(err, fmt.Errorf("%s is still mounted", dirs["mnt"]))
		}
	}()
	fmt.Fprintf(os.Stderr, "walsync (pid %d, --capture=%s) mounted %s\n", w.pid(), mode, dirs["mnt"])
	if parts["writes"] {
		for _, sync := range []string{"NORMAL", "FULL"} {
			wr, err := measureWrites(ctx, dirs["plain"], dirs["mnt"], mode, sync, dur)
			if err != nil {
				return err
			}
			res.Writes = append(res.Writes, wr)
		}
	}
	if parts["reads"] && reads {
		rr, err := measureReads(ctx, dirs["plain"], dirs["mnt"], dur)
		if err != nil {
			return err
		}
		res.Reads = &rr
	}
	return nil
}

// measureWrites runs the small-transaction workload runs times in plain and
// through the mount, alternating, each on a fresh database.
func measureWrites(ctx context.Context, plain, mnt, mode, sync string, dur time.Duration) (writeResult, error) {
	r := writeResult{Capture: mode, Sync: sync, Duration: dur.Seconds()}
	if mode == "passthrough" {
		r.Target = targetRatio
	}
	var err error
	r.PlainRuns, r.MountRuns, err = alternate(sync, "mount ("+mode+")", "tx/s", func(ws bool, run int) (float64, error) {
		dir := plain
		if ws {
			dir = mnt
		}
		return smallTx(ctx, filepath.Join(dir, fmt.Sprintf("%s-run%d.db", sync, run)), sync, dur)
	})
	if err != nil {
		return r, err
	}
	r.Plain, r.Mount = median(r.PlainRuns), median(r.MountRuns)
	r.Ratio = r.Mount / r.Plain
	r.Pass = r.Target == 0 || r.Ratio >= r.Target
	return r, nil
}

// alternate runs measure runs times for plain SQLite (ws false) and for
// walsync (ws true, named wsName), alternating, and returns each side's
// figures; progress lines start with label.
func alternate(label, wsName, unit string, measure func(ws bool, run int) (float64, error)) (plain, walsync []float64, err error) {
	for i := 1; i <= runs; i++ {
		for _, ws := range []bool{false, true} {
			name := "plain"
			if ws {
				name = wsName
			}
			name = strings.TrimSpace(label + " " + name)
			v, err := measure(ws, i)
			if err != nil {
				return plain, walsync, fmt.Errorf("%s run %d: %w", name, i, err)
			}
			fmt.Fprintf(os.Stderr, "%s run %d/%d: %.0f %s\n", name, i, runs, v, unit)
			if ws {
				walsync = append(walsync, v)
			} else {
				plain = append(plain, v)
			}
		}
	}
	return plain, walsync, nil
}

// smallTx creates a database at path and commits one INSERT of a 100-byte
// blob per transaction for dur; it returns transactions per second.
func smallTx(ctx context.Context, path, sync string, dur time.Duration) (float64, error) {
	db, err := openDB(path, sync)
	if err != nil {
		return 0, err
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB)`); err != nil {
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

// openDB opens path on one connection in WAL mode with synchronous=sync
// (NORMAL or FULL), and checks that both took effect.
func openDB(path, sync string) (*sql.DB, error) {
	db, err := sql.Open("sqlite3", "file:"+path+"?_journal_mode=WAL&_synchronous="+sync+"&_busy_timeout=5000")
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
	if want := map[string]int{"NORMAL": 1, "FULL": 2}[sync]; mode != "wal" || syncLevel != want {
		db.Close()
		return nil, fmt.Errorf("open %s: journal_mode=%s synchronous=%d, want wal and %d (%s)", path, mode, syncLevel, want, sync)
	}
	return db, nil
}

// memory is a process's resident set in MB: VmRSS, VmHWM (peak), and VmRSS
// split into anonymous memory (heap, stacks) and file pages (the binary).
type memory struct{ rss, peak, anon, file float64 }

// readRSS reads VmRSS and VmHWM of process pid.
func readRSS(pid int) (memory, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memory{}, err
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
		return memory{}, fmt.Errorf("no VmRSS or VmHWM in /proc/%d/status", pid)
	}
	return memory{rss: kB["VmRSS"] / 1024, peak: kB["VmHWM"] / 1024, anon: kB["RssAnon"] / 1024, file: kB["RssFile"] / 1024}, nil
}

// sampleRSS reads process pid's memory every 250 ms until the returned
// function is called; it returns the sample with the highest VmRSS.
func sampleRSS(pid int) (highest func() memory) {
	stop := make(chan struct{})
	sampled := make(chan memory)
	go func() {
		var hi memory
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				sampled <- hi
				return
			case <-t.C:
				if m, err := readRSS(pid); err == nil && m.rss > hi.rss {
					hi = m
				}
			}
		}
	}()
	return func() memory { close(stop); return <-sampled }
}

func report(r results) {
	if len(r.Writes) == 0 && len(r.VFS) == 0 && r.Reads == nil && r.Scale == nil && r.Restore == nil && r.Age == nil {
		if r.S3Cost != nil {
			fmt.Println()
			reportS3Cost(r.S3Cost)
		}
		if r.Watch != nil {
			fmt.Println()
			reportWatch(r.Watch)
		}
		return
	}
	fmt.Printf("\nwalsync bench: speeds are medians of %d runs, plain and walsync alternating, in this run on this machine\n\n", runs)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 3, ' ', 0)
	fmt.Fprintln(tw, "METRIC\tPLAIN\tWALSYNC\tRATIO\tTARGET\t")
	for _, w := range r.Writes {
		target, v := "", ""
		if w.Target > 0 {
			target, v = fmt.Sprintf(">= %.1fx", w.Target), verdict(w.Pass)
		}
		fmt.Fprintf(tw, "small WAL tx/s, sync=%s, mount (%s)\t%.0f\t%.0f\t%.2fx\t%s\t%s\n", w.Sync, w.Capture, w.Plain, w.Mount, w.Ratio, target, v)
	}
	for _, v := range r.VFS {
		fmt.Fprintf(tw, "small tx/s, VFS (%s)\t%.0f\t%.0f\t%.2fx\t>= %.1fx\t%s\n", v.Mode, v.Plain, v.VFS, v.Ratio, v.Target, verdict(v.Pass))
	}
	if rd := r.Reads; rd != nil {
		fmt.Fprintf(tw, "point selects/s, warm %.0f MB db, mount\t%.0f\t%.0f\t%.2fx\t>= %.1fx\t%s\n", rd.SizeMB, rd.Plain, rd.Mount, rd.Ratio, rd.Target, verdict(rd.Pass))
	}
	if s := r.Scale; s != nil {
		for _, st := range s.Idle {
			fmt.Fprintf(tw, "RSS, %d dbs open and idle (peak)\t\t%.1f MB (%.1f)\t\t\t\n", st.DBs, st.RSSMB, st.PeakMB)
		}
		a := s.Active
		fmt.Fprintf(tw, "RSS, %d dbs, %d active at %d tx/s (peak)\t\t%.1f MB (%.1f)\t\t<= %.0f MB\t%s\n", a.DBs, a.Active, a.RatePerDB, a.RSSMB, a.PeakMB, a.RSSTargetMB, verdict(a.RSSPass))
		fmt.Fprintf(tw, "commit -> durable on S3, p50 / p99\t\t%.0f / %.0f ms\t\t<= %.0f ms\t%s\n", a.LagP50ms, a.LagP99ms, a.LagTargetP99ms, verdict(a.LagPass))
		fmt.Fprintf(tw, "S3 PUTs per 1,000 tx (%d tx)\t\t%.0f\t\t\t\n", a.Transactions, a.PUTsPer1000Tx)
	}
	if rs := r.Restore; rs != nil {
		if rs.LitestreamError != "" {
			fmt.Fprintf(tw, "restore %.0f MB from S3, MB/s\tlitestream failed\t%.1f\t\t\t(see bench.json)\n", rs.SizeMB, rs.WalsyncMBps)
		} else {
			fmt.Fprintf(tw, "restore %.0f MB from S3, MB/s (plain: litestream)\t%.1f\t%.1f\t%.2fx\t>= 1x\t%s\n", rs.SizeMB, rs.LitestreamMBps, rs.WalsyncMBps, rs.Ratio, verdict(rs.Pass))
		}
		if rs.AgeMBps > 0 {
			fmt.Fprintf(tw, "restore %.0f MB, age-encrypted, MB/s (plain: unencrypted)\t%.1f\t%.1f\t%.2fx\t>= 0.9x\t%s\n", rs.SizeMB, rs.WalsyncMBps, rs.AgeMBps, rs.AgeSpeedRatio, verdict(rs.AgeSpeedRatio >= 0.9))
			fmt.Fprintf(tw, "restore %.0f MB, age-encrypted, peak RSS MB (plain: unencrypted)\t%.1f\t%.1f\t%.2fx\t<= 1.1x\t%s\n", rs.SizeMB, rs.WalsyncRSSMB, rs.AgeRSSMB, rs.AgeRSSRatio, verdict(rs.AgeRSSRatio <= 1.1))
		}
	}
	if a := r.Age; a != nil {
		fmt.Fprintf(tw, "RSS, 1,000 dbs idle, age-encrypted MB (plain: unencrypted)\t%.1f\t%.1f\t%.2fx\t\t\n", a.PlainIdleMB, a.AgeIdleMB, a.AgeIdleMB/a.PlainIdleMB)
		fmt.Fprintf(tw, "RSS, 100 of them active, age-encrypted MB (plain: unencrypted)\t%.1f\t%.1f\t%.2fx\t<= 1.1x\t%s\n", a.PlainActiveMB, a.AgeActiveMB, a.Ratio, verdict(a.Pass))
	}
	tw.Flush()
	fmt.Println()
	if r.S3Cost != nil {
		reportS3Cost(r.S3Cost)
	}
	if r.Watch != nil {
		reportWatch(r.Watch)
	}
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

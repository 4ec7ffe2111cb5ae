package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/walsync/walsync/internal/testtools"
	"github.com/walsync/walsync/storage"
	"github.com/walsync/walsync/storage/file"
)

// The watch scenario (issue 15): `walsync watch` and Litestream 0.5.18 each
// follow watchDBs WAL databases on plain disk (each its own copy, since
// Litestream writes tables into the databases), activeDBs of them written at
// activeRate transactions per second, to the counting S3 server; their
// resident memory, idle and active. And one writer's commit rate with
// `walsync watch` following its database, against the same writer alone.
const (
	watchDBs          = 1000
	watchRSSTarget    = 40.0 // MB, the mount's budget
	watchCommitTarget = 0.9  // commit rate watched over alone, at least
)

type watchSide struct {
	IdleRSSMB    float64 `json:"idle_rss_mb"`
	IdleAnonMB   float64 `json:"idle_rss_anon_mb"` // of it, heap and stacks (the rest: the binary's pages)
	ActiveRSSMB  float64 `json:"active_rss_mb"`    // VmRSS sampled during the active phase, highest
	ActiveAnonMB float64 `json:"active_rss_anon_mb"`
	PeakMB       float64 `json:"peak_mb"`
	Transactions int     `json:"transactions"`
}

type watchResult struct {
	DBs             int       `json:"dbs"`
	Active          int       `json:"active"`
	RatePerDB       int       `json:"tx_per_s_per_db"`
	DurationS       float64   `json:"duration_s"`
	Walsync         watchSide `json:"walsync"`
	Litestream      watchSide `json:"litestream"`
	LitestreamError string    `json:"litestream_error,omitempty"`
	RSSTargetMB     float64   `json:"rss_target_mb"`
	RSSPass         bool      `json:"rss_pass"`
	// A writer paced at pacedRate commits per second: its commit latency
	// alone and watched (microseconds); the ratio alone / watched of the
	// medians is the target.
	LatencyRate       int     `json:"latency_tx_per_s"`
	LatencyAloneP50   float64 `json:"latency_alone_p50_us"`
	LatencyAloneP99   float64 `json:"latency_alone_p99_us"`
	LatencyWatchedP50 float64 `json:"latency_watched_p50_us"`
	LatencyWatchedP99 float64 `json:"latency_watched_p99_us"`
	LatencyRatio      float64 `json:"latency_ratio"`
	LatencyPass       bool    `json:"latency_pass"`
	// Captured one by one: the replica's TXIDs against the commits, paced.
	LatencyTXIDs   int `json:"latency_watched_txids"`
	LatencyCommits int `json:"latency_watched_commits"`
	// A writer committing as fast as it can, alone and watched: beyond
	// what the sidecar captures one by one (see README).
	CommitAlone   float64 `json:"commit_alone_tx_per_s"`
	CommitWatched float64 `json:"commit_watched_tx_per_s"`
	CommitRatio   float64 `json:"commit_ratio"`
	CommitTarget  float64 `json:"commit_ratio_target_min"`
	CommitPass    bool    `json:"commit_pass"`
}

// sidecar is a running `walsync watch` or `litestream replicate`.
type sidecar struct {
	name string
	cmd  *exec.Cmd
	log  syncBuffer
	done chan struct{}
}

func startSidecar(name, bin string, args, env []string) (*sidecar, error) {
	s := &sidecar{name: name, done: make(chan struct{})}
	s.cmd = exec.Command(bin, args...)
	s.cmd.Env = env // nil: this process's
	s.cmd.Stdout, s.cmd.Stderr = &s.log, &s.log
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() { s.cmd.Wait(); close(s.done) }()
	return s, nil
}

func (s *sidecar) stop() error {
	select {
	case <-s.done:
		return fmt.Errorf("%s exited early: %v\n%s", s.name, s.cmd.ProcessState, lastLines(s.log.String(), 10))
	default:
	}
	_ = s.cmd.Process.Signal(os.Interrupt)
	select {
	case <-s.done:
	case <-time.After(exitTimeout):
		_ = s.cmd.Process.Kill()
		<-s.done
		return fmt.Errorf("%s did not exit after SIGINT; killed it", s.name)
	}
	return nil
}

// makeWatchDBs creates n WAL databases in dir and returns the first active
// ones open (the others are closed: idle).
func makeWatchDBs(ctx context.Context, dir string, n, active int) ([]*sql.DB, []string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, err
	}
	var dbs []*sql.DB
	var names []string
	for i := 0; i < n; i++ {
		if err := ctx.Err(); err != nil {
			return dbs, names, err
		}
		name := fmt.Sprintf("db%04d.db", i)
		db, err := openDB(filepath.Join(dir, name), "NORMAL")
		if err != nil {
			return dbs, names, err
		}
		for _, q := range []string{`CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)`, `INSERT INTO t(v) VALUES(randomblob(100))`} {
			if _, err := db.Exec(q); err != nil {
				db.Close()
				return dbs, names, fmt.Errorf("%s: %w", name, err)
			}
		}
		if i < active {
			dbs, names = append(dbs, db), append(names, name)
		} else {
			db.Close()
		}
	}
	return dbs, names, nil
}

// runSidecarLoad measures one sidecar: idle after its start, then under load.
func runSidecarLoad(ctx context.Context, s *sidecar, dbs []*sql.DB, names []string, dur time.Duration) (watchSide, error) {
	var side watchSide
	if err := sleep(ctx, 5*syncInterval); err != nil {
		return side, err
	}
	m, err := readRSS(s.cmd.Process.Pid)
	if err != nil {
		return side, fmt.Errorf("%s: %w\n%s", s.name, err, lastLines(s.log.String(), 10))
	}
	side.IdleRSSMB, side.IdleAnonMB = m.rss, m.anon
	highest := sampleRSS(s.cmd.Process.Pid)
	side.Transactions, err = steadyLoad(ctx, dbs, names, activeRate, dur)
	hi := highest()
	side.ActiveRSSMB, side.ActiveAnonMB = hi.rss, hi.anon
	if m, rerr := readRSS(s.cmd.Process.Pid); rerr == nil {
		side.PeakMB = m.peak
	}
	fmt.Fprintf(os.Stderr, "watch, %s: idle RSS %.1f MB, active RSS %.1f MB, peak %.1f MB, %d transactions\n",
		s.name, side.IdleRSSMB, side.ActiveRSSMB, side.PeakMB, side.Transactions)
	return side, err
}

func measureWatch(ctx context.Context, bin, root string, dur time.Duration) (r watchResult, err error) {
	r = watchResult{DBs: watchDBs, Active: activeDBs, RatePerDB: activeRate, DurationS: activeDuration.Seconds(),
		RSSTargetMB: watchRSSTarget, CommitTarget: watchCommitTarget}
	s3, err := startCountingS3(filepath.Join(root, "watch-s3"))
	if err != nil {
		return r, err
	}
	defer s3.stop()

	// walsync watch.
	wdir := filepath.Join(root, "watch-walsync")
	dbs, names, err := makeWatchDBs(ctx, wdir, watchDBs, activeDBs)
	defer closeAll(dbs)
	if err != nil {
		return r, err
	}
	w, err := startSidecar("walsync watch", bin, []string{"watch", "--dir", wdir, "-b", "s3://bench/watch",
		"--state", filepath.Join(root, "watch-state"), "--sync-interval", syncInterval.String()}, append(os.Environ(), s3.env()...))
	if err != nil {
		return r, err
	}
	r.Walsync, err = runSidecarLoad(ctx, w, dbs, names, *activeDuration)
	err = errors.Join(err, w.stop())
	closeAll(dbs)
	if err != nil {
		return r, err
	}
	r.RSSPass = r.Walsync.ActiveRSSMB <= watchRSSTarget && r.Walsync.IdleRSSMB <= watchRSSTarget

	// Litestream 0.5.18, the same scenario.
	if lerr := measureLitestreamWatch(ctx, root, s3, &r); lerr != nil {
		r.LitestreamError = lerr.Error()
		fmt.Fprintln(os.Stderr, "watch, litestream:", lerr)
	}

	// A writer's commit latency at a steady rate, then its rate as fast as
	// it can commit, each alone and with walsync watch following it.
	var n int
	var p50s, p99s [2][]float64
	lat, latWatched, err := alternate("watch latency", "watched", "us p50", func(ws bool, run int) (float64, error) {
		n++
		var l latencies
		err := withWatch(ctx, bin, filepath.Join(root, fmt.Sprintf("watch-latency-%d", n)), ws, func(path string) error {
			var err error
			l, err = pacedTx(ctx, path, pacedRate, dur)
			return err
		}, func(txids int) { r.LatencyTXIDs, r.LatencyCommits = txids, l.n+1 })
		i := 0
		if ws {
			i = 1
		}
		p50s[i], p99s[i] = append(p50s[i], l.p50), append(p99s[i], l.p99)
		return l.p50, err
	})
	if err != nil {
		return r, err
	}
	r.LatencyRate = pacedRate
	r.LatencyAloneP50, r.LatencyWatchedP50 = median(lat), median(latWatched)
	r.LatencyAloneP99, r.LatencyWatchedP99 = median(p99s[0]), median(p99s[1])
	if r.LatencyWatchedP50 > 0 {
		r.LatencyRatio = r.LatencyAloneP50 / r.LatencyWatchedP50
	}
	r.LatencyPass = r.LatencyRatio >= watchCommitTarget

	plain, watched, err := alternate("watch", "watched", "tx/s", func(ws bool, run int) (float64, error) {
		n++
		var v float64
		err := withWatch(ctx, bin, filepath.Join(root, fmt.Sprintf("watch-commit-%d", n)), ws, func(path string) error {
			var err error
			v, err = smallTx(ctx, path, "NORMAL", dur)
			return err
		}, nil)
		return v, err
	})
	if err != nil {
		return r, err
	}
	r.CommitAlone, r.CommitWatched = median(plain), median(watched)
	if r.CommitAlone > 0 {
		r.CommitRatio = r.CommitWatched / r.CommitAlone
	}
	r.CommitPass = r.CommitRatio >= watchCommitTarget
	return r, nil
}

// pacedRate: commits per second of the latency measurement.
const pacedRate = 1000

// withWatch runs write on a new WAL database in dir, with walsync watch
// following it when ws (then txids, if set, gets the replica's latest TXID
// once walsync has stopped).
func withWatch(ctx context.Context, bin, dir string, ws bool, write func(path string) error, txids func(int)) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	path := filepath.Join(dir, "c.db")
	if !ws {
		return write(path)
	}
	// Created first, so that walsync follows it from the start.
	db, err := openDB(path, "NORMAL")
	if err != nil {
		return err
	}
	if _, err := db.Exec(`CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB)`); err != nil {
		db.Close()
		return err
	}
	db.Close()
	replica := filepath.Join(dir, "replica")
	s, err := startSidecar("walsync watch", bin, []string{"watch", path, "-b", "file://" + replica,
		"--state", filepath.Join(dir, "state"), "--sync-interval", syncInterval.String()}, nil)
	if err != nil {
		return err
	}
	if err := sleep(ctx, 500*time.Millisecond); err != nil {
		return errors.Join(err, s.stop())
	}
	err = errors.Join(write(path), s.stop())
	if err == nil && txids != nil {
		fi, lerr := storage.Latest(ctx, file.New(filepath.Join(replica, "c.db")), "")
		if lerr != nil || fi == nil {
			return fmt.Errorf("watched writer's replica: %v", lerr)
		}
		txids(int(fi.MaxTXID))
	}
	return err
}

type latencies struct {
	n        int
	p50, p99 float64 // microseconds
}

// pacedTx commits one INSERT of a 100-byte blob per transaction, rate
// times a second for dur, and returns the commits' latencies.
func pacedTx(ctx context.Context, path string, rate int, dur time.Duration) (latencies, error) {
	db, err := openDB(path, "NORMAL")
	if err != nil {
		return latencies{}, err
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB)`); err != nil {
		return latencies{}, err
	}
	ins, err := db.Prepare(`INSERT INTO t(v) VALUES(randomblob(100))`)
	if err != nil {
		return latencies{}, err
	}
	defer ins.Close()
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	var ls []float64
	for end := time.Now().Add(dur); time.Now().Before(end); {
		select {
		case <-ctx.Done():
			return latencies{}, ctx.Err()
		case <-tick.C:
		}
		t0 := time.Now()
		if _, err := ins.Exec(); err != nil {
			return latencies{}, fmt.Errorf("transaction %d: %w", len(ls)+1, err)
		}
		ls = append(ls, float64(time.Since(t0).Nanoseconds())/1e3)
	}
	slices.Sort(ls)
	return latencies{n: len(ls), p50: ls[len(ls)/2], p99: ls[len(ls)*99/100]}, nil
}

// measureLitestreamWatch runs `litestream replicate` over its own copy of
// the databases, each listed in its config.
func measureLitestreamWatch(ctx context.Context, root string, s3 *countingS3, r *watchResult) error {
	ls, err := testtools.Install(litestreamModule)
	if err != nil {
		return err
	}
	ldir := filepath.Join(root, "watch-litestream")
	dbs, names, err := makeWatchDBs(ctx, ldir, watchDBs, activeDBs)
	defer closeAll(dbs)
	if err != nil {
		return err
	}
	var cfg strings.Builder
	cfg.WriteString("dbs:\n")
	for i := 0; i < watchDBs; i++ {
		fmt.Fprintf(&cfg, "  - path: %s\n    replica:\n      url: s3://bench/litestream-watch/db%04d.db\n      endpoint: %s\n      force-path-style: true\n      region: us-east-1\n      sync-interval: %s\n",
			filepath.Join(ldir, fmt.Sprintf("db%04d.db", i)), i, "http://"+s3.proxy, syncInterval)
	}
	path := filepath.Join(root, "litestream-watch.yml")
	if err := os.WriteFile(path, []byte(cfg.String()), 0o644); err != nil {
		return err
	}
	l, err := startSidecar("litestream", ls, []string{"replicate", "-config", path}, append(withoutEnv("AWS_CA_BUNDLE"), s3.env()...)) // see measureRestore
	if err != nil {
		return err
	}
	r.Litestream, err = runSidecarLoad(ctx, l, dbs, names, *activeDuration)
	return errors.Join(err, l.stop())
}

func closeAll(dbs []*sql.DB) {
	for _, db := range dbs {
		db.Close()
	}
}

func reportWatch(r *watchResult) {
	fmt.Printf("walsync watch beside Litestream 0.5.18: %d WAL databases on plain disk, %d written at %d tx/s each for %.0f s\n\n",
		r.DBs, r.Active, r.RatePerDB, r.DurationS)
	if r.LitestreamError != "" {
		fmt.Printf("litestream failed: %s\n\n", r.LitestreamError)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 3, ' ', 0)
	fmt.Fprintln(tw, "METRIC\tWALSYNC WATCH\tLITESTREAM\tTARGET\t")
	fmt.Fprintf(tw, "RSS idle, MB (anon)\t%.1f (%.1f)\t%.1f (%.1f)\t<= %.0f: %s\t\n", r.Walsync.IdleRSSMB, r.Walsync.IdleAnonMB, r.Litestream.IdleRSSMB, r.Litestream.IdleAnonMB, r.RSSTargetMB, verdict(r.Walsync.IdleRSSMB <= r.RSSTargetMB))
	fmt.Fprintf(tw, "RSS active, MB (anon)\t%.1f (%.1f)\t%.1f (%.1f)\t<= %.0f: %s\t\n", r.Walsync.ActiveRSSMB, r.Walsync.ActiveAnonMB, r.Litestream.ActiveRSSMB, r.Litestream.ActiveAnonMB, r.RSSTargetMB, verdict(r.Walsync.ActiveRSSMB <= r.RSSTargetMB))
	fmt.Fprintf(tw, "commit latency at %d tx/s, alone / watched\t%.2fx (p50 %.1f / %.1f us; p99 %.1f / %.1f us)\t\t>= %.1fx: %s\t\n",
		r.LatencyRate, r.LatencyRatio, r.LatencyAloneP50, r.LatencyWatchedP50, r.LatencyAloneP99, r.LatencyWatchedP99, r.CommitTarget, verdict(r.LatencyPass))
	fmt.Fprintf(tw, "  captured one by one (TXIDs / commits)\t%d / %d\t\t\t\n", r.LatencyTXIDs, r.LatencyCommits)
	fmt.Fprintf(tw, "commit rate flat out, watched / alone\t%.2fx (%.0f / %.0f tx/s)\t\t>= %.1fx: %s\t\n", r.CommitRatio, r.CommitWatched, r.CommitAlone, r.CommitTarget, verdict(r.CommitPass))
	tw.Flush()
	fmt.Println()
}

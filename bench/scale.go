package main

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/superfly/ltx"
	"github.com/walsync/walsync/internal/s3test"
)

// The scale scenario: one walsync process, an S3 replica, databases added in
// stages and left idle, then some of them active.
var (
	scaleStages = []int{1, 100, 1000} // databases under the mount, idle
	activeDBs   = 100                 // of the last stage, written to
	activeRate  = 10                  // transactions per second per active database
	targetRSS   = 40.0                // MB, steady, with the last stage and activeDBs active
	targetLag   = syncInterval + 250*time.Millisecond
)

var (
	activeDuration *time.Duration
	restoreMB      *int
)

type scaleResult struct {
	Idle   []rssStage   `json:"idle"`
	Active activeResult `json:"active"`
}

// rssStage is walsync's memory with dbs databases open under the mount.
type rssStage struct {
	DBs    int     `json:"dbs"`
	RSSMB  float64 `json:"rss_mb"`  // VmRSS once the stage is idle (steady)
	PeakMB float64 `json:"peak_mb"` // VmHWM so far
	AnonMB float64 `json:"rss_anon_mb"`
	FileMB float64 `json:"rss_file_mb"`
}

type activeResult struct {
	DBs            int     `json:"dbs"`
	Active         int     `json:"active"`
	RatePerDB      int     `json:"tx_per_s_per_db"`
	DurationS      float64 `json:"duration_s"`
	Transactions   int     `json:"transactions"`
	PUTs           int     `json:"puts"`
	PUTsPer1000Tx  float64 `json:"puts_per_1000_tx"`
	PUTsPerSecond  float64 `json:"puts_per_s"`
	LagP50ms       float64 `json:"lag_p50_ms"`
	LagP99ms       float64 `json:"lag_p99_ms"`
	LagTargetP99ms float64 `json:"lag_p99_target_ms"`
	LagPass        bool    `json:"lag_pass"`
	RSSMB          float64 `json:"rss_mb"` // VmRSS sampled during the active phase, highest
	AnonMB         float64 `json:"rss_anon_mb"`
	FileMB         float64 `json:"rss_file_mb"`
	PeakMB         float64 `json:"peak_mb"` // VmHWM at the end of the run
	RSSTargetMB    float64 `json:"rss_target_mb"`
	RSSPass        bool    `json:"rss_pass"`
}

// putLog records every successful PUT seen by the proxy, and when each
// level-0 file of each database arrived.
type putLog struct {
	mu   sync.Mutex
	puts int
	l0   map[string][]upload // by database
}

type upload struct {
	max ltx.TXID
	at  time.Time
}

func (p *putLog) record(r *http.Request, status int) {
	if r.Method != http.MethodPut || status/100 != 2 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.puts++
	// /bucket/prefix/<db>/0000/<min>-<max>.ltx
	path := strings.TrimPrefix(r.URL.Path, "/bench/x/")
	i := strings.Index(path, "/0000/")
	if i < 0 {
		return
	}
	_, max, err := ltx.ParseFilename(filepath.Base(path))
	if err != nil {
		return
	}
	p.l0[path[:i]] = append(p.l0[path[:i]], upload{max, time.Now()})
}

func (p *putLog) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.puts
}

// durableAt is when TXID txid of db first was inside an uploaded level-0 file.
func (p *putLog) durableAt(db string, txid ltx.TXID) (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, u := range p.l0[db] {
		if u.max >= txid {
			return u.at, true
		}
	}
	return time.Time{}, false
}

func (p *putLog) maxTXID(db string) ltx.TXID {
	p.mu.Lock()
	defer p.mu.Unlock()
	var m ltx.TXID
	for _, u := range p.l0[db] {
		m = max(m, u.max)
	}
	return m
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) { s.status = code; s.ResponseWriter.WriteHeader(code) }

// countingS3 is a local S3 server behind a proxy that logs PUTs.
type countingS3 struct {
	srv   *s3test.Server
	hs    *http.Server
	log   *putLog
	proxy string // host:port
}

// startCountingS3 starts the server and the proxy; each observe function
// also sees every request, with its status and when it arrived.
func startCountingS3(dir string, observe ...func(r *http.Request, status int, arrived time.Time)) (*countingS3, error) {
	fmt.Fprintln(os.Stderr, "starting versitygw (built once into the user cache)")
	srv, err := s3test.Launch(dir)
	if err != nil {
		return nil, err
	}
	if err := srv.MakeBucket("bench"); err != nil {
		srv.Stop()
		return nil, err
	}
	target, _ := url.Parse(srv.Endpoint)
	c := &countingS3{srv: srv, log: &putLog{l0: map[string][]upload{}}}
	rp := httputil.NewSingleHostReverseProxy(target)
	director := rp.Director
	rp.Director = func(r *http.Request) { host := r.Host; director(r); r.Host = host }
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		srv.Stop()
		return nil, err
	}
	c.proxy = l.Addr().String()
	c.hs = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, status: 200}
		arrived := time.Now()
		rp.ServeHTTP(rec, r)
		c.log.record(r, rec.status)
		for _, f := range observe {
			f(r, rec.status, arrived)
		}
	})}
	go c.hs.Serve(l)
	return c, nil
}

func (c *countingS3) env() []string {
	return []string{"AWS_ACCESS_KEY_ID=" + c.srv.AccessKey, "AWS_SECRET_ACCESS_KEY=" + c.srv.SecretKey,
		"AWS_REGION=us-east-1", "AWS_ENDPOINT_URL_S3=http://" + c.proxy}
}

func (c *countingS3) stop() {
	c.hs.Close()
	c.srv.Stop()
}

// measureScale runs the scale scenario against a local S3 server.
func measureScale(ctx context.Context, bin, root string, extra ...string) (r scaleResult, err error) {
	s3, err := startCountingS3(filepath.Join(root, "s3"))
	if err != nil {
		return r, err
	}
	defer s3.stop()
	mnt, data := filepath.Join(root, "s3mnt"), filepath.Join(root, "s3data")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return r, err
	}
	w, err := startWalsync(bin, mnt, data, "s3://bench/x", syncInterval, extra, s3.env()...)
	if err != nil {
		return r, err
	}
	defer func() {
		if serr := w.stop(); serr != nil && err == nil {
			err = fmt.Errorf("walsync: %w%s", serr, w.logText())
		}
	}()

	names := make([]string, scaleStages[len(scaleStages)-1])
	dbs := make([]*sql.DB, len(names))
	defer func() {
		for _, db := range dbs {
			if db != nil {
				db.Close()
			}
		}
	}()
	n := 0
	for _, stage := range scaleStages {
		start := time.Now()
		for ; n < stage; n++ {
			if err := ctx.Err(); err != nil {
				return r, err
			}
			names[n] = fmt.Sprintf("t%04d/app.db", n)
			if err := os.MkdirAll(filepath.Join(mnt, filepath.Dir(names[n])), 0o755); err != nil {
				return r, err
			}
			if dbs[n], err = openDB(filepath.Join(mnt, names[n]), "NORMAL"); err != nil {
				return r, err
			}
			for _, q := range []string{`CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)`, `INSERT INTO t(v) VALUES(randomblob(100))`} {
				if _, err := dbs[n].Exec(q); err != nil {
					return r, fmt.Errorf("%s: %w", names[n], err)
				}
			}
		}
		// Idle: the batches of the new databases are shipped.
		if err := sleep(ctx, 3*syncInterval); err != nil {
			return r, err
		}
		m, err := readRSS(w.pid())
		if err != nil {
			return r, err
		}
		r.Idle = append(r.Idle, rssStage{DBs: stage, RSSMB: m.rss, PeakMB: m.peak, AnonMB: m.anon, FileMB: m.file})
		fmt.Fprintf(os.Stderr, "scale: %d databases idle (created in %v): RSS %.1f MB (anon %.1f, file %.1f), peak %.1f MB\n",
			stage, time.Since(start).Round(time.Millisecond), m.rss, m.anon, m.file, m.peak)
	}

	a, err := runActive(ctx, w.pid(), s3.log, names[:activeDBs], dbs[:activeDBs], *activeDuration)
	if err != nil {
		return r, err
	}
	a.DBs = n
	r.Active = a
	return r, nil
}

// runActive commits activeRate transactions per second on each of dbs for
// dur and measures commit-to-durable lag, PUTs and walsync's memory.
func runActive(ctx context.Context, pid int, log *putLog, names []string, dbs []*sql.DB, dur time.Duration) (activeResult, error) {
	r := activeResult{Active: len(dbs), RatePerDB: activeRate, DurationS: dur.Seconds(),
		LagTargetP99ms: float64(targetLag.Milliseconds()), RSSTargetMB: targetRSS}
	putsBefore := log.count()
	type commit struct {
		db   int
		txid ltx.TXID
		at   time.Time
	}
	var mu sync.Mutex
	var commits []commit
	var wg sync.WaitGroup
	errs := make(chan error, len(dbs))
	start := time.Now()
	for i := range dbs {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			txid := log.maxTXID(names[i])
			// Spread the databases over the first tick.
			if err := sleep(ctx, time.Duration(i)*time.Second/time.Duration(activeRate*len(dbs))); err != nil {
				return
			}
			tick := time.NewTicker(time.Second / time.Duration(activeRate))
			defer tick.Stop()
			for time.Since(start) < dur {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				if _, err := dbs[i].Exec("INSERT INTO t(v) VALUES(randomblob(100))"); err != nil {
					errs <- fmt.Errorf("%s: %w", names[i], err)
					return
				}
				txid++
				mu.Lock()
				commits = append(commits, commit{i, txid, time.Now()})
				mu.Unlock()
			}
		}(i)
	}
	// Sample walsync's memory while the databases are active.
	highest := sampleRSS(pid)
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		highest()
		return r, err
	}
	// Wait for the last batches.
	err := sleep(ctx, 3*syncInterval)
	hi := highest()
	r.RSSMB, r.AnonMB, r.FileMB = hi.rss, hi.anon, hi.file
	if err != nil {
		return r, err
	}
	m, err := readRSS(pid)
	if err != nil {
		return r, err
	}
	r.PeakMB = m.peak
	r.RSSPass = r.RSSMB <= targetRSS

	var lags []float64
	for _, c := range commits {
		at, ok := log.durableAt(names[c.db], c.txid)
		if !ok {
			return r, fmt.Errorf("TXID %d of %s never reached S3", c.txid, names[c.db])
		}
		lags = append(lags, float64(at.Sub(c.at).Milliseconds()))
	}
	if len(lags) == 0 {
		return r, fmt.Errorf("no transactions committed in %v", dur)
	}
	sort.Float64s(lags)
	puts := log.count() - putsBefore
	r.Transactions = len(commits)
	r.PUTs = puts
	r.PUTsPer1000Tx = float64(puts) / float64(len(commits)) * 1000
	r.PUTsPerSecond = float64(puts) / (elapsed + 3*syncInterval).Seconds()
	r.LagP50ms = lags[len(lags)/2]
	r.LagP99ms = lags[len(lags)*99/100]
	r.LagPass = r.LagP99ms <= r.LagTargetP99ms
	fmt.Fprintf(os.Stderr, "scale: %d active at %d tx/s: %d transactions, lag p50 %.0f ms p99 %.0f ms, RSS %.1f MB (anon %.1f, file %.1f)\n",
		len(dbs), activeRate, r.Transactions, r.LagP50ms, r.LagP99ms, r.RSSMB, r.AnonMB, r.FileMB)
	return r, nil
}

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

const (
	s3DBs  = 100 // active databases
	s3Rate = 20  // transactions per second per database
)

var (
	s3Duration *time.Duration
	restoreMB  *int
)

type s3Result struct {
	Transactions  int     `json:"transactions"`
	PUTs          int     `json:"puts"`
	PUTsPer1000Tx float64 `json:"puts_per_1000_tx"`
	PUTsPerSecond float64 `json:"puts_per_s"`
	LagP50ms      float64 `json:"lag_p50_ms"`
	LagP99ms      float64 `json:"lag_p99_ms"`
	TargetP99ms   float64 `json:"lag_p99_target_ms"`
	Pass          bool    `json:"pass"`
}

// putLog records every successful level-0 upload seen by the proxy.
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

// measureS3 runs 100 databases at 20 tx/s each against a local S3 server
// through a counting proxy, and reports PUTs and commit-to-durable lag.
func measureS3(ctx context.Context, bin, root string, dur time.Duration) (s3Result, error) {
	fmt.Fprintln(os.Stderr, "starting versitygw (built once into the user cache)")
	srv, err := s3test.Launch(filepath.Join(root, "s3"))
	if err != nil {
		return s3Result{}, err
	}
	defer srv.Stop()
	if err := srv.MakeBucket("bench"); err != nil {
		return s3Result{}, err
	}
	target, _ := url.Parse(srv.Endpoint)
	log := &putLog{l0: map[string][]upload{}}
	rp := httputil.NewSingleHostReverseProxy(target)
	director := rp.Director
	rp.Director = func(r *http.Request) { host := r.Host; director(r); r.Host = host }
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return s3Result{}, err
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, status: 200}
		rp.ServeHTTP(rec, r)
		log.record(r, rec.status)
	})}
	go hs.Serve(l)
	defer hs.Close()

	mnt, data := filepath.Join(root, "s3mnt"), filepath.Join(root, "s3data")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return s3Result{}, err
	}
	env := []string{"AWS_ACCESS_KEY_ID=" + srv.AccessKey, "AWS_SECRET_ACCESS_KEY=" + srv.SecretKey, "AWS_REGION=us-east-1", "AWS_ENDPOINT_URL_S3=http://" + l.Addr().String()}
	w, err := startWalsync(bin, mnt, data, "s3://bench/x", syncInterval, env...)
	if err != nil {
		return s3Result{}, err
	}
	defer w.stop()

	names := make([]string, s3DBs)
	dbs := make([]*sql.DB, s3DBs)
	defer func() {
		for _, db := range dbs {
			if db != nil {
				db.Close()
			}
		}
	}()
	for i := range dbs {
		names[i] = fmt.Sprintf("t%03d/app.db", i)
		os.MkdirAll(filepath.Join(mnt, filepath.Dir(names[i])), 0o755)
		if dbs[i], err = openDB(filepath.Join(mnt, names[i])); err != nil {
			return s3Result{}, err
		}
		if _, err := dbs[i].Exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)"); err != nil {
			return s3Result{}, err
		}
	}
	if err := sleep(ctx, 3*syncInterval); err != nil {
		return s3Result{}, err
	}
	log.mu.Lock()
	putsBefore := log.puts
	log.mu.Unlock()

	type commit struct {
		db   int
		txid ltx.TXID
		at   time.Time
	}
	var mu sync.Mutex
	var commits []commit
	var wg sync.WaitGroup
	errs := make(chan error, s3DBs)
	start := time.Now()
	for i := range dbs {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			txid := log.maxTXID(names[i])
			tick := time.NewTicker(time.Second / s3Rate)
			defer tick.Stop()
			for time.Since(start) < dur {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				if _, err := dbs[i].Exec("INSERT INTO t(v) VALUES(randomblob(100))"); err != nil {
					errs <- err
					return
				}
				txid++
				mu.Lock()
				commits = append(commits, commit{i, txid, time.Now()})
				mu.Unlock()
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return s3Result{}, err
	}
	elapsed := time.Since(start)
	// Wait for the last batches.
	if err := sleep(ctx, 3*syncInterval); err != nil {
		return s3Result{}, err
	}

	var lags []float64
	for _, c := range commits {
		at, ok := log.durableAt(names[c.db], c.txid)
		if !ok {
			return s3Result{}, fmt.Errorf("TXID %d of %s never reached S3", c.txid, names[c.db])
		}
		lags = append(lags, float64(at.Sub(c.at).Milliseconds()))
	}
	sort.Float64s(lags)
	log.mu.Lock()
	puts := log.puts - putsBefore
	log.mu.Unlock()
	r := s3Result{
		Transactions:  len(commits),
		PUTs:          puts,
		PUTsPer1000Tx: float64(puts) / float64(len(commits)) * 1000,
		PUTsPerSecond: float64(puts) / (elapsed + 3*syncInterval).Seconds(),
		LagP50ms:      lags[len(lags)/2],
		LagP99ms:      lags[len(lags)*99/100],
		TargetP99ms:   float64((syncInterval + 250*time.Millisecond).Milliseconds()),
	}
	r.Pass = r.LagP99ms <= r.TargetP99ms
	return r, nil
}

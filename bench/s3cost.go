package main

import (
	"context"
	"database/sql"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/walsync/walsync/internal/testtools"
)

// The s3cost scenario: the same load replicated by walsync and by Litestream
// 0.5.18, one after the other, each against its own local S3 server behind a
// proxy that classifies and counts every request.
var (
	costDBs           = 50 // WAL databases, synchronous=NORMAL
	costRate          = 10 // transactions per second per database
	costStartupTarget = 5.0
	costDuration      *time.Duration // the load (--s3cost-duration)
	costCompaction    *time.Duration // idle after the load (--s3cost-compaction)
)

// costBucket is the bucket of startCountingS3; the tools write under
// costBucket/<tool>/<db>/.
const costBucket = "bench"

type s3costResult struct {
	DBs             int        `json:"dbs"`
	RatePerDB       int        `json:"tx_per_s_per_db"`
	LoadS           float64    `json:"load_s"`
	CompactionS     float64    `json:"idle_after_load_s"`
	SyncIntervalS   float64    `json:"sync_interval_s"`
	Walsync         s3costSide `json:"walsync"`
	Litestream      s3costSide `json:"litestream"`
	LitestreamError string     `json:"litestream_error,omitempty"`
	// Targets, on the load + one compaction cycle.
	PUTPass     bool `json:"puts_pass"`     // walsync's PUT/1000 tx <= Litestream's
	AllPass     bool `json:"requests_pass"` // walsync's requests/1000 tx <= Litestream's
	StartupPass bool `json:"startup_pass"`  // walsync's startup requests per database <= 5
	BytesPass   bool `json:"bytes_pass"`    // walsync's replica bytes <= Litestream's
}

// s3costSide is one tool's figures.
type s3costSide struct {
	Transactions    int              `json:"transactions"` // committed by the load
	StartupRequests reqCounts        `json:"startup_requests"`
	StartupPerDB    float64          `json:"startup_requests_per_db"`
	StartupS        float64          `json:"startup_s"` // from start until the last database shipped
	StartupDetail   map[string]int   `json:"startup_by_class_and_folder"`
	Load            reqCounts        `json:"load"`                // load + last batch
	LoadCompaction  reqCounts        `json:"load_and_compaction"` // and the idle period after it
	LoadPer1000     reqRates         `json:"load_per_1000_tx"`
	LoadCompPer1000 reqRates         `json:"load_and_compaction_per_1000_tx"`
	Detail          map[string]int   `json:"load_and_compaction_by_class_and_folder"`
	ReplicaBytes    int64            `json:"replica_bytes"`
	ReplicaFolders  map[string]int64 `json:"replica_bytes_by_folder"`
	ReplicaObjects  map[string]int   `json:"replica_objects_by_folder"`
}

// reqCounts are requests by class: PUT (PutObject, and any UploadPart or
// CopyObject), GET (GetObject), LIST (a GET with list-type=2 or on the bucket
// itself), DELETE (DeleteObject, or DeleteObjects: POST ?delete, one request
// for many keys), HEAD (HeadObject, HeadBucket), Other (anything else, such
// as a multipart upload's POSTs). Errors counts the non-2xx answers among
// them (a HEAD of a missing object, say).
type reqCounts struct {
	PUT, GET, LIST, DELETE, HEAD, Other, All, Errors int
}

type reqRates struct {
	PUT, GET, LIST, DELETE, HEAD, Other, All float64
}

func (c reqCounts) sub(d reqCounts) reqCounts {
	return reqCounts{c.PUT - d.PUT, c.GET - d.GET, c.LIST - d.LIST, c.DELETE - d.DELETE, c.HEAD - d.HEAD, c.Other - d.Other, c.All - d.All, c.Errors - d.Errors}
}

func (c reqCounts) per1000(tx int) reqRates {
	f := func(n int) float64 { return float64(n) / float64(tx) * 1000 }
	return reqRates{f(c.PUT), f(c.GET), f(c.LIST), f(c.DELETE), f(c.HEAD), f(c.Other), f(c.All)}
}

// reqLog counts the requests one tool makes, and notes when each level-0
// upload of each database arrived.
type reqLog struct {
	mu     sync.Mutex
	counts reqCounts
	detail map[string]int         // "<class> <folder under the database>"
	l0     map[string][]time.Time // successful level-0 PUTs by database, arrival
}

func newReqLog() *reqLog {
	return &reqLog{detail: map[string]int{}, l0: map[string][]time.Time{}}
}

// classify names a request's class (see reqCounts) and the object key or,
// for a LIST, the prefix listed (path-style: /<bucket>/<key>).
func classify(r *http.Request) (class, key string) {
	q := r.URL.Query()
	key = strings.TrimPrefix(strings.TrimPrefix(r.URL.Path, "/"+costBucket), "/")
	switch {
	case r.Method == http.MethodGet && (q.Has("list-type") || key == ""):
		return "LIST", q.Get("prefix")
	case r.Method == http.MethodGet:
		return "GET", key
	case r.Method == http.MethodPut:
		return "PUT", key
	case r.Method == http.MethodDelete, r.Method == http.MethodPost && q.Has("delete"):
		return "DELETE", key
	case r.Method == http.MethodHead:
		return "HEAD", key
	}
	return "Other", key
}

// dbFolder splits <tool>/<db>/<folder>/... (an object, or a prefix ending
// in /) into the database and the folder under it (0000 ... 0009, txlog),
// either possibly empty.
func dbFolder(key string) (db, folder string) {
	parts := strings.Split(key, "/")
	if len(parts) > 1 {
		db = parts[1]
	}
	if len(parts) > 3 {
		folder = parts[2]
	}
	return db, folder
}

func (l *reqLog) observe(r *http.Request, status int, arrived time.Time) {
	class, key := classify(r)
	db, folder := dbFolder(key)
	l.mu.Lock()
	defer l.mu.Unlock()
	c := &l.counts
	c.All++
	if status/100 != 2 {
		c.Errors++
	}
	switch class {
	case "PUT":
		c.PUT++
	case "GET":
		c.GET++
	case "LIST":
		c.LIST++
	case "DELETE":
		c.DELETE++
	case "HEAD":
		c.HEAD++
	default:
		c.Other++
	}
	if folder == "" {
		folder = "-"
	}
	l.detail[class+" "+folder]++
	if class == "PUT" && folder == "0000" && status/100 == 2 {
		l.l0[db] = append(l.l0[db], arrived)
	}
}

func (l *reqLog) snapshot() (reqCounts, map[string]int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.counts, maps.Clone(l.detail)
}

// shippedSince reports whether a level-0 file of db arrived at or after t.
func (l *reqLog) shippedSince(db string, t time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, at := range l.l0[db] {
		if !at.Before(t) {
			return true
		}
	}
	return false
}

// costTool is how the scenario drives one tool: start it, the directory
// the databases it replicates are opened in once it runs, and stop it.
type costTool interface {
	start() error
	dbDir() string
	stop() error
}

// measureS3Cost runs the scenario for walsync, then for Litestream.
func measureS3Cost(ctx context.Context, bin, root string) (r s3costResult, err error) {
	r = s3costResult{DBs: costDBs, RatePerDB: costRate, LoadS: costDuration.Seconds(),
		CompactionS: costCompaction.Seconds(), SyncIntervalS: syncInterval.Seconds()}
	root = filepath.Join(root, "s3cost")

	log := newReqLog()
	s3w, err := startCountingS3(filepath.Join(root, "s3-walsync"), log.observe)
	if err != nil {
		return r, err
	}
	ws := &walsyncTool{bin: bin, mnt: filepath.Join(root, "mnt"), data: filepath.Join(root, "data"), env: s3w.env()}
	r.Walsync, err = costRun(ctx, "walsync", ws, s3w, log)
	s3w.stop()
	if err != nil {
		return r, fmt.Errorf("s3cost, walsync: %w", err)
	}
	r.StartupPass = r.Walsync.StartupPerDB <= costStartupTarget

	ls, err := testtools.Install(litestreamModule)
	if err != nil {
		return r, err
	}
	log = newReqLog()
	s3l, err := startCountingS3(filepath.Join(root, "s3-litestream"), log.observe)
	if err != nil {
		return r, err
	}
	defer s3l.stop()
	lt := &litestreamTool{bin: ls, dir: filepath.Join(root, "ls"), proxy: s3l.proxy,
		env: append(withoutEnv("AWS_CA_BUNDLE"), s3l.env()...)} // see measureRestore
	if r.Litestream, err = costRun(ctx, "litestream", lt, s3l, log); err != nil {
		r.LitestreamError = err.Error()
		fmt.Fprintln(os.Stderr, "s3cost, litestream:", err)
		return r, nil
	}
	w, l := r.Walsync, r.Litestream
	r.PUTPass = w.LoadCompPer1000.PUT <= l.LoadCompPer1000.PUT
	r.AllPass = w.LoadCompPer1000.All <= l.LoadCompPer1000.All
	r.BytesPass = w.ReplicaBytes <= l.ReplicaBytes
	return r, nil
}

// costRun measures one tool (its S3 prefix is name):
//
//  1. Setup, not counted: the databases are created with one table and one
//     transaction each and shipped by a first run of the tool, which stops.
//  2. Startup: counted from the moment the tool is started again until every
//     database has a level-0 file uploaded after a transaction committed on
//     it once the tool runs (one INSERT per database, in turn, as soon as the
//     tool is started: for walsync as soon as it has mounted). Everything the
//     tool sends in that window counts (bucket check, the listings of each
//     replica, the uploads), divided by the number of databases.
//  3. The load: costRate transactions per second on each database for
//     costDuration, counted from just before the first load transaction until
//     3 sync intervals after the last (its last batch), then on for
//     costCompaction with no writes (one level-1 compaction cycle at the
//     default 30 s of both tools) and the replica's objects summed.
func costRun(ctx context.Context, name string, tool costTool, s3 *countingS3, log *reqLog) (r s3costSide, err error) {
	names := make([]string, costDBs)
	for i := range names {
		names[i] = fmt.Sprintf("db%02d.db", i)
	}
	// 1. Setup.
	if err := tool.start(); err != nil {
		return r, err
	}
	for _, n := range names {
		db, err := openDB(filepath.Join(tool.dbDir(), n), "NORMAL")
		if err != nil {
			tool.stop()
			return r, err
		}
		for _, q := range []string{`CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)`, `INSERT INTO t(v) VALUES(randomblob(100))`} {
			if _, err = db.Exec(q); err != nil {
				break
			}
		}
		db.Close()
		if err != nil {
			tool.stop()
			return r, fmt.Errorf("%s: %w", n, err)
		}
	}
	if err := waitShipped(ctx, log, names, make([]time.Time, len(names))); err != nil {
		tool.stop()
		return r, fmt.Errorf("setup: %w", err)
	}
	if err := tool.stop(); err != nil {
		return r, fmt.Errorf("setup: %w", err)
	}

	// 2. Startup.
	before, detailBefore := log.snapshot()
	started := time.Now()
	if err := tool.start(); err != nil {
		return r, err
	}
	dbs := make([]*sql.DB, len(names))
	defer func() {
		for _, db := range dbs {
			if db != nil {
				db.Close()
			}
		}
		if serr := tool.stop(); serr != nil && err == nil {
			err = serr
		}
	}()
	committed := make([]time.Time, len(names))
	for i, n := range names {
		if dbs[i], err = openDB(filepath.Join(tool.dbDir(), n), "NORMAL"); err != nil {
			return r, err
		}
		if _, err := dbs[i].Exec(`INSERT INTO t(v) VALUES(randomblob(100))`); err != nil {
			return r, fmt.Errorf("%s: %w", n, err)
		}
		committed[i] = time.Now()
	}
	if err := waitShipped(ctx, log, names, committed); err != nil {
		return r, fmt.Errorf("startup: %w", err)
	}
	r.StartupS = time.Since(started).Seconds()
	after, detail := log.snapshot()
	r.StartupRequests = after.sub(before)
	r.StartupPerDB = float64(r.StartupRequests.All) / float64(len(names))
	r.StartupDetail = diffDetail(detail, detailBefore)
	fmt.Fprintf(os.Stderr, "s3cost %s: startup %d requests for %d databases in %.1f s %+v\n",
		name, r.StartupRequests.All, len(names), r.StartupS, r.StartupRequests)

	// 3. The load, its last batch, then one compaction cycle.
	before, detailBefore = log.snapshot()
	if r.Transactions, err = steadyLoad(ctx, dbs, names, costRate, *costDuration); err != nil {
		return r, err
	}
	if err := sleep(ctx, 3*syncInterval); err != nil {
		return r, err
	}
	after, _ = log.snapshot()
	r.Load = after.sub(before)
	if err := sleep(ctx, *costCompaction); err != nil {
		return r, err
	}
	after, detail = log.snapshot()
	r.LoadCompaction = after.sub(before)
	r.Detail = diffDetail(detail, detailBefore)
	r.LoadPer1000, r.LoadCompPer1000 = r.Load.per1000(r.Transactions), r.LoadCompaction.per1000(r.Transactions)
	r.ReplicaBytes, r.ReplicaFolders, r.ReplicaObjects, err = replicaSize(ctx, s3, name+"/")
	if err != nil {
		return r, err
	}
	fmt.Fprintf(os.Stderr, "s3cost %s: %d transactions; load %+v; with compaction %+v; replica %d bytes\n",
		name, r.Transactions, r.Load, r.LoadCompaction, r.ReplicaBytes)
	return r, nil
}

// diffDetail is the requests of after that are not in before.
func diffDetail(after, before map[string]int) map[string]int {
	d := map[string]int{}
	for k, v := range after {
		if n := v - before[k]; n > 0 {
			d[k] = n
		}
	}
	return d
}

// waitShipped waits until every database names[i] has a level-0 upload that
// arrived at or after since[i].
func waitShipped(ctx context.Context, log *reqLog, names []string, since []time.Time) error {
	deadline := time.Now().Add(60 * time.Second)
	for i := 0; i < len(names); {
		if log.shippedSince(names[i], since[i]) {
			i++
			continue
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: no level-0 upload after %v", names[i], since[i].Format(time.StampMilli))
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
	return nil
}

// steadyLoad commits rate transactions per second on each of dbs for dur,
// the databases spread over the first tick; it returns how many committed.
func steadyLoad(ctx context.Context, dbs []*sql.DB, names []string, rate int, dur time.Duration) (int, error) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	n := 0
	errs := make(chan error, len(dbs))
	start := time.Now()
	for i := range dbs {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if err := sleep(ctx, time.Duration(i)*time.Second/time.Duration(rate*len(dbs))); err != nil {
				errs <- err
				return
			}
			tick := time.NewTicker(time.Second / time.Duration(rate))
			defer tick.Stop()
			for time.Since(start) < dur {
				select {
				case <-ctx.Done():
					errs <- ctx.Err()
					return
				case <-tick.C:
				}
				if _, err := dbs[i].Exec(`INSERT INTO t(v) VALUES(randomblob(100))`); err != nil {
					errs <- fmt.Errorf("%s: %w", names[i], err)
					return
				}
				mu.Lock()
				n++
				mu.Unlock()
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	return n, <-errs
}

// replicaSize sums the objects under prefix, by the folder under each
// database (0000 ... 0009, txlog), listing the server directly (uncounted).
func replicaSize(ctx context.Context, s3c *countingS3, prefix string) (total int64, bytes map[string]int64, objects map[string]int, err error) {
	c, err := s3c.srv.NewClient()
	if err != nil {
		return 0, nil, nil, err
	}
	bytes, objects = map[string]int64{}, map[string]int{}
	p := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: aws.String(costBucket), Prefix: aws.String(prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return 0, nil, nil, err
		}
		for _, o := range page.Contents {
			_, folder := dbFolder(aws.ToString(o.Key))
			bytes[folder] += aws.ToInt64(o.Size)
			objects[folder]++
			total += aws.ToInt64(o.Size)
		}
	}
	return total, bytes, objects, nil
}

// walsyncTool is `walsync mount`, databases under the mount.
type walsyncTool struct {
	bin, mnt, data string
	env            []string
	w              *walsync
}

func (t *walsyncTool) start() (err error) {
	if err := os.MkdirAll(t.mnt, 0o755); err != nil {
		return err
	}
	t.w, err = startWalsync(t.bin, t.mnt, t.data, "s3://"+costBucket+"/walsync", syncInterval, nil, t.env...)
	return err
}

func (t *walsyncTool) dbDir() string { return t.mnt }

func (t *walsyncTool) stop() error {
	if t.w == nil {
		return nil
	}
	w := t.w
	t.w = nil
	err := w.stop()
	if p := w.problems(); len(p) > 0 {
		fmt.Fprintf(os.Stderr, "walsync logged %d warning/error lines:\n  %s\n", len(p), strings.Join(p, "\n  "))
	}
	if err != nil {
		return fmt.Errorf("walsync: %w%s", err, w.logText())
	}
	return nil
}

// litestreamTool is one `litestream replicate` for all the databases, on
// plain disk in dir, each to s3://bench/litestream/<name> through proxy,
// sync-interval 1s, everything else Litestream's defaults.
type litestreamTool struct {
	bin, dir, proxy string
	env             []string
	sc              *sidecar
}

func (t *litestreamTool) start() error {
	if err := os.MkdirAll(t.dir, 0o755); err != nil {
		return err
	}
	var cfg strings.Builder
	cfg.WriteString("dbs:\n")
	for i := range costDBs {
		fmt.Fprintf(&cfg, "  - path: %s\n    replica:\n      url: s3://%s/litestream/db%02d.db\n      endpoint: http://%s\n      force-path-style: true\n      region: us-east-1\n      sync-interval: %s\n",
			filepath.Join(t.dir, fmt.Sprintf("db%02d.db", i)), costBucket, i, t.proxy, syncInterval)
	}
	path := filepath.Join(t.dir, "litestream.yml")
	if err := os.WriteFile(path, []byte(cfg.String()), 0o644); err != nil {
		return err
	}
	sc, err := startSidecar("litestream", t.bin, []string{"replicate", "-config", path}, t.env)
	t.sc = sc
	return err
}

func (t *litestreamTool) dbDir() string { return t.dir }

func (t *litestreamTool) stop() error {
	if t.sc == nil {
		return nil
	}
	defer func() { t.sc = nil }()
	return t.sc.stop()
}

// reportS3Cost prints the scenario's table: walsync beside Litestream.
func reportS3Cost(r *s3costResult) {
	fmt.Printf("S3 requests, %d WAL databases at %d tx/s each for %.0f s, sync interval %.0f s, walsync beside Litestream 0.5.18\n",
		r.DBs, r.RatePerDB, r.LoadS, r.SyncIntervalS)
	fmt.Printf("(per 1,000 transactions: load + last batch, then with %.0f s idle after it, one level-1 compaction cycle)\n\n", r.CompactionS)
	if r.LitestreamError != "" {
		fmt.Printf("litestream failed: %s\n\n", r.LitestreamError)
	}
	w, l := r.Walsync, r.Litestream
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 3, ' ', 0)
	fmt.Fprintln(tw, "METRIC\tWALSYNC\tLITESTREAM\tRATIO\tTARGET\t")
	row := func(metric string, format string, wv, lv float64, target string) {
		ratio := ""
		if lv != 0 {
			ratio = fmt.Sprintf("%.2fx", wv/lv)
		}
		fmt.Fprintf(tw, "%s\t"+format+"\t"+format+"\t%s\t%s\t\n", metric, wv, lv, ratio, target)
	}
	for _, p := range []struct {
		name   string
		w, l   reqRates
		target bool
	}{{"load", w.LoadPer1000, l.LoadPer1000, false}, {"load + compaction", w.LoadCompPer1000, l.LoadCompPer1000, true}} {
		tgt := func(pass bool) string {
			if !p.target {
				return ""
			}
			return "<= litestream: " + verdict(pass)
		}
		row("PUT / 1000 tx, "+p.name, "%.1f", p.w.PUT, p.l.PUT, tgt(r.PUTPass))
		row("GET / 1000 tx, "+p.name, "%.1f", p.w.GET, p.l.GET, "")
		row("LIST / 1000 tx, "+p.name, "%.1f", p.w.LIST, p.l.LIST, "")
		row("DELETE / 1000 tx, "+p.name, "%.1f", p.w.DELETE, p.l.DELETE, "")
		row("HEAD + other / 1000 tx, "+p.name, "%.1f", p.w.HEAD+p.w.Other, p.l.HEAD+p.l.Other, "")
		row("all requests / 1000 tx, "+p.name, "%.1f", p.w.All, p.l.All, tgt(r.AllPass))
	}
	row("startup requests per database", "%.1f", w.StartupPerDB, l.StartupPerDB, fmt.Sprintf("<= %.0f: %s", costStartupTarget, verdict(r.StartupPass)))
	row("replica MB", "%.2f", float64(w.ReplicaBytes)/1e6, float64(l.ReplicaBytes)/1e6, "<= litestream: "+verdict(r.BytesPass))
	var folders []string
	for f := range w.ReplicaFolders {
		folders = append(folders, f)
	}
	for f := range l.ReplicaFolders {
		if !slices.Contains(folders, f) {
			folders = append(folders, f)
		}
	}
	slices.Sort(folders)
	for _, f := range folders {
		fmt.Fprintf(tw, "  replica MB in %s/ (objects)\t%.2f (%d)\t%.2f (%d)\t\t\t\n", f,
			float64(w.ReplicaFolders[f])/1e6, w.ReplicaObjects[f], float64(l.ReplicaFolders[f])/1e6, l.ReplicaObjects[f])
	}
	fmt.Fprintf(tw, "transactions (load)\t%d\t%d\t\t\t\n", w.Transactions, l.Transactions)
	tw.Flush()
	fmt.Println()
}

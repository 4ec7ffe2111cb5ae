package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/walsync/walsync/internal/s3test"
	"github.com/walsync/walsync/restore"
	"github.com/walsync/walsync/storage"
	_ "github.com/walsync/walsync/storage/s3"
)

// faultProxy sits between walsync and the S3 server and injects failures.
type faultProxy struct {
	mode   atomic.Value // "", "chaos", "down"
	faults atomic.Int64
	proxy  *httputil.ReverseProxy
	srv    *http.Server
	addr   string
}

func startFaultProxy(t *testing.T, target string) *faultProxy {
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{}
	p.mode.Store("")
	p.proxy = httputil.NewSingleHostReverseProxy(u)
	director := p.proxy.Director
	p.proxy.Director = func(r *http.Request) {
		host := r.Host
		director(r)
		r.Host = host // keep the signed Host header
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = l.Addr().String()
	p.srv = &http.Server{Handler: p}
	go p.srv.Serve(l)
	t.Cleanup(func() { p.srv.Close() })
	return p
}

func (p *faultProxy) endpoint() string { return "http://" + p.addr }

func s3Error(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>injected</Message></Error>`, code)
}

func reset(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if conn, _, err := hj.Hijack(); err == nil {
			if tc, ok := conn.(*net.TCPConn); ok {
				_ = tc.SetLinger(0) // RST, not FIN
			}
			conn.Close()
		}
	}
}

func (p *faultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch p.mode.Load().(string) {
	case "down":
		p.faults.Add(1)
		reset(w)
		return
	case "chaos":
		switch rand.IntN(8) {
		case 0:
			p.faults.Add(1)
			s3Error(w, http.StatusServiceUnavailable, "SlowDown")
			return
		case 1:
			p.faults.Add(1)
			s3Error(w, http.StatusInternalServerError, "InternalError")
			return
		case 2:
			p.faults.Add(1)
			reset(w)
			return
		case 3:
			p.faults.Add(1)
			time.Sleep(2 * time.Second)
		}
	}
	p.proxy.ServeHTTP(w, r)
}

// restoreS3 restores one database from the S3 server itself (not the proxy).
func restoreS3(t *testing.T, srv *s3test.Server, bucketPrefix, db string) string {
	t.Helper()
	c, err := storage.OpenWith(context.Background(), "s3://"+bucketPrefix+"/"+db, storage.Options{Endpoint: srv.Endpoint})
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "r.db")
	if _, err := restore.Restore(context.Background(), c, "", out, restore.Options{}); err != nil {
		t.Fatalf("restore %s from S3: %v", db, err)
	}
	return out
}

func newS3Mount(t *testing.T, srv *s3test.Server, endpoint, url string, extra ...string) *mount {
	dir := t.TempDir()
	env := append(srv.Env(), "AWS_ENDPOINT_URL_S3="+endpoint)
	m := &mount{t: t, mnt: filepath.Join(dir, "mnt"), data: filepath.Join(dir, "data"), env: env, url: url, args: extra}
	if err := os.MkdirAll(m.mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	m.start()
	t.Cleanup(func() {
		if m.cmd != nil {
			m.stop()
		}
	})
	return m
}

// TestS3Faults writes through 503 SlowDown, 500, connection resets, 2 s
// stalls and a 30 s outage between walsync and S3: nothing is lost, walsync
// catches up by itself, and every database restores identical.
func TestS3Faults(t *testing.T) {
	srv := s3test.Start(t)
	srv.CreateBucket(t, "faults")
	srv.SetEnv(t)
	proxy := startFaultProxy(t, srv.Endpoint)
	m := newS3Mount(t, srv, proxy.endpoint(), "s3://faults/p", "--retry-max-backoff", "2s")

	const dbs = 6
	write := func(round, n int) {
		var wg sync.WaitGroup
		for i := 0; i < dbs; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				mode := []string{"WAL", "DELETE"}[i%2]
				db := openDB(t, m.path(fmt.Sprintf("db%d.db", i)), "journal_mode="+mode)
				mustExec(t, db, "CREATE TABLE IF NOT EXISTS t(round INTEGER, j INTEGER, b BLOB)")
				for j := 0; j < n; j++ {
					mustExec(t, db, "INSERT INTO t VALUES(?, ?, randomblob(200))", round, j)
					time.Sleep(5 * time.Millisecond)
				}
				db.Close()
			}(i)
		}
		wg.Wait()
	}

	proxy.mode.Store("chaos")
	write(1, 60)
	time.Sleep(2 * time.Second)
	proxy.mode.Store("down")
	outageEnd := time.Now().Add(30 * time.Second)
	write(2, 40)
	time.Sleep(time.Until(outageEnd))
	proxy.mode.Store("")
	m.waitShipped()

	if proxy.faults.Load() == 0 {
		t.Fatal("no fault was injected")
	}
	log := m.log.String()
	if !strings.Contains(log, "upload failed") || !strings.Contains(log, "upload recovered") {
		t.Fatalf("failures and recovery not logged:\n%s", log)
	}
	for i := 0; i < dbs; i++ {
		rel := fmt.Sprintf("db%d.db", i)
		want := contentHash(t, openDB(t, m.path(rel)))
		if got := checkRestored(t, restoreS3(t, srv, "faults/p", rel)); got != want {
			t.Fatalf("%s: restore from S3 after faults differs from the source", rel)
		}
	}
}

// TestS3RestartWithPendingStaging kills walsync while its batch window holds
// transactions, restarts it, and checks that the pending work reaches S3 once.
func TestS3RestartWithPendingStaging(t *testing.T) {
	srv := s3test.Start(t)
	srv.CreateBucket(t, "pending")
	srv.SetEnv(t)
	m := newS3Mount(t, srv, srv.Endpoint, "s3://pending/p", "--sync-interval", "1h")
	rel := "p.db"
	shell(t, m.path(rel), "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES(1); INSERT INTO t VALUES(2);")
	want := shell(t, m.path(rel), ".dump")
	if m.stagedBytes() == 0 {
		t.Fatal("nothing staged")
	}
	m.kill9()
	m.args = nil
	m.start()
	m.waitShipped()
	if got := shell(t, restoreS3(t, srv, "pending/p", rel), ".dump"); got != want {
		t.Fatalf("restore after restart differs:\n%s\nwant\n%s", got, want)
	}
	c, err := storage.OpenWith(context.Background(), "s3://pending/p/"+rel, storage.Options{Endpoint: srv.Endpoint})
	if err != nil {
		t.Fatal(err)
	}
	l0, err := c.LTXFiles(context.Background(), "", 0)
	if err != nil {
		t.Fatal(err)
	}
	var next uint64 = 1
	for _, fi := range l0 {
		if uint64(fi.MinTXID) != next {
			t.Fatalf("level 0 is not one contiguous, non-overlapping chain: %v", l0)
		}
		next = uint64(fi.MaxTXID) + 1
	}
	if next != 5 {
		t.Fatalf("level 0 ends at TXID %d, want 4", next-1)
	}
}

// TestS3UnreachableAtStartup: a replica that does not answer at startup
// (nothing listens at the endpoint) does not keep the mount from starting:
// walsync warns naming the endpoint and the bucket, the application uses its
// databases, and everything ships once the server is up.
func TestS3UnreachableAtStartup(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	dir := t.TempDir()
	env := []string{"AWS_ACCESS_KEY_ID=walsynctest", "AWS_SECRET_ACCESS_KEY=walsynctestsecret", "AWS_REGION=us-east-1"}
	m := &mount{t: t, mnt: filepath.Join(dir, "mnt"), data: filepath.Join(dir, "data"), env: env, url: "s3://late/p",
		args: []string{"--s3-endpoint", "http://" + addr, "--retry-max-backoff", "1s"}}
	if err := os.MkdirAll(m.mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	m.start()
	t.Cleanup(func() {
		if m.cmd != nil {
			m.stop()
		}
	})
	if log := m.log.String(); !strings.Contains(log, "does not answer") || !strings.Contains(log, addr) || !strings.Contains(log, `\"late\"`) {
		t.Fatalf("no warning naming the endpoint and the bucket:\n%s", log)
	}
	shell(t, m.path("a.db"), "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES(1);")
	shell(t, m.path("b.db"), "CREATE TABLE t(x); INSERT INTO t VALUES(1);")

	srv, err := s3test.LaunchAt(t.TempDir(), addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	srv.SetEnv(t)
	srv.CreateBucket(t, "late")
	// The position is read again at the next write after the backoff.
	deadline := time.Now().Add(30 * time.Second)
	for strings.Count(m.log.String(), "capturing again") < 2 && time.Now().Before(deadline) {
		shell(t, m.path("a.db"), "INSERT INTO t VALUES(2);")
		shell(t, m.path("b.db"), "INSERT INTO t VALUES(2);")
		time.Sleep(500 * time.Millisecond)
	}
	m.waitShipped()
	for _, rel := range []string{"a.db", "b.db"} {
		want := shell(t, m.path(rel), ".dump")
		if got := shell(t, restoreS3(t, srv, "late/p", rel), ".dump"); got != want {
			t.Fatalf("%s restored after the late start differs:\n%s\nwant\n%s", rel, got, want)
		}
	}
}

// TestReplicaPositionUnreadableAtFirstOpen: a database walsync's staging does
// not know (staging lost, a new machine) is first opened while the replica,
// which holds its history, cannot be read. walsync must not start a new
// history at TXID 1 (the replica would refuse it forever): it waits for the
// position, then ships the database's state as the next transaction.
func TestReplicaPositionUnreadableAtFirstOpen(t *testing.T) {
	srv := s3test.Start(t)
	srv.CreateBucket(t, "hist")
	srv.SetEnv(t)
	proxy := startFaultProxy(t, srv.Endpoint)
	m := newS3Mount(t, srv, proxy.endpoint(), "s3://hist/p", "--retry-max-backoff", "1s")
	rel := "app.db"
	shell(t, m.path(rel), "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES(1); INSERT INTO t VALUES(2);")
	m.waitShipped()
	m.stop()
	if err := os.RemoveAll(filepath.Join(m.data, ".walsync")); err != nil {
		t.Fatal(err)
	}
	proxy.mode.Store("down")
	m.start()
	shell(t, m.path(rel), "INSERT INTO t VALUES(3);")
	proxy.mode.Store("")
	deadline := time.Now().Add(30 * time.Second)
	for i := 4; !strings.Contains(m.log.String(), "capturing again") && time.Now().Before(deadline); i++ {
		shell(t, m.path(rel), fmt.Sprintf("INSERT INTO t VALUES(%d);", i))
		time.Sleep(300 * time.Millisecond)
	}
	m.waitShipped()
	want := shell(t, m.path(rel), ".dump")
	if got := shell(t, restoreS3(t, srv, "hist/p", rel), ".dump"); got != want {
		t.Fatalf("restore after the position could not be read differs:\n%s\nwant\n%s\nlog:\n%s", got, want, m.log)
	}
	if log := m.log.String(); strings.Contains(log, "different history") {
		t.Fatalf("walsync started a second history:\n%s", log)
	}
}

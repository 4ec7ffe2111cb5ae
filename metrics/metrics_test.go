package metrics_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/superfly/ltx"
	"github.com/walsync/walsync/metrics"
	"github.com/walsync/walsync/shipper"
	"github.com/walsync/walsync/storage"
	_ "github.com/walsync/walsync/storage/file" // registers file://
)

// scrape reads m's registry through its handler, in the text format.
func scrape(t *testing.T, m *metrics.Metrics) map[string]*dto.MetricFamily {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", rec.Code, rec.Body)
	}
	return parse(t, rec.Body)
}

func parse(t *testing.T, r io.Reader) map[string]*dto.MetricFamily {
	t.Helper()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(r)
	if err != nil {
		t.Fatalf("parse the scrape: %v", err)
	}
	return fams
}

// sample is the value of the series of family name whose labels are
// exactly labels (a histogram's sample count), and whether it exists.
func sample(fams map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	fam, ok := fams[name]
	if !ok {
		return 0, false
	}
next:
	for _, m := range fam.GetMetric() {
		if len(m.GetLabel()) != len(labels) {
			continue
		}
		for _, lp := range m.GetLabel() {
			if v, ok := labels[lp.GetName()]; !ok || v != lp.GetValue() {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		case m.Untyped != nil:
			return m.GetUntyped().GetValue(), true
		}
	}
	return 0, false
}

// value is sample's value, 0 when the series does not exist (a counter
// vector exports no series for labels never used).
func value(fams map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	v, _ := sample(fams, name, labels)
	return v
}

func openFile(t *testing.T) storage.Client {
	t.Helper()
	c, err := storage.Open("file://" + t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// flaky is a real backend whose requests fail with err while it is set
// (fault injection), and with the context's error once it is done.
type flaky struct {
	storage.Client
	mu  sync.Mutex
	err error
}

func (f *flaky) fail(err error) {
	f.mu.Lock()
	f.err = err
	f.mu.Unlock()
}

func (f *flaky) failure(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

func (f *flaky) LTXFiles(ctx context.Context, db string, level int) ([]*ltx.FileInfo, error) {
	if err := f.failure(ctx); err != nil {
		return nil, err
	}
	return f.Client.LTXFiles(ctx, db, level)
}

func (f *flaky) OpenLTXFile(ctx context.Context, db string, level int, minTXID, maxTXID ltx.TXID) (io.ReadCloser, error) {
	if err := f.failure(ctx); err != nil {
		return nil, err
	}
	return f.Client.OpenLTXFile(ctx, db, level, minTXID, maxTXID)
}

func (f *flaky) WriteLTXFile(ctx context.Context, db string, level int, minTXID, maxTXID ltx.TXID, r io.ReadSeeker, ts time.Time) error {
	if err := f.failure(ctx); err != nil {
		return err
	}
	return f.Client.WriteLTXFile(ctx, db, level, minTXID, maxTXID, r, ts)
}

func (f *flaky) DeleteLTXFiles(ctx context.Context, db string, files []*ltx.FileInfo) error {
	if err := f.failure(ctx); err != nil {
		return err
	}
	return f.Client.DeleteLTXFiles(ctx, db, files)
}

// fakeShipper returns fixed state.
type fakeShipper struct {
	stats       shipper.Stats
	status      []shipper.DBStatus
	mu          sync.Mutex
	statusCalls int
}

func (s *fakeShipper) Stats() shipper.Stats { return s.stats }

func (s *fakeShipper) Status() []shipper.DBStatus {
	s.mu.Lock()
	s.statusCalls++
	s.mu.Unlock()
	return s.status
}

func get(t *testing.T, c *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// TestServe: the listener answers /metrics, /healthz and /readyz, and stop
// closes it.
func TestServe(t *testing.T) {
	m := metrics.New()
	c := m.Instrument(openFile(t))
	if _, err := c.LTXFiles(context.Background(), "a.db", 0); err != nil {
		t.Fatal(err)
	}
	alive := errors.New("mount gone")
	var mu sync.Mutex
	var aliveErr error
	h := &metrics.Health{
		Alive: func(context.Context) error {
			mu.Lock()
			defer mu.Unlock()
			return aliveErr
		},
		Replicas:   []metrics.Replica{{Client: c, Shipper: &fakeShipper{}}},
		ProbeAfter: time.Hour,
	}
	stop, addr, err := metrics.Serve("127.0.0.1:0", m, h)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			stop()
		}
	}()
	if host, port, err := net.SplitHostPort(addr); err != nil || host != "127.0.0.1" || port == "0" {
		t.Fatalf("bound address %q (%v): want 127.0.0.1 and the port chosen", addr, err)
	}
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	base := "http://" + addr

	code, body := get(t, hc, base+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d %s", code, body)
	}
	fams := parse(t, strings.NewReader(body))
	if v := value(fams, "walsync_replica_requests_total", map[string]string{"replica": c.URL(), "op": "list"}); v != 1 {
		t.Errorf("/metrics: walsync_replica_requests_total{op=list} = %v, want 1", v)
	}
	if _, ok := fams["go_goroutines"]; !ok {
		t.Errorf("/metrics has no Go runtime metrics (go_goroutines)")
	}

	if code, body := get(t, hc, base+"/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("/healthz: %d %q, want 200 \"ok\\n\"", code, body)
	}
	if code, body := get(t, hc, base+"/readyz"); code != http.StatusOK || body != "ready\n" {
		t.Errorf("/readyz: %d %q, want 200 \"ready\\n\"", code, body)
	}
	mu.Lock()
	aliveErr = alive
	mu.Unlock()
	if code, body := get(t, hc, base+"/healthz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "mount gone") {
		t.Errorf("/healthz with the mount gone: %d %q, want 503 naming the error", code, body)
	}
	if code, _ := get(t, hc, base+"/nothing"); code != http.StatusNotFound {
		t.Errorf("/nothing: %d, want 404", code)
	}

	stop()
	stopped = true
	if resp, err := hc.Get(base + "/healthz"); err == nil {
		resp.Body.Close()
		t.Fatalf("GET /healthz after stop answered %s", resp.Status)
	}
}

// TestServeAddressInUse: a port taken is an error naming the flag.
func TestServeAddressInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	stop, _, err := metrics.Serve(ln.Addr().String(), metrics.New(), &metrics.Health{})
	if err == nil {
		stop()
		t.Fatal("Serve on an address in use succeeded")
	}
	if !strings.Contains(err.Error(), "--metrics-addr "+ln.Addr().String()) {
		t.Errorf("error %q does not name --metrics-addr and the address", err)
	}
}

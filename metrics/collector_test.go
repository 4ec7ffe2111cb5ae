package metrics_test

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/walsync/walsync/metrics"
	"github.com/walsync/walsync/shipper"
)

var collectorNow = time.Date(2026, 3, 4, 12, 0, 0, 0, time.UTC)

func twoDatabases() *fakeShipper {
	return &fakeShipper{
		stats: shipper.Stats{
			Databases: 2, TransactionsStaged: 120, TransactionsShipped: 100, Resyncs: 3, FailedShipments: 4,
			StagedBytes: 65536, OldestUnshipped: collectorNow.Add(-90 * time.Second),
		},
		status: []shipper.DBStatus{
			{DB: "a.db", Captured: 50, Shipped: 40, OldestUnshipped: collectorNow.Add(-90 * time.Second)},
			{DB: "dir/b.db", Captured: 70, Shipped: 70},
		},
	}
}

// TestCollector: a scrape reads the shipper's counters and per-database
// state, with ages computed from Collector.Now.
func TestCollector(t *testing.T) {
	const url = "file:///backups"
	s := twoDatabases()
	m := metrics.New()
	if err := m.Register(&metrics.Collector{
		Shippers:      map[string]metrics.Shipper{url: s},
		CaptureErrors: func() uint64 { return 7 },
		PerDatabase:   true,
		Now:           func() time.Time { return collectorNow },
	}); err != nil {
		t.Fatal(err)
	}
	fams := scrape(t, m)
	rep := map[string]string{"replica": url}
	for _, w := range []struct {
		name   string
		labels map[string]string
		want   float64
		typ    dto.MetricType
	}{
		{"walsync_transactions_captured_total", rep, 120, dto.MetricType_COUNTER},
		{"walsync_transactions_shipped_total", rep, 100, dto.MetricType_COUNTER},
		{"walsync_resyncs_total", rep, 3, dto.MetricType_COUNTER},
		{"walsync_failed_shipments_total", rep, 4, dto.MetricType_COUNTER},
		{"walsync_staged_bytes", rep, 65536, dto.MetricType_GAUGE},
		{"walsync_databases", rep, 2, dto.MetricType_GAUGE},
		{"walsync_oldest_unshipped_seconds", rep, 90, dto.MetricType_GAUGE},
		{"walsync_capture_errors_total", map[string]string{}, 7, dto.MetricType_COUNTER},
		{"walsync_database_txid", map[string]string{"db": "a.db"}, 50, dto.MetricType_GAUGE},
		{"walsync_database_txid", map[string]string{"db": "dir/b.db"}, 70, dto.MetricType_GAUGE},
		{"walsync_database_shipped_txid", map[string]string{"db": "a.db", "replica": url}, 40, dto.MetricType_GAUGE},
		{"walsync_database_shipped_txid", map[string]string{"db": "dir/b.db", "replica": url}, 70, dto.MetricType_GAUGE},
		{"walsync_database_lag_seconds", map[string]string{"db": "a.db", "replica": url}, 90, dto.MetricType_GAUGE},
		{"walsync_database_lag_seconds", map[string]string{"db": "dir/b.db", "replica": url}, 0, dto.MetricType_GAUGE},
	} {
		v, ok := sample(fams, w.name, w.labels)
		if !ok {
			t.Errorf("no series %s%v", w.name, w.labels)
			continue
		}
		if v != w.want {
			t.Errorf("%s%v = %v, want %v", w.name, w.labels, v, w.want)
		}
		if typ := fams[w.name].GetType(); typ != w.typ {
			t.Errorf("%s is a %v, want a %v", w.name, typ, w.typ)
		}
	}
	for _, name := range []string{"walsync_database_txid", "walsync_database_shipped_txid", "walsync_database_lag_seconds"} {
		if n := len(fams[name].GetMetric()); n != 2 {
			t.Errorf("%s has %d series, want 2 (one per database)", name, n)
		}
	}
}

// TestCollectorNothingUnshipped: no unshipped transaction is an age of 0,
// not the age of the zero time.
func TestCollectorNothingUnshipped(t *testing.T) {
	s := &fakeShipper{stats: shipper.Stats{Databases: 1}, status: []shipper.DBStatus{{DB: "a.db", Captured: 5, Shipped: 5}}}
	m := metrics.New()
	if err := m.Register(&metrics.Collector{
		Shippers: map[string]metrics.Shipper{"file:///r": s}, PerDatabase: true,
		Now: func() time.Time { return collectorNow },
	}); err != nil {
		t.Fatal(err)
	}
	fams := scrape(t, m)
	if v, ok := sample(fams, "walsync_oldest_unshipped_seconds", map[string]string{"replica": "file:///r"}); !ok || v != 0 {
		t.Errorf("walsync_oldest_unshipped_seconds = %v (exists %v), want 0", v, ok)
	}
	if v, ok := sample(fams, "walsync_database_lag_seconds", map[string]string{"db": "a.db", "replica": "file:///r"}); !ok || v != 0 {
		t.Errorf("walsync_database_lag_seconds = %v (exists %v), want 0", v, ok)
	}
	if _, ok := fams["walsync_capture_errors_total"]; ok {
		t.Errorf("walsync_capture_errors_total exported without CaptureErrors")
	}
}

// TestCollectorWithoutPerDatabase: PerDatabase false exports no
// walsync_database_* series and does not even read the databases.
func TestCollectorWithoutPerDatabase(t *testing.T) {
	s := twoDatabases()
	m := metrics.New()
	if err := m.Register(&metrics.Collector{
		Shippers: map[string]metrics.Shipper{"file:///backups": s},
		Now:      func() time.Time { return collectorNow },
	}); err != nil {
		t.Fatal(err)
	}
	fams := scrape(t, m)
	for name := range fams {
		if strings.HasPrefix(name, "walsync_database_") {
			t.Errorf("series %s exported with PerDatabase false", name)
		}
	}
	if v := value(fams, "walsync_transactions_shipped_total", map[string]string{"replica": "file:///backups"}); v != 100 {
		t.Errorf("walsync_transactions_shipped_total = %v, want 100", v)
	}
	if v := value(fams, "walsync_oldest_unshipped_seconds", map[string]string{"replica": "file:///backups"}); v != 90 {
		t.Errorf("walsync_oldest_unshipped_seconds = %v, want 90", v)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.statusCalls != 0 {
		t.Errorf("Status() called %d times with PerDatabase false", s.statusCalls)
	}
}

// TestCollectorTwoReplicas: two replicas of the same databases give one
// walsync_database_txid per database and one shipped TXID per database
// and replica, consistently with the descriptions (a pedantic registry
// checks both).
func TestCollectorTwoReplicas(t *testing.T) {
	a, b := twoDatabases(), twoDatabases()
	b.status = []shipper.DBStatus{
		{DB: "a.db", Captured: 50, Shipped: 30, OldestUnshipped: collectorNow.Add(-10 * time.Minute)},
		{DB: "dir/b.db", Captured: 70, Shipped: 69, OldestUnshipped: collectorNow.Add(-time.Second)},
	}
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(&metrics.Collector{
		Shippers:    map[string]metrics.Shipper{"file:///one": a, "s3://two/p": b},
		PerDatabase: true,
		Now:         func() time.Time { return collectorNow },
	}); err != nil {
		t.Fatal(err)
	}
	got, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	fams := map[string]*dto.MetricFamily{}
	for _, f := range got {
		fams[f.GetName()] = f
	}
	if n := len(fams["walsync_database_txid"].GetMetric()); n != 2 {
		t.Errorf("walsync_database_txid has %d series, want 2", n)
	}
	if n := len(fams["walsync_database_shipped_txid"].GetMetric()); n != 4 {
		t.Errorf("walsync_database_shipped_txid has %d series, want 4", n)
	}
	for _, w := range []struct {
		name        string
		db, replica string
		want        float64
	}{
		{"walsync_database_shipped_txid", "a.db", "file:///one", 40},
		{"walsync_database_shipped_txid", "a.db", "s3://two/p", 30},
		{"walsync_database_shipped_txid", "dir/b.db", "s3://two/p", 69},
		{"walsync_database_lag_seconds", "a.db", "s3://two/p", 600},
		{"walsync_database_lag_seconds", "dir/b.db", "s3://two/p", 1},
		{"walsync_database_lag_seconds", "dir/b.db", "file:///one", 0},
	} {
		if v, ok := sample(fams, w.name, map[string]string{"db": w.db, "replica": w.replica}); !ok || v != w.want {
			t.Errorf("%s{db=%s,replica=%s} = %v (exists %v), want %v", w.name, w.db, w.replica, v, ok, w.want)
		}
	}
	if v := value(fams, "walsync_database_txid", map[string]string{"db": "a.db"}); v != 50 {
		t.Errorf("walsync_database_txid{db=a.db} = %v, want 50", v)
	}
	for _, rep := range []string{"file:///one", "s3://two/p"} {
		if v := value(fams, "walsync_transactions_captured_total", map[string]string{"replica": rep}); v != 120 {
			t.Errorf("walsync_transactions_captured_total{replica=%s} = %v, want 120", rep, v)
		}
	}
}

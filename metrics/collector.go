package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/walsync/walsync/shipper"
)

// Shipper is what the collector reads: one replica's shipper.
type Shipper interface {
	Stats() shipper.Stats
	Status() []shipper.DBStatus
}

// Collector reads the shippers' state at each scrape.
type Collector struct {
	// Shippers by replica URL.
	Shippers map[string]Shipper
	// CaptureErrors counts the front end's failed captures (nil: none).
	CaptureErrors func() uint64
	// PerDatabase adds the per-database series (TXIDs and lag); a fleet
	// of thousands of databases may leave them out.
	PerDatabase bool
	Now         func() time.Time
}

var (
	descStaged     = prometheus.NewDesc("walsync_transactions_captured_total", "Transactions captured and staged.", []string{"replica"}, nil)
	descShipped    = prometheus.NewDesc("walsync_transactions_shipped_total", "Transactions uploaded to a replica.", []string{"replica"}, nil)
	descResyncs    = prometheus.NewDesc("walsync_resyncs_total", "Databases whose staging disagreed with the replica and were captured anew.", []string{"replica"}, nil)
	descFailures   = prometheus.NewDesc("walsync_failed_shipments_total", "Shipments of a database that failed (each is retried).", []string{"replica"}, nil)
	descStagedB    = prometheus.NewDesc("walsync_staged_bytes", "Bytes of transactions in local staging waiting for upload.", []string{"replica"}, nil)
	descOldest     = prometheus.NewDesc("walsync_oldest_unshipped_seconds", "Age of the oldest transaction not yet on the replica (0: none).", []string{"replica"}, nil)
	descDatabases  = prometheus.NewDesc("walsync_databases", "Databases known to the process.", []string{"replica"}, nil)
	descCaptureErr = prometheus.NewDesc("walsync_capture_errors_total", "Captures that failed (the write was refused or retried at the next barrier).", nil, nil)
	descTXID       = prometheus.NewDesc("walsync_database_txid", "Last TXID captured of a database.", []string{"db"}, nil)
	descShippedTX  = prometheus.NewDesc("walsync_database_shipped_txid", "Last TXID of a database on a replica.", []string{"db", "replica"}, nil)
	descLag        = prometheus.NewDesc("walsync_database_lag_seconds", "Age of a database's oldest transaction not yet on a replica (0: none).", []string{"db", "replica"}, nil)
)

// Describe sends the descriptions.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descStaged, descShipped, descResyncs, descFailures, descStagedB, descOldest, descDatabases, descCaptureErr, descTXID, descShippedTX, descLag} {
		ch <- d
	}
}

// Collect reads the shippers.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	if c.Now != nil {
		now = c.Now()
	}
	if c.CaptureErrors != nil {
		ch <- prometheus.MustNewConstMetric(descCaptureErr, prometheus.CounterValue, float64(c.CaptureErrors()))
	}
	captured := map[string]bool{}
	for url, s := range c.Shippers {
		st := s.Stats()
		ch <- prometheus.MustNewConstMetric(descStaged, prometheus.CounterValue, float64(st.TransactionsStaged), url)
		ch <- prometheus.MustNewConstMetric(descShipped, prometheus.CounterValue, float64(st.TransactionsShipped), url)
		ch <- prometheus.MustNewConstMetric(descResyncs, prometheus.CounterValue, float64(st.Resyncs), url)
		ch <- prometheus.MustNewConstMetric(descFailures, prometheus.CounterValue, float64(st.FailedShipments), url)
		ch <- prometheus.MustNewConstMetric(descStagedB, prometheus.GaugeValue, float64(st.StagedBytes), url)
		ch <- prometheus.MustNewConstMetric(descDatabases, prometheus.GaugeValue, float64(st.Databases), url)
		var oldest float64
		if !st.OldestUnshipped.IsZero() {
			oldest = now.Sub(st.OldestUnshipped).Seconds()
		}
		ch <- prometheus.MustNewConstMetric(descOldest, prometheus.GaugeValue, oldest, url)
		if !c.PerDatabase {
			continue
		}
		for _, d := range s.Status() {
			if !captured[d.DB] {
				captured[d.DB] = true
				ch <- prometheus.MustNewConstMetric(descTXID, prometheus.GaugeValue, float64(d.Captured), d.DB)
			}
			ch <- prometheus.MustNewConstMetric(descShippedTX, prometheus.GaugeValue, float64(d.Shipped), d.DB, url)
			ch <- prometheus.MustNewConstMetric(descLag, prometheus.GaugeValue, d.Lag(now).Seconds(), d.DB, url)
		}
	}
}

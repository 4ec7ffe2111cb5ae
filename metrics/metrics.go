// Package metrics exports walsync's work to Prometheus and answers health
// checks: a storage.Client wrapper counts every request to a replica
// (client.go), a collector reads the shipper's state at each scrape
// (collector.go), and /healthz and /readyz say whether the process, its
// mount and its replicas answer (health.go). Nothing is counted per event
// that a scrape can read from the shipper instead.
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics is one process's registry and its replica request counters.
type Metrics struct {
	reg *prometheus.Registry

	ops      *prometheus.CounterVec
	errs     *prometheus.CounterVec
	bytes    *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// New returns a registry with the Go runtime's and the process's metrics
// and walsync's replica request metrics.
func New() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.ops = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "walsync_replica_requests_total", Help: "Requests to a replica, by operation (put, get, list, delete).",
	}, []string{"replica", "op"})
	m.errs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "walsync_replica_errors_total", Help: "Failed requests to a replica, by operation (a file not found is not a failure).",
	}, []string{"replica", "op"})
	m.bytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "walsync_replica_bytes_total", Help: "Bytes uploaded to (up) and downloaded from (down) a replica.",
	}, []string{"replica", "direction"})
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "walsync_replica_request_duration_seconds", Help: "Duration of requests to a replica, by operation.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"replica", "op"})
	m.reg.MustRegister(m.ops, m.errs, m.bytes, m.duration)
	return m
}

// Register adds a collector (the shipper's state, collector.go).
func (m *Metrics) Register(c prometheus.Collector) error { return m.reg.Register(c) }

// Handler serves the registry in Prometheus's text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

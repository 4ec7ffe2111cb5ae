package metrics

import (
	"fmt"
	"net"
	"net/http"
	"time"
)

// Serve listens on addr and serves /metrics, /healthz and /readyz until
// the listener is closed (the returned function).
func Serve(addr string, m *Metrics, h *Health) (stop func(), bound string, err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", fmt.Errorf("--metrics-addr %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", m.Handler())
	mux.HandleFunc("/healthz", h.Healthz)
	mux.HandleFunc("/readyz", h.Readyz)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln) //nolint:errcheck // ends with ErrServerClosed at stop
	return func() { _ = srv.Close() }, ln.Addr().String(), nil
}

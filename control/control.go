// Package control is the local socket through which `walsync status` and
// `walsync snapshot` talk to a running mount: HTTP with JSON bodies over a
// Unix socket inside the data directory's state directory, which only
// walsync's user can reach (the socket is 0600 in a 0700 directory).
package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// SocketName is the socket's name in the state directory.
const SocketName = "control.sock"

// Status is what a running mount reports.
type Status struct {
	Version    string     `json:"version"`
	PID        int        `json:"pid"`
	MountPoint string     `json:"mount_point"`
	Data       string     `json:"data"`
	Replicas   []string   `json:"replicas"`
	Databases  []DBStatus `json:"databases"`
}

// DBStatus is one database: captured locally, and per replica.
type DBStatus struct {
	DB          string       `json:"db"`
	TXID        uint64       `json:"txid"` // last captured
	StagedBytes int64        `json:"staged_bytes"`
	Replicas    []ReplicaPos `json:"replicas"`
}

// ReplicaPos is where one database stands on one replica.
type ReplicaPos struct {
	URL         string     `json:"url"`
	TXID        uint64     `json:"txid"`        // last on the replica
	LagSeconds  float64    `json:"lag_seconds"` // age of the oldest transaction not on it
	Failing     bool       `json:"failing"`     // its last upload failed
	LastError   string     `json:"last_error,omitempty"`
	LastErrorAt *time.Time `json:"last_error_at,omitempty"`
}

// Server answers on the socket.
type Server struct {
	Status   func() Status
	Snapshot func(ctx context.Context, db string) (txid uint64, err error)
}

// Listen serves on the socket at path until stop is called. A socket left
// by a process that is gone is replaced (the data directory's lock says
// no other walsync serves it).
func (s *Server) Listen(path string) (stop func(), err error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.Status())
	})
	mux.HandleFunc("POST /snapshot", func(w http.ResponseWriter, r *http.Request) {
		db := r.URL.Query().Get("db")
		txid, err := s.Snapshot(r.Context(), db)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"db": db, "txid": txid})
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln) //nolint:errcheck // ends with ErrServerClosed at stop
	return func() { _ = srv.Close(); _ = os.Remove(path) }, nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// client talks to the socket at path.
func client(path string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}
}

// ErrNotRunning: no walsync serves the socket.
var ErrNotRunning = errors.New("no walsync mount is running on this data directory")

func do(ctx context.Context, path, method, target string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, "http://walsync"+target, nil)
	if err != nil {
		return err
	}
	resp, err := client(path).Do(req)
	if err != nil {
		var ne *net.OpError
		if errors.As(err, &ne) && (errors.Is(err, os.ErrNotExist) || strings.Contains(err.Error(), "connection refused")) {
			return fmt.Errorf("%w (no answer on %s)", ErrNotRunning, path)
		}
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("%s %s: %s", method, target, resp.Status)
	}
	return json.Unmarshal(b, out)
}

// GetStatus asks the mount serving the socket at path for its status.
func GetStatus(ctx context.Context, path string) (Status, error) {
	var st Status
	err := do(ctx, path, http.MethodGet, "/status", &st)
	return st, err
}

// Snapshot asks the mount to write a snapshot of db now; it returns the
// snapshot's TXID.
func Snapshot(ctx context.Context, path, db string) (uint64, error) {
	var out struct {
		TXID uint64 `json:"txid"`
	}
	err := do(ctx, path, http.MethodPost, "/snapshot?db="+url.QueryEscape(db), &out)
	return out.TXID, err
}

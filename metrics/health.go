package metrics

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Health answers /healthz and /readyz.
type Health struct {
	// Alive checks that the process's own work answers (the mount); nil:
	// answering HTTP is enough.
	Alive func(ctx context.Context) error
	// Replicas are the instrumented replica clients with their shippers.
	Replicas []Replica
	// MaxLag: a database whose oldest unshipped transaction is older makes
	// the process unready (0: no bound).
	MaxLag time.Duration
	// ProbeAfter: a replica not asked anything for this long is probed
	// with a listing when /readyz is asked (default 10s); probes are
	// cached for ProbeAfter/2.
	ProbeAfter time.Duration

	mu     sync.Mutex
	probes map[*Client]probe
}

// Replica is one replica's client and shipper.
type Replica struct {
	Client  *Client
	Shipper Shipper
}

type probe struct {
	at  time.Time
	err error
}

// Healthz answers 200 while the process and its mount answer.
func (h *Health) Healthz(w http.ResponseWriter, r *http.Request) {
	if h.Alive != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		if err := h.Alive(ctx); err != nil {
			http.Error(w, "unhealthy: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
	}
	fmt.Fprintln(w, "ok")
}

// Readyz answers 200 when every replica answers and no database lags
// beyond MaxLag; otherwise 503 with the reasons, one per line.
func (h *Health) Readyz(w http.ResponseWriter, r *http.Request) {
	problems := h.Problems(r.Context())
	if len(problems) > 0 {
		http.Error(w, "not ready:\n"+strings.Join(problems, "\n"), http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ready")
}

// Problems lists what keeps the process from being ready.
func (h *Health) Problems(ctx context.Context) []string {
	var out []string
	now := time.Now()
	for _, rep := range h.Replicas {
		if err := h.reachable(ctx, rep.Client, now); err != nil {
			out = append(out, fmt.Sprintf("replica %s unreachable: %v", rep.Client.replica, err))
		}
		if h.MaxLag <= 0 {
			continue
		}
		if st := rep.Shipper.Stats(); !st.OldestUnshipped.IsZero() && now.Sub(st.OldestUnshipped) > h.MaxLag {
			for _, d := range rep.Shipper.Status() {
				if lag := d.Lag(now); lag > h.MaxLag {
					out = append(out, fmt.Sprintf("database %s lags %s behind on %s (bound %s)", d.DB, lag.Round(time.Second), rep.Client.replica, h.MaxLag))
				}
			}
		}
	}
	return out
}

// reachable is the replica's last answer, or a fresh probe when it was
// asked nothing for a while.
func (h *Health) reachable(ctx context.Context, c *Client, now time.Time) error {
	_, at, err := c.lastAnswer()
	after := h.ProbeAfter
	if after <= 0 {
		after = 10 * time.Second
	}
	if now.Sub(at) < after {
		return err // its last answer is recent enough: failed or not
	}
	h.mu.Lock()
	p, cached := h.probes[c]
	h.mu.Unlock()
	if cached && now.Sub(p.at) < after/2 {
		return p.err
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err = c.LTXFiles(pctx, ".walsync-probe", 0)
	if errors.Is(err, context.Canceled) {
		return err // the caller gave up: nothing learnt, nothing cached
	}
	h.mu.Lock()
	if h.probes == nil {
		h.probes = map[*Client]probe{}
	}
	h.probes[c] = probe{at: now, err: err}
	h.mu.Unlock()
	return err
}

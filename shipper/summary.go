package shipper

// The summary: one info line per interval with the databases active, the
// transactions shipped, the p99 of how long they waited in staging and the
// bytes staged, so the log tells the story at 1,000 databases without a line
// per upload.

import (
	"math/rand/v2"
	"slices"
	"sync"
	"time"
)

// maxLagSamples bounds the waits kept between two summaries (a uniform
// sample beyond it).
const maxLagSamples = 1024

type summary struct {
	mu    sync.Mutex
	waits []time.Duration
	seen  int
}

// record records one shipment and how long its oldest transaction waited.
func (m *summary) record(waited time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.seen++
	if len(m.waits) < maxLagSamples {
		m.waits = append(m.waits, waited)
	} else if i := rand.IntN(m.seen); i < maxLagSamples {
		m.waits[i] = waited
	}
}

// take returns the p99 wait since the last take and starts again.
func (m *summary) take() (p99 time.Duration, shipments int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	shipments = m.seen
	if len(m.waits) > 0 {
		slices.Sort(m.waits)
		p99 = m.waits[min((len(m.waits)*99)/100, len(m.waits)-1)]
	}
	m.waits, m.seen = m.waits[:0], 0
	return p99, shipments
}

func (s *Shipper) summaryLoop(every time.Duration) {
	defer s.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	var lastShipped uint64
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		active := 0
		for _, st := range s.allStages() {
			st.mu.Lock()
			if st.active {
				active++
				st.active = false
			}
			st.mu.Unlock()
		}
		st := s.Stats()
		p99, shipments := s.summary.take()
		shipped := st.TransactionsShipped - lastShipped
		lastShipped = st.TransactionsShipped
		if active == 0 && shipments == 0 && st.OldestUnshipped.IsZero() {
			continue // idle: nothing to tell
		}
		var behind time.Duration
		if !st.OldestUnshipped.IsZero() {
			behind = time.Since(st.OldestUnshipped).Round(time.Millisecond)
		}
		s.log.Info("summary", "replica", s.opts.Client.URL(), "databases", st.Databases, "active", active,
			"transactions_shipped", shipped, "uploads", shipments, "lag_p99", p99.Round(time.Millisecond),
			"staged_bytes", st.StagedBytes, "oldest_unshipped", behind)
	}
}

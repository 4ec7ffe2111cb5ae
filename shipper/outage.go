package shipper

// An outage of the replica is told once when it starts and once when it
// ends (with what waits to catch up), then once when everything staged
// during it is uploaded; the failed shipments in between, one per database
// and retry, are logged at debug level.

import (
	"sync"
	"time"
)

type outage struct {
	mu       sync.Mutex
	down     bool
	since    time.Time
	catching bool      // reachable again, staged work still uploading
	upAt     time.Time // when it answered again
}

// outageFailed records a failed shipment; it reports whether the outage
// was already known (the failure need not be logged on its own).
func (s *Shipper) outageFailed(err error) bool {
	o := &s.outage
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.down {
		return true
	}
	o.down, o.since, o.catching = true, time.Now(), false
	s.log.Warn("replica unreachable: uploads are retried, transactions stay staged until they succeed",
		"replica", s.opts.Client.URL(), "err", err)
	return false
}

// outageShipped records a successful shipment.
func (s *Shipper) outageShipped() {
	o := &s.outage
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.down {
		o.down, o.catching, o.upAt = false, true, time.Now()
		txs, dbs := s.Unshipped()
		if txs == 0 {
			o.catching = false
			s.log.Info("replica reachable again: caught up, everything staged is on the replica", "replica", s.opts.Client.URL(),
				"outage", time.Since(o.since).Round(time.Millisecond))
			return
		}
		s.log.Info("replica reachable again: catching up", "replica", s.opts.Client.URL(),
			"outage", time.Since(o.since).Round(time.Millisecond), "staged_transactions", txs, "databases", dbs)
		return
	}
	if o.catching {
		if txs, _ := s.Unshipped(); txs == 0 {
			o.catching = false
			s.log.Info("caught up after the outage: everything staged is on the replica", "replica", s.opts.Client.URL(),
				"outage", o.upAt.Sub(o.since).Round(time.Millisecond), "catch_up", time.Since(o.upAt).Round(time.Millisecond))
		}
	}
}

// Down reports whether the replica's last shipment failed, and since when.
func (s *Shipper) Down() (bool, time.Time) {
	s.outage.mu.Lock()
	defer s.outage.mu.Unlock()
	return s.outage.down, s.outage.since
}

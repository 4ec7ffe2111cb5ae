package main

// What a running mount offers its operators: the control socket (walsync
// status, walsync snapshot) and, with --metrics-addr, /metrics, /healthz and
// /readyz.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/superfly/ltx"
	"github.com/walsync/walsync/control"
	"github.com/walsync/walsync/fusefs"
	"github.com/walsync/walsync/metrics"
	"github.com/walsync/walsync/shipper"
	"github.com/walsync/walsync/storage"
	"golang.org/x/sys/unix"
)

type operations struct {
	ms                  mountSettings
	mountpoint, dataDir string
	metrics             *metrics.Metrics  // nil without --metrics-addr
	clients             []*metrics.Client // one per replica, in order
}

func newOperations(ms mountSettings, mountpoint, dataDir string) *operations {
	o := &operations{ms: ms, mountpoint: mountpoint, dataDir: dataDir}
	if ms.metricsAddr != "" {
		o.metrics = metrics.New()
	}
	return o
}

// instrument counts the replica's requests when metrics are served.
func (o *operations) instrument(c storage.Client) storage.Client {
	if o.metrics == nil {
		return c
	}
	ic := o.metrics.Instrument(c)
	o.clients = append(o.clients, ic)
	return ic
}

// start serves the control socket and the metrics endpoint.
func (o *operations) start(f *shipper.Fanout, wfs *fusefs.FS) (stop func(), err error) {
	srv := &control.Server{
		Status:   func() control.Status { return o.status(f) },
		Snapshot: func(ctx context.Context, db string) (uint64, error) { return o.snapshot(ctx, f, db) },
	}
	stopControl, err := srv.Listen(filepath.Join(o.dataDir, stateDir, control.SocketName))
	if err != nil {
		return nil, err
	}
	if o.metrics == nil {
		return stopControl, nil
	}
	collector := &metrics.Collector{Shippers: map[string]metrics.Shipper{}, CaptureErrors: wfs.CaptureErrors, PerDatabase: o.ms.metricsPerDB}
	health := &metrics.Health{Alive: o.mountAnswers, MaxLag: o.ms.readyMaxLag}
	for i, s := range f.Shippers() {
		collector.Shippers[s.Client().URL()] = s
		health.Replicas = append(health.Replicas, metrics.Replica{Client: o.clients[i], Shipper: s})
	}
	if err := o.metrics.Register(collector); err != nil {
		stopControl()
		return nil, err
	}
	stopMetrics, addr, err := metrics.Serve(o.ms.metricsAddr, o.metrics, health)
	if err != nil {
		stopControl()
		return nil, err
	}
	slog.Info("serving /metrics, /healthz and /readyz", "addr", addr)
	return func() { stopMetrics(); stopControl() }, nil
}

// mountAnswers asks the mount for its filesystem's statistics: a mount
// whose server hangs or died does not answer.
func (o *operations) mountAnswers(ctx context.Context) error {
	done := make(chan error, 1)
	go func() {
		var st unix.Statfs_t
		done <- unix.Statfs(o.mountpoint, &st)
	}()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("mount %s: %w", o.mountpoint, err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("mount %s does not answer", o.mountpoint)
	}
}

// snapshot writes a snapshot of db on every replica; it returns the TXID
// of the first one's.
func (o *operations) snapshot(ctx context.Context, f *shipper.Fanout, db string) (uint64, error) {
	var txid ltx.TXID
	for i, s := range f.Shippers() {
		t, err := s.SnapshotNow(ctx, db)
		if errors.Is(err, shipper.ErrUnknownDB) {
			return 0, fmt.Errorf("no database %q under the mount %s (walsync status --data %s lists them)", db, o.mountpoint, o.dataDir)
		} else if err != nil {
			return 0, fmt.Errorf("replica %s: %w", s.Client().URL(), err)
		}
		if i == 0 {
			txid = t
		}
	}
	return uint64(txid), nil
}

// status is what walsync status shows: per database, what was captured
// and, per replica, what is on it.
func (o *operations) status(f *shipper.Fanout) control.Status {
	out := control.Status{Version: version(), PID: os.Getpid(), MountPoint: o.mountpoint, Data: o.dataDir, Replicas: replicaURLs(f)}
	now := time.Now()
	byDB := map[string]*control.DBStatus{}
	var order []string
	for _, s := range f.Shippers() {
		url := s.Client().URL()
		for _, d := range s.Status() {
			db, ok := byDB[d.DB]
			if !ok {
				db = &control.DBStatus{DB: d.DB}
				byDB[d.DB] = db
				order = append(order, d.DB)
			}
			db.TXID = max(db.TXID, uint64(d.Captured))
			db.StagedBytes += s.StagedBytes(d.DB)
			rp := control.ReplicaPos{URL: url, TXID: uint64(d.Shipped), LagSeconds: d.Lag(now).Seconds(), Failing: d.Failing, LastError: d.LastError}
			if !d.LastErrorAt.IsZero() {
				t := d.LastErrorAt
				rp.LastErrorAt = &t
			}
			db.Replicas = append(db.Replicas, rp)
		}
	}
	slices.Sort(order)
	for _, name := range order {
		out.Databases = append(out.Databases, *byDB[name])
	}
	return out
}

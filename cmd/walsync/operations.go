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
	"time"

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
	metrics             *metrics.Metrics // nil without --metrics-addr
	client              *metrics.Client
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
	o.client = o.metrics.Instrument(c)
	return o.client
}

// start serves the control socket and the metrics endpoint.
func (o *operations) start(s *shipper.Shipper, wfs *fusefs.FS) (stop func(), err error) {
	srv := &control.Server{
		Status: func() control.Status { return o.status(s) },
		Snapshot: func(ctx context.Context, db string) (uint64, error) {
			txid, err := s.SnapshotNow(ctx, db)
			if errors.Is(err, shipper.ErrUnknownDB) {
				return 0, fmt.Errorf("no database %q under the mount %s (walsync status --data %s lists them)", db, o.mountpoint, o.dataDir)
			}
			return uint64(txid), err
		},
	}
	stopControl, err := srv.Listen(filepath.Join(o.dataDir, stateDir, control.SocketName))
	if err != nil {
		return nil, err
	}
	if o.metrics == nil {
		return stopControl, nil
	}
	if err := o.metrics.Register(&metrics.Collector{
		Shippers:      map[string]metrics.Shipper{o.client.URL(): s},
		CaptureErrors: wfs.CaptureErrors,
		PerDatabase:   o.ms.metricsPerDB,
	}); err != nil {
		stopControl()
		return nil, err
	}
	health := &metrics.Health{
		Alive:    o.mountAnswers,
		Replicas: []metrics.Replica{{Client: o.client, Shipper: s}},
		MaxLag:   o.ms.readyMaxLag,
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

// status is what walsync status shows.
func (o *operations) status(s *shipper.Shipper) control.Status {
	url := s.Client().URL()
	out := control.Status{Version: version(), PID: os.Getpid(), MountPoint: o.mountpoint, Data: o.dataDir, Replicas: []string{url}}
	now := time.Now()
	for _, d := range s.Status() {
		rp := control.ReplicaPos{URL: url, TXID: uint64(d.Shipped), LagSeconds: d.Lag(now).Seconds(), Failing: d.Failing, LastError: d.LastError}
		if !d.LastErrorAt.IsZero() {
			t := d.LastErrorAt
			rp.LastErrorAt = &t
		}
		out.Databases = append(out.Databases, control.DBStatus{DB: d.DB, TXID: uint64(d.Captured), StagedBytes: s.StagedBytes(d.DB), Replicas: []control.ReplicaPos{rp}})
	}
	return out
}

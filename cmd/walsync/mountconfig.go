package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"github.com/walsync/walsync/config"
	"github.com/walsync/walsync/shipper"
)

// applyConfig reads --config into ms; a flag given on the command line
// keeps its value.
func (ms *mountSettings) applyConfig(cmd *cobra.Command, file string) error {
	cfg, err := config.Load(file)
	if err != nil {
		return err
	}
	set := func(name string, apply func()) {
		if !cmd.Flags().Changed(name) && !cmd.Root().PersistentFlags().Changed(name) {
			apply()
		}
	}
	if ms.mountpoint == "" {
		ms.mountpoint = cfg.MountPoint
	}
	set("data", func() { ms.dataDir = or(cfg.Data, ms.dataDir) })
	set("replica", func() {
		ms.replicas = nil
		for _, r := range cfg.Replicas {
			// --s3-endpoint and --s3-region on the command line win.
			if cmd.Root().PersistentFlags().Changed("s3-endpoint") {
				r.Endpoint = ""
			}
			if cmd.Root().PersistentFlags().Changed("s3-region") {
				r.Region = ""
			}
			ms.replicas = append(ms.replicas, r)
		}
	})
	set("capture", func() { ms.captureMode = or(cfg.Capture, ms.captureMode) })
	set("owner-only", func() { ms.ownerOnly = ms.ownerOnly || cfg.OwnerOnly })
	set("exec", func() { ms.exec = or(cfg.Exec, ms.exec) })
	set("metrics-addr", func() { ms.metricsAddr = or(cfg.Metrics.Addr, ms.metricsAddr) })
	set("metrics-per-db", func() {
		if cfg.Metrics.PerDatabase != nil {
			ms.metricsPerDB = *cfg.Metrics.PerDatabase
		}
	})
	set("ready-max-lag", func() { ms.readyMaxLag = orD(cfg.Metrics.ReadyMaxLag, ms.readyMaxLag) })
	set("log-summary-interval", func() {
		if cfg.Log.SummaryInterval < 0 {
			ms.summaryInterval = 0
		} else {
			ms.summaryInterval = orD(cfg.Log.SummaryInterval, ms.summaryInterval)
		}
	})
	o, d := &ms.opts, cfg.Defaults
	set("sync-interval", func() { o.SyncInterval = orD(d.SyncInterval, o.SyncInterval) })
	set("snapshot-interval", func() { o.SnapshotInterval = orD(d.SnapshotInterval, o.SnapshotInterval) })
	set("retention", func() { o.Retention = orD(d.Retention, o.Retention) })
	set("l0-retention", func() { o.L0Retention = orD(d.L0Retention, o.L0Retention) })
	set("keep-hourly", func() { o.Keep.Hourly = orI(d.Keep.Hourly, o.Keep.Hourly) })
	set("keep-daily", func() { o.Keep.Daily = orI(d.Keep.Daily, o.Keep.Daily) })
	set("keep-weekly", func() { o.Keep.Weekly = orI(d.Keep.Weekly, o.Keep.Weekly) })
	set("keep-monthly", func() { o.Keep.Monthly = orI(d.Keep.Monthly, o.Keep.Monthly) })
	set("compaction-levels", func() {
		if len(d.CompactionLevels) > 0 {
			o.Levels = durations(d.CompactionLevels)
		}
	})
	set("shutdown-timeout", func() { ms.shutdownTimeout = orD(cfg.ShutdownTimeout, ms.shutdownTimeout) })
	set("upload-concurrency", func() {
		if cfg.Concurrency > 0 {
			o.Concurrency = cfg.Concurrency
		}
	})
	set("max-staging-mb", func() {
		if cfg.MaxStagingMB != nil {
			ms.maxStagingMB = *cfg.MaxStagingMB
		}
	})
	set("memory-limit-mb", func() {
		if cfg.MemoryLimitMB != nil {
			ms.memLimitMB = *cfg.MemoryLimitMB
		}
	})
	level, _ := cmd.Root().PersistentFlags().GetString("log-level")
	format, _ := cmd.Root().PersistentFlags().GetString("log-format")
	set("log-level", func() { level = or(cfg.Log.Level, level) })
	set("log-format", func() { format = or(cfg.Log.Format, format) })
	if err := setLogger(level, format); err != nil {
		return fmt.Errorf("config %s: %w", file, err)
	}
	o.ForDB = func(db string) shipper.DBOptions {
		s := cfg.Override(db)
		return shipper.DBOptions{SyncInterval: s.SyncInterval.D(), Levels: durations(s.CompactionLevels),
			SnapshotInterval: s.SnapshotInterval.D(), Retention: s.Retention.D(), L0Retention: s.L0Retention.D(),
			Keep: shipper.GFS(s.Keep)}
	}
	return nil
}

func orI(v, def int) int {
	if v != 0 {
		return v
	}
	return def
}

func or(v, def string) string {
	if v != "" {
		return v
	}
	return def
}

func orD(v config.Duration, def time.Duration) time.Duration {
	if v != 0 {
		return v.D()
	}
	return def
}

func durations(ds []config.Duration) []time.Duration {
	var out []time.Duration
	for _, d := range ds {
		out = append(out, d.D())
	}
	return out
}

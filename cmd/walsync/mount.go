package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"runtime/metrics"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/walsync/walsync/config"
	"github.com/walsync/walsync/fusefs"
	"github.com/walsync/walsync/shipper"
	"github.com/walsync/walsync/storage"
)

// stateDir is the directory inside --data that holds walsync's own state; it
// is hidden from the mount.
const stateDir = ".walsync"

// mountSettings are the mount's settings, from flags and --config.
type mountSettings struct {
	mountpoint, dataDir      string
	replicas                 []config.Replica
	ownerOnly                bool
	captureMode              string
	shutdownTimeout          time.Duration
	memLimitMB, maxStagingMB int64
	exec                     string
	metricsAddr              string
	metricsPerDB             bool
	readyMaxLag              time.Duration
	summaryInterval          time.Duration
	opts                     shipper.Options
}

func newMountCmd() *cobra.Command {
	var (
		ms          mountSettings
		configFile  string
		replicaURLs []string
	)
	cmd := &cobra.Command{
		Use:   "mount MOUNTPOINT --data DIR --replica URL | mount [MOUNTPOINT] --config FILE",
		Short: "Serve the databases in DIR at MOUNTPOINT and capture every transaction",
		Long: `Mount a FUSE filesystem at MOUNTPOINT whose files live in DIR. Every SQLite
database created or opened under MOUNTPOINT (in any subdirectory) is captured
at write time and shipped to URL, e.g. MOUNTPOINT/a/b.db to URL/a/b.db.
Runs in the foreground; SIGINT or SIGTERM flushes, unmounts and exits.

--config FILE reads the same settings from YAML (examples/walsync.yml), plus
settings of their own for the databases whose path matches a glob; flags
given on the command line override the file.

--exec CMD runs CMD (with /bin/sh -c) once the mount is up, with
WALSYNC_MOUNT set to the mount point; SIGINT and SIGTERM go to it, and when it
exits walsync flushes, unmounts and exits with its exit status.

--metrics-addr HOST:PORT serves /metrics (Prometheus), /healthz (the process
and its mount answer) and /readyz (the replica answers, no database lags
beyond --ready-max-lag). walsync status and walsync snapshot reach a running
mount through a socket in DIR/.walsync.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				ms.mountpoint = args[0]
			}
			for _, u := range replicaURLs {
				ms.replicas = append(ms.replicas, config.Replica{URL: u})
			}
			if configFile != "" {
				if err := ms.applyConfig(cmd, configFile); err != nil {
					return err
				}
			}
			switch {
			case ms.mountpoint == "":
				return errors.New("the mount point is missing: give it as the argument, or as mount-point in --config")
			case ms.dataDir == "":
				return errors.New("--data is missing (or data in --config)")
			case len(ms.replicas) == 0:
				return errors.New("--replica is missing (or replicas in --config)")
			case len(ms.replicas) > shipper.MaxReplicas:
				return fmt.Errorf("%d replicas: at most %d", len(ms.replicas), shipper.MaxReplicas)
			}
			if err := checkGFS(ms.opts.Keep); err != nil {
				return err
			}
			setMemoryLimit(cmd, ms.memLimitMB)
			trimAfterStartup()
			ms.opts.MaxStaging = ms.maxStagingMB << 20
			if ms.summaryInterval > 0 {
				ms.opts.SummaryInterval = ms.summaryInterval
			}
			return runMount(ms)
		},
	}
	f := cmd.Flags()
	f.StringVar(&configFile, "config", "", "YAML configuration file (see examples/walsync.yml); flags override it")
	f.StringVar(&ms.dataDir, "data", "", "directory holding the databases' files (required)")
	f.StringArrayVar(&replicaURLs, "replica", nil, "replica root URL, e.g. file:///var/backups/walsync (required; give it again for more replicas, each kept up to date on its own)")
	shipperFlags(cmd, &ms)
	f.BoolVar(&ms.ownerOnly, "owner-only", false, "only the user running walsync may use the mount (no allow_other); by default every user may, where the files' modes let them")
	f.StringVar(&ms.captureMode, "capture", "auto", "how -wal writes are captured: passthrough (the kernel writes -wal files directly; commits are captured at fsync, checkpoint, batch window end and close), write (every write passes through walsync; each commit is captured before its write returns), auto (passthrough where the kernel and privileges allow)")
	f.StringVar(&ms.exec, "exec", "", "run this command (with /bin/sh -c) once mounted; signals go to it, and walsync flushes and exits with its status when it exits")
	f.StringVar(&ms.metricsAddr, "metrics-addr", "", "serve /metrics, /healthz and /readyz on this address, e.g. 127.0.0.1:9090 (default: off)")
	f.BoolVar(&ms.metricsPerDB, "metrics-per-db", true, "per-database series in /metrics (TXIDs, lag); false for fleets of thousands of databases")
	f.DurationVar(&ms.readyMaxLag, "ready-max-lag", time.Minute, "/readyz fails while a database's oldest transaction not on the replica is older (0: no bound)")
	return cmd
}

// shipperFlags are the settings of the shipping side, shared by mount and
// watch.
func shipperFlags(cmd *cobra.Command, ms *mountSettings) {
	f := cmd.Flags()
	durationFlag(cmd, &ms.opts.SyncInterval, "sync-interval", time.Second, "batch window per database: transactions committed in it ship as one file")
	f.IntVar(&ms.opts.Concurrency, "upload-concurrency", 32, "uploads in flight across all databases")
	f.DurationSliceVar(&ms.opts.Levels, "compaction-levels", shipper.DefaultLevels, "compaction interval of levels 1, 2, ... (each merges the level below)")
	durationFlag(cmd, &ms.opts.SnapshotInterval, "snapshot-interval", 24*time.Hour, "how often a full snapshot (level 9) is written")
	durationFlag(cmd, &ms.opts.Retention, "retention", 24*time.Hour, "how long every transaction stays restorable; older files are deleted")
	durationFlag(cmd, &ms.shutdownTimeout, "shutdown-timeout", 30*time.Second, "how long SIGINT/SIGTERM waits for staged transactions to upload; what is left stays staged and the exit status is 1")
	gfsFlags(cmd, &ms.opts.Keep)
	f.DurationVar(&ms.opts.L0Retention, "l0-retention", shipper.DefaultL0Retention, "how long a level-0 file stays once level 1 and the transaction logs hold what it does (negative: until --retention)")
	f.Int64Var(&ms.maxStagingMB, "max-staging-mb", 1024, "bound of the local staging in MiB; past it staged batches are merged (0: unbounded)")
	durationFlag(cmd, &ms.opts.MaxBackoff, "retry-max-backoff", 30*time.Second, "longest wait between retries of a failed upload (exponential backoff with jitter)")
	f.Int64Var(&ms.memLimitMB, "memory-limit-mb", 24, "soft limit of the Go heap and runtime in MiB: the garbage collector works harder near it, it never fails an operation (0: none; GOMEMLIMIT, if set, wins over the default)")
	f.DurationVar(&ms.summaryInterval, "log-summary-interval", time.Minute, "how often an info line sums up the work (databases active, transactions shipped, lag p99, staged bytes); 0: never")
}

// setMemoryLimit applies --memory-limit-mb. One process serves many
// databases and its work is bursts of short-lived buffers (uploads, LTX
// encoding): without a limit the heap grows to twice its live size between
// collections and freed memory returns to the OS slowly. The limit is a
// floor: every 5 s it is raised to twice the live heap plus 8 MiB when that
// is more, so a process whose live heap outgrows it (many more databases)
// collects as often as Go's default would, never continuously.
func setMemoryLimit(cmd *cobra.Command, mb int64) {
	if os.Getenv("GOMEMLIMIT") != "" && !cmd.Flags().Changed("memory-limit-mb") {
		return
	}
	if mb <= 0 {
		return
	}
	floor := mb << 20
	debug.SetMemoryLimit(floor)
	go func() {
		sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
		for range time.Tick(5 * time.Second) {
			metrics.Read(sample)
			if sample[0].Value.Kind() != metrics.KindUint64 {
				return
			}
			debug.SetMemoryLimit(memoryLimit(floor, sample[0].Value.Uint64()))
		}
	}()
}

// memoryLimit is the soft memory limit for a live heap of live bytes.
func memoryLimit(floor int64, live uint64) int64 {
	return max(floor, 2*int64(live)+8<<20)
}

func runMount(ms mountSettings) error {
	if err := checkFUSEAccess(); err != nil {
		return err
	}
	// From the start: a signal while walsync starts is not the default
	// death; it stops after the mount is up, flushing.
	sig := handleSignals()
	defer sig.cancel()
	slog.Info("starting", "version", version(), "mountpoint", ms.mountpoint)
	capture, err := fusefs.ParseCapture(ms.captureMode)
	if err != nil {
		return fmt.Errorf("--capture: %w", err)
	}
	mountpoint, err := filepath.Abs(ms.mountpoint)
	if err != nil {
		return err
	}
	if err := checkMountpoint(mountpoint); err != nil {
		return err
	}
	dataDir, err := filepath.Abs(ms.dataDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return fmt.Errorf("--data %s: %w", dataDir, err)
	}
	if dataDir == mountpoint || strings.HasPrefix(dataDir, mountpoint+"/") {
		return fmt.Errorf("--data %s must not be inside the mount point %s", dataDir, mountpoint)
	}
	state := filepath.Join(dataDir, stateDir)
	if err := shipper.PrivateDir(state); err != nil {
		return fmt.Errorf("--data %s: %w", dataDir, err)
	}
	lock, err := lockDataDir(state)
	if err != nil {
		return err
	}
	defer lock.Close()
	ops := newOperations(ms, mountpoint, dataDir)
	stager, err := openShippers(ms, state, ops)
	if err != nil {
		return err
	}
	opts := ms.opts
	wfs, err := fusefs.New(fusefs.Options{DataDir: dataDir, HiddenDir: stateDir, Stager: stager, OwnerOnly: ms.ownerOnly,
		Capture: capture, Window: opts.SyncInterval,
		// A test knob: commits wait for a barrier, as when walsync is killed
		// before it captured them.
		BarriersOnly: os.Getenv("WALSYNC_TEST_BARRIERS_ONLY") != ""})
	if err != nil {
		_ = stager.Close(context.Background())
		return err
	}
	server, err := wfs.Mount(mountpoint)
	if err != nil {
		_ = stager.Close(context.Background())
		return fmt.Errorf("mount %s: %w", mountpoint, err)
	}
	slog.Info("mounted", "mountpoint", mountpoint, "data", dataDir, "replicas", replicaURLs(stager), "sync_interval", opts.SyncInterval)
	stopOps, err := ops.start(stager, wfs)
	if err != nil {
		unmount(server, mountpoint)
		_ = stager.Close(context.Background())
		return err
	}
	defer stopOps()

	go func() { server.Wait(); sig.cancel() }()
	var child *child
	if ms.exec != "" {
		if child, err = startChild(ms.exec, mountpoint, sig); err != nil {
			unmount(server, mountpoint)
			_ = stager.Close(context.Background())
			return err
		}
	}
	<-sig.ctx.Done()

	unmount(server, mountpoint)
	txs, dbs := stager.Unshipped()
	slog.Info("unmounted; uploading what is staged", "mountpoint", mountpoint, "timeout", ms.shutdownTimeout,
		"staged_transactions", txs, "databases", dbs)
	flushCtx, cancelFlush := context.WithTimeout(context.Background(), ms.shutdownTimeout)
	defer cancelFlush()
	stopProgress := flushProgress(stager, 5*time.Second)
	var flushErr error
	err = stager.Close(flushCtx)
	stopProgress()
	if err != nil {
		// An exit status that tells: systemd and scripts see the backup
		// is behind.
		flushErr = fmt.Errorf("%s; they stay staged in %s and ship at the next start: %w", leftStaged(stager), state, err)
	} else {
		slog.Info("flushed and unmounted", "mountpoint", mountpoint)
	}
	if child != nil {
		return child.exitStatus(flushErr)
	}
	return flushErr
}

// openShippers opens each replica and its shipper (its own staging
// directory under state) behind one Fanout.
func openShippers(ms mountSettings, state string, ops *operations) (*shipper.Fanout, error) {
	urls := make([]string, len(ms.replicas))
	for i, r := range ms.replicas {
		urls[i] = strings.TrimSuffix(r.URL, "/")
	}
	dirs := stagingDirs(state, urls)
	var shippers []*shipper.Shipper
	fail := func(err error) (*shipper.Fanout, error) {
		for _, s := range shippers {
			_ = s.Close(context.Background())
		}
		return nil, err
	}
	for i, r := range ms.replicas {
		if slices.Contains(urls[:i], urls[i]) {
			return fail(fmt.Errorf("replica %s is given twice", urls[i]))
		}
		o := backendOpts
		o.Endpoint, o.Region = or(r.Endpoint, o.Endpoint), or(r.Region, o.Region)
		if r.SSE != "" || r.SSEKMSKeyID != "" || r.SSECKeyFile != "" {
			// The replica's own encryption replaces the flags'.
			key, err := readSSECKey(r.SSECKeyFile, "")
			if err != nil {
				return fail(fmt.Errorf("replica %s: %w", urls[i], err))
			}
			o.SSE, o.SSEKMSKeyID, o.SSECustomerKey = r.SSE, r.SSEKMSKeyID, key
		}
		client, err := openReplicaWith(context.Background(), urls[i], o, true)
		if err != nil {
			return fail(err)
		}
		if w, ok := client.(interface{ CheckWritable(context.Context) error }); ok {
			if err := w.CheckWritable(context.Background()); errors.Is(err, storage.ErrUnavailable) {
				slog.Warn("the replica cannot be written now; starting anyway, work is staged and retried until it can", "replica", client.URL(), "err", err)
			} else if err != nil {
				return fail(fmt.Errorf("--replica: %w", err))
			}
		}
		opts := ms.opts
		opts.Dir, opts.Client = filepath.Join(state, dirs[i]), ops.instrument(client)
		s, err := shipper.New(opts)
		if err != nil {
			return fail(fmt.Errorf("staging %s: %w", opts.Dir, err))
		}
		shippers = append(shippers, s)
	}
	f, err := shipper.NewFanout(shippers, slog.Default())
	if err != nil {
		return fail(err)
	}
	return f, nil
}

// stagingDirs names each replica's staging directory under state. The one
// named "staging" stays with the replica it was made for (the only one of
// earlier versions); the others are named after a hash of their URL, so a
// reordered list keeps each staging with its replica. A "staging" made for a
// replica no longer listed goes to the first one (which sets it aside).
func stagingDirs(state string, urls []string) []string {
	b, _ := os.ReadFile(filepath.Join(state, "staging", "replica"))
	bound := strings.TrimSpace(string(b))
	dirs := make([]string, len(urls))
	i := slices.Index(urls, bound)
	if i < 0 {
		i = 0
	}
	for j, u := range urls {
		if j == i {
			dirs[j] = "staging"
		} else {
			sum := sha256.Sum256([]byte(u))
			dirs[j] = "staging-" + hex.EncodeToString(sum[:6])
		}
	}
	return dirs
}

func replicaURLs(f *shipper.Fanout) []string {
	var urls []string
	for _, s := range f.Shippers() {
		urls = append(urls, s.Client().URL())
	}
	return urls
}

// leftStaged says, per replica, what stays staged.
func leftStaged(f *shipper.Fanout) string {
	var parts []string
	for _, s := range f.Shippers() {
		if txs, dbs := s.Unshipped(); txs > 0 {
			parts = append(parts, fmt.Sprintf("%d transactions not on the replica %s (databases: %d)", txs, s.Client().URL(), dbs))
		}
	}
	if len(parts) == 0 {
		return "stopped before every upload was done"
	}
	return "stopped with " + strings.Join(parts, ", ")
}

// flushProgress logs what is left to upload every interval until stopped.
func flushProgress(s *shipper.Fanout, every time.Duration) (stop func()) {
	done := make(chan struct{})
	start := time.Now()
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				txs, dbs := s.Unshipped()
				slog.Info("still uploading what is staged", "staged_transactions", txs, "databases", dbs,
					"elapsed", time.Since(start).Round(time.Second))
			}
		}
	}()
	return func() { close(done) }
}

type unmounter interface{ Unmount() error }

// unmount retries while the mount is busy, then detaches it lazily.
func unmount(server unmounter, mountpoint string) {
	for i := 0; i < 20; i++ {
		err := server.Unmount()
		if err == nil {
			return
		}
		if i == 0 {
			slog.Warn("mount busy; retrying unmount", "mountpoint", mountpoint, "err", err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	if err := syscall.Unmount(mountpoint, syscall.MNT_DETACH); err != nil {
		slog.Error("unmount failed", "mountpoint", mountpoint, "err", err)
	}
}

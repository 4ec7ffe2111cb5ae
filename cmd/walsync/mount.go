package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"runtime/metrics"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/walsync/walsync/config"
	"github.com/walsync/walsync/fusefs"
	"github.com/walsync/walsync/shipper"
	"github.com/walsync/walsync/storage"
	"golang.org/x/sys/unix"
)

// stateDir is the directory inside --data that holds walsync's own state; it
// is hidden from the mount.
const stateDir = ".walsync"

func newMountCmd() *cobra.Command {
	var (
		dataDir         string
		replicaURL      string
		syncInterval    time.Duration
		concurrency     int
		maxBackoff      time.Duration
		levels          []time.Duration
		snapshotIvl     time.Duration
		retention       time.Duration
		l0Retention     time.Duration
		shutdownTimeout time.Duration
		maxStagingMB    int64
		memLimitMB      int64
		ownerOnly       bool
		captureMode     string
		configFile      string
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
given on the command line override the file.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			mountpoint := ""
			if len(args) == 1 {
				mountpoint = args[0]
			}
			var forDB func(string) shipper.DBOptions
			if configFile != "" {
				cfg, err := config.Load(configFile)
				if err != nil {
					return err
				}
				set := func(name string, apply func()) {
					if !cmd.Flags().Changed(name) && !cmd.Root().PersistentFlags().Changed(name) {
						apply()
					}
				}
				if mountpoint == "" {
					mountpoint = cfg.MountPoint
				}
				set("data", func() { dataDir = or(cfg.Data, dataDir) })
				if len(cfg.Replicas) == 1 {
					r := cfg.Replicas[0]
					set("replica", func() { replicaURL = or(r.URL, replicaURL) })
					set("s3-endpoint", func() { backendOpts.Endpoint = or(r.Endpoint, backendOpts.Endpoint) })
					set("s3-region", func() { backendOpts.Region = or(r.Region, backendOpts.Region) })
				}
				set("capture", func() { captureMode = or(cfg.Capture, captureMode) })
				set("owner-only", func() { ownerOnly = ownerOnly || cfg.OwnerOnly })
				d := cfg.Defaults
				set("sync-interval", func() { syncInterval = orD(d.SyncInterval, syncInterval) })
				set("snapshot-interval", func() { snapshotIvl = orD(d.SnapshotInterval, snapshotIvl) })
				set("retention", func() { retention = orD(d.Retention, retention) })
				set("l0-retention", func() { l0Retention = orD(d.L0Retention, l0Retention) })
				set("compaction-levels", func() {
					if len(d.CompactionLevels) > 0 {
						levels = durations(d.CompactionLevels)
					}
				})
				set("shutdown-timeout", func() { shutdownTimeout = orD(cfg.ShutdownTimeout, shutdownTimeout) })
				set("upload-concurrency", func() {
					if cfg.Concurrency > 0 {
						concurrency = cfg.Concurrency
					}
				})
				set("max-staging-mb", func() {
					if cfg.MaxStagingMB != nil {
						maxStagingMB = *cfg.MaxStagingMB
					}
				})
				set("memory-limit-mb", func() {
					if cfg.MemoryLimitMB != nil {
						memLimitMB = *cfg.MemoryLimitMB
					}
				})
				level, _ := cmd.Root().PersistentFlags().GetString("log-level")
				format, _ := cmd.Root().PersistentFlags().GetString("log-format")
				set("log-level", func() { level = or(cfg.Log.Level, level) })
				set("log-format", func() { format = or(cfg.Log.Format, format) })
				if err := setLogger(level, format); err != nil {
					return fmt.Errorf("config %s: %w", configFile, err)
				}
				forDB = func(db string) shipper.DBOptions {
					o := cfg.Override(db)
					return shipper.DBOptions{SyncInterval: o.SyncInterval.D(), Levels: durations(o.CompactionLevels),
						SnapshotInterval: o.SnapshotInterval.D(), Retention: o.Retention.D(), L0Retention: o.L0Retention.D()}
				}
			}
			switch {
			case mountpoint == "":
				return errors.New("the mount point is missing: give it as the argument, or as mount-point in --config")
			case dataDir == "":
				return errors.New("--data is missing (or data in --config)")
			case replicaURL == "":
				return errors.New("--replica is missing (or replicas in --config)")
			}
			setMemoryLimit(cmd, memLimitMB)
			capture, err := fusefs.ParseCapture(captureMode)
			if err != nil {
				return fmt.Errorf("--capture: %w", err)
			}
			return runMount(mountpoint, dataDir, replicaURL, ownerOnly, capture, shutdownTimeout, shipper.Options{
				SyncInterval: syncInterval, Concurrency: concurrency, MaxBackoff: maxBackoff,
				Levels: levels, SnapshotInterval: snapshotIvl, Retention: retention, L0Retention: l0Retention,
				MaxStaging: maxStagingMB << 20, ForDB: forDB,
			})
		},
	}
	cmd.Flags().StringVar(&configFile, "config", "", "YAML configuration file (see examples/walsync.yml); flags override it")
	cmd.Flags().StringVar(&dataDir, "data", "", "directory holding the databases' files (required)")
	cmd.Flags().StringVar(&replicaURL, "replica", "", "replica root URL, e.g. file:///var/backups/walsync (required)")
	durationFlag(cmd, &syncInterval, "sync-interval", time.Second, "batch window per database: transactions committed in it ship as one file")
	cmd.Flags().IntVar(&concurrency, "upload-concurrency", 32, "uploads in flight across all databases")
	cmd.Flags().DurationSliceVar(&levels, "compaction-levels", shipper.DefaultLevels, "compaction interval of levels 1, 2, ... (each merges the level below)")
	durationFlag(cmd, &snapshotIvl, "snapshot-interval", 24*time.Hour, "how often a full snapshot (level 9) is written")
	durationFlag(cmd, &retention, "retention", 24*time.Hour, "how long every transaction stays restorable; older files are deleted")
	durationFlag(cmd, &shutdownTimeout, "shutdown-timeout", 30*time.Second, "how long SIGINT/SIGTERM waits for staged transactions to upload; what is left stays staged and the exit status is 1")
	cmd.Flags().DurationVar(&l0Retention, "l0-retention", shipper.DefaultL0Retention, "how long a level-0 file stays once level 1 and the transaction logs hold what it does (negative: until --retention)")
	cmd.Flags().Int64Var(&maxStagingMB, "max-staging-mb", 1024, "bound of the local staging in MiB; past it staged batches are merged (0: unbounded)")
	durationFlag(cmd, &maxBackoff, "retry-max-backoff", 30*time.Second, "longest wait between retries of a failed upload (exponential backoff with jitter)")
	cmd.Flags().Int64Var(&memLimitMB, "memory-limit-mb", 24, "soft limit of the Go heap and runtime in MiB: the garbage collector works harder near it, it never fails an operation (0: none; GOMEMLIMIT, if set, wins over the default)")
	cmd.Flags().BoolVar(&ownerOnly, "owner-only", false, "only the user running walsync may use the mount (no allow_other); by default every user may, where the files' modes let them")
	cmd.Flags().StringVar(&captureMode, "capture", "auto", "how -wal writes are captured: passthrough (the kernel writes -wal files directly; commits are captured at fsync, checkpoint, batch window end and close), write (every write passes through walsync; each commit is captured before its write returns), auto (passthrough where the kernel and privileges allow)")
	return cmd
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

func runMount(mountpoint, dataDir, replicaURL string, ownerOnly bool, capture fusefs.Capture, shutdownTimeout time.Duration, opts shipper.Options) error {
	if err := checkFUSEAccess(); err != nil {
		return err
	}
	// From the start: a signal while walsync starts is not the default
	// death; it stops after the mount is up, flushing.
	ctx, cancel := signalContext()
	defer cancel()
	slog.Info("starting", "version", version(), "mountpoint", mountpoint)
	mountpoint, err := filepath.Abs(mountpoint)
	if err != nil {
		return err
	}
	if err := checkMountpoint(mountpoint); err != nil {
		return err
	}
	dataDir, err = filepath.Abs(dataDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return fmt.Errorf("--data %s: %w", dataDir, err)
	}
	if dataDir == mountpoint || strings.HasPrefix(dataDir, mountpoint+"/") {
		return fmt.Errorf("--data %s must not be inside the mount point %s", dataDir, mountpoint)
	}
	if err := shipper.PrivateDir(filepath.Join(dataDir, stateDir)); err != nil {
		return fmt.Errorf("--data %s: %w", dataDir, err)
	}
	lock, err := lockDataDir(filepath.Join(dataDir, stateDir))
	if err != nil {
		return err
	}
	defer lock.Close()
	client, err := openService(context.Background(), replicaURL)
	if err != nil {
		return err
	}
	if w, ok := client.(interface{ CheckWritable(context.Context) error }); ok {
		if err := w.CheckWritable(context.Background()); errors.Is(err, storage.ErrUnavailable) {
			slog.Warn("the replica cannot be written now; starting anyway, work is staged and retried until it can", "replica", client.URL(), "err", err)
		} else if err != nil {
			return fmt.Errorf("--replica: %w", err)
		}
	}
	opts.Dir, opts.Client = filepath.Join(dataDir, stateDir, "staging"), client
	stager, err := shipper.New(opts)
	if err != nil {
		return fmt.Errorf("--data %s: %w", dataDir, err)
	}
	wfs, err := fusefs.New(fusefs.Options{DataDir: dataDir, HiddenDir: stateDir, Stager: stager, OwnerOnly: ownerOnly,
		Capture: capture, Window: opts.SyncInterval,
		// A test knob: commits wait for a barrier, as when walsync is killed
		// before it captured them.
		BarriersOnly: os.Getenv("WALSYNC_TEST_BARRIERS_ONLY") != ""})
	if err != nil {
		return err
	}
	server, err := wfs.Mount(mountpoint)
	if err != nil {
		_ = stager.Close(context.Background())
		return fmt.Errorf("mount %s: %w", mountpoint, err)
	}
	slog.Info("mounted", "mountpoint", mountpoint, "data", dataDir, "replica", client.URL(), "sync_interval", opts.SyncInterval)

	go func() { server.Wait(); cancel() }()
	<-ctx.Done()

	unmount(server, mountpoint)
	slog.Info("unmounted; uploading what is staged", "mountpoint", mountpoint, "timeout", shutdownTimeout)
	flushCtx, cancelFlush := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancelFlush()
	if err := stager.Close(flushCtx); err != nil {
		// An exit status that tells: systemd and scripts see the backup
		// is behind.
		txs, dbs := stager.Unshipped()
		return fmt.Errorf("stopped with %d transactions not on the replica %s (databases: %d); they stay staged in %s and ship at the next start: %w",
			txs, client.URL(), dbs, opts.Dir, err)
	}
	slog.Info("flushed and unmounted", "mountpoint", mountpoint)
	return nil
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

func checkMountpoint(mp string) error {
	if err := cleanDeadMount(mp); err != nil {
		return err
	}
	fi, err := os.Stat(mp)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("mount point %s does not exist: create it with mkdir -p %s", mp, mp)
	} else if err != nil {
		return fmt.Errorf("mount point %s: %w", mp, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("mount point %s is not a directory", mp)
	}
	if fstype, err := mountType(mp); err == nil && fstype != "" {
		return fmt.Errorf("mount point %s is already mounted (%s): unmount it first (umount %s)", mp, fstype, mp)
	}
	return nil
}

// cleanDeadMount unmounts a walsync mount at mp whose process is gone (it
// was killed): the kernel answers ENOTCONN to anything that reaches it.
func cleanDeadMount(mp string) error {
	fstype, err := mountType(mp)
	if err != nil || !strings.HasPrefix(fstype, "fuse") {
		return nil
	}
	var st unix.Statfs_t
	if err := unix.Statfs(mp, &st); !errors.Is(err, syscall.ENOTCONN) {
		return nil // alive (or not FUSE's to judge): checked as any mount
	}
	if fstype != "fuse.walsync" {
		return fmt.Errorf("mount point %s holds a dead FUSE mount (%s) of another program: unmount it first (umount -l %s)", mp, fstype, mp)
	}
	if err := syscall.Unmount(mp, syscall.MNT_DETACH); err != nil {
		return fmt.Errorf("mount point %s holds a dead walsync mount (walsync was killed) that cannot be unmounted: %w (try umount -l %s)", mp, err, mp)
	}
	slog.Warn("a dead walsync mount, left by a walsync that was killed, was unmounted", "mountpoint", mp)
	return nil
}

// mountType returns the filesystem type of the topmost mount at mp ("" when
// nothing is mounted there).
func mountType(mp string) (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	var fstype string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && unescapeMount(fields[4]) == mp {
			// After the optional fields, "-" then the type.
			for i := 5; i+1 < len(fields); i++ {
				if fields[i] == "-" {
					fstype = fields[i+1]
					break
				}
			}
		}
	}
	return fstype, sc.Err()
}

func unescapeMount(s string) string {
	return strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(s)
}

package main

// walsync watch: the sidecar for databases that stay where they are.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/walsync/walsync/config"
	"github.com/walsync/walsync/shipper"
	"github.com/walsync/walsync/watch"
)

func newWatchCmd() *cobra.Command {
	var (
		ms          mountSettings
		replicaURLs []string
		dirs        []string
		names       []string
		pattern     string
		recursive   bool
		state       string
		interval    time.Duration
		checkpoint  string
	)
	cmd := &cobra.Command{
		Use:   "watch [DB...] [--dir DIR] --replica URL",
		Short: "Back up databases where they are, following their files from outside (no mount)",
		Long: `Follow SQLite databases where they are and ship every committed transaction
of those in WAL mode (a database in a rollback-journal mode ships whole when
it changes). Nothing is written into the databases: no table, no pragma, no
checkpoint. A database given as a path replicates to URL/<its base name>
(--name gives another, once per database); one found under --dir replicates
to URL/<its path under DIR>; databases created there later are picked up.

While it reads a WAL, walsync holds a SQLite reader's lock on the -shm for
that read only (milliseconds): meanwhile the application's writers append to
the WAL instead of restarting it, and a RESTART or TRUNCATE checkpoint waits.
What it could not follow (the WAL restarted or truncated between two reads,
the database changed while walsync was stopped) is proven again from the
database file, or the whole database ships as the next transaction.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 && len(dirs) == 0 {
				return errors.New("give the databases to watch (paths) or --dir DIR")
			}
			if err := checkGFS(ms.opts.Keep); err != nil {
				return err
			}
			for _, u := range replicaURLs {
				ms.replicas = append(ms.replicas, config.Replica{URL: u})
			}
			if len(ms.replicas) == 0 {
				return errors.New("--replica (or -b) is missing: where the databases are backed up, e.g. s3://bucket/prefix")
			}
			setMemoryLimit(cmd, ms.memLimitMB)
			trimAfterStartup()
			ms.opts.MaxStaging = ms.maxStagingMB << 20
			ms.opts.SummaryInterval = ms.summaryInterval
			explicit, err := watch.Names(args, names)
			if err != nil {
				return err
			}
			if state == "" {
				state = defaultWatchState()
			}
			opts := watch.Options{Interval: interval}
			if checkpoint != "" {
				if opts.CheckpointSize, err = parseSize(checkpoint); err != nil || opts.CheckpointSize <= 0 {
					return fmt.Errorf("--checkpoint %q: give a WAL size such as 4MiB, 64MB or 1000000 (bytes)", checkpoint)
				}
				opts.Checkpoint = checkpointPassive
			}
			return runWatch(ms, state, explicit, dirs, pattern, recursive, opts)
		},
	}
	f := cmd.Flags()
	f.StringArrayVarP(&replicaURLs, "replica", "b", nil, "replica root URL (required; again for more replicas)")
	f.StringArrayVar(&dirs, "dir", nil, "watch the databases in this directory, and those created there later (repeatable)")
	f.StringVar(&pattern, "pattern", "*.db", "with --dir: the databases' file names (a glob)")
	f.BoolVar(&recursive, "recursive", false, "with --dir: subdirectories too")
	f.StringArrayVar(&names, "name", nil, "the replica name of each database given as a path, in order (default: its base name)")
	f.StringVar(&state, "state", "", "walsync's staging directory (default /var/lib/walsync/watch as root, else ~/.local/state/walsync/watch)")
	f.DurationVar(&interval, "scan-interval", 10*time.Second, "every database is read this often even without a write event, and --dir rescanned")
	f.StringVar(&checkpoint, "checkpoint", "", "checkpoint (PASSIVE) a WAL larger than this size (4MiB, 64MB) once walsync has read it, for applications that never do; default: never, walsync runs no checkpoint the application did not ask for")
	shipperFlags(cmd, &ms)
	return cmd
}

func defaultWatchState() string {
	if os.Geteuid() == 0 {
		return "/var/lib/walsync/watch"
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".local", "state", "walsync", "watch")
}

func runWatch(ms mountSettings, state string, explicit map[string]string, dirs []string, pattern string, recursive bool, opts watch.Options) error {
	sig := handleSignals()
	defer sig.cancel()
	slog.Info("starting", "version", version(), "command", "watch")
	state, err := filepath.Abs(state)
	if err != nil {
		return err
	}
	if err := shipper.PrivateDir(state); err != nil {
		return fmt.Errorf("--state %s: %w", state, err)
	}
	lock, err := lockDataDir(state)
	if err != nil {
		return err
	}
	defer lock.Close()
	stager, err := openShippers(ms, state, newOperations(ms, "", ""))
	if err != nil {
		return err
	}
	opts.Stager = stager
	sc, err := watch.New(opts)
	if err != nil {
		_ = stager.Close(context.Background())
		return err
	}
	for name, p := range explicit {
		if err := sc.Add(name, p); err != nil {
			_ = stager.Close(context.Background())
			return err
		}
	}
	for _, d := range dirs {
		if err := sc.AddDir(watch.Dir{Path: d, Pattern: pattern, Recursive: recursive}); err != nil {
			_ = stager.Close(context.Background())
			return err
		}
	}
	slog.Info("watching", "databases", len(sc.Databases()), "dirs", dirs, "replicas", replicaURLs(stager), "state", state)
	_ = sc.Run(sig.ctx)

	txs, dbs := stager.Unshipped()
	slog.Info("stopped watching; uploading what is staged", "timeout", ms.shutdownTimeout, "staged_transactions", txs, "databases", dbs)
	ctx, cancel := context.WithTimeout(context.Background(), ms.shutdownTimeout)
	defer cancel()
	stop := flushProgress(stager, 5*time.Second)
	err = stager.Close(ctx)
	stop()
	if err != nil {
		return fmt.Errorf("%s; they stay staged in %s and ship at the next start: %w", leftStaged(stager), state, err)
	}
	slog.Info("flushed")
	return nil
}

// checkpointPassive runs a PASSIVE checkpoint of a WAL database through a
// short-lived SQLite connection (--checkpoint): it waits for nobody, and
// copies what no reader still needs.
func checkpointPassive(path string) error {
	db, err := sql.Open("sqlite3", "file:"+path+"?_busy_timeout=1000")
	if err != nil {
		return err
	}
	defer db.Close()
	_, err = db.Exec("PRAGMA wal_checkpoint(PASSIVE)")
	return err
}

// parseSize reads 4096, 4KiB, 4MiB, 1GiB, 4kB, 64MB, 1GB.
func parseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"kB", 1e3}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSuffix(s, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return 0, err
	}
	return n * mult, nil
}

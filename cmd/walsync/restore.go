package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"github.com/walsync/walsync/restore"
	"golang.org/x/term"
)

func newRestoreCmd() *cobra.Command {
	var (
		output    string
		txid      string
		timestamp string
		force     bool
		mode      string
		ifNoDB    bool
		ifReplica bool
	)
	cmd := &cobra.Command{
		Use:   "restore URL -o FILE [--txid N | --timestamp T]",
		Short: "Restore one database from its replica root URL",
		Long: `Restore the database whose replica root is URL (for example
file:///backups/a/b.db) to FILE: the latest state, or the state right after
transaction N, or the last transaction committed at or before time T (RFC 3339).
N is decimal (150) or exactly 16 hex digits (0000000000000096).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts := restore.Options{Force: force}
			if mode != "" {
				m, err := strconv.ParseUint(mode, 8, 32)
				if err != nil || m == 0 || m > 0o777 {
					return fmt.Errorf("--mode %q: give permission bits in octal, e.g. 0600", mode)
				}
				opts.Mode = os.FileMode(m)
			}
			if txid != "" {
				v, err := parseTXID(txid)
				if err != nil {
					return err
				}
				opts.TXID = v
			}
			if txid != "" && timestamp != "" {
				return fmt.Errorf("give --txid or --timestamp, not both")
			}
			out, err := filepath.Abs(output)
			if err != nil {
				return err
			}
			if _, err := os.Stat(out); err == nil && ifNoDB {
				slog.Info("the database exists: nothing restored (--if-db-not-exists)", "output", out)
				return nil
			}
			// A container's first boot restores, later boots keep their
			// database, a new deployment without a backup starts empty.
			noBackup := func(err error) bool {
				if ifReplica && errors.Is(err, restore.ErrNoBackup) {
					slog.Info("no backup there: nothing restored (--if-replica-exists)", "replica", args[0])
					return true
				}
				return false
			}
			client, err := openReplica(context.Background(), strings.TrimSuffix(args[0], "/"))
			if err != nil {
				return err
			}
			if timestamp != "" {
				ts, err := time.Parse(time.RFC3339Nano, timestamp)
				if err != nil {
					return fmt.Errorf("--timestamp %q: use RFC 3339, e.g. 2026-11-23T10:00:00Z", timestamp)
				}
				if opts.TXID, err = restore.TXIDAt(context.Background(), client, "", ts); err != nil {
					if noBackup(err) {
						return nil
					}
					return err
				}
			}
			opts.Progress = progress()
			opts.Warn = func(msg string) { slog.Warn(msg) }
			got, err := restore.Restore(context.Background(), client, "", out, opts)
			if noBackup(err) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("restore %s: %w", args[0], err)
			}
			slog.Info("restored", "replica", args[0], "output", out, "txid", uint64(got))
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "file to write the database to (required)")
	cmd.Flags().StringVar(&txid, "txid", "", "restore up to and including this transaction")
	cmd.Flags().StringVar(&timestamp, "timestamp", "", "restore the last transaction committed at or before this time (RFC 3339)")
	cmd.Flags().BoolVar(&force, "force", false, "overwrite FILE if it exists")
	cmd.Flags().StringVar(&mode, "mode", "", "permission bits of FILE in octal (default 0644 less the umask, as SQLite creates a database)")
	cmd.Flags().BoolVar(&ifNoDB, "if-db-not-exists", false, "do nothing (exit 0) if FILE exists")
	cmd.Flags().BoolVar(&ifReplica, "if-replica-exists", false, "do nothing (exit 0) if URL holds no backup")
	_ = cmd.MarkFlagRequired("output")
	return cmd
}

// progress shows a bar (bytes, files, rate) on a terminal and a quiet line per
// quarter of the work otherwise.
func progress() func(bytes, totalBytes int64, files, totalFiles int) {
	if term.IsTerminal(int(os.Stderr.Fd())) {
		bar := progressbar.NewOptions64(-1,
			progressbar.OptionSetWriter(os.Stderr),
			progressbar.OptionShowBytes(true),
			progressbar.OptionSetDescription("restoring"),
			progressbar.OptionClearOnFinish(),
		)
		return func(b, tb int64, f, tf int) {
			bar.ChangeMax64(tb)
			bar.Describe(fmt.Sprintf("restoring, file %d of %d", f, tf))
			_ = bar.Set64(b)
			if f == tf {
				_ = bar.Finish()
			}
		}
	}
	start, next := time.Now(), 0
	return func(b, tb int64, f, tf int) {
		if f*4 < next*tf && f != tf {
			return
		}
		next = f*4/tf + 1
		secs := max(time.Since(start).Seconds(), 0.001)
		slog.Info("restore progress", "files", fmt.Sprintf("%d/%d", f, tf), "bytes", fmt.Sprintf("%d/%d", b, tb),
			"rate_mb_s", fmt.Sprintf("%.1f", float64(b)/secs/1e6))
	}
}

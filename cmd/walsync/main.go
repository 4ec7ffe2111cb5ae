// Command walsync captures every committed transaction of SQLite databases at
// write time and ships it to a replica as LTX files, and restores them.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/superfly/ltx"
	"github.com/walsync/walsync/storage"
	_ "github.com/walsync/walsync/storage/file"
	_ "github.com/walsync/walsync/storage/s3"
)

// backendOpts holds the replica backend flags shared by every command.
var backendOpts storage.Options

// openReplica opens a replica URL and, for backends that can, checks at once
// that it is usable, so a wrong bucket or credentials fail at startup.
func openReplica(ctx context.Context, rawURL string) (storage.Client, error) {
	return openReplicaMode(ctx, rawURL, false)
}

// openService opens the replica of a long-running command (mount,
// replicate): a definite error (no such bucket, access denied) fails it, but
// a replica that does not answer now (refused, timed out, 5xx) is only
// logged: the application must not lose its databases because its backup
// target is flaky, and the command retries until the replica answers.
func openService(ctx context.Context, rawURL string) (storage.Client, error) {
	return openReplicaWith(ctx, rawURL, backendOpts, true)
}

func openReplicaMode(ctx context.Context, rawURL string, tolerateUnavailable bool) (storage.Client, error) {
	return openReplicaWith(ctx, rawURL, backendOpts, tolerateUnavailable)
}

func openReplicaWith(ctx context.Context, rawURL string, o storage.Options, tolerateUnavailable bool) (storage.Client, error) {
	c, err := storage.OpenWith(ctx, rawURL, o)
	if err != nil {
		return nil, err
	}
	err = storage.Check(ctx, c)
	if tolerateUnavailable && errors.Is(err, storage.ErrUnavailable) {
		slog.Warn("the replica does not answer now; starting anyway, work is staged and retried until it does", "replica", c.URL(), "err", err)
		return c, nil
	}
	if err != nil {
		return nil, err
	}
	return c, nil
}

func main() {
	if addr := os.Getenv("WALSYNC_PPROF"); addr != "" {
		if _, err := servePprof(addr); err != nil {
			fmt.Fprintln(os.Stderr, "walsync:", err)
			os.Exit(1)
		}
	}
	if err := newRootCmd().Execute(); err != nil {
		var ee exitError
		if errors.As(err, &ee) {
			if ee.err != nil {
				fmt.Fprintln(os.Stderr, "walsync:", ee.err)
			}
			os.Exit(ee.code)
		}
		fmt.Fprintln(os.Stderr, "walsync:", err)
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	var level, format string
	root := &cobra.Command{
		Use:           "walsync",
		Short:         "Continuous per-transaction backup of SQLite databases to object storage",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if err := setLogger(level, format); err != nil {
				return err
			}
			if err := loadAge(); err != nil {
				return err
			}
			return loadSSE()
		},
	}
	root.PersistentFlags().StringVar(&level, "log-level", "info", "log level: debug, info, warn, error")
	root.PersistentFlags().StringVar(&format, "log-format", "text", "log format: text or json (one object per line)")
	root.PersistentFlags().StringVar(&backendOpts.Endpoint, "s3-endpoint", "", "URL of an S3-compatible server (path-style addressing); default AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL or AWS")
	root.PersistentFlags().StringVar(&backendOpts.Region, "s3-region", "", "S3 region; default from AWS_REGION or the shared config")
	addSSEFlags(root)
	addAgeFlags(root)
	root.Version = version()
	root.SetVersionTemplate("{{.Version}}\n")
	root.Flags().BoolP("version", "v", false, "print walsync's version")
	root.AddCommand(newMountCmd(), newRestoreCmd(), newLsCmd(), newVerifyCmd(), newReplicateCmd(), newVersionCmd(),
		newStatusCmd(), newSnapshotCmd(), newWatchCmd(), newRetentionCmd())
	return root
}

// setLogger makes the default logger write level and above to stderr, as
// text or JSON lines.
func setLogger(level, format string) error {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return fmt.Errorf("log level %q: use debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "text", "":
		slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, opts)))
	case "json":
		slog.SetDefault(slog.New(slog.NewJSONHandler(os.Stderr, opts)))
	default:
		return fmt.Errorf("log format %q: use text or json", format)
	}
	return nil
}

// parseTXID accepts a decimal TXID or Litestream's form of exactly 16 hex digits.
func parseTXID(s string) (ltx.TXID, error) {
	if len(s) == 16 && strings.Trim(strings.ToLower(s), "0123456789abcdef") == "" {
		v, err := strconv.ParseUint(s, 16, 64)
		if err == nil && v > 0 {
			return ltx.TXID(v), nil
		}
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil || v == 0 {
		return 0, errors.New("--txid must be a positive decimal number (150) or exactly 16 hex digits (0000000000000096)")
	}
	return ltx.TXID(v), nil
}

func durationFlag(cmd *cobra.Command, p *time.Duration, name string, def time.Duration, usage string) {
	cmd.Flags().DurationVar(p, name, def, usage)
}

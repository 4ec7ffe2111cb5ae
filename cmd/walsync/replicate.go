package main

import (
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/walsync/walsync/replicate"
)

func newReplicateCmd() *cobra.Command {
	var (
		local    string
		interval time.Duration
	)
	cmd := &cobra.Command{
		Use:   "replicate URL --local FILE [--interval 5s]",
		Short: "Keep FILE a read replica of the database at URL",
		Long: `Follow the database whose replica root is URL and keep FILE up to date.
Any reader of FILE (the sqlite3 shell, any driver, other processes) sees only
whole transactions and can read while it is updated. FILE is read-only for
everyone but walsync replicate; it stays in rollback-journal mode. Started
before the database has a backup, it waits for the first one; restarted, it
resumes; when the files it needs were compacted away it resyncs from a
snapshot. Each update logs the applied TXID, its time and the lag.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			sig := handleSignals()
			ctx, cancel := sig.ctx, sig.cancel
			defer cancel()
			client, err := openService(ctx, strings.TrimSuffix(args[0], "/"))
			if err != nil {
				return err
			}
			path, err := filepath.Abs(local)
			if err != nil {
				return err
			}
			return replicate.Run(ctx, client, path, replicate.Options{Interval: interval})
		},
	}
	cmd.Flags().StringVar(&local, "local", "", "the replica database file (required)")
	cmd.Flags().DurationVar(&interval, "interval", 5*time.Second, "how often to look for new transactions")
	_ = cmd.MarkFlagRequired("local")
	return cmd
}

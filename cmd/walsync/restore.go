package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"github.com/walsync/walsync/restore"
)

func newRestoreCmd() *cobra.Command {
	var (
		output string
		txid   string
		force  bool
	)
	cmd := &cobra.Command{
		Use:   "restore URL -o FILE [--txid N]",
		Short: "Restore one database from its replica root URL",
		Long: `Restore the database whose replica root is URL (for example
file:///backups/a/b.db) to FILE: the latest state, or the state right after
transaction N. N is decimal (150) or exactly 16 hex digits (0000000000000096).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts := restore.Options{Force: force}
			if txid != "" {
				v, err := parseTXID(txid)
				if err != nil {
					return err
				}
				opts.TXID = v
			}
			client, err := openReplica(context.Background(), strings.TrimSuffix(args[0], "/"))
			if err != nil {
				return err
			}
			out, err := filepath.Abs(output)
			if err != nil {
				return err
			}
			got, err := restore.Restore(context.Background(), client, "", out, opts)
			if err != nil {
				return fmt.Errorf("restore %s: %w", args[0], err)
			}
			slog.Info("restored", "replica", args[0], "output", out, "txid", uint64(got))
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "file to write the database to (required)")
	cmd.Flags().StringVar(&txid, "txid", "", "restore up to and including this transaction")
	cmd.Flags().BoolVar(&force, "force", false, "overwrite FILE if it exists")
	_ = cmd.MarkFlagRequired("output")
	return cmd
}

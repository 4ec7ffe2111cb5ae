package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"github.com/walsync/walsync/shipper"
)

// gfsFlags adds the grandfather-father-son retention flags (mount, watch,
// retention).
func gfsFlags(cmd *cobra.Command, keep *shipper.GFS) {
	f := cmd.Flags()
	f.IntVar(&keep.Hourly, "keep-hourly", 0, "past --retention, keep the newest snapshot of each of the newest N hours that have one")
	f.IntVar(&keep.Daily, "keep-daily", 0, "past --retention, keep the newest snapshot of each of the newest N days (UTC)")
	f.IntVar(&keep.Weekly, "keep-weekly", 0, "past --retention, keep the newest snapshot of each of the newest N ISO weeks")
	f.IntVar(&keep.Monthly, "keep-monthly", 0, "past --retention, keep the newest snapshot of each of the newest N months")
}

// checkGFS refuses negative counts, naming the flag.
func checkGFS(keep shipper.GFS) error {
	for _, c := range []struct {
		name string
		n    int
	}{{"keep-hourly", keep.Hourly}, {"keep-daily", keep.Daily}, {"keep-weekly", keep.Weekly}, {"keep-monthly", keep.Monthly}} {
		if c.n < 0 {
			return fmt.Errorf("--%s %d: give a count of 0 or more", c.name, c.n)
		}
	}
	return nil
}

func newRetentionCmd() *cobra.Command {
	var (
		window time.Duration
		keep   shipper.GFS
		dryRun bool
		at     string
	)
	cmd := &cobra.Command{
		Use:   "retention URL",
		Short: "Apply the retention policy to a replica (what the mount does), or list what it would delete with --dry-run",
		Long: `Deletes what no restore point needs: every TXID inside --retention stays restorable,
and past it the newest snapshot of each of the newest --keep-hourly hours, --keep-daily days,
--keep-weekly weeks and --keep-monthly months stays. URL is a database or a replica root (every
database under it). With --dry-run nothing is deleted: each object that would be is listed with
the reason, and so is each snapshot kept past the window.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkGFS(keep); err != nil {
				return err
			}
			if window <= 0 {
				return fmt.Errorf("--retention %s: give a positive duration (e.g. 24h)", window)
			}
			now := time.Now()
			if at != "" {
				t, err := time.Parse(time.RFC3339, at)
				if err != nil {
					return fmt.Errorf("--now %q: use RFC 3339, e.g. 2026-12-01T00:00:00Z", at)
				}
				now = t
			}
			ctx := context.Background()
			c, dbs, err := openDatabases(ctx, args[0])
			if err != nil {
				return err
			}
			verb := "deleted"
			if dryRun {
				verb = "would delete"
			}
			out := cmd.OutOrStdout()
			for _, db := range dbs {
				del, kept, err := shipper.ApplyRetention(ctx, c, db, now, window, keep, dryRun)
				for _, d := range del {
					fmt.Fprintf(out, "%s %s: %s\n", verb, c.ObjectURL(db, d.File.Level, d.File.MinTXID, d.File.MaxTXID), d.Reason)
				}
				for _, k := range kept {
					fmt.Fprintf(out, "keep %s (%s): %s\n", c.ObjectURL(db, k.File.Level, k.File.MinTXID, k.File.MaxTXID), k.File.CreatedAt.UTC().Format(time.RFC3339), k.Reason)
				}
				if err != nil {
					return err
				}
				name := db
				if name == "" {
					name = c.URL()
				}
				fmt.Fprintf(out, "%s: %s %d objects, %d snapshots kept past the %s window\n", name, verb, len(del), len(kept), window)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.DurationVar(&window, "retention", 24*time.Hour, "how long every transaction stays restorable")
	gfsFlags(cmd, &keep)
	f.BoolVar(&dryRun, "dry-run", false, "list what would be deleted, and why, without deleting")
	f.StringVar(&at, "now", "", "evaluate the policy as of this time (RFC 3339) instead of now, e.g. to see what a week from now keeps")
	return cmd
}

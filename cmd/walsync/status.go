package main

// walsync status and walsync snapshot: ask a running mount, through the
// control socket in its data directory.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/walsync/walsync/control"
)

func newStatusCmd() *cobra.Command {
	var (
		dataDir string
		asJSON  bool
	)
	cmd := &cobra.Command{
		Use:   "status [MOUNTPOINT] [--data DIR] [--json]",
		Short: "Show where every database of a running mount stands: captured, on the replica, lag, staged bytes, last error",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir, err := resolveDataDir(dataDir, args)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			st, err := control.GetStatus(ctx, socketOf(dir))
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			fmt.Fprintf(out, "walsync %s (pid %d): %s (data %s) -> %s\n", st.Version, st.PID, st.MountPoint, st.Data, strings.Join(st.Replicas, ", "))
			tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
			several := len(st.Replicas) > 1
			if several {
				fmt.Fprintln(tw, "DATABASE\tTXID\tSTAGED\tREPLICA\tSHIPPED\tLAG\tLAST ERROR")
			} else {
				fmt.Fprintln(tw, "DATABASE\tTXID\tSTAGED\tSHIPPED\tLAG\tLAST ERROR")
			}
			for _, d := range st.Databases {
				for i, r := range d.Replicas {
					lastErr := ""
					if r.Failing {
						lastErr = r.LastError
					}
					lag := time.Duration(r.LagSeconds * float64(time.Second)).Round(time.Millisecond)
					name, txid, staged := d.DB, fmt.Sprint(d.TXID), bytesHuman(d.StagedBytes)
					if i > 0 {
						name, txid, staged = "", "", ""
					}
					if several {
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", name, txid, staged, r.URL, r.TXID, lag, lastErr)
					} else {
						fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", name, txid, staged, r.TXID, lag, lastErr)
					}
				}
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&dataDir, "data", "", "the mount's data directory (default: found from MOUNTPOINT)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newSnapshotCmd() *cobra.Command {
	var dataDir string
	cmd := &cobra.Command{
		Use:   "snapshot DB [--data DIR]",
		Short: "Upload what is staged for a database and write a full snapshot (level 9) of it now",
		Long: `DB is the database's path under the mount (/mnt/walsync/tenants/a.db), or its
name relative to the mount (tenants/a.db) with --data.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			db := args[0]
			dir := dataDir
			if dir == "" {
				abs, err := filepath.Abs(db)
				if err != nil {
					return err
				}
				mp, data, err := walsyncMountOf(abs)
				if err != nil {
					return err
				}
				dir, db = data, strings.TrimPrefix(abs, mp+"/")
			} else if filepath.IsAbs(db) {
				return fmt.Errorf("with --data, give the database's name relative to the mount (tenants/a.db), not %s", db)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			txid, err := control.Snapshot(ctx, socketOf(dir), db)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "snapshot of %s written at TXID %d\n", db, txid)
			return nil
		},
	}
	cmd.Flags().StringVar(&dataDir, "data", "", "the mount's data directory (default: found from DB's path under the mount)")
	return cmd
}

func socketOf(dataDir string) string { return filepath.Join(dataDir, stateDir, control.SocketName) }

// resolveDataDir is --data, or the data directory of the walsync mount at
// args[0].
func resolveDataDir(dataDir string, args []string) (string, error) {
	switch {
	case dataDir != "" && len(args) > 0:
		return "", errors.New("give the mount point or --data, not both")
	case dataDir != "":
		return filepath.Abs(dataDir)
	case len(args) == 0:
		return "", errors.New("give the mount point (walsync status /mnt/walsync) or --data DIR")
	}
	abs, err := filepath.Abs(args[0])
	if err != nil {
		return "", err
	}
	_, data, err := walsyncMountOf(abs)
	return data, err
}

// walsyncMountOf finds the walsync mount holding path: its mount point and
// data directory (the mount's source is walsync:DIR).
func walsyncMountOf(path string) (mountpoint, dataDir string, err error) {
	ms, err := mounts()
	if err != nil {
		return "", "", err
	}
	for _, m := range ms {
		under := path == m.point || strings.HasPrefix(path, m.point+"/")
		if under && m.fstype == "fuse.walsync" && strings.HasPrefix(m.source, "walsync:") && len(m.point) > len(mountpoint) {
			mountpoint, dataDir = m.point, strings.TrimPrefix(m.source, "walsync:")
		}
	}
	if mountpoint == "" {
		return "", "", fmt.Errorf("%s is not under a walsync mount (give --data DIR)", path)
	}
	return mountpoint, dataDir, nil
}

func bytesHuman(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

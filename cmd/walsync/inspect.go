package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	_ "github.com/mattn/go-sqlite3" // PRAGMA integrity_check in verify
	"github.com/spf13/cobra"
	"github.com/walsync/walsync/restore"
	"github.com/walsync/walsync/storage"
)

// openDatabases opens a replica URL and returns the databases it names: the
// URL itself ("") when it is a database root, else every database under it.
func openDatabases(ctx context.Context, url string) (storage.Client, []string, error) {
	c, err := openReplica(ctx, strings.TrimSuffix(url, "/"))
	if err != nil {
		return nil, nil, err
	}
	s, err := restore.Summarize(ctx, c, "")
	if err != nil {
		return nil, nil, err
	}
	if s.HasTransaction {
		return c, []string{""}, nil
	}
	l, ok := c.(storage.DatabaseLister)
	if !ok {
		return nil, nil, fmt.Errorf("no backup under %s", c.URL())
	}
	dbs, err := l.Databases(ctx)
	if err == nil && len(dbs) == 0 {
		// Empty or missing: the same answer on every backend.
		err = fmt.Errorf("no backup under %s (the replica is empty or does not exist)", c.URL())
	}
	return c, dbs, err
}

func newLsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "ls URL",
		Short: "List the databases under a replica root, or one database's TXIDs, times and files",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := context.Background()
			c, dbs, err := openDatabases(ctx, args[0])
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
			defer tw.Flush()
			if len(dbs) == 1 && dbs[0] == "" {
				s, err := restore.Summarize(ctx, c, "")
				if err != nil {
					return err
				}
				fmt.Fprintf(tw, "TXIDs\t%d - %d\n", s.MinTXID, s.MaxTXID)
				fmt.Fprintf(tw, "time\t%s - %s\n", s.MinTime.Format("2006-01-02T15:04:05.000Z"), s.MaxTime.Format("2006-01-02T15:04:05.000Z"))
				for _, l := range s.Levels {
					name := fmt.Sprintf("level %d", l.Level)
					if l.Level == storage.TxLogLevel {
						name = "txlog"
					}
					fmt.Fprintf(tw, "%s\t%d files\t%d bytes\n", name, l.Files, l.Bytes)
				}
				return nil
			}
			fmt.Fprintln(tw, "DATABASE\tLATEST TXID\tLATEST TIME\tBYTES")
			for _, db := range dbs {
				s, err := restore.Summarize(ctx, c, db)
				if err != nil {
					return err
				}
				fmt.Fprintf(tw, "%s\t%d\t%s\t%d\n", db, s.MaxTXID, s.MaxTime.Format("2006-01-02T15:04:05.000Z"), s.TotalBytes)
			}
			return nil
		},
	}
}

func newVerifyCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "verify URL",
		Short: "Check every object, the checksum chain and a full restore of each database",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := context.Background()
			c, dbs, err := openDatabases(ctx, args[0])
			if err != nil {
				return err
			}
			tmp, err := os.MkdirTemp("", "walsync-verify-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(tmp)
			bad := 0
			for _, db := range dbs {
				path, problems, err := restore.Verify(ctx, c, db, tmp)
				if err != nil {
					return err
				}
				if path != "" {
					if res, err := integrityCheck(path); err != nil || res != "ok" {
						problems = append(problems, restore.Problem{Object: c.URL() + " (integrity_check)", Err: fmt.Errorf("%s %v", res, err)})
					}
				}
				name := db
				if name == "" {
					name = c.URL()
				}
				if len(problems) == 0 {
					fmt.Printf("ok  %s\n", name)
					continue
				}
				bad++
				for _, p := range problems {
					fmt.Printf("BAD %s: %s\n", name, p)
				}
			}
			if bad > 0 {
				return fmt.Errorf("%d of %d databases failed verification", bad, len(dbs))
			}
			return nil
		},
	}
}

func integrityCheck(path string) (string, error) {
	db, err := sql.Open("sqlite3", "file:"+path+"?mode=ro")
	if err != nil {
		return "", err
	}
	defer db.Close()
	var res string
	if err := db.QueryRow("PRAGMA integrity_check").Scan(&res); err != nil {
		return "", errors.Join(errors.New("integrity_check failed"), err)
	}
	return res, nil
}

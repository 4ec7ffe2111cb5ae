package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

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

// lsLevel is one level of a database in ls --json.
type lsLevel struct {
	Level string `json:"level"` // "0" .. "9", or "txlog"
	Files int    `json:"files"`
	Bytes int64  `json:"bytes"`
}

// lsDB is one database in ls --json.
type lsDB struct {
	Database string    `json:"database"` // path under the replica root ("" for the URL itself)
	MinTXID  uint64    `json:"min_txid"`
	MaxTXID  uint64    `json:"max_txid"`
	MinTime  time.Time `json:"min_time"`
	MaxTime  time.Time `json:"max_time"`
	Bytes    int64     `json:"bytes"`
	Levels   []lsLevel `json:"levels,omitempty"`
}

func summaryJSON(s restore.Summary, levels bool) lsDB {
	d := lsDB{Database: s.DB, MinTXID: uint64(s.MinTXID), MaxTXID: uint64(s.MaxTXID), MinTime: s.MinTime.UTC(), MaxTime: s.MaxTime.UTC(), Bytes: s.TotalBytes}
	if levels {
		for _, l := range s.Levels {
			name := strconv.Itoa(l.Level)
			if l.Level == storage.TxLogLevel {
				name = "txlog"
			}
			d.Levels = append(d.Levels, lsLevel{name, l.Files, l.Bytes})
		}
	}
	return d
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newLsCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "ls URL",
		Short: "List the databases under a replica root, or one database's TXIDs, times and files",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := context.Background()
			c, dbs, err := openDatabases(ctx, args[0])
			if err != nil {
				return err
			}
			if len(dbs) == 1 && dbs[0] == "" {
				s, err := restore.Summarize(ctx, c, "")
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(summaryJSON(s, true))
				}
				tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
				defer tw.Flush()
				fmt.Fprintf(tw, "TXIDs\t%d - %d\n", s.MinTXID, s.MaxTXID)
				fmt.Fprintf(tw, "time\t%s - %s\n", s.MinTime.Format("2006-01-02T15:04:05.000Z"), s.MaxTime.Format("2006-01-02T15:04:05.000Z"))
				for _, l := range summaryJSON(s, true).Levels {
					name := "level " + l.Level
					if l.Level == "txlog" {
						name = "txlog"
					}
					fmt.Fprintf(tw, "%s\t%d files\t%d bytes\n", name, l.Files, l.Bytes)
				}
				return nil
			}
			var out []lsDB
			for _, db := range dbs {
				s, err := restore.Summarize(ctx, c, db)
				if err != nil {
					return err
				}
				out = append(out, summaryJSON(s, false))
			}
			if asJSON {
				return printJSON(out)
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
			defer tw.Flush()
			fmt.Fprintln(tw, "DATABASE\tLATEST TXID\tLATEST TIME\tBYTES")
			for _, d := range out {
				fmt.Fprintf(tw, "%s\t%d\t%s\t%d\n", d.Database, d.MaxTXID, d.MaxTime.Format("2006-01-02T15:04:05.000Z"), d.Bytes)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// verifyResult is one database in verify --json.
type verifyResult struct {
	Database string          `json:"database"`
	OK       bool            `json:"ok"`
	Problems []verifyProblem `json:"problems,omitempty"`
}

type verifyProblem struct {
	Object string `json:"object"`
	Error  string `json:"error"`
}

func newVerifyCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
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
			var results []verifyResult
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
				r := verifyResult{Database: name, OK: len(problems) == 0}
				for _, p := range problems {
					r.Problems = append(r.Problems, verifyProblem{p.Object, p.Err.Error()})
				}
				results = append(results, r)
				if !r.OK {
					bad++
				}
				if asJSON {
					continue
				}
				if r.OK {
					fmt.Printf("ok  %s\n", name)
				}
				for _, p := range problems {
					fmt.Printf("BAD %s: %s\n", name, p)
				}
			}
			if asJSON {
				if err := printJSON(results); err != nil {
					return err
				}
			}
			if bad > 0 {
				return fmt.Errorf("%d of %d databases failed verification", bad, len(dbs))
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON (the exit status still says whether everything verified)")
	return cmd
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

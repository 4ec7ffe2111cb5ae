package integration

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/walsync/walsync/internal/s3test"
)

// Checking the torture suite's restores against what the writers acknowledged.

// tortureCopy is what one copy of a database (the source, or a restore) holds.
type tortureCopy struct {
	name      string
	integrity string
	hash      string // contentHash
	dump      string // sha256 of the sqlite3 shell's .dump
	markers   int64
	rows      map[string]int64 // "writer/seq" -> rows
}

func tortureInspect(t *testing.T, name, path string) *tortureCopy {
	t.Helper()
	c := &tortureCopy{name: name, rows: map[string]int64{}}
	db, err := sql.Open("sqlite3", "file:"+path+"?_busy_timeout=10000")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	if err := db.QueryRow("PRAGMA integrity_check").Scan(&c.integrity); err != nil {
		c.integrity = err.Error()
		return c
	}
	c.hash = contentHash(t, db)
	if err := db.QueryRow("SELECT (SELECT count(*) FROM t WHERE v = ?) + (SELECT count(*) FROM scratch WHERE v = ?)",
		rolledBackMarker, rolledBackMarker).Scan(&c.markers); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	rows, err := db.Query("SELECT writer, seq, count(*) FROM t GROUP BY writer, seq")
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	for rows.Next() {
		var w string
		var seq, n int64
		if err := rows.Scan(&w, &seq, &n); err != nil {
			t.Fatal(err)
		}
		c.rows[w+"/"+strconv.FormatInt(seq, 10)] = n
	}
	rows.Close()
	db.Close()
	cmd := exec.Command("sqlite3", "-bail", path, ".dump")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	if _, err := io.Copy(h, stdout); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf(".dump of %s: %v", name, err)
	}
	c.dump = hex.EncodeToString(h.Sum(nil))
	return c
}

// tortureVerify compares the source databases of a mount with their
// restores from S3 by walsync and by Litestream, and checks every
// acknowledged transaction and that no rolled-back row is in any of them.
// Mismatches are test errors; it returns the acknowledged transactions not
// whole in every copy and the rolled-back rows found, and ok=false if it
// could not check (staging did not drain).
func tortureVerify(t *testing.T, srv *s3test.Server, ls string, m *mount, prefix string, dbs []tortureDB, writers []*tortureWriter) (lostTx, rolledBack int64, ok bool) {
	t.Helper()
	sources := map[string]*tortureCopy{}
	for _, d := range dbs {
		sources[d.rel] = tortureInspect(t, "source "+d.rel, filepath.Join(m.mnt, d.rel))
		if sources[d.rel].integrity != "ok" && len(writers) > 0 {
			tortureKeepFiles(t, m, d.rel, filepath.Dir(writers[0].log))
		}
	}
	if !tortureDrained(t, m, "before the restores") { // the inspection closed connections (a checkpoint)
		return 0, 0, false
	}
	lsEnv := []string{}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AWS_CA_BUNDLE=") { // Litestream 0.5.18 cannot build its client with it
			lsEnv = append(lsEnv, kv)
		}
	}
	for _, d := range dbs {
		url := "s3://torture/" + prefix + "/" + d.rel
		dir := t.TempDir()
		wsOut, lsOut := filepath.Join(dir, "walsync.db"), filepath.Join(dir, "litestream.db")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		if b, err := exec.CommandContext(ctx, walsyncBin, "restore", url, "-o", wsOut).CombinedOutput(); err != nil {
			t.Fatalf("walsync restore %s: %v\n%s", url, err, b)
		}
		lsCmd := exec.CommandContext(ctx, ls, "restore", "-o", lsOut,
			url+"?endpoint="+strings.TrimPrefix(srv.Endpoint, "http://")+"&forcePathStyle=true&region=us-east-1")
		lsCmd.Env = lsEnv
		if b, err := lsCmd.CombinedOutput(); err != nil {
			t.Fatalf("litestream restore %s: %v\n%s", url, err, b)
		}
		cancel()
		src := sources[d.rel]
		copies := []*tortureCopy{src, tortureInspect(t, "walsync restore of "+d.rel, wsOut), tortureInspect(t, "litestream restore of "+d.rel, lsOut)}
		var markers int64
		for _, c := range copies {
			if c.integrity != "ok" {
				t.Errorf("%s: integrity_check: %s", c.name, c.integrity)
			}
			if c != src && (c.hash != src.hash || c.dump != src.dump) {
				t.Errorf("%s differs from the source (content %.12s vs %.12s, .dump %.12s vs %.12s)", c.name, c.hash, src.hash, c.dump, src.dump)
			}
			if c.markers > 0 {
				t.Errorf("%s: %d rolled-back rows", c.name, c.markers)
			}
			markers = max(markers, c.markers)
		}
		rolledBack += markers
		for _, w := range writers {
			if w.db.rel != d.rel {
				continue
			}
			acked := tortureAcked(t, w)
			var lost []string
			for seq, n := range acked {
				key := w.name + "/" + strconv.FormatInt(seq, 10)
				whole := true
				var got []string
				for _, c := range copies {
					got = append(got, fmt.Sprintf("%s=%d", strings.Fields(c.name)[0], c.rows[key]))
					if c.rows[key] != n {
						whole = false
					}
				}
				if !whole {
					lost = append(lost, fmt.Sprintf("seq %d (%d rows; %s)", seq, n, strings.Join(got, " ")))
				}
			}
			sort.Strings(lost)
			lostTx += int64(len(lost))
			if len(lost) > 0 {
				t.Errorf("%s: %d of %d acknowledged transactions are not whole in every copy: %s", w.name, len(lost), len(acked), strings.Join(lost[:min(len(lost), 20)], ", "))
			}
		}
	}
	return lostTx, rolledBack, true
}

// tortureKeepFiles copies a database's files in the data directory (the
// database, its -journal or -wal) beside the kept logs, for a post-mortem
// of a source that failed its integrity check.
func tortureKeepFiles(t *testing.T, m *mount, rel, keep string) {
	files, _ := filepath.Glob(filepath.Join(m.data, rel) + "*")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Logf("keep %s: %v", f, err)
			continue
		}
		dst := filepath.Join(keep, "source-"+strings.ReplaceAll(strings.TrimPrefix(f, m.data+"/"), "/", "_"))
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			t.Logf("keep %s: %v", f, err)
			continue
		}
		t.Logf("kept %s as %s", f, dst)
	}
}

package main

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"filippo.io/age"

	"github.com/walsync/walsync/internal/s3test"
	"github.com/walsync/walsync/internal/testtools"
)

// litestreamModule is the Litestream measured beside walsync's restore.
const litestreamModule = "github.com/benbjohnson/litestream/cmd/litestream@v0.5.18"

type restoreResult struct {
	SizeMB          float64 `json:"size_mb"`
	WalsyncMBps     float64 `json:"walsync_mb_per_s"`
	LitestreamMBps  float64 `json:"litestream_mb_per_s"`
	Ratio           float64 `json:"ratio"`
	Pass            bool    `json:"pass"`
	LitestreamError string  `json:"litestream_error,omitempty"`
	// The same database shipped with age encryption (--age-identity),
	// restored with its identity: speed and peak RSS against walsync's
	// restore without encryption (targets: >= 0.9x speed, <= 1.1x RSS).
	WalsyncRSSMB  float64 `json:"walsync_rss_mb"`
	AgeMBps       float64 `json:"age_mb_per_s"`
	AgeRSSMB      float64 `json:"age_rss_mb"`
	AgeSpeedRatio float64 `json:"age_speed_ratio"`
	AgeRSSRatio   float64 `json:"age_rss_ratio"`
	AgePass       bool    `json:"age_pass"`
}

// measureRestore backs up one database of sizeMB to a local S3 server with
// walsync and with Litestream, then times both restores from it.
func measureRestore(ctx context.Context, bin, root string, sizeMB int) (restoreResult, error) {
	r := restoreResult{}
	ls, err := testtools.Install(litestreamModule)
	if err != nil {
		return r, err
	}
	srv, err := s3test.Launch(filepath.Join(root, "rs3"))
	if err != nil {
		return r, err
	}
	defer srv.Stop()
	if err := srv.MakeBucket("restore"); err != nil {
		return r, err
	}
	src := filepath.Join(root, "big.db")
	fmt.Fprintf(os.Stderr, "restore bench: building a %d MB database\n", sizeMB)
	if err := buildDB(src, sizeMB); err != nil {
		return r, err
	}
	fi, err := os.Stat(src)
	if err != nil {
		return r, err
	}
	r.SizeMB = float64(fi.Size()) / 1e6
	env := []string{"AWS_ACCESS_KEY_ID=" + srv.AccessKey, "AWS_SECRET_ACCESS_KEY=" + srv.SecretKey, "AWS_REGION=us-east-1", "AWS_ENDPOINT_URL_S3=" + srv.Endpoint}

	// walsync: copy the database into a mount; it ships it at close. The
	// same again, encrypted with age.
	if err := shipThroughMount(bin, root, "r", "s3://restore/ws", src, env, nil); err != nil {
		return r, err
	}
	idFile := filepath.Join(root, "age.key")
	if err := writeAgeIdentity(idFile); err != nil {
		return r, err
	}
	if err := shipThroughMount(bin, root, "e", "s3://restore/age", src, env, []string{"--age-identity", idFile}); err != nil {
		return r, err
	}

	// Litestream: replicate the same file.
	cfg := filepath.Join(root, "litestream.yml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("dbs:\n  - path: %s\n    replicas:\n      - url: s3://restore/ls\n        endpoint: %s\n        force-path-style: true\n        region: us-east-1\n", src, srv.Endpoint)), 0o644)
	lsCmd := exec.CommandContext(ctx, ls, "replicate", "-config", cfg)
	// Litestream 0.5.18 cannot build its S3 client when AWS_CA_BUNDLE is set
	// ("unable to add custom RootCAs HTTPClient"); walsync can. The local
	// server speaks plain HTTP, so Litestream runs without it.
	lsEnv := append(withoutEnv("AWS_CA_BUNDLE"), env...)
	lsCmd.Env = lsEnv
	lsLog := &syncBuffer{}
	lsCmd.Stdout, lsCmd.Stderr = lsLog, lsLog
	if err := lsCmd.Start(); err != nil {
		return r, err
	}
	// Litestream needs a write transaction to start; then wait for its upload.
	db, err := sql.Open("sqlite3", "file:"+src)
	if err == nil {
		time.Sleep(2 * time.Second)
		db.Exec("CREATE TABLE IF NOT EXISTS bench_marker(x)")
		db.Close()
	}
	time.Sleep(time.Duration(sizeMB/50+10) * time.Second)
	lsCmd.Process.Signal(os.Interrupt)
	lsCmd.Wait()

	var rssMB float64 // of the last restore timed
	timeIt := func(name string, environ []string, args ...string) (float64, error) {
		out := filepath.Join(root, name+".db")
		os.Remove(out)
		cmd := exec.CommandContext(ctx, args[0], args[1:]...)
		cmd.Env = environ
		start := time.Now()
		b, err := cmd.CombinedOutput()
		if err != nil {
			return 0, fmt.Errorf("%s restore: %v: %s", name, err, lastLines(string(b), 5))
		}
		secs := time.Since(start).Seconds()
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			rssMB = float64(ru.Maxrss) / 1024
		}
		got, err := os.Stat(out)
		os.Remove(out)
		if err != nil || float64(got.Size()) < 0.99*float64(fi.Size()) {
			return 0, fmt.Errorf("%s restored an incomplete database (%v)", name, err)
		}
		return r.SizeMB / secs, nil
	}
	// Alternating, median of 3 each: encryption's cost is measured against
	// the same restore in the same conditions.
	var plain, aged, plainRSS, agedRSS []float64
	for range 3 {
		v, err := timeIt("walsync", append(os.Environ(), env...), bin, "restore", "s3://restore/ws/big.db", "-o", filepath.Join(root, "walsync.db"))
		if err != nil {
			return r, err
		}
		plain, plainRSS = append(plain, v), append(plainRSS, rssMB)
		v, err = timeIt("walsync-age", append(os.Environ(), env...), bin, "restore", "--age-identity", idFile, "s3://restore/age/big.db", "-o", filepath.Join(root, "walsync-age.db"))
		if err != nil {
			return r, err
		}
		aged, agedRSS = append(aged, v), append(agedRSS, rssMB)
	}
	r.WalsyncMBps, r.WalsyncRSSMB, r.AgeMBps, r.AgeRSSMB = median(plain), median(plainRSS), median(aged), median(agedRSS)
	r.AgeSpeedRatio, r.AgeRSSRatio = r.AgeMBps/r.WalsyncMBps, r.AgeRSSMB/r.WalsyncRSSMB
	r.AgePass = r.AgeSpeedRatio >= 0.9 && r.AgeRSSRatio <= 1.1
	r.LitestreamMBps, err = timeIt("litestream", lsEnv, ls, "restore", "-o", filepath.Join(root, "litestream.db"), "s3://restore/ls?endpoint="+strings.TrimPrefix(srv.Endpoint, "http://")+"&forcePathStyle=true")
	if err != nil {
		r.LitestreamError = err.Error() + "\n" + lastLines(lsLog.String(), 5)
		return r, nil
	}
	r.Ratio = r.WalsyncMBps / r.LitestreamMBps
	r.Pass = r.Ratio >= 1
	return r, nil
}

// shipThroughMount copies src into a walsync mount (its directories under
// root start with name) that ships it to url, and stops it: its first
// upload is the whole database, twice (the level-9 snapshot and the level-0
// file of TXID 1), at SIGINT.
func shipThroughMount(bin, root, name, url, src string, env, extra []string) error {
	mnt, data := filepath.Join(root, name+"mnt"), filepath.Join(root, name+"data")
	os.MkdirAll(mnt, 0o755)
	w, err := startWalsync(bin, mnt, data, url, syncInterval, extra, env...)
	if err != nil {
		return err
	}
	w.exitTimeout = 20 * time.Minute
	if err := copyFile(src, filepath.Join(mnt, filepath.Base(src))); err != nil {
		w.stop()
		return err
	}
	return w.stop() // flushes
}

// writeAgeIdentity writes a new age identity file, as age-keygen does.
func writeAgeIdentity(path string) error {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return err
	}
	return os.WriteFile(path, []byte(id.String()+"\n"), 0o600)
}

func buildDB(path string, sizeMB int) error {
	os.Remove(path)
	db, err := sql.Open("sqlite3", "file:"+path+"?_journal_mode=WAL")
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.Exec("CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)"); err != nil {
		return err
	}
	rows := sizeMB * 1e6 / 4000
	_, err = db.Exec("WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM c WHERE n < ?) INSERT INTO t(b) SELECT randomblob(3900) FROM c", rows)
	if err != nil {
		return err
	}
	_, err = db.Exec("PRAGMA wal_checkpoint(TRUNCATE)")
	return err
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func withoutEnv(name string) []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, name+"=") {
			out = append(out, kv)
		}
	}
	return out
}

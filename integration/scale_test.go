package integration

import (
	"database/sql"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/walsync/walsync/internal/s3test"
)

// TestScale300Databases is the scale scenario at a size that fits CI: 300
// databases (WAL, DELETE and TRUNCATE) under one mount shipping to S3, all
// held open, 100 of them active concurrently while the rest stay idle; then
// every database restores identical from S3, and once they are closed the
// walsync process holds no file descriptor per database. (The 1,000-database
// figures come from `make bench`.)
func TestScale300Databases(t *testing.T) {
	srv := s3test.Start(t)
	srv.CreateBucket(t, "scale")
	srv.SetEnv(t)
	m := newS3Mount(t, srv, srv.Endpoint, "s3://scale/tenants")
	const n, active, txs = 300, 100, 30
	modes := []string{"WAL", "DELETE", "TRUNCATE"}
	name := func(i int) string { return fmt.Sprintf("t%03d/app.db", i) }

	open := make([]*dbHandle, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			h, err := openHandle(m.path(name(i)), modes[i%len(modes)])
			if err != nil {
				errs <- err
				return
			}
			open[i] = h
			if err := h.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"); err != nil {
				errs <- err
				return
			}
			if err := h.exec("INSERT INTO t(v) VALUES(?)", fmt.Sprintf("tenant %d created", i)); err != nil {
				errs <- err
			}
		}(i)
	}
	wg.Wait()
	defer func() {
		for _, h := range open {
			if h != nil {
				h.db.Close()
			}
		}
	}()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}

	// 100 active databases, every third one, over several batch windows;
	// the other 200 stay open and idle.
	for i := 0; i < n; i += n / active {
		wg.Add(1)
		go func(h *dbHandle, i int) {
			defer wg.Done()
			for j := 0; j < txs; j++ {
				q, args := "INSERT INTO t(v) VALUES(?)", []any{fmt.Sprintf("tenant %d row %d", i, j)}
				switch j % 10 {
				case 7:
					q, args = "UPDATE t SET v = v || ' updated' WHERE id % 3 = ?", []any{j % 3}
				case 9:
					q, args = "DELETE FROM t WHERE id = ?", []any{j / 2}
				}
				if err := h.exec(q, args...); err != nil {
					errs <- fmt.Errorf("%s: %w", name(i), err)
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
		}(open[i], i)
	}
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	want := make([]string, n)
	for i, h := range open {
		want[i] = contentHash(t, h.db)
		h.db.Close()
		open[i] = nil
	}
	m.waitShipped()

	// Idle databases hold no descriptors: a leak of one per database would
	// show as hundreds.
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", m.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if len(fds) > 100 {
		t.Fatalf("walsync holds %d file descriptors with all %d databases closed", len(fds), n)
	}

	for i := 0; i < n; i++ {
		if got := checkRestored(t, restoreS3(t, srv, "scale/tenants", name(i))); got != want[i] {
			t.Fatalf("%s: restore from S3 differs from the source", name(i))
		}
	}
}

// dbHandle is one connection usable from any goroutine (no testing.T).
type dbHandle struct{ db *sql.DB }

func openHandle(path, mode string) (*dbHandle, error) {
	db, err := sql.Open("sqlite3", "file:"+path+"?_busy_timeout=10000")
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	var got string
	if err := db.QueryRow("PRAGMA journal_mode=" + mode).Scan(&got); err != nil || !strings.EqualFold(got, mode) {
		db.Close()
		return nil, fmt.Errorf("%s: journal_mode=%s answered %q: %v", path, mode, got, err)
	}
	return &dbHandle{db: db}, nil
}

func (h *dbHandle) exec(q string, args ...any) error {
	_, err := h.db.Exec(q, args...)
	return err
}

package integration

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRestoreTimestamp restores with --timestamp at points between and
// inside batches: each equals the source as it was then.
func TestRestoreTimestamp(t *testing.T) {
	m := newMount(t)
	rel := "ts.db"
	db := openDB(t, m.path(rel), "journal_mode=WAL")
	mustExec(t, db, "CREATE TABLE t(x)")
	type point struct {
		at   time.Time
		hash string
	}
	var points []point
	for g := 0; g < 4; g++ {
		for i := 0; i < 3; i++ {
			mustExec(t, db, "INSERT INTO t VALUES(?)", fmt.Sprintf("g%d i%d", g, i))
			time.Sleep(5 * time.Millisecond)
			points = append(points, point{time.Now(), contentHash(t, db)})
			time.Sleep(15 * time.Millisecond) // inside one 100 ms batch window
		}
		time.Sleep(300 * time.Millisecond) // the next group is another batch
	}
	m.waitShipped()
	for i, p := range points {
		out := filepath.Join(t.TempDir(), "r.db")
		restoreCLI(t, m.replicaURL()+"/"+rel, out, "--timestamp", p.at.UTC().Format(time.RFC3339Nano))
		if got := checkRestored(t, out); got != p.hash {
			t.Fatalf("--timestamp at point %d differs from the source then", i)
		}
	}
	out, err := runWalsync(t, "restore", m.replicaURL()+"/"+rel, "-o", filepath.Join(t.TempDir(), "x.db"), "--timestamp", "2001-01-01T00:00:00Z")
	if err == nil || !strings.Contains(out, "no transaction at or before") {
		t.Fatalf("a time before the first transaction: %v\n%s", err, out)
	}
}

package vfs_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"sync"
	"testing"

	_ "github.com/mattn/go-sqlite3"
	"github.com/walsync/walsync/vfs"
)

var registerOnce sync.Once

// BenchmarkSmallTx commits one small INSERT per transaction, through the
// VFS and without it (plain), in WAL with normal and exclusive locking
// (profile with -cpuprofile; `make bench` measures the ratios).
func BenchmarkSmallTx(b *testing.B) {
	for _, m := range []struct {
		name, query string
		pragmas     []string
	}{
		{"WAL/plain", "", []string{"PRAGMA journal_mode=WAL"}},
		{"WAL/vfs", "vfs=walsync-bench", []string{"PRAGMA journal_mode=WAL"}},
		{"WAL-exclusive/plain", "", []string{"PRAGMA locking_mode=EXCLUSIVE", "PRAGMA journal_mode=WAL"}},
		{"WAL-exclusive/vfs", "vfs=walsync-bench", []string{"PRAGMA locking_mode=EXCLUSIVE", "PRAGMA journal_mode=WAL"}},
	} {
		b.Run(m.name, func(b *testing.B) {
			dir := b.TempDir()
			registerOnce.Do(func() {
				v, err := vfs.New(context.Background(), vfs.Config{Replica: "file://" + filepath.Join(dir, "replica"), Dir: dir})
				if err != nil {
					b.Fatal(err)
				}
				if err := v.Register("walsync-bench"); err != nil {
					b.Fatal(err)
				}
			})
			db, err := sql.Open("sqlite3", "file:"+filepath.Join(dir, "b.db")+"?"+m.query)
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			db.SetMaxOpenConns(1)
			for _, q := range append(m.pragmas, "PRAGMA synchronous=NORMAL", "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)") {
				if _, err := db.Exec(q); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := db.Exec("INSERT INTO t(v) VALUES(randomblob(100))"); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer() // the last close ships what is staged
		})
	}
}

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

// BenchmarkSmallTx commits one small INSERT per transaction through the VFS
// in exclusive WAL mode (profile with -cpuprofile).
func BenchmarkSmallTx(b *testing.B) {
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
	db, err := sql.Open("sqlite3", "file:"+filepath.Join(dir, "b.db")+"?vfs=walsync-bench")
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	for _, q := range []string{"PRAGMA locking_mode=EXCLUSIVE", "PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)"} {
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
}

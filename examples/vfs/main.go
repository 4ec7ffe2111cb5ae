// Command vfs shows the walsync VFS in a Go program using mattn/go-sqlite3:
// every committed transaction of app.db is captured and shipped to a
// file:// replica, and the replica is restored at the end.
//
//	go run ./examples/vfs
package main

import (
	"context"
	"database/sql"
	"fmt"
	"log"
	"os"
	"path/filepath"

	_ "github.com/mattn/go-sqlite3"
	"github.com/walsync/walsync/restore"
	"github.com/walsync/walsync/storage"
	"github.com/walsync/walsync/vfs"
)

func main() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "walsync-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	replica := "file://" + filepath.Join(dir, "replica")

	// Start the capture and the shipper, then register the VFS.
	v, err := vfs.New(ctx, vfs.Config{Replica: replica, Dir: filepath.Join(dir, "data")})
	if err != nil {
		log.Fatal(err)
	}
	if err := v.Register("walsync"); err != nil {
		log.Fatal(err)
	}
	os.MkdirAll(filepath.Join(dir, "data"), 0o755)
	path := filepath.Join(dir, "data", "app.db")

	db, err := sql.Open("sqlite3", "file:"+path+"?vfs=walsync")
	if err != nil {
		log.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	// WAL through this VFS needs exclusive locking, set first.
	for _, q := range []string{
		"PRAGMA locking_mode=EXCLUSIVE",
		"PRAGMA journal_mode=WAL",
		"CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT)",
		"INSERT INTO notes(body) VALUES ('captured at write time')",
		"INSERT INTO notes(body) VALUES ('shipped when the connection closes')",
	} {
		if _, err := db.Exec(q); err != nil {
			log.Fatalf("%s: %v", q, err)
		}
	}
	db.Close() // the last connection: pending transactions are shipped now
	if err := v.Close(ctx); err != nil {
		log.Fatal(err)
	}

	client, err := storage.Open(replica + "/app.db")
	if err != nil {
		log.Fatal(err)
	}
	out := filepath.Join(dir, "restored.db")
	txid, err := restore.Restore(ctx, client, "", out, restore.Options{})
	if err != nil {
		log.Fatal(err)
	}
	r, err := sql.Open("sqlite3", "file:"+out+"?mode=ro")
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	var n int
	if err := r.QueryRow("SELECT count(*) FROM notes").Scan(&n); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("restored app.db at TXID %d: %d notes\n", txid, n)
}

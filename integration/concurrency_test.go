package integration

import (
	"fmt"
	"os/exec"
	"sync"
	"testing"
)

// TestConcurrentProcessesAndConnections runs several processes writing to
// different databases and several connections (and processes) writing to one
// database at once, then restores every database and compares.
func TestConcurrentProcessesAndConnections(t *testing.T) {
	m := newMount(t)
	var wg sync.WaitGroup
	errs := make(chan error, 64)

	// Separate processes, separate databases: shells and Pythons.
	for i := 0; i < 4; i++ {
		wg.Add(2)
		go func(i int) {
			defer wg.Done()
			script := "PRAGMA journal_mode=WAL;\nCREATE TABLE t(x);\n"
			for j := 0; j < 100; j++ {
				script += fmt.Sprintf("INSERT INTO t VALUES(%d);\n", j)
			}
			cmd := exec.Command("sqlite3", "-bail", m.path(fmt.Sprintf("procs/shell%d.db", i)))
			cmd.Stdin = stringsReader(script)
			if out, err := cmd.CombinedOutput(); err != nil {
				errs <- fmt.Errorf("shell %d: %v %s", i, err, out)
			}
		}(i)
		go func(i int) {
			defer wg.Done()
			cmd := exec.Command(python, "-c", `
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("PRAGMA journal_mode=TRUNCATE")
c.execute("CREATE TABLE t(x)")
for j in range(100):
    c.execute("INSERT INTO t VALUES(?)", (j,))
`, m.path(fmt.Sprintf("procs/py%d.db", i)))
			if out, err := cmd.CombinedOutput(); err != nil {
				errs <- fmt.Errorf("python %d: %v %s", i, err, out)
			}
		}(i)
	}

	// One WAL database, four Go connections in four goroutines.
	shared := m.path("shared/wal.db")
	setup := openDB(t, shared, "journal_mode=WAL")
	mustExec(t, setup, "CREATE TABLE t(w INTEGER, j INTEGER)")
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			db := openDB(t, shared)
			for j := 0; j < 100; j++ {
				if _, err := db.Exec("INSERT INTO t VALUES(?, ?)", w, j); err != nil {
					errs <- fmt.Errorf("wal writer %d: %v", w, err)
					return
				}
			}
		}(w)
	}
	// One DELETE-mode database, four Python processes.
	del := m.path("shared/delete.db")
	shell(t, del, "PRAGMA journal_mode=DELETE; CREATE TABLE t(w INTEGER, j INTEGER);")
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			cmd := exec.Command(python, "-c", `
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
for j in range(100):
    c.execute("INSERT INTO t VALUES(?, ?)", (int(sys.argv[2]), j))
`, del, fmt.Sprint(w))
			if out, err := cmd.CombinedOutput(); err != nil {
				errs <- fmt.Errorf("delete-mode writer %d: %v %s", w, err, out)
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	m.waitShipped()

	var dbs []string
	for i := 0; i < 4; i++ {
		dbs = append(dbs, fmt.Sprintf("procs/shell%d.db", i), fmt.Sprintf("procs/py%d.db", i))
	}
	dbs = append(dbs, "shared/wal.db", "shared/delete.db")
	for _, rel := range dbs {
		src := openDB(t, m.path(rel))
		want := contentHash(t, src)
		if got := checkRestored(t, m.restoreDB(rel, 0)); got != want {
			t.Fatalf("%s: restore differs from the source", rel)
		}
	}
	for _, rel := range []string{"shared/wal.db", "shared/delete.db"} {
		var n int
		if err := openDB(t, m.path(rel)).QueryRow("SELECT count(*) FROM t").Scan(&n); err != nil || n != 400 {
			t.Fatalf("%s has %d rows (%v), want 400", rel, n, err)
		}
	}
}

// TestManyDatabasesInSubdirectories captures 60 databases in nested
// directories and restores each.
func TestManyDatabasesInSubdirectories(t *testing.T) {
	m := newMount(t)
	const n = 60
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			mode := []string{"WAL", "DELETE", "TRUNCATE", "PERSIST"}[i%4]
			db := openDB(t, m.path(fmt.Sprintf("tenants/t%02d/sub%d/app.db", i, i%3)), "journal_mode="+mode)
			mustExec(t, db, "CREATE TABLE t(id INTEGER PRIMARY KEY, tenant INTEGER, v TEXT)")
			for j := 0; j < 10; j++ {
				mustExec(t, db, "INSERT INTO t(tenant, v) VALUES(?, ?)", i, fmt.Sprintf("tenant %d row %d", i, j))
			}
		}(i)
	}
	wg.Wait()
	m.waitShipped()
	for i := 0; i < n; i++ {
		rel := fmt.Sprintf("tenants/t%02d/sub%d/app.db", i, i%3)
		want := contentHash(t, openDB(t, m.path(rel)))
		if got := checkRestored(t, m.restoreDB(rel, 0)); got != want {
			t.Fatalf("%s: restore differs from the source", rel)
		}
	}
}

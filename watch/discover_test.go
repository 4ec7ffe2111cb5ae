package watch

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestNames(t *testing.T) {
	got, err := Names([]string{"/srv/a/app.db", "/srv/b/other.db"}, nil)
	if err != nil || got["app.db"] != "/srv/a/app.db" || got["other.db"] != "/srv/b/other.db" {
		t.Fatalf("base names: %v %v", got, err)
	}
	if _, err := Names([]string{"/srv/t1/app.db", "/srv/t2/app.db"}, nil); err == nil || !strings.Contains(err.Error(), `both replicate to "app.db"`) {
		t.Fatalf("two databases with one base name: %v", err)
	}
	got, err = Names([]string{"/srv/t1/app.db", "/srv/t2/app.db"}, []string{"t1/app.db", "t2/app.db"})
	if err != nil || got["t1/app.db"] != "/srv/t1/app.db" || got["t2/app.db"] != "/srv/t2/app.db" {
		t.Fatalf("--name: %v %v", got, err)
	}
	for _, c := range []struct {
		names []string
		want  string
	}{
		{[]string{"x.db"}, "--name given 1 times for 2 databases"},
		{[]string{"../x.db", "y.db"}, "is not a name for the replica"},
		{[]string{"x.db", "x.db"}, "both replicate to"},
	} {
		if _, err := Names([]string{"/a.db", "/b.db"}, c.names); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("--name %v: %v, want %q", c.names, err, c.want)
		}
	}
}

// TestDirScan: the files whose name matches and which start with SQLite's
// header, below the directory when recursive; never -wal, -shm, -journal.
func TestDirScan(t *testing.T) {
	dir := t.TempDir()
	header := []byte("SQLite format 3\x00" + strings.Repeat("\x00", 84))
	for _, p := range []string{"a.db", "a.db-wal", "a.db-shm", "sub/b.db", ".hidden/c.db", "sub/deeper/d.db"} {
		write(t, filepath.Join(dir, p), header)
	}
	write(t, filepath.Join(dir, "notsqlite.db"), []byte("hello, this is not a database"))
	write(t, filepath.Join(dir, "e.sqlite"), header)

	flat, err := Dir{Path: dir}.scan()
	if err != nil || len(flat) != 1 || flat["a.db"] == "" {
		t.Fatalf("flat: %v %v", flat, err)
	}
	deep, err := Dir{Path: dir, Recursive: true}.scan()
	if err != nil || len(deep) != 3 || deep["sub/b.db"] == "" || deep["sub/deeper/d.db"] == "" {
		t.Fatalf("recursive: %v %v", deep, err)
	}
	other, err := Dir{Path: dir, Pattern: "*.sqlite"}.scan()
	if err != nil || len(other) != 1 || other["e.sqlite"] == "" {
		t.Fatalf("--pattern *.sqlite: %v %v", other, err)
	}
	if _, err := (Dir{Path: filepath.Join(dir, "missing")}).scan(); err == nil {
		t.Fatal("a missing directory is not an error")
	}
}

func write(t *testing.T, p string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

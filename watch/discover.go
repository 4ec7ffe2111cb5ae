package watch

// Which databases are watched, and under which name on the replica: paths
// given one by one replicate to their base name (or the name given), a
// directory's databases to their path under it. Two databases with one name
// are an error: they would write one history.

import (
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/walsync/walsync/capture"
)

// Dir is a directory whose databases are watched, those created later too.
type Dir struct {
	Path      string
	Pattern   string // path.Match on the file's base name; default "*.db"
	Recursive bool
}

func (d Dir) pattern() string {
	if d.Pattern == "" {
		return "*.db"
	}
	return d.Pattern
}

// matches reports whether the file at rel (slash-separated, under d) is
// one of d's databases by its name.
func (d Dir) matches(rel string) bool {
	if !d.Recursive && strings.Contains(rel, "/") {
		return false
	}
	if _, ok := companionOf(rel); ok {
		return false
	}
	ok, _ := path.Match(d.pattern(), path.Base(rel))
	return ok
}

// companionOf returns the database a companion file (-wal, -journal,
// -shm) belongs to.
func companionOf(p string) (db string, ok bool) {
	for _, suffix := range []string{"-wal", "-journal", "-shm"} {
		if db, ok := strings.CutSuffix(p, suffix); ok && db != "" {
			return db, true
		}
	}
	return "", false
}

// scan lists d's databases by name (their path under d): the files that
// match and start with SQLite's header.
func (d Dir) scan() (map[string]string, error) {
	out := map[string]string{}
	err := filepath.WalkDir(d.Path, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			if p == d.Path {
				return err
			}
			return nil // vanished or unreadable below: the next rescan
		}
		if e.IsDir() {
			if p != d.Path && (!d.Recursive || strings.HasPrefix(e.Name(), ".")) {
				return filepath.SkipDir
			}
			return nil
		}
		rel, _ := filepath.Rel(d.Path, p)
		rel = filepath.ToSlash(rel)
		if e.Type().IsRegular() && d.matches(rel) && isDatabase(p) {
			out[rel] = p
		}
		return nil
	})
	return out, err
}

// isDatabase reports whether the file starts with SQLite's header.
func isDatabase(p string) bool {
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	var b [16]byte
	n, _ := f.ReadAt(b[:], 0)
	return capture.IsDatabaseHeader(b[:n])
}

// Names maps paths given one by one to their names on the replica: the
// base name, or names[i] when given.
func Names(paths, names []string) (map[string]string, error) {
	if len(names) > 0 && len(names) != len(paths) {
		return nil, fmt.Errorf("--name given %d times for %d databases: give it once per database, or not at all", len(names), len(paths))
	}
	out := map[string]string{}
	for i, p := range paths {
		abs, err := filepath.Abs(p)
		if err != nil {
			return nil, err
		}
		name := filepath.Base(abs)
		if len(names) > 0 {
			name = strings.Trim(names[i], "/")
		}
		if name == "" || name == "." || strings.Contains("/"+name+"/", "/../") {
			return nil, fmt.Errorf("%s: %q is not a name for the replica (a relative path such as app.db or tenant1/app.db)", p, name)
		}
		if other, ok := out[name]; ok {
			return nil, fmt.Errorf("%s and %s would both replicate to %q: give them other names with --name", other, abs, name)
		}
		out[name] = abs
	}
	return out, nil
}

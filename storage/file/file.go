// Package file is the file:// replica backend: a directory tree in the layout
// Litestream 0.5 uses for file replicas:
//
//	<root>/<db>/ltx/<level>/<minTXID>-<maxTXID>.ltx
//
// and walsync's transaction logs at <root>/<db>/txlog/<minTXID>-<maxTXID>.wtx.
package file

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"time"

	"github.com/superfly/ltx"
	"github.com/walsync/walsync/storage"
)

func init() {
	storage.Register("file", func(_ context.Context, u *url.URL, _ storage.Options) (storage.Client, error) {
		return New(u.Path), nil
	})
}

// Client stores LTX files under a root directory.
type Client struct {
	root string
}

// New returns a client rooted at dir.
func New(dir string) *Client { return &Client{root: filepath.Clean(dir)} }

// URL returns the file:// URL of the root.
func (c *Client) URL() string { return "file://" + c.root }

// Check verifies that the root is a directory, or can become one (its
// nearest existing parent is a directory), without writing anything.
func (c *Client) Check(ctx context.Context) error {
	for p := c.root; ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err == nil {
			if !fi.IsDir() {
				return fmt.Errorf("file replica %s cannot be used: %s is not a directory", c.root, p)
			}
			return nil
		}
		if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
			return fmt.Errorf("file replica %s cannot be used: %w", c.root, err)
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}

// CheckWritable creates the root if it is missing and proves a file can be
// written in it (a writer checks this at startup, not at its first upload).
func (c *Client) CheckWritable(ctx context.Context) error {
	if err := c.Check(ctx); err != nil {
		return err
	}
	// A path through a file is a definite answer (Check); anything else
	// (read-only, full, permissions, I/O errors) may be cured without a
	// restart, like an S3 server that does not answer.
	if err := os.MkdirAll(c.root, 0o755); err != nil {
		return storage.Unavailable(fmt.Errorf("file replica %s cannot be created now: %w", c.root, err))
	}
	f, err := os.CreateTemp(c.root, ".walsync-probe-*")
	if err != nil {
		return storage.Unavailable(fmt.Errorf("file replica %s is not writable now: %w", c.root, err))
	}
	f.Close()
	return os.Remove(f.Name())
}

// LevelDir returns the directory of one level of a database.
func (c *Client) LevelDir(db string, level int) string {
	if level == storage.TxLogLevel {
		return filepath.Join(c.root, filepath.FromSlash(db), "txlog")
	}
	return filepath.Join(c.root, filepath.FromSlash(db), "ltx", strconv.Itoa(level))
}

// LTXFiles lists one level of a database.
func (c *Client) LTXFiles(ctx context.Context, db string, level int) ([]*ltx.FileInfo, error) {
	ents, err := os.ReadDir(c.LevelDir(db, level))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("list replica %s: %w", c.LevelDir(db, level), err)
	}
	var a []*ltx.FileInfo
	for _, e := range ents {
		min, max, err := storage.ParseFilename(level, e.Name())
		if err != nil {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue
		}
		a = append(a, &ltx.FileInfo{Level: level, MinTXID: min, MaxTXID: max, Size: info.Size(), CreatedAt: info.ModTime().UTC()})
	}
	sort.Slice(a, func(i, j int) bool {
		if a[i].MinTXID != a[j].MinTXID {
			return a[i].MinTXID < a[j].MinTXID
		}
		return a[i].MaxTXID < a[j].MaxTXID
	})
	return a, nil
}

func (c *Client) filePath(db string, level int, min, max ltx.TXID) string {
	return filepath.Join(c.LevelDir(db, level), storage.Filename(level, min, max))
}

// OpenLTXFile opens one file.
func (c *Client) OpenLTXFile(ctx context.Context, db string, level int, min, max ltx.TXID) (io.ReadCloser, error) {
	f, err := os.Open(c.filePath(db, level, min, max))
	if errors.Is(err, fs.ErrNotExist) && level == storage.TxLogLevel {
		f, err = os.Open(filepath.Join(c.LevelDir(db, level), storage.LegacyTxLogFilename(min, max)))
	}
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", c.filePath(db, level, min, max), storage.ErrNotFound)
	}
	return f, err
}

// WriteLTXFile writes a file through a temporary file, fsync and rename.
func (c *Client) WriteLTXFile(ctx context.Context, db string, level int, min, max ltx.TXID, r io.ReadSeeker, ts time.Time) error {
	dst := c.filePath(db, level, min, max)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("create replica directory: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+path.Base(dst)+".*.tmp")
	if err != nil {
		return fmt.Errorf("write replica file %s: %w", dst, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		tmp.Close()
		return err
	}
	if _, err := io.Copy(tmp, r); err != nil {
		tmp.Close()
		return fmt.Errorf("write replica file %s: %w", dst, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("sync replica file %s: %w", dst, err)
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	_ = os.Chtimes(tmp.Name(), ts, ts)
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("write replica file %s: %w", dst, err)
	}
	if d, err := os.Open(filepath.Dir(dst)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// DeleteLTXFiles removes files.
func (c *Client) DeleteLTXFiles(ctx context.Context, db string, files []*ltx.FileInfo) error {
	for _, fi := range files {
		if err := os.Remove(c.filePath(db, fi.Level, fi.MinTXID, fi.MaxTXID)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if fi.Level == storage.TxLogLevel {
			legacy := filepath.Join(c.LevelDir(db, fi.Level), storage.LegacyTxLogFilename(fi.MinTXID, fi.MaxTXID))
			if err := os.Remove(legacy); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
	}
	return nil
}

// ObjectURL returns the file's path as a file:// URL.
func (c *Client) ObjectURL(db string, level int, min, max ltx.TXID) string {
	return "file://" + c.filePath(db, level, min, max)
}

// Databases finds every directory under the root that holds an ltx/ directory.
func (c *Client) Databases(ctx context.Context) ([]string, error) {
	var dbs []string
	err := filepath.WalkDir(c.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == c.root {
				return err
			}
			return nil
		}
		if !d.IsDir() {
			return nil
		}
		if d.Name() == "ltx" || d.Name() == "txlog" {
			if d.Name() == "ltx" {
				rel, _ := filepath.Rel(c.root, filepath.Dir(p))
				if rel == "." {
					rel = ""
				}
				dbs = append(dbs, filepath.ToSlash(rel))
			}
			return filepath.SkipDir
		}
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil // like an empty S3 prefix
	}
	sort.Strings(dbs)
	return dbs, err
}

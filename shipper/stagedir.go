package shipper

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// A database's staging directory is named by its escaped path. A name too
// long for one path component (most filesystems allow 255 bytes) is cut and
// made unique by a hash of the whole path, and the directory keeps the
// database's name in a file.
const (
	maxDirName = 200
	nameFile   = "db-name"
)

// stageDirName is the name of a database's staging directory.
func stageDirName(db string) string {
	esc := url.PathEscape(db)
	if len(esc) <= maxDirName {
		return esc
	}
	sum := sha256.Sum256([]byte(db))
	return esc[:maxDirName-33] + "~" + hex.EncodeToString(sum[:16])
}

// dbOfDir returns the database a staging directory belongs to.
func dbOfDir(dir string) (string, error) {
	if b, err := os.ReadFile(filepath.Join(dir, nameFile)); err == nil {
		return string(b), nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	name, err := url.PathUnescape(filepath.Base(dir))
	if err != nil {
		return "", fmt.Errorf("staging directory %s: not a database name", dir)
	}
	if stageDirName(name) != filepath.Base(dir) {
		return "", fmt.Errorf("staging directory %s: its name is cut and the file %s naming its database is missing", dir, nameFile)
	}
	return name, nil
}

// nameDir records the database's name in its staging directory when the
// directory's name does not spell it.
func nameDir(dir, db string) error {
	if url.PathEscape(db) == filepath.Base(dir) {
		return nil
	}
	if _, err := os.Stat(filepath.Join(dir, nameFile)); err == nil {
		return nil
	}
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, nameFile), []byte(db))
}

// setAside moves a staging directory (a database's, or the whole root) out
// of the way, into <staging root>.set-aside, and returns its new path.
func (s *Shipper) setAside(dir string) (string, error) {
	root := filepath.Clean(s.opts.Dir) + ".set-aside"
	if err := os.MkdirAll(root, dirMode); err != nil {
		return "", err
	}
	dst := filepath.Join(root, filepath.Base(dir)+"."+time.Now().UTC().Format("20060102T150405.000000000Z"))
	if err := os.Rename(dir, dst); err != nil {
		return "", err
	}
	return dst, nil
}

// writeFileAtomic replaces path with data so that a crash or power loss
// leaves the old content or the new one, never a torn file: a temporary file
// fsynced, renamed over path, and the directory fsynced.
func writeFileAtomic(path string, data []byte) error {
	// A name of its own: another process may be writing the same file.
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		if errors.Is(err, syscall.ENOSPC) && overwrite(path, data) == nil {
			return nil
		}
		return err
	}
	return syncDir(filepath.Dir(path))
}

// overwrite writes a small file's new content over its old one, in the
// blocks it has: on a full filesystem, where no temporary file can be
// written, this is how the position of what was uploaded is still recorded
// (and the uploaded batch then removed, freeing space). A write of a few
// hundred bytes at offset 0 does not tear in practice.
func overwrite(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.WriteAt(data, 0); err != nil {
		return err
	}
	if err := f.Truncate(int64(len(data))); err != nil {
		return err
	}
	return f.Sync()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

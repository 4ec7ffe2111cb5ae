package shipper

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
)

// Staging holds copies of database pages, so only the user walsync runs as
// may read it: directories are created 0700 and files 0600, whatever the
// databases' own modes (a database readable by others is readable by them
// through its own file; its staging adds nothing to that).
const (
	dirMode  = 0o700
	fileMode = 0o600
)

// PrivateDir creates dir (and its missing parents) 0700, and takes the group
// and other bits off every directory and file under it that has any: staging
// written by an earlier version, or restored from a backup with other modes.
func PrivateDir(dir string) error {
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return err
	}
	// Other processes (the VFS loaded by several) may remove or rename
	// staged files meanwhile: what is gone needs no narrowing.
	gone := func(err error) bool { return errors.Is(err, fs.ErrNotExist) }
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if gone(err) {
				return nil
			}
			return err
		}
		if d.Type()&fs.ModeSymlink != 0 {
			return nil
		}
		info, err := d.Info()
		if gone(err) {
			return nil
		} else if err != nil {
			return err
		}
		if perm := info.Mode().Perm(); perm&0o077 != 0 {
			if err := os.Chmod(p, perm&^0o077); err != nil && !gone(err) {
				return err
			}
		}
		return nil
	})
}

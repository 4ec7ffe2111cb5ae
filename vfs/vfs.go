// Package vfs is the second front end: a SQLite VFS named by the caller
// (usually "walsync") on internal/sqlite3vfs, a fork of
// github.com/psanford/sqlite3vfs with shared memory. Databases opened
// through it are captured by the same core and shipped by the same shipper
// as under the FUSE mount, to the same replica layout.
//
// Go apps (github.com/mattn/go-sqlite3):
//
//	v, err := vfs.New(ctx, vfs.Config{Replica: "file:///backups", Dir: "/var/lib/app"})
//	defer v.Close(ctx)
//	err = v.Register("walsync")
//	db, err := sql.Open("sqlite3", "file:/var/lib/app/app.db?vfs=walsync")
//
// Other languages load the extension built by `make ext` (see ./ext).
//
// Any number of connections and processes may use a database, in a
// rollback-journal mode or in WAL; processes loading the VFS share the
// staging and continue one chain of transactions (capture.Shared: the head
// of the chain and where in the -wal its capture stopped). In WAL mode the
// shared memory (the -shm, its locks) is SQLite's own unix VFS's, reached
// through a second file it opens on the database (see
// internal/sqlite3vfs/FORK.md), so processes on the default VFS coordinate
// with walsync's connections; what they do to the WAL unseen is caught at
// the next barrier (Registry.Outside). SQLite writes
// the -wal straight to the file; its commits are captured at the barriers
// of deferred capture (capture.DB.SyncWAL): an fsync of the -wal, a
// checkpoint, the end of each batch window, the last close.
//
// Locks on the database file are SQLite's byte-range locks taken as
// open-file-description (OFD) locks, so they conflict between connections of
// one process as they do between processes, and with the unix VFS of other
// processes.
package vfs

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/walsync/walsync/dbfiles"
	"github.com/walsync/walsync/internal/sqlite3vfs"
	"github.com/walsync/walsync/shipper"
	"github.com/walsync/walsync/storage"
	_ "github.com/walsync/walsync/storage/file"
	_ "github.com/walsync/walsync/storage/s3"
	"golang.org/x/sys/unix"
)

// Config configures the VFS.
type Config struct {
	// Replica is the replica root URL (file:// or s3://). Required.
	Replica string
	// Dir: a database at Dir/a/b.db replicates to <Replica>/a/b.db; one
	// outside Dir to <Replica>/<absolute path without the leading slash>.
	// Default: the working directory.
	Dir string
	// StagingDir holds staged transactions; default Dir/.walsync/staging.
	StagingDir string
	// SyncInterval is the batch window per database; default 1s.
	SyncInterval time.Duration
	// CloseTimeout bounds the upload of a database's pending transactions
	// when its last connection closes; default 10s. What is left ships at
	// the next start.
	CloseTimeout time.Duration
	// CompactionLevels are the compaction intervals of levels 1, 2, ...;
	// default shipper.DefaultLevels. Level 1's is also how often the
	// transactions one by one (the transaction logs) are uploaded.
	CompactionLevels []time.Duration
	Backend          storage.Options
	Logger           *slog.Logger
}

// VFS captures every database opened through it.
type VFS struct {
	cfg     Config
	dir     string
	shipper *shipper.Shipper
	reg     *dbfiles.Registry
	log     *slog.Logger
}

// New validates the configuration, opens the replica and the staging, and
// ships what an earlier run left staged.
func New(ctx context.Context, cfg Config) (*VFS, error) {
	if cfg.Replica == "" {
		return nil, errors.New("walsync VFS: no replica configured (set Config.Replica, or WALSYNC_REPLICA for the extension), e.g. file:///var/backups/walsync")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.CloseTimeout <= 0 {
		cfg.CloseTimeout = 10 * time.Second
	}
	dir := cfg.Dir
	if dir == "" {
		wd, err := os.Getwd()
		if err != nil {
			return nil, err
		}
		dir = wd
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	client, err := storage.OpenWith(ctx, cfg.Replica, cfg.Backend)
	if err != nil {
		return nil, fmt.Errorf("walsync VFS: %w", err)
	}
	// A definite answer (no such bucket, refused credentials) fails here,
	// so the extension's load fails with it; a replica that does not
	// answer now only delays the uploads.
	if err := storage.Check(ctx, client); errors.Is(err, storage.ErrUnavailable) {
		cfg.Logger.Warn("walsync VFS: the replica does not answer now; transactions are staged and uploaded when it does", "replica", client.URL(), "err", err)
	} else if err != nil {
		return nil, fmt.Errorf("walsync VFS: %w", err)
	}
	staging := cfg.StagingDir
	if staging == "" {
		if err := shipper.PrivateDir(filepath.Join(dir, ".walsync")); err != nil {
			return nil, fmt.Errorf("walsync VFS: staging directory: %w", err)
		}
		staging = filepath.Join(dir, ".walsync", "staging")
	}
	sh, err := shipper.New(shipper.Options{Dir: staging, Client: client, SyncInterval: cfg.SyncInterval, Logger: cfg.Logger,
		Levels: cfg.CompactionLevels, Shared: true}) // other processes may load the VFS on the same databases
	if err != nil {
		return nil, fmt.Errorf("walsync VFS: %w", err)
	}
	reg := dbfiles.NewRegistry(sh, cfg.Logger, nil)
	// SQLite writes the -wal straight to the file; its commits are captured
	// at the barriers (an fsync of the -wal, a checkpoint, the end of each
	// batch window, the last close).
	reg.DeferWAL = true
	// In WAL mode a process on the default VFS may checkpoint, restart or
	// truncate the WAL behind the VFS's back (its writes to the database
	// file and the -wal do not pass through here): each barrier checks the
	// WAL as the watch sidecar does, and follows a restart only when it can
	// prove no commit was skipped, else establishes the state from the
	// files (see capture.Config.Outside).
	reg.Outside = true
	reg.Poll = cfg.SyncInterval
	if reg.Poll <= 0 {
		reg.Poll = time.Second
	}
	return &VFS{cfg: cfg, dir: dir, shipper: sh, reg: reg, log: cfg.Logger}, nil
}

// Register registers the VFS with SQLite under name.
func (v *VFS) Register(name string) error {
	return sqlite3vfs.RegisterVFS(name, v, sqlite3vfs.WithMaxPathName(4096))
}

// Close uploads what is staged and stops the shipper. It is bounded by ctx,
// or by 30 s when ctx has no deadline; its error says what stays staged (it
// ships at the next start).
func (v *VFS) Close(ctx context.Context) error { return v.shipper.Close(ctx) }

// replicaName is the path of a database in the replica.
func (v *VFS) replicaName(path string) string {
	if rel, err := filepath.Rel(v.dir, path); err == nil && !strings.HasPrefix(rel, "..") {
		return filepath.ToSlash(rel)
	}
	return strings.TrimPrefix(filepath.ToSlash(path), "/")
}

func roleOf(flags sqlite3vfs.OpenFlag) dbfiles.Role {
	switch {
	case flags&sqlite3vfs.OpenMainDB != 0:
		return dbfiles.RoleDB
	case flags&sqlite3vfs.OpenWAL != 0:
		return dbfiles.RoleWAL
	case flags&sqlite3vfs.OpenMainJournal != 0:
		return dbfiles.RoleJournal
	}
	return dbfiles.RolePlain
}

// database returns the database a file of role r belongs to (nil: none).
func (v *VFS) database(path string, r dbfiles.Role) *dbfiles.Database {
	if r == dbfiles.RolePlain {
		return nil
	}
	base, _ := dbfiles.Classify(path)
	return v.reg.Get(v.replicaName(base), base)
}

// Open opens a file.
func (v *VFS) Open(name string, flags sqlite3vfs.OpenFlag) (sqlite3vfs.File, sqlite3vfs.OpenFlag, error) {
	var f *os.File
	var err error
	deleteOnClose := flags&sqlite3vfs.OpenDeleteOnClose != 0
	if name == "" {
		f, err = os.CreateTemp("", "walsync-vfs-*")
		deleteOnClose = true
	} else {
		mode := os.O_RDONLY
		if flags&sqlite3vfs.OpenReadWrite != 0 {
			mode = os.O_RDWR
		}
		if flags&sqlite3vfs.OpenCreate != 0 {
			mode |= os.O_CREATE
		}
		if flags&sqlite3vfs.OpenExclusive != 0 {
			mode |= os.O_EXCL
		}
		f, err = createFile(name, mode, roleOf(flags))
	}
	if err != nil {
		return nil, 0, sqlite3vfs.CantOpenError
	}
	r := dbfiles.RolePlain
	if name != "" {
		r = roleOf(flags)
	}
	fl := &file{v: v, f: f, fd: int(f.Fd()), role: r, db: v.database(name, r), deleteOnClose: deleteOnClose}
	if fl.db != nil {
		fl.db.Files.Invalidate(r.Kind())
	}
	if err := fl.db.Open(r); err != nil {
		v.log.Error("open failed", "file", name, "err", err)
		f.Close()
		return nil, 0, sqlite3vfs.CantOpenError
	}
	return fl, flags, nil
}

// createFile opens name with the open flags mode. A -wal or -journal it
// creates gets the database file's mode (and, when walsync runs as root, its
// owner), as SQLite's unix VFS gives them, so a private database's pages
// never sit in a file others may read. A new database file is 0644 less the
// umask, SQLite's default.
func createFile(name string, mode int, r dbfiles.Role) (*os.File, error) {
	if mode&os.O_CREATE == 0 || (r != dbfiles.RoleWAL && r != dbfiles.RoleJournal) {
		return os.OpenFile(name, mode, 0o644)
	}
	base, _ := dbfiles.Classify(name)
	var db unix.Stat_t
	if err := unix.Stat(base, &db); err != nil {
		return os.OpenFile(name, mode, 0o600) // no database file to follow: private
	}
	perm := os.FileMode(db.Mode & 0o777)
	f, err := os.OpenFile(name, mode, perm)
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err == nil && st.Size == 0 {
		// Just created (or empty): the umask must not change the mode.
		if os.FileMode(st.Mode&0o777) != perm {
			_ = f.Chmod(perm)
		}
		if os.Geteuid() == 0 && (st.Uid != db.Uid || st.Gid != db.Gid) {
			_ = f.Chown(int(db.Uid), int(db.Gid))
		}
	}
	return f, nil
}

// Delete removes a file; deleting a -journal or -wal is a capture event.
func (v *VFS) Delete(name string, dirSync bool) error {
	_, r := dbfiles.Classify(name)
	if r == dbfiles.RoleDB {
		r = dbfiles.RolePlain // SQLite deletes main files only as temp files
	}
	d := v.database(name, r)
	err := d.Remove(r, func() error { return os.Remove(name) })
	if errors.Is(err, os.ErrNotExist) {
		return nil // SQLite tolerates a missing file (SQLITE_IOERR_DELETE_NOENT)
	} else if err != nil {
		v.log.Error("delete failed", "file", name, "err", err)
		return sqlite3vfs.IOError
	}
	if dirSync {
		if dir, err := os.Open(filepath.Dir(name)); err == nil {
			_ = dir.Sync()
			dir.Close()
		}
		// synchronous=EXTRA in DELETE mode: the journal's deletion, which
		// committed a transaction, is made durable; so is its staging.
		if r == dbfiles.RoleJournal && d != nil && d.Core() != nil {
			if err := v.shipper.Sync(d.Name); err != nil {
				v.log.Error("sync staging failed", "db", d.Name, "err", err)
				return sqlite3vfs.IOError
			}
		}
	}
	return nil
}

// Access tests for a file.
func (v *VFS) Access(name string, flags sqlite3vfs.AccessFlag) (bool, error) {
	switch flags {
	case sqlite3vfs.AccessExists:
		_, err := os.Stat(name)
		return err == nil, nil
	case sqlite3vfs.AccessReadWrite:
		return unix.Access(name, unix.R_OK|unix.W_OK) == nil, nil
	default:
		return unix.Access(name, unix.R_OK) == nil, nil
	}
}

// FullPathname returns the absolute path of name.
func (v *VFS) FullPathname(name string) string {
	if abs, err := filepath.Abs(name); err == nil {
		return abs
	}
	return name
}

// Randomness, Sleep and CurrentTime complete sqlite3vfs.ExtendedVFSv1.
func (v *VFS) Randomness(b []byte) int {
	n, _ := io.ReadFull(rand.Reader, b)
	return n
}

func (v *VFS) Sleep(d time.Duration) { time.Sleep(d) }

func (v *VFS) CurrentTime() time.Time { return time.Now() }

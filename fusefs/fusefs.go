// Package fusefs is the FUSE front end: a passthrough filesystem over a data
// directory that reports every write, truncation and deletion of a SQLite
// database, its -wal and its -journal to the capture core, so any program in
// any language that opens a database under the mount is captured.
//
// A file is captured as a database when it starts with the SQLite header (or
// is created empty and its first write is a SQLite page 1). Other files,
// including -shm files, pass straight through. The staging directory inside
// the data directory is hidden from the mount.
package fusefs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/walsync/walsync/capture"
)

// Stager is what the mount needs from the shipper.
type Stager interface {
	// Position returns the last captured position of a database.
	Position(ctx context.Context, db string) (capture.Pos, error)
	// Stage makes a transaction durable in local staging.
	Stage(db string, tx *capture.Tx) error
	// Sync fsyncs the database's staged transactions.
	Sync(db string) error
}

// Options configures a mount.
type Options struct {
	DataDir   string
	HiddenDir string // name of the staging directory at the root of DataDir, hidden from the mount
	Stager    Stager
	Logger    *slog.Logger
	Now       func() time.Time
}

// FS is the state shared by every node of one mount.
type FS struct {
	opts Options
	root string
	log  *slog.Logger

	mu  sync.Mutex
	dbs map[string]*database // by database path relative to the root
}

// role is what a file is to a database.
type role int

const (
	rolePlain role = iota
	roleDB
	roleWAL
	roleJournal
)

func classify(rel string) (base string, r role) {
	switch {
	case strings.HasSuffix(rel, "-wal"):
		return strings.TrimSuffix(rel, "-wal"), roleWAL
	case strings.HasSuffix(rel, "-journal"):
		return strings.TrimSuffix(rel, "-journal"), roleJournal
	case strings.HasSuffix(rel, "-shm"):
		return rel, rolePlain
	}
	return rel, roleDB
}

// New returns the filesystem for a data directory.
func New(opts Options) (*FS, error) {
	root, err := filepath.Abs(opts.DataDir)
	if err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &FS{opts: opts, root: root, log: opts.Logger, dbs: map[string]*database{}}, nil
}

// Mount mounts the filesystem at mountpoint. The caller must Unmount the
// returned server.
func (w *FS) Mount(mountpoint string) (*fuse.Server, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(w.root, &st); err != nil {
		return nil, fmt.Errorf("data directory %s: %w", w.root, err)
	}
	lroot := &fs.LoopbackRoot{Path: w.root, Dev: uint64(st.Dev)}
	lroot.NewNode = func(rd *fs.LoopbackRoot, parent *fs.Inode, name string, st *syscall.Stat_t) fs.InodeEmbedder {
		return &node{LoopbackNode: fs.LoopbackNode{RootData: rd}, w: w}
	}
	rootNode := lroot.NewNode(lroot, nil, "", &st)
	lroot.RootNode = rootNode
	sec := time.Second
	opts := &fs.Options{
		MountOptions: fuse.MountOptions{
			FsName:        "walsync:" + w.root,
			Name:          "walsync",
			DirectMount:   true,
			AllowOther:    os.Geteuid() == 0,
			MaxWrite:      1 << 20,
			DisableXAttrs: true,
			Debug:         os.Getenv("WALSYNC_FUSE_DEBUG") != "",
		},
		EntryTimeout:    &sec,
		AttrTimeout:     &sec,
		NegativeTimeout: &sec,
		UID:             uint32(os.Getuid()),
		GID:             uint32(os.Getgid()),
	}
	return fs.Mount(mountpoint, rootNode, opts)
}

// database is the mount's view of one database and its companion files.
type database struct {
	w     *FS
	name  string // path relative to the root
	files *osFiles

	mu      sync.Mutex
	core    *capture.DB // nil until the file is known to be a database
	notDB   bool        // the main file is not a SQLite database
	openDBs int         // open handles on the main file
}

func (w *FS) database(base string) *database {
	w.mu.Lock()
	defer w.mu.Unlock()
	d, ok := w.dbs[base]
	if !ok {
		d = &database{w: w, name: base, files: newOSFiles(filepath.Join(w.root, base))}
		w.dbs[base] = d
	}
	return d
}

func (w *FS) forget(base string) {
	w.mu.Lock()
	d := w.dbs[base]
	delete(w.dbs, base)
	w.mu.Unlock()
	if d != nil {
		d.files.closeAll()
	}
}

// capture returns the capture core of the database, creating it when the main
// file is known to be a database. header is the first bytes about to be
// written at offset 0 of the main file, if that is what triggers the call.
func (d *database) capture(header []byte) (*capture.DB, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.core != nil || d.notDB {
		return d.core, nil
	}
	var hb [16]byte
	size := d.files.Size(capture.DBFile)
	switch {
	case size >= 16:
		if _, err := d.files.ReadAt(capture.DBFile, hb[:], 0); err != nil || !capture.IsDatabaseHeader(hb[:]) {
			d.notDB = true
			d.files.closeAll()
			return nil, nil
		}
	case header != nil && capture.IsDatabaseHeader(header):
	case header != nil:
		// The first write to an empty file is not a SQLite page 1.
		d.notDB = true
		d.files.closeAll()
		return nil, nil
	default:
		return nil, nil // empty: not decided yet
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pos, err := d.w.opts.Stager.Position(ctx, d.name)
	if err != nil {
		// Capture anyway: the shipper refuses to overwrite history it finds
		// on the replica later, so nothing is lost either way.
		d.w.log.Warn("cannot read the replica position; capturing from a new snapshot", "db", d.name, "err", err)
		pos = capture.Pos{}
	}
	core, err := capture.Open(capture.Config{
		Name:  d.name,
		Files: d.files,
		Pos:   pos,
		Now:   d.w.opts.Now,
		Sink:  func(tx *capture.Tx) error { return d.w.opts.Stager.Stage(d.name, tx) },
		Warn:  func(msg string) { d.w.log.Warn(msg, "db", d.name) },
	})
	if errors.Is(err, capture.ErrNotDatabase) {
		d.notDB = true
		d.files.closeAll()
		return nil, nil
	} else if err != nil {
		d.w.log.Error("cannot start capturing database", "db", d.name, "err", err)
		return nil, err
	}
	d.core = core
	d.w.log.Debug("capturing database", "db", d.name, "txid", pos.TXID)
	return core, nil
}

// node is a file or directory of the mount.
type node struct {
	fs.LoopbackNode
	w *FS
}

func (n *node) rel(name string) string {
	return path.Join(n.Path(n.Root()), name)
}

func (n *node) hidden(name string) bool {
	return n.w.opts.HiddenDir != "" && name == n.w.opts.HiddenDir && n.IsRoot()
}

// Lookup hides the staging directory.
func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if n.hidden(name) {
		return nil, syscall.ENOENT
	}
	return n.LoopbackNode.Lookup(ctx, name, out)
}

// OpendirHandle lists a directory; the root's listing omits the staging directory.
func (n *node) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if !n.IsRoot() || n.w.opts.HiddenDir == "" {
		return n.LoopbackNode.OpendirHandle(ctx, flags)
	}
	ents, err := os.ReadDir(n.w.root)
	if err != nil {
		return nil, 0, fs.ToErrno(err)
	}
	out := make([]fuse.DirEntry, 0, len(ents))
	for _, e := range ents {
		if n.hidden(e.Name()) {
			continue
		}
		de := fuse.DirEntry{Name: e.Name()}
		if info, err := e.Info(); err == nil {
			if st, ok := info.Sys().(*syscall.Stat_t); ok {
				de.Mode, de.Ino = st.Mode, st.Ino
			}
		}
		out = append(out, de)
	}
	return fs.NewListDirStream(out), 0, 0
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if n.hidden(name) {
		return nil, syscall.EPERM
	}
	return n.LoopbackNode.Mkdir(ctx, name, mode, out)
}

// Create creates and opens a file.
func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	if n.hidden(name) {
		return nil, nil, 0, syscall.EPERM
	}
	rel := n.rel(name)
	base, r := classify(rel)
	var d *database
	if r != rolePlain {
		d = n.w.database(base)
		d.files.invalidate(kindOf(r))
	}
	p := filepath.Join(n.w.root, rel)
	fd, err := syscall.Open(p, int(flags&^syscall.O_APPEND)|os.O_CREATE, mode)
	if err != nil {
		return nil, nil, 0, fs.ToErrno(err)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		syscall.Close(fd)
		return nil, nil, 0, fs.ToErrno(err)
	}
	ch := n.NewInode(ctx, &node{LoopbackNode: fs.LoopbackNode{RootData: n.RootData}, w: n.w}, fs.StableAttr{Mode: uint32(st.Mode), Gen: 1, Ino: st.Ino})
	out.FromStat(&st)
	h, errno := n.w.newHandle(fd, d, r)
	if errno != 0 {
		syscall.Close(fd)
		return nil, nil, 0, errno
	}
	return ch, h, fuse.FOPEN_KEEP_CACHE, 0
}

// Open opens a file.
func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	rel := n.Path(n.Root())
	base, r := classify(rel)
	var d *database
	if r != rolePlain {
		d = n.w.database(base)
	}
	p := filepath.Join(n.w.root, rel)
	trunc := flags&syscall.O_TRUNC != 0
	fd, err := syscall.Open(p, int(flags&^(syscall.O_APPEND|syscall.O_TRUNC|fuse.FMODE_EXEC)), 0)
	if err != nil {
		return nil, 0, fs.ToErrno(err)
	}
	h, errno := n.w.newHandle(fd, d, r)
	if errno != 0 {
		syscall.Close(fd)
		return nil, 0, errno
	}
	if trunc {
		if errno := h.truncate(0); errno != 0 {
			h.Release(ctx)
			return nil, 0, errno
		}
	}
	return h, fuse.FOPEN_KEEP_CACHE, 0
}

// Unlink removes a file; removing a -wal or -journal is a capture event.
func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	rel := n.rel(name)
	p := filepath.Join(n.w.root, rel)
	unlink := func() error { return syscall.Unlink(p) }
	base, r := classify(rel)
	if r == rolePlain {
		return fs.ToErrno(unlink())
	}
	d := n.w.database(base)
	core, err := d.capture(nil)
	if err != nil {
		return syscall.EIO
	}
	switch {
	case r == roleDB:
		err = unlink()
		if err == nil {
			n.w.forget(base)
		}
	case core == nil:
		err = unlink()
	case r == roleWAL:
		err = core.RemoveWAL(unlink)
	case r == roleJournal:
		err = core.RemoveJournal(unlink)
	}
	d.files.invalidate(kindOf(r))
	return n.w.errno(d, err)
}

// Rename renames a file. A database renamed is captured again at its new
// path as a new database; its history stays at the old path.
func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	np, ok := newParent.(*node)
	if !ok {
		return syscall.EXDEV
	}
	if n.hidden(name) || np.hidden(newName) {
		return syscall.EPERM
	}
	from, to := n.rel(name), np.rel(newName)
	for _, rel := range []string{from, to} {
		if base, r := classify(rel); r != rolePlain {
			n.w.forget(base)
		}
	}
	return n.LoopbackNode.Rename(ctx, name, newParent, newName, flags)
}

// Setattr changes attributes; a size change of a -wal or -journal is a capture event.
func (n *node) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if sz, ok := in.GetSize(); ok {
		h, _ := f.(*handle)
		if h == nil {
			rel := n.Path(n.Root())
			base, r := classify(rel)
			var d *database
			if r != rolePlain {
				d = n.w.database(base)
			}
			fd, err := syscall.Open(filepath.Join(n.w.root, rel), syscall.O_WRONLY, 0)
			if err != nil {
				return fs.ToErrno(err)
			}
			h = &handle{fd: fd, w: n.w, db: d, role: r}
			defer syscall.Close(fd)
		}
		if errno := h.truncate(int64(sz)); errno != 0 {
			return errno
		}
		in.Valid &^= fuse.FATTR_SIZE
	}
	return n.LoopbackNode.Setattr(ctx, nil, in, out)
}

func kindOf(r role) capture.Kind {
	switch r {
	case roleWAL:
		return capture.WALFile
	case roleJournal:
		return capture.JournalFile
	}
	return capture.DBFile
}

func (w *FS) errno(d *database, err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var en syscall.Errno
	if errors.As(err, &en) {
		return en
	}
	name := ""
	if d != nil {
		name = d.name
	}
	w.log.Error("capture failed; the operation is refused so SQLite reports it", "db", name, "err", err)
	return syscall.EIO
}

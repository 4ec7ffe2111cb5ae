// Package fusefs is the FUSE front end: a passthrough filesystem over a data
// directory that reports every write, truncation and deletion of a SQLite
// database and its -journal to the capture core, so any program in any
// language that opens a database under the mount is captured.
//
// A file is captured as a database when it starts with the SQLite header (or
// is created empty and its first write is a SQLite page 1). Other files,
// including -shm files, pass straight through. The staging directory inside
// the data directory is hidden from the mount.
//
// -wal files are opened in kernel passthrough when the kernel allows it
// (Capture): the kernel writes them without a round trip to walsync, and
// their commits are captured at barriers (capture.DB.SyncWAL): the -wal's
// fsync, every checkpoint write to the database file, the -wal's truncation,
// removal or renaming, a poll once per batch window, the last close, and
// walsync's start (captureExisting); each -wal write wakes a capture a
// moment later (dbfiles.Watcher), so commits rarely wait for one. Files
// that are not databases are in passthrough too. Otherwise (CaptureWrite, or
// a kernel or data directory that refuses passthrough) every -wal write is
// reported and captured before it returns.
package fusefs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/walsync/walsync/dbfiles"
)

// Stager is what the mount needs from the shipper.
type Stager = dbfiles.Stager

// Options configures a mount.
type Options struct {
	DataDir   string
	HiddenDir string // name of the staging directory at the root of DataDir, hidden from the mount
	Stager    Stager
	Logger    *slog.Logger
	Now       func() time.Time
	// OwnerOnly mounts without allow_other: only the user who mounted
	// (root) reaches the files. By default every user reaches the mount,
	// and the kernel checks each file's mode bits for each caller.
	OwnerOnly bool
	// Capture: how -wal writes are seen (default CaptureAuto).
	Capture Capture
	// Window is the batch window: with passthrough, how often the -wal of
	// an open database is scanned for commits no -wal watch woke the
	// capture for (default 1s).
	Window time.Duration
	// BarriersOnly: with passthrough, capture only at barriers, never as
	// soon as a -wal is written (tests use it to leave commits uncaptured).
	BarriersOnly bool
}

// FS is the state shared by every node of one mount.
type FS struct {
	opts Options
	root string
	log  *slog.Logger

	reg *dbfiles.Registry // databases by path relative to the root

	// passthrough: -wal files are opened in FUSE passthrough (set once the
	// kernel accepted a backing file).
	passthrough atomic.Bool
	// warnedDirect: a -wal outside the data directory's filesystem is
	// captured write by write; logged once.
	warnedDirect atomic.Bool
	dev          uint64 // the data directory's device, where the passthrough probe succeeded
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
	if opts.Capture == "" {
		opts.Capture = CaptureAuto
	}
	if _, err := ParseCapture(string(opts.Capture)); err != nil {
		return nil, err
	}
	if opts.Window <= 0 {
		opts.Window = time.Second
	}
	reg := dbfiles.NewRegistry(opts.Stager, opts.Logger, opts.Now)
	if opts.Capture != CaptureWrite {
		reg.Poll = opts.Window
		reg.BarriersOnly = opts.BarriersOnly
		if reg.Watcher, err = dbfiles.NewWatcher(opts.Logger); err != nil {
			opts.Logger.Warn("cannot watch -wal files (inotify); their commits are captured at the end of each batch window", "err", err)
		}
	}
	return &FS{opts: opts, root: root, log: opts.Logger, reg: reg}, nil
}

// maxWrite is the largest WRITE request the kernel sends: SQLite's largest
// write (a 64 KiB page) in one request. go-fuse keeps one buffer of this size
// per request in flight, so it bounds the mount's memory under load.
const maxWrite = 64<<10 + 4<<10

// Mount mounts the filesystem at mountpoint. The caller must Unmount the
// returned server. Before it serves anything it waits for processes still
// using a dead previous mount (waitForOrphans) and captures what existing
// -wal files committed (captureExisting); once mounted it turns passthrough
// on if the kernel accepts a backing file (opens until then capture every
// write, which is always safe).
func (w *FS) Mount(mountpoint string) (*fuse.Server, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(w.root, &st); err != nil {
		return nil, fmt.Errorf("data directory %s: %w", w.root, err)
	}
	w.dev = uint64(st.Dev)
	if err := w.waitForOrphans(mountpoint); err != nil {
		return nil, err
	}
	w.captureExisting()
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
			AllowOther:    os.Geteuid() == 0 && !w.opts.OwnerOnly,
			Options:       []string{"default_permissions"},
			MaxWrite:      maxWrite,
			DisableXAttrs: true,
			Debug:         os.Getenv("WALSYNC_FUSE_DEBUG") != "",
		},
		EntryTimeout:    &sec,
		AttrTimeout:     &sec,
		NegativeTimeout: &sec,
		// Attributes are the data directory's as they are: a mode of 0 stays
		// 0 and an owner stays the owner, for the kernel's checks.
		NullPermissions: true,
	}
	srv, err := fs.Mount(mountpoint, rootNode, opts)
	if err != nil {
		return nil, err
	}
	if w.opts.Capture == CaptureWrite {
		w.log.Info("capturing every -wal write (--capture=write)")
		return srv, nil
	}
	if err := w.probePassthrough(srv); err != nil {
		if w.opts.Capture == CapturePassthrough {
			_ = srv.Unmount()
			return nil, fmt.Errorf("--capture=passthrough: FUSE passthrough is not available: %w", err)
		}
		w.log.Warn("FUSE passthrough is not available: capturing every -wal write instead (slower)", "reason", err)
		return srv, nil
	}
	w.passthrough.Store(true)
	w.log.Info("-wal files in FUSE passthrough: transactions are captured at fsync, checkpoint, window end and close")
	return srv, nil
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
	return n.existing(ctx, filepath.Join(n.w.root, n.rel(name)), out)
}

// existing returns the inode of the file at p, which exists.
func (n *node) existing(ctx context.Context, p string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		return nil, fs.ToErrno(err)
	}
	out.Attr.FromStat(&st)
	return n.newChild(ctx, p, -1, &st), 0
}

// OpendirHandle lists a directory; the root's listing omits the staging directory.
func (n *node) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	fh, fl, errno := n.opendir(ctx, flags)
	if errno != 0 {
		return nil, 0, errno
	}
	return &dirHandle{FileHandle: fh, w: n.w, dir: n.Path(n.Root())}, fl, 0
}

func (n *node) opendir(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
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

// Mkdir creates a directory owned by the caller.
func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return n.makeNode(ctx, name, mode, out, func(p string) error { return syscall.Mkdir(p, mode) }, syscall.Rmdir)
}

// Mknod creates a special file (a FIFO, a socket) owned by the caller.
func (n *node) Mknod(ctx context.Context, name string, mode, rdev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return n.makeNode(ctx, name, mode, out, func(p string) error { return syscall.Mknod(p, mode, int(rdev)) }, syscall.Unlink)
}

// Symlink creates a symbolic link owned by the caller.
func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return n.makeNode(ctx, name, 0, out, func(p string) error { return syscall.Symlink(target, p) }, syscall.Unlink)
}

// makeNode creates name with create, gives it to the caller (own; undo
// removes it on failure) and returns its inode.
func (n *node) makeNode(ctx context.Context, name string, mode uint32, out *fuse.EntryOut, create, undo func(string) error) (*fs.Inode, syscall.Errno) {
	if n.hidden(name) {
		return nil, syscall.EPERM
	}
	p := filepath.Join(n.w.root, n.rel(name))
	if err := create(p); err != nil {
		return nil, fs.ToErrno(err)
	}
	st, errno := n.w.own(ctx, p, -1, mode, undo)
	if errno != 0 {
		return nil, errno
	}
	out.FromStat(&st)
	return n.newChild(ctx, p, -1, &st), 0
}

// Link creates a hard link; the staging directory cannot be a target.
func (n *node) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if n.hidden(name) {
		return nil, syscall.EPERM
	}
	t, ok := target.(*node)
	if !ok {
		return nil, syscall.EXDEV
	}
	p := filepath.Join(n.w.root, n.rel(name))
	if err := syscall.Link(filepath.Join(n.w.root, t.Path(t.Root())), p); err != nil {
		return nil, fs.ToErrno(err)
	}
	return n.existing(ctx, p, out)
}

// newChild returns the inode of the file at p (fd, if not -1, is open on
// it), looked up or just made through this node. Every path that makes an
// inode goes through it, so a file has one identity (identity.go).
func (n *node) newChild(ctx context.Context, p string, fd int, st *syscall.Stat_t) *fs.Inode {
	return n.NewInode(ctx, &node{LoopbackNode: fs.LoopbackNode{RootData: n.RootData}, w: n.w},
		stableAttr(n.RootData, p, fd, st))
}

// Create creates and opens a file.
func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	if n.hidden(name) {
		return nil, nil, 0, syscall.EPERM
	}
	rel := n.rel(name)
	base, r := dbfiles.Classify(rel)
	var d *dbfiles.Database
	if r != dbfiles.RolePlain {
		d = n.w.reg.Get(base, filepath.Join(n.w.root, base))
		d.Files.Invalidate(r.Kind())
	}
	created, trunc := true, false
	p := filepath.Join(n.w.root, rel)
	fd, err := syscall.Open(p, int(flags&^syscall.O_APPEND)|os.O_CREATE|os.O_EXCL, mode)
	if errors.Is(err, syscall.EEXIST) && flags&syscall.O_EXCL == 0 {
		// Created by someone else since the kernel's lookup (behind the
		// mount's back): open it as it is, if its modes let the caller.
		fd, err = syscall.Open(p, int(flags&^(syscall.O_APPEND|syscall.O_CREAT|syscall.O_TRUNC))|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
		created, trunc = false, flags&syscall.O_TRUNC != 0
		var st syscall.Stat_t
		if err == nil && (syscall.Fstat(fd, &st) != nil || !permits(ctx, &st, flags)) {
			syscall.Close(fd)
			return nil, nil, 0, syscall.EACCES
		}
	}
	if err != nil {
		return nil, nil, 0, fs.ToErrno(err)
	}
	var st syscall.Stat_t
	if created {
		var errno syscall.Errno
		if st, errno = n.w.own(ctx, p, fd, mode, syscall.Unlink); errno != 0 {
			syscall.Close(fd)
			return nil, nil, 0, errno
		}
	} else if err := syscall.Fstat(fd, &st); err != nil {
		syscall.Close(fd)
		return nil, nil, 0, fs.ToErrno(err)
	}
	ch := n.newChild(ctx, p, fd, &st)
	out.FromStat(&st)
	h, errno := n.w.newHandle(fd, d, r, &st)
	if errno != 0 {
		syscall.Close(fd)
		return nil, nil, 0, errno
	}
	if trunc {
		if errno := h.truncate(0); errno != 0 {
			h.Release(ctx)
			return nil, nil, 0, errno
		}
	}
	return ch, h, h.openFlags(), 0
}

// Open opens a file.
func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	rel := n.Path(n.Root())
	base, r := dbfiles.Classify(rel)
	var d *dbfiles.Database
	if r != dbfiles.RolePlain {
		d = n.w.reg.Get(base, filepath.Join(n.w.root, base))
	}
	p := filepath.Join(n.w.root, rel)
	trunc := flags&syscall.O_TRUNC != 0
	fd, err := syscall.Open(p, int(flags&^(syscall.O_APPEND|syscall.O_TRUNC|fuse.FMODE_EXEC)), 0)
	if err != nil {
		return nil, 0, fs.ToErrno(err)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		syscall.Close(fd)
		return nil, 0, fs.ToErrno(err)
	}
	h, errno := n.w.newHandle(fd, d, r, &st)
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
	return h, h.openFlags(), 0
}

// openFlags: the kernel page cache is kept across opens (every change goes
// through the mount). The -wal is opened for direct I/O: the kernel sends
// each write(2) as one request instead of splitting the page that follows
// a frame header at page-cache boundaries (3 round trips per frame become
// 2); SQLite never maps the -wal, and reads WAL frames only for pages it
// does not have cached. In passthrough (go-fuse adds the flag) the kernel
// reads and writes the file directly; direct I/O would override it.
func (h *handle) openFlags() uint32 {
	switch {
	case h.passthrough:
		return 0
	case h.role == dbfiles.RoleWAL:
		return fuse.FOPEN_DIRECT_IO
	}
	return fuse.FOPEN_KEEP_CACHE
}

// Unlink removes a file; removing a -wal or -journal is a capture event.
func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	rel := n.rel(name)
	p := filepath.Join(n.w.root, rel)
	unlink := func() error { return syscall.Unlink(p) }
	base, r := dbfiles.Classify(rel)
	if r == dbfiles.RolePlain {
		return fs.ToErrno(unlink())
	}
	d := n.w.reg.Get(base, filepath.Join(n.w.root, base))
	if r == dbfiles.RoleDB {
		if err := d.SyncWAL(); err != nil {
			return n.w.errno(d, err) // its -wal's commits are captured first
		}
		err := unlink()
		if err == nil {
			n.w.reg.Forget(base)
		}
		return n.w.errno(d, err)
	}
	if _, err := d.Capture(nil); err != nil {
		return syscall.EIO
	}
	return n.w.errno(d, d.Remove(r, unlink))
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
		if base, r := dbfiles.Classify(rel); r != dbfiles.RolePlain {
			// What a -wal renamed away or replaced committed is captured
			// before it moves.
			if err := n.w.reg.Get(base, filepath.Join(n.w.root, base)).SyncWAL(); err != nil {
				return n.w.errno(nil, err)
			}
			n.w.reg.Forget(base)
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
			base, r := dbfiles.Classify(rel)
			var d *dbfiles.Database
			if r != dbfiles.RolePlain {
				d = n.w.reg.Get(base, filepath.Join(n.w.root, base))
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

func (w *FS) errno(d *dbfiles.Database, err error) syscall.Errno {
	if err == nil {
		return 0
	}
	if en, ok := err.(syscall.Errno); ok {
		return en // the file operation's own error
	}
	name := ""
	if d != nil {
		name = d.Name
	}
	// A capture or staging failure (a full staging filesystem, an I/O
	// error): SQLite sees the operation fail, the operator sees why.
	w.reg.CaptureErrors.Add(1)
	w.log.Error("capture failed; the operation is refused so SQLite reports it", "db", name, "err", err)
	var en syscall.Errno
	if errors.As(err, &en) {
		return en
	}
	return syscall.EIO
}

// CaptureErrors counts the captures that failed since the mount started.
func (w *FS) CaptureErrors() uint64 { return w.reg.CaptureErrors.Load() }

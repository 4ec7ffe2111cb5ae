// Package watch backs up databases that stay where they are, with no mount
// and no VFS: a sidecar that follows each database's files from outside (as
// Litestream does), with the mount's capture core, staging and shipper, and
// writes nothing into the databases: no table, no pragma, no checkpoint.
//
// Each database is scanned when it reports a write (inotify, see notify.go)
// and every Interval as a fallback; each transaction committed since the
// last scan is captured, one TXID each (scan.go). A WAL restarted between
// two scans is followed commit by commit when the old generation's frames
// still in the file prove nothing is missing; a SQLite reader's lock on the
// -shm keeps a second restart away until the scan (hold.go). What a scan
// cannot follow (the WAL restarted twice, truncated, deleted, the database
// changed while walsync was stopped) is established again from the files:
// continuity with the last captured position is proven by the database's
// checksum, or the whole database ships as the next transaction; never a
// wrong increment. A database in a rollback-journal mode ships whole
// whenever its change counter moves.
//
// An idle database costs no goroutine and no descriptor: one inotify
// instance (a watch per directory, a one-shot watch per database), a small
// pool of scan workers.
package watch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/walsync/walsync/dbfiles"
)

// Options configures a Sidecar.
type Options struct {
	Stager dbfiles.Stager
	Log    *slog.Logger
	// Interval: every database is scanned this often even without an
	// event, and directories are rescanned for new databases (default 10s).
	Interval time.Duration
	// Workers scan databases in parallel (default 4).
	Workers int
	// MinGap: a database written continuously is scanned at most once per
	// MinGap (default 25ms): each scan reads every commit since the last
	// one, and fewer scans leave the writer more of the machine.
	MinGap time.Duration
	// CheckpointSize, if positive, has walsync checkpoint a WAL database
	// itself (PASSIVE, through Checkpoint) once a scan has read every
	// commit of a WAL larger than this, for applications that never
	// checkpoint. Off by default: walsync runs no checkpoint the
	// application did not ask for.
	CheckpointSize int64
	Checkpoint     func(path string) error
	// MaxHeldWAL: a WAL file larger than this is not held at a restart
	// (see walWritten), so that a writer that outruns the capture cannot
	// grow it without bound; default 64 MiB.
	MaxHeldWAL int64
}

// Sidecar watches databases.
type Sidecar struct {
	opts Options
	log  *slog.Logger
	reg  *dbfiles.Registry
	ino  *notifier
	work chan *entry
	// workMu guards closing work: a delayed queue may come after Run.
	workMu sync.RWMutex
	closed bool

	mu      sync.Mutex
	byName  map[string]*entry
	byPath  map[string]*entry // main file's path
	dirs    []Dir
	watched map[string]bool // directories with a watch
}

// entry is one watched database and what its last scan saw.
type entry struct {
	name, path string
	fromDir    bool // found under a --dir: forgotten when it goes away
	d          *dbfiles.Database
	queued     atomic.Bool
	delayed    atomic.Bool  // a queue waits for MinGap
	lastScan   atomic.Int64 // when the last scan started (UnixNano)
	walMode    atomic.Bool  // the last scan found it in WAL mode

	scanSalts atomic.Uint64 // the WAL's salts when the last scan read it
	cycling   atomic.Bool   // the WAL restarted between the last two scans

	holdMu sync.Mutex
	held   bool  // the WAL's read slot is held (see holdWAL)
	hold   *lock // nil while held: no -shm, nothing can restart the WAL

	mu      sync.Mutex // one scan at a time
	seen    bool
	wal     bool
	salts   uint64 // WAL header salts
	walSize int64
	walTime int64     // its modification time (ns): frames can be rewritten in place
	readAt  time.Time // when the scan that saw walTime read
	counter uint32    // file change counter (rollback-journal modes)
	dbStat  fileStat  // the database file after the last scan (WAL mode)
	warned  bool
}

// New starts a sidecar with no database.
func New(opts Options) (*Sidecar, error) {
	if opts.Interval <= 0 {
		opts.Interval = 10 * time.Second
	}
	if opts.Workers <= 0 {
		opts.Workers = 4
	}
	if opts.MaxHeldWAL <= 0 {
		opts.MaxHeldWAL = 64 << 20
	}
	if opts.MinGap <= 0 {
		opts.MinGap = 25 * time.Millisecond
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	ino, err := newNotifier()
	if err != nil {
		return nil, err
	}
	reg := dbfiles.NewRegistry(opts.Stager, opts.Log, time.Now)
	reg.DeferWAL, reg.Outside = true, true
	s := &Sidecar{opts: opts, log: opts.Log, reg: reg, ino: ino, work: make(chan *entry, 1024),
		byName: map[string]*entry{}, byPath: map[string]*entry{}, watched: map[string]bool{}}
	reg.ReadLock = func(name string) error {
		s.mu.Lock()
		e := s.byName[name]
		s.mu.Unlock()
		if e == nil {
			return nil
		}
		return e.holdWAL() // released when the scan ends
	}
	return s, nil
}

// Add watches the database at path as name on the replica.
func (s *Sidecar) Add(name, path string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addLocked(name, path)
}

func (s *Sidecar) addLocked(name, path string) error {
	if e, ok := s.byName[name]; ok {
		if e.path == path {
			return nil
		}
		return fmt.Errorf("%s and %s would both replicate to %q", e.path, path, name)
	}
	if e, ok := s.byPath[path]; ok {
		return fmt.Errorf("%s is watched twice (as %q and %q)", path, e.name, name)
	}
	if err := s.watchDir(filepath.Dir(path)); err != nil {
		return err
	}
	e := &entry{name: name, path: path, d: s.reg.Get(name, path)}
	s.byName[name], s.byPath[path] = e, e
	s.log.Debug("watching", "db", name, "path", path)
	s.queue(e)
	return nil
}

// AddDir watches the databases in a directory, those created later too.
func (s *Sidecar) AddDir(d Dir) error {
	abs, err := filepath.Abs(d.Path)
	if err != nil {
		return err
	}
	d.Path = abs
	found, err := d.scan()
	if err != nil {
		return fmt.Errorf("--dir %s: %w", d.Path, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dirs = append(s.dirs, d)
	if err := s.watchTree(d); err != nil {
		return err
	}
	for name, p := range found {
		if err := s.addLocked(name, p); err != nil {
			return err
		}
		s.byName[name].fromDir = true
	}
	return nil
}

// watchTree watches d's directory and, recursive, those below it.
func (s *Sidecar) watchTree(d Dir) error {
	if !d.Recursive {
		return s.watchDir(d.Path)
	}
	return filepath.WalkDir(d.Path, func(p string, e os.DirEntry, err error) error {
		if err != nil || !e.IsDir() {
			return nil
		}
		if p != d.Path && len(e.Name()) > 0 && e.Name()[0] == '.' {
			return filepath.SkipDir
		}
		return s.watchDir(p)
	})
}

func (s *Sidecar) watchDir(dir string) error {
	if s.watched[dir] {
		return nil
	}
	if err := s.ino.watchDir(dir); err != nil {
		// Scanned every Interval all the same.
		s.log.Warn("cannot watch a directory for writes; its databases are looked at every interval", "dir", dir, "err", err)
		return nil
	}
	s.watched[dir] = true
	return nil
}

// Databases returns the watched databases' names.
func (s *Sidecar) Databases() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	names := make([]string, 0, len(s.byName))
	for n := range s.byName {
		names = append(names, n)
	}
	return names
}

func (s *Sidecar) queue(e *entry) {
	if wait := s.opts.MinGap - time.Since(time.Unix(0, e.lastScan.Load())); wait > 0 {
		if e.delayed.CompareAndSwap(false, true) {
			time.AfterFunc(wait, func() { e.delayed.Store(false); s.queueNow(e) })
		}
		return
	}
	s.queueNow(e)
}

func (s *Sidecar) queueNow(e *entry) {
	s.workMu.RLock()
	defer s.workMu.RUnlock()
	if s.closed {
		return
	}
	if e.queued.CompareAndSwap(false, true) {
		select {
		case s.work <- e:
		default:
			e.queued.Store(false) // full: the next interval looks
		}
	}
}

// Run scans the databases until ctx is done, then scans each one last time.
func (s *Sidecar) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for i := 0; i < s.opts.Workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for e := range s.work {
				e.queued.Store(false)
				e.lastScan.Store(time.Now().UnixNano())
				s.scan(e)
			}
		}()
	}
	notices, stop := make(chan notice, 256), make(chan struct{})
	inoDone := make(chan error, 1)
	go func() {
		inoDone <- s.ino.run(func(n notice) {
			select {
			case notices <- n:
			case <-stop:
			}
		})
	}()
	t := time.NewTicker(s.opts.Interval)
	defer t.Stop()
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case n := <-notices:
			s.notice(n)
		case err := <-inoDone:
			s.log.Error("inotify stopped: databases are looked at every interval only", "err", err)
			inoDone = nil
		case <-t.C:
			s.rescan()
		}
	}
	close(stop)
	s.ino.Close()
	s.workMu.Lock()
	s.closed = true
	close(s.work)
	s.workMu.Unlock()
	wg.Wait()
	// A last look at every database: what was committed until now ships.
	s.mu.Lock()
	all := make([]*entry, 0, len(s.byName))
	for _, e := range s.byName {
		all = append(all, e)
	}
	s.mu.Unlock()
	for _, e := range all {
		s.scan(e)
	}
	return nil
}

// notice queues the database a write or a new, deleted or renamed file
// belongs to; a write to a WAL that restarted since the last scan queues
// its scan at once (see walWritten).
func (s *Sidecar) notice(n notice) {
	if n.overflow {
		s.log.Warn("inotify: events were lost; every database is looked at again")
		s.rescan()
		return
	}
	p := n.path
	db, companion := companionOf(p)
	if companion {
		p = db
	}
	s.mu.Lock()
	e := s.byPath[p]
	s.mu.Unlock()
	if e != nil {
		if n.modified && companion && e.walMode.Load() && s.walWritten(e) {
			s.queueNow(e) // a restart: the old generation's frames are read before the new one reaches them
			return
		}
		s.queue(e)
		return
	}
	if !n.modified && !companion {
		s.discover(n.path)
	}
}

// discover adds a new file (or, recursive, a new directory) under a
// watched directory.
func (s *Sidecar) discover(p string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fi, err := os.Stat(p)
	if err != nil {
		return
	}
	for _, d := range s.dirs {
		rel, err := filepath.Rel(d.Path, p)
		if err != nil || rel == "." || filepath.IsAbs(rel) || len(rel) > 1 && rel[:2] == ".." {
			continue
		}
		rel = filepath.ToSlash(rel)
		if fi.IsDir() && d.Recursive {
			_ = s.watchTree(Dir{Path: p, Pattern: d.Pattern, Recursive: true})
			found, _ := Dir{Path: p, Pattern: d.Pattern, Recursive: true}.scan()
			for sub, fp := range found {
				s.addFound(rel+"/"+sub, fp)
			}
			return
		}
		if fi.Mode().IsRegular() && d.matches(rel) && isDatabase(p) {
			s.addFound(rel, p)
			return
		}
	}
}

func (s *Sidecar) addFound(name, p string) {
	if _, ok := s.byPath[p]; ok {
		return
	}
	if err := s.addLocked(name, p); err != nil {
		s.log.Error("a new database is not watched", "path", p, "err", err)
		return
	}
	s.byName[name].fromDir = true
	s.log.Info("new database found: watched", "db", name, "path", p)
}

// forget stops watching a database found under a directory that is gone
// (deleted or renamed; a rename is found again under its new name by the
// next rescan). What it shipped stays on the replica.
func (s *Sidecar) forget(e *entry) {
	if _, err := os.Stat(e.path); !errors.Is(err, os.ErrNotExist) {
		return
	}
	s.mu.Lock()
	if s.byName[e.name] == e {
		delete(s.byName, e.name)
		delete(s.byPath, e.path)
	}
	s.mu.Unlock()
	s.reg.Forget(e.name)
	s.log.Info("database gone: no longer watched (its backup stays on the replica)", "db", e.name, "path", e.path)
}

// rescan queues every database and looks for new ones.
func (s *Sidecar) rescan() {
	s.mu.Lock()
	dirs := append([]Dir(nil), s.dirs...)
	all := make([]*entry, 0, len(s.byName))
	for _, e := range s.byName {
		all = append(all, e)
	}
	s.mu.Unlock()
	for _, e := range all {
		s.queue(e)
	}
	for _, d := range dirs {
		found, err := d.scan()
		if err != nil {
			continue
		}
		s.mu.Lock()
		for name, p := range found {
			s.addFound(name, p)
		}
		s.mu.Unlock()
	}
}

package dbfiles

import (
	"encoding/binary"
	"log/slog"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Watcher wakes the capture of a database when its -wal is written behind
// the capture core's back (FUSE passthrough): one inotify descriptor and one
// goroutine for all databases, a watch per -wal that has an open database.
// Capture then runs beside the writer, within moments of each commit, so
// that transactions carry the time they were committed, reach the replica
// one batch window later, and a checkpoint finds almost nothing left to
// capture. Barriers keep the guarantees; the watcher only makes capture
// early.
type Watcher struct {
	fd  int
	log *slog.Logger

	mu  sync.Mutex
	wds map[int32]*Database
}

// NewWatcher starts a watcher.
func NewWatcher(log *slog.Logger) (*Watcher, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
	if err != nil {
		return nil, err
	}
	w := &Watcher{fd: fd, log: log, wds: map[int32]*Database{}}
	go w.run()
	return w, nil
}

// watch wakes d's capture whenever path is written; it returns the watch's
// descriptor, or -1 when it cannot watch (logged: the batch window's poll
// captures instead).
func (w *Watcher) watch(path string, d *Database) int32 {
	wd, err := unix.InotifyAddWatch(w.fd, path, unix.IN_MODIFY)
	if err != nil {
		w.log.Debug("cannot watch the -wal; captured at the end of each batch window", "path", path, "err", err)
		return -1
	}
	w.mu.Lock()
	w.wds[int32(wd)] = d
	w.mu.Unlock()
	return int32(wd)
}

// unwatch removes a watch.
func (w *Watcher) unwatch(wd int32) {
	w.mu.Lock()
	delete(w.wds, wd)
	w.mu.Unlock()
	_, _ = unix.InotifyRmWatch(w.fd, uint32(wd))
}

func (w *Watcher) run() {
	buf := make([]byte, 64<<10)
	for {
		// Events that arrive meanwhile wait in the kernel, where those of
		// one file merge: a busy -wal costs one read per pause, not one per
		// write.
		time.Sleep(kickDelay)
		n, err := unix.Read(w.fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n <= 0 {
			w.log.Error("the -wal watcher stopped; commits are captured at the end of each batch window", "err", err)
			return
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			wd := int32(binary.LittleEndian.Uint32(buf[off:]))
			mask := binary.LittleEndian.Uint32(buf[off+4:])
			nameLen := int(binary.LittleEndian.Uint32(buf[off+12:]))
			off += unix.SizeofInotifyEvent + nameLen
			w.mu.Lock()
			d := w.wds[wd]
			if mask&unix.IN_IGNORED != 0 {
				delete(w.wds, wd) // the file is gone; its descriptor may be reused
			}
			w.mu.Unlock()
			if d != nil && mask&unix.IN_MODIFY != 0 {
				d.kick()
			}
		}
	}
}

// kick captures what the -wal committed, soon, on another goroutine; kicks
// while a capture runs make it look once more when it is done.
func (d *Database) kick() {
	for {
		switch s := d.kickState.Load(); s {
		case kickIdle:
			if d.kickState.CompareAndSwap(kickIdle, kickRunning) {
				go d.captureKicked()
				return
			}
		case kickRunning:
			if d.kickState.CompareAndSwap(kickRunning, kickAgain) {
				return
			}
		default:
			return // kickAgain: the running capture looks again
		}
	}
}

const (
	kickIdle int32 = iota
	kickRunning
	kickAgain
)

// kickDelay is how long a woken capture waits for the commits that follow
// the one that woke it, so that a burst is captured together.
const kickDelay = time.Millisecond

func (d *Database) captureKicked() {
	for {
		time.Sleep(kickDelay)
		d.r.mu.Lock()
		current := d.r.dbs[d.Name] == d
		d.r.mu.Unlock()
		if core := d.Core(); core != nil && current {
			if err := d.batch(core, core.SyncWAL); err != nil {
				d.r.Log.Debug("capture after a -wal write failed; retried at the next barrier", "db", d.Name, "err", err)
			}
		}
		if d.kickState.CompareAndSwap(kickRunning, kickIdle) {
			return
		}
		d.kickState.Store(kickRunning) // kicked meanwhile: once more
	}
}

package fusefs

import (
	"io/fs"
	"path/filepath"
	"strings"
	"sync"
)

// captureExisting captures, before the mount serves anything, what the
// -wal files in the data directory committed that was not captured before
// walsync last stopped (killed with frames written in passthrough, or
// writers that went on after it died). Each such database is opened by the
// capture core, which replays its WAL from the last captured transaction.
func (w *FS) captureExisting() {
	var wals []string
	_ = filepath.WalkDir(w.root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return nil // unreadable: skipped, captured at its first open
		}
		rel, _ := filepath.Rel(w.root, p)
		if e.IsDir() && rel == w.opts.HiddenDir && w.opts.HiddenDir != "" {
			return filepath.SkipDir
		}
		if e.Type().IsRegular() && strings.HasSuffix(p, "-wal") {
			if fi, err := e.Info(); err == nil && fi.Size() > 0 {
				wals = append(wals, strings.TrimSuffix(rel, "-wal"))
			}
		}
		return nil
	})
	if len(wals) == 0 {
		return
	}
	w.log.Info("capturing what existing -wal files committed", "databases", len(wals))
	work := make(chan string)
	var wg sync.WaitGroup
	for range min(8, len(wals)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for base := range work {
				d := w.reg.Get(filepath.ToSlash(base), filepath.Join(w.root, base))
				if err := d.CaptureNow(); err != nil {
					w.reg.CaptureErrors.Add(1)
					w.log.Error("cannot capture the existing -wal; retried at the database's first open", "db", d.Name, "err", err)
				}
			}
		}()
	}
	for _, b := range wals {
		work <- b
	}
	close(work)
	wg.Wait()
}

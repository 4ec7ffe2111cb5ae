// Package restore rebuilds a database from a replica: a snapshot plus the
// shortest chain of LTX files across levels up to the target TXID, and, when
// the target falls inside a level-0 batch, that batch's transaction log.
//
// Every file's own checksum is verified as it is decoded, each file's
// pre-apply checksum must equal the previous file's post-apply checksum, and
// the database produced must have the final post-apply checksum. The result
// is written to a temporary file, fsynced and renamed, so a failed restore
// leaves no output.
package restore

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/superfly/ltx"
	"github.com/walsync/walsync/storage"
)

// Options configures a restore.
type Options struct {
	TXID  ltx.TXID // 0 means the latest
	Force bool     // overwrite an existing output file
	// Concurrency is the number of files downloaded at once (default 8);
	// they are applied in order as they arrive.
	Concurrency int
	// Progress, if set, is called after each file is applied with the
	// bytes and files done so far and their totals.
	Progress func(bytes, totalBytes int64, files, totalFiles int)
	// Warn, if set, hears what could not be verified (files written by
	// Litestream carry no checksums).
	Warn func(msg string)
	// Mode is the restored file's permission bits; 0 means 0644 less the
	// process's umask, what SQLite (and sqlite3's .backup) gives a new
	// database.
	Mode os.FileMode
}

// step is one LTX file (or one record of a transaction log) in a chain.
type step struct {
	fi     *ltx.FileInfo
	record int // -1 for a whole LTX file; else the index in a transaction log
}

// Plan returns the files to apply, in order, to reach target (0: the latest).
func Plan(ctx context.Context, c storage.Client, db string, target ltx.TXID) ([]*ltx.FileInfo, ltx.TXID, error) {
	all, err := storage.AllLTXFiles(ctx, c, db)
	if err != nil {
		return nil, 0, err
	}
	txlogs, err := c.LTXFiles(ctx, db, storage.TxLogLevel)
	if err != nil {
		return nil, 0, err
	}
	if len(all) == 0 {
		return nil, 0, noBackup(ctx, c, db)
	}
	if target == 0 {
		for _, fi := range all {
			target = max(target, fi.MaxTXID)
		}
	}
	var plan []*ltx.FileInfo
	var pos ltx.TXID
	for pos < target {
		var best *ltx.FileInfo
		if next := storage.Chain(all, pos, target); len(next) > 0 {
			best = next[0]
		}
		if best == nil {
			// Inside a batch: its transaction log has every transaction.
			for _, fi := range txlogs {
				if fi.MinTXID <= pos+1 && pos+1 <= fi.MaxTXID && (best == nil || fi.MaxTXID > best.MaxTXID) {
					best = fi
				}
			}
		}
		if best == nil {
			return nil, 0, notRestorable(c, db, all, txlogs, pos, target)
		}
		plan = append(plan, best)
		pos = min(best.MaxTXID, target)
	}
	return plan, target, nil
}

// notRestorable explains why a chain stops at pos before target.
func notRestorable(c storage.Client, db string, all, txlogs []*ltx.FileInfo, pos, target ltx.TXID) error {
	below, above := newReach(append(append([]*ltx.FileInfo(nil), all...), txlogs...)).around(target)
	var near string
	switch {
	case below > 0 && above > 0:
		near = fmt.Sprintf("; the nearest restorable are TXID %d and TXID %d", below, above)
	case below > 0:
		near = fmt.Sprintf("; the nearest restorable is TXID %d", below)
	case above > 0:
		near = fmt.Sprintf("; the nearest restorable is TXID %d", above)
	}
	for _, fi := range all {
		if fi.MinTXID <= target && target < fi.MaxTXID && fi.MinTXID > pos {
			return fmt.Errorf("TXID %d of %s is inside %s (TXIDs %d to %d), whose transactions one by one are not on the replica yet "+
				"(they are uploaded with the next level-1 compaction)%s", target, where(c, db), c.ObjectURL(db, fi.Level, fi.MinTXID, fi.MaxTXID), fi.MinTXID, fi.MaxTXID, near)
		}
	}
	return fmt.Errorf("the backup at %s has no file continuing after TXID %d toward %d%s", where(c, db), pos, target, near)
}

// Restore writes the database db of the replica to output.
func Restore(ctx context.Context, c storage.Client, db, output string, opts Options) (ltx.TXID, error) {
	if !opts.Force {
		if _, err := os.Stat(output); err == nil {
			return 0, fmt.Errorf("output %s already exists (use --force to overwrite)", output)
		}
	}
	plan, target, err := Plan(ctx, c, db, opts.TXID)
	if err != nil {
		return 0, err
	}
	if opts.TXID != 0 && target != opts.TXID {
		return 0, fmt.Errorf("TXID %d not found in %s", opts.TXID, db)
	}
	tmp, err := os.CreateTemp(filepath.Dir(output), "."+filepath.Base(output)+".restore-*")
	if err != nil {
		return 0, fmt.Errorf("create output: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()

	a := &applier{f: tmp, db: db, c: c}
	var pos ltx.TXID
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var total, done int64
	for _, fi := range plan {
		total += fi.Size
	}
	pend := download(ctx, c, db, plan, filepath.Dir(output), opts.Concurrency)
	defer func() {
		cancel()
		for _, p := range pend {
			<-p.done
			p.remove()
		}
	}()
	for i, d := range pend {
		fi := plan[i]
		name := c.ObjectURL(db, fi.Level, fi.MinTXID, fi.MaxTXID)
		f, err := d.wait()
		if err != nil {
			return 0, fmt.Errorf("download %s: %w", name, err)
		}
		err = a.applyFile(f, fi, &pos, target)
		d.remove()
		if err != nil {
			return 0, err
		}
		done += fi.Size
		if opts.Progress != nil {
			opts.Progress(done, total, i+1, len(plan))
		}
	}
	if a.unverified {
		if opts.Warn != nil {
			opts.Warn(fmt.Sprintf("%s: some files carry no checksums (written by Litestream): their chain and the final database checksum cannot be verified", db))
		}
	} else if got, err := ltx.ChecksumReader(io.NewSectionReader(tmp, 0, int64(a.commit)*int64(a.pageSize)), int(a.pageSize)); err != nil {
		return 0, err
	} else if got != a.checksum {
		return 0, fmt.Errorf("the database restored from %s at TXID %d does not match its backup: checksum %s, expected %s", where(c, db), target, got, a.checksum)
	}
	mode := opts.Mode
	if mode == 0 {
		mode = 0o644 &^ umask()
	}
	if err := tmp.Chmod(mode.Perm()); err != nil {
		return 0, err
	}
	if err := tmp.Sync(); err != nil {
		return 0, err
	}
	if err := tmp.Close(); err != nil {
		return 0, err
	}
	if err := os.Rename(tmp.Name(), output); err != nil {
		return 0, err
	}
	if d, err := os.Open(filepath.Dir(output)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return target, nil
}

// umask is the process's file mode creation mask (022 when it cannot be read).
func umask() os.FileMode {
	b, err := os.ReadFile("/proc/self/status")
	if err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "Umask:"); ok {
				if m, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32); err == nil {
					return os.FileMode(m)
				}
			}
		}
	}
	return 0o022
}

type applier struct {
	c        storage.Client
	f        *os.File
	db       string
	pageSize uint32
	commit   uint32
	checksum ltx.Checksum // expected database checksum after the last file
	// unverified: a file without checksums was applied (Litestream's)
	unverified bool
	buf        []byte
}

func (a *applier) applyFile(f *os.File, fi *ltx.FileInfo, pos *ltx.TXID, target ltx.TXID) error {
	name := a.c.ObjectURL(a.db, fi.Level, fi.MinTXID, fi.MaxTXID)
	if fi.Level != storage.TxLogLevel {
		if err := a.apply(bufio.NewReaderSize(f, 1<<20), *pos); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		*pos = fi.MaxTXID
		return nil
	}
	tr, closer, err := storage.OpenTxLogObject(f)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	defer closer.Close()
	for {
		r, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if r.TXID <= *pos {
			continue
		}
		if r.TXID > target {
			return nil
		}
		if err := a.applyRecord(tr, r, *pos); err != nil {
			return fmt.Errorf("%s transaction %d: %w", name, r.TXID, err)
		}
		*pos = r.TXID
	}
}

// pending is one file being downloaded into a temporary file.
type pending struct {
	done chan struct{}
	f    *os.File
	err  error
}

func (p *pending) wait() (*os.File, error) {
	<-p.done
	if p.err != nil {
		return nil, p.err
	}
	_, err := p.f.Seek(0, io.SeekStart)
	return p.f, err
}

func (p *pending) remove() {
	if p.f != nil {
		p.f.Close()
		os.Remove(p.f.Name())
	}
}

// download fetches the plan's files into temporary files in dir, at most
// n at a time, and returns them in plan order.
func download(ctx context.Context, c storage.Client, db string, plan []*ltx.FileInfo, dir string, n int) []*pending {
	if n <= 0 {
		n = 8
	}
	sem := make(chan struct{}, n)
	out := make([]*pending, len(plan))
	for i, fi := range plan {
		p := &pending{done: make(chan struct{})}
		out[i] = p
		go func() {
			defer close(p.done)
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				p.err = ctx.Err()
				return
			}
			defer func() { <-sem }()
			rc, err := c.OpenLTXFile(ctx, db, fi.Level, fi.MinTXID, fi.MaxTXID)
			if err != nil {
				p.err = err
				return
			}
			defer rc.Close()
			f, err := os.CreateTemp(dir, ".walsync-download-*")
			if err != nil {
				p.err = err
				return
			}
			p.f = f
			if _, err := io.Copy(f, rc); err != nil {
				p.err = err
			}
		}()
	}
	return out
}

// applyRecord applies one transaction of a transaction log, its pages read
// from tr (which verifies the record as its last page is read).
func (a *applier) applyRecord(tr *storage.TxLogReader, r storage.TxRecord, pos ltx.TXID) error {
	if r.TXID != pos+1 {
		return fmt.Errorf("is TXID %d, expected %d", r.TXID, pos+1)
	}
	if r.TXID > 1 && r.Pre != a.checksum {
		return fmt.Errorf("pre-apply checksum %s does not match the database so far (%s): the chain is broken", r.Pre, a.checksum)
	}
	if a.pageSize != 0 && r.PageSize != a.pageSize {
		if err := a.f.Truncate(0); err != nil {
			return err
		}
	}
	a.pageSize = r.PageSize
	if uint32(len(a.buf)) != r.PageSize {
		a.buf = make([]byte, r.PageSize)
	}
	for i := 0; i < int(r.PageCount); i++ {
		pgno, err := tr.ReadPage(a.buf)
		if err != nil {
			return err
		}
		if _, err := a.f.WriteAt(a.buf, int64(pgno-1)*int64(r.PageSize)); err != nil {
			return err
		}
	}
	if err := a.f.Truncate(int64(r.Commit) * int64(r.PageSize)); err != nil {
		return err
	}
	a.commit, a.checksum = r.Commit, r.Post
	return nil
}

// apply decodes one LTX file onto the output, checking that it continues
// the chain at pos.
func (a *applier) apply(r io.Reader, pos ltx.TXID) error {
	dec := storage.NewDecoder(r)
	if err := dec.DecodeHeader(); err != nil {
		return errors.Join(storage.ErrCorrupt, err)
	}
	hdr := dec.Header()
	if hdr.MinTXID != pos+1 {
		return fmt.Errorf("starts at TXID %d, expected %d", hdr.MinTXID, pos+1)
	}
	if hdr.NoChecksum() {
		a.unverified = true
	} else if !hdr.IsSnapshot() && !a.unverified && hdr.PreApplyChecksum != a.checksum {
		return fmt.Errorf("pre-apply checksum %s does not match the database so far (%s): the chain is broken", hdr.PreApplyChecksum, a.checksum)
	}
	if a.pageSize != 0 && hdr.PageSize != a.pageSize {
		// VACUUM changed the page size; such a transaction carries every page.
		if err := a.f.Truncate(0); err != nil {
			return err
		}
	}
	a.pageSize = hdr.PageSize
	if uint32(len(a.buf)) != hdr.PageSize {
		a.buf = make([]byte, hdr.PageSize)
	}
	for {
		var ph ltx.PageHeader
		if err := dec.DecodePage(&ph, a.buf); err == io.EOF {
			break
		} else if err != nil {
			return errors.Join(storage.ErrCorrupt, err)
		}
		if _, err := a.f.WriteAt(a.buf, int64(ph.Pgno-1)*int64(hdr.PageSize)); err != nil {
			return err
		}
	}
	if err := dec.Close(); err != nil {
		return errors.Join(storage.ErrCorrupt, err)
	}
	if err := a.f.Truncate(int64(hdr.Commit) * int64(hdr.PageSize)); err != nil {
		return err
	}
	a.commit = hdr.Commit
	a.checksum = dec.Trailer().PostApplyChecksum
	return nil
}

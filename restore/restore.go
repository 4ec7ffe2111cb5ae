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
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/superfly/ltx"
	"github.com/walsync/walsync/storage"
)

// Options configures a restore.
type Options struct {
	TXID  ltx.TXID // 0 means the latest
	Force bool     // overwrite an existing output file
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
		return nil, 0, fmt.Errorf("no backup of %q at %s", db, c.URL())
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
			return nil, 0, fmt.Errorf("the backup of %q at %s has no file continuing after TXID %d toward %d", db, c.URL(), pos, target)
		}
		plan = append(plan, best)
		pos = min(best.MaxTXID, target)
	}
	return plan, target, nil
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
	for _, fi := range plan {
		if err := a.applyFile(ctx, c, fi, &pos, target); err != nil {
			return 0, err
		}
	}
	if got, err := ltx.ChecksumReader(io.NewSectionReader(tmp, 0, int64(a.commit)*int64(a.pageSize)), int(a.pageSize)); err != nil {
		return 0, err
	} else if got != a.checksum {
		return 0, fmt.Errorf("restored %s does not match its backup: checksum %s, expected %s", db, got, a.checksum)
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

type applier struct {
	c        storage.Client
	f        *os.File
	db       string
	pageSize uint32
	commit   uint32
	checksum ltx.Checksum // expected database checksum after the last file
	buf      []byte
}

func (a *applier) applyFile(ctx context.Context, c storage.Client, fi *ltx.FileInfo, pos *ltx.TXID, target ltx.TXID) error {
	rc, err := c.OpenLTXFile(ctx, a.db, fi.Level, fi.MinTXID, fi.MaxTXID)
	if err != nil {
		return fmt.Errorf("open %s: %w", a.c.ObjectURL(a.db, fi.Level, fi.MinTXID, fi.MaxTXID), err)
	}
	defer rc.Close()
	if fi.Level != storage.TxLogLevel {
		if err := a.apply(rc, *pos); err != nil {
			return fmt.Errorf("%s: %w", a.c.ObjectURL(a.db, fi.Level, fi.MinTXID, fi.MaxTXID), err)
		}
		*pos = fi.MaxTXID
		return nil
	}
	data, err := io.ReadAll(rc)
	if err != nil {
		return fmt.Errorf("read %s: %w", a.c.ObjectURL(a.db, fi.Level, fi.MinTXID, fi.MaxTXID), err)
	}
	ra := bytes.NewReader(data)
	recs, _, err := storage.ReadTxLog(ra, int64(len(data)), true)
	if err != nil {
		return fmt.Errorf("%s: %w", a.c.ObjectURL(a.db, fi.Level, fi.MinTXID, fi.MaxTXID), err)
	}
	for _, r := range recs {
		if r.TXID <= *pos {
			continue
		}
		if r.TXID > target {
			break
		}
		if err := a.applyRecord(ra, r, *pos); err != nil {
			return fmt.Errorf("%s transaction %d: %w", a.c.ObjectURL(a.db, fi.Level, fi.MinTXID, fi.MaxTXID), r.TXID, err)
		}
		*pos = r.TXID
	}
	return nil
}

// applyRecord applies one transaction of a transaction log.
func (a *applier) applyRecord(ra io.ReaderAt, r storage.TxRecord, pos ltx.TXID) error {
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
	buf := make([]byte, r.PageSize)
	for i := 0; i < int(r.PageCount); i++ {
		pgno, off, err := r.PageOffset(ra, i)
		if err != nil {
			return err
		}
		if _, err := ra.ReadAt(buf, off); err != nil {
			return err
		}
		if _, err := a.f.WriteAt(buf, int64(pgno-1)*int64(r.PageSize)); err != nil {
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
	dec := ltx.NewDecoder(r)
	if err := dec.DecodeHeader(); err != nil {
		return errors.Join(storage.ErrCorrupt, err)
	}
	hdr := dec.Header()
	if hdr.MinTXID != pos+1 {
		return fmt.Errorf("starts at TXID %d, expected %d", hdr.MinTXID, pos+1)
	}
	if !hdr.IsSnapshot() && !hdr.NoChecksum() && hdr.PreApplyChecksum != a.checksum {
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

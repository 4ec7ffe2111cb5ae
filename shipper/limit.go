package shipper

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/superfly/ltx"
	"github.com/walsync/walsync/storage"
)

// mergedSuffix names a staged LTX file that replaced several batches when
// staging went over its limit.
const mergedSuffix = ".merged"

// overLimit starts one merge pass over all databases if none is running.
func (s *Shipper) overLimit() {
	if !s.collapsing.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer s.collapsing.Store(false)
		before := s.staged.Load()
		s.forEachDB(func(st *stage) error {
			s.dropAllKept(st, "staging over --max-staging")
			return nil
		})
		s.forEachDB(s.collapse)
		after := s.staged.Load()
		if after > s.opts.MaxStaging {
			s.log.Error("staging is still over --max-staging after merging; nothing is dropped, uploads will drain it",
				"staged_bytes", after, "max_staging", s.opts.MaxStaging)
		} else {
			s.log.Warn("staging went over --max-staging: staged batches merged", "before_bytes", before, "after_bytes", after)
		}
	}()
}

// collapse merges every staged batch of a database into one LTX file.
func (s *Shipper) collapse(st *stage) error {
	st.shipMu.Lock()
	defer st.shipMu.Unlock()
	if err := st.seal(); err != nil {
		return err
	}
	batches, err := st.sealedBatches()
	if err != nil || len(batches) == 0 {
		return err
	}
	if len(batches) == 1 && strings.HasSuffix(batches[0], mergedSuffix) {
		return nil
	}
	st.mu.Lock()
	shipped := st.shipped.TXID
	st.mu.Unlock()

	// Each input as an LTX file: staged merges as they are, logs converted.
	var inputs []io.Reader
	var closers []io.Closer
	defer func() {
		for _, c := range closers {
			c.Close()
		}
	}()
	for _, path := range batches {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		if strings.HasSuffix(path, mergedSuffix) {
			inputs, closers = append(inputs, f), append(closers, f)
			continue
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return err
		}
		recs, _, err := storage.ReadTxLog(f, fi.Size(), true)
		for len(recs) > 0 && recs[0].TXID <= shipped {
			recs = recs[1:]
		}
		if err == nil && len(recs) > 0 && recs[0].PageSize != recs[len(recs)-1].PageSize {
			err = fmt.Errorf("page size changes inside staged batch %s", path)
		}
		if err != nil || len(recs) == 0 {
			f.Close()
			if err != nil {
				return err
			}
			continue
		}
		t, err := st.buildLTX(f, recs, false)
		f.Close()
		if err != nil {
			return err
		}
		closers = append(closers, t)
		if _, err := t.Seek(0, io.SeekStart); err != nil {
			return err
		}
		inputs = append(inputs, t)
	}
	if len(inputs) == 0 {
		return nil
	}
	rdrs := inputs
	tmp, err := os.CreateTemp(st.dir, ".merge-*")
	if err != nil {
		return err
	}
	bw := getBufWriter(tmp)
	defer putBufWriter(bw)
	c, err := ltx.NewCompactor(bw, rdrs)
	if err == nil {
		storage.SetCompactorSpill(c, st.dir)
		defer c.Cleanup()
		err = c.Compact(s.ctx)
	}
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = tmp.Sync()
	}
	tmp.Close()
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("merge staged batches of %s: %w", st.db, err)
	}
	hdr := c.Header()
	dst := filepath.Join(st.dir, fmt.Sprintf("batch-%s%s", hdr.MinTXID, mergedSuffix))
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return err
	}
	for _, path := range batches {
		if path != dst {
			if err := st.removeStaged(path); err != nil {
				return err
			}
		}
	}
	if fi, err := os.Stat(dst); err == nil {
		st.stagedBytes.Add(fi.Size())
	}
	s.log.Warn("staged transactions merged: restores can no longer stop between them",
		"db", st.db, "min_txid", hdr.MinTXID, "max_txid", hdr.MaxTXID)
	return nil
}

// shipMerged uploads a merged staged LTX file as one level-0 file.
func (s *Shipper) shipMerged(ctx context.Context, st *stage, path string) error {
	hdr, trl, err := readLTXFile(path)
	if err != nil {
		return fmt.Errorf("staged file %s: %w", path, err)
	}
	st.mu.Lock()
	shipped := st.shipped.TXID
	st.mu.Unlock()
	if hdr.MaxTXID > shipped {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		ts := time.UnixMilli(hdr.Timestamp)
		if hdr.MinTXID == 1 {
			if err := s.checkNoForeignHistory(ctx, st.db, hdr.MaxTXID, trl.PostApplyChecksum); err != nil {
				return err
			}
			if err := s.opts.Client.WriteLTXFile(ctx, st.db, storage.SnapshotLevel, 1, hdr.MaxTXID, f, ts); err != nil {
				return err
			}
		}
		if err := s.opts.Client.WriteLTXFile(ctx, st.db, 0, hdr.MinTXID, hdr.MaxTXID, f, ts); err != nil {
			return fmt.Errorf("upload %s level 0 %s: %w", st.db, ltx.FormatFilename(hdr.MinTXID, hdr.MaxTXID), err)
		}
		st.wroteFile(0)
		st.mu.Lock()
		shipped := st.shipped.TXID
		st.mu.Unlock()
		waited, err := st.markShipped(posOf(hdr, trl))
		if err != nil {
			return err
		}
		s.stats.txShipped.Add(uint64(hdr.MaxTXID - max(shipped, hdr.MinTXID-1)))
		s.summary.record(waited)
	}
	return st.keepMerged(path, hdr.MinTXID, hdr.MaxTXID)
}

func readLTXFile(path string) (ltx.Header, ltx.Trailer, error) {
	f, err := os.Open(path)
	if err != nil {
		return ltx.Header{}, ltx.Trailer{}, err
	}
	defer f.Close()
	dec := storage.NewDecoder(f)
	if err := dec.Verify(); err != nil {
		return ltx.Header{}, ltx.Trailer{}, err
	}
	return dec.Header(), dec.Trailer(), nil
}

// removeStaged deletes a staged file and takes it off the staging total.
func (st *stage) removeStaged(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if err := os.Remove(path); err != nil {
		return err
	}
	st.stagedBytes.Add(-fi.Size())
	return nil
}

// diskBytes is what the database has in staging now.
func (st *stage) diskBytes() int64 {
	var n int64
	ents, _ := os.ReadDir(st.dir)
	for _, e := range ents {
		if e.Name() == "pending" || strings.HasPrefix(e.Name(), "batch-") {
			if fi, err := e.Info(); err == nil {
				n += fi.Size()
			}
		}
	}
	return n
}

package shipper

// Shipping one database: seal its pending log, then upload each sealed
// batch as one level-0 LTX file (plus a level-9 snapshot where the history
// starts or the page size changes), and keep what was uploaded (kept.go).

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/superfly/ltx"
	"github.com/walsync/walsync/capture"
	"github.com/walsync/walsync/storage"
)

// ship seals the pending log and uploads every sealed batch of a database.
func (s *Shipper) ship(ctx context.Context, st *stage) error {
	st.mu.Lock()
	verified := st.verified
	st.mu.Unlock()
	if !verified {
		if _, err := s.reconcile(ctx, st); err != nil {
			return err
		}
	}
	if err := st.lockShip(ctx); err != nil {
		return err
	}
	defer st.shipMu.Unlock()
	if st.shared {
		ok, err := st.shipLock.tryLock()
		if err != nil {
			return err
		}
		if !ok {
			return errShipBusy
		}
		defer st.shipLock.unlock()
		if err := st.loadShipped(); err != nil { // another process may have shipped
			return err
		}
	}
	if err := st.seal(); err != nil {
		return err
	}
	batches, err := st.sealedBatches()
	if err != nil {
		return err
	}
	for _, path := range batches {
		if err := s.shipBatch(ctx, st, path); err != nil {
			return err
		}
	}
	return nil
}

func (s *Shipper) shipBatch(ctx context.Context, st *stage, path string) error {
	if strings.HasSuffix(path, mergedSuffix) {
		return s.shipMerged(ctx, st, path)
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	recs, _, err := storage.ReadTxLog(f, fi.Size(), true)
	if err != nil {
		return fmt.Errorf("staged batch %s: %w", path, err)
	}
	st.mu.Lock()
	shipped := st.shipped.TXID
	st.mu.Unlock()
	if len(recs) == 0 {
		return st.removeStaged(path)
	}
	// Once uploaded, the whole batch is kept for its transaction log.
	first, last := recs[0].TXID, recs[len(recs)-1].TXID
	// A crash between upload and bookkeeping leaves already shipped records.
	for len(recs) > 0 && recs[0].TXID <= shipped {
		recs = recs[1:]
	}
	// The records of one LTX file share a page size (VACUUM can change
	// it) and follow each other (a replica's history can start again at a
	// transaction that holds every page).
	for len(recs) > 0 {
		n := 1
		for n < len(recs) && recs[n].PageSize == recs[0].PageSize && recs[n].TXID == recs[n-1].TXID+1 {
			n++
		}
		if err := s.upload(ctx, st, f, recs[:n]); err != nil {
			return err
		}
		recs = recs[n:]
	}
	return st.keepBatch(path, first, last)
}

// upload writes one batch of contiguous transactions to the replica.
func (s *Shipper) upload(ctx context.Context, st *stage, f *os.File, recs []storage.TxRecord) error {
	db := st.db
	first, last := recs[0], recs[len(recs)-1]
	st.mu.Lock()
	prevPageSize, shipped := st.shipped.PageSize, st.shipped.TXID
	st.mu.Unlock()
	switch {
	case first.TXID == 1:
		if err := s.checkNoForeignHistory(ctx, db, first.TXID, first.Post); err != nil {
			return err
		}
		if err := s.uploadSnapshot(ctx, st, f, first); err != nil {
			return err
		}
	case first.PageSize != prevPageSize && isFull(first):
		// A new page size (VACUUM; or unknown here: a staging started
		// afresh): files on either side of it cannot be compacted together,
		// so the history starts again from a snapshot of this transaction,
		// which holds every page.
		if err := s.uploadSnapshot(ctx, st, f, first); err != nil {
			return err
		}
		if prevPageSize != 0 {
			s.log.Info("page size changed: snapshot written", "db", db, "txid", first.TXID, "page_size", first.PageSize, "was", prevPageSize)
		} else {
			s.log.Info("history starts from a snapshot", "db", db, "replica", s.opts.Client.URL(), "txid", first.TXID)
		}
	case shipped != 0 && first.TXID != shipped+1 && isFull(first):
		// A replica that fell behind the others (or lost files) starts
		// its history again from this transaction, which holds every
		// page; restores before it use the files up to shipped.
		if err := s.uploadSnapshot(ctx, st, f, first); err != nil {
			return err
		}
		s.log.Info("history starts again from a snapshot", "db", db, "replica", s.opts.Client.URL(), "txid", first.TXID, "was", shipped)
	case shipped != 0 && first.TXID != shipped+1:
		return fmt.Errorf("staged transaction %d of %s does not follow %d, the last uploaded, and does not hold every page", first.TXID, db, shipped)
	}
	// One PUT per batch: the level-0 file. The batch's transactions one by
	// one stay in staging (kept.go) and go up with the next level-1
	// compaction, in one transaction-log object for all the batches since.
	if err := s.uploadL0(ctx, st, f, recs); err != nil {
		return err
	}
	st.wroteFile(0)
	s.log.Debug("uploaded", "db", db, "level", 0, "min_txid", first.TXID, "max_txid", last.TXID, "replica", s.opts.Client.URL())
	waited, err := st.markShipped(capture.Pos{TXID: last.TXID, Checksum: last.Post, PageSize: last.PageSize, Commit: last.Commit})
	if err == nil {
		s.stats.txShipped.Add(uint64(len(recs)))
		s.summary.record(waited)
	}
	return err
}

// posOf is the position an LTX file ends at.
func posOf(hdr ltx.Header, trl ltx.Trailer) capture.Pos {
	return capture.Pos{TXID: hdr.MaxTXID, Checksum: trl.PostApplyChecksum, PageSize: hdr.PageSize, Commit: hdr.Commit}
}

// isFull reports whether a staged transaction holds every page of its
// database (a snapshot or a resync).
func isFull(r storage.TxRecord) bool {
	n := r.Commit
	if ltx.LockPgno(r.PageSize) <= r.Commit {
		n--
	}
	return r.PageCount >= n
}

// uploadSnapshot writes a level-9 snapshot (TXID 1 to rec's) from a staged
// transaction that holds every page.
func (s *Shipper) uploadSnapshot(ctx context.Context, st *stage, f *os.File, rec storage.TxRecord) error {
	snap, err := st.buildLTX(f, []storage.TxRecord{rec}, true)
	if err != nil {
		return err
	}
	defer snap.Close()
	if err := s.opts.Client.WriteLTXFile(ctx, st.db, storage.SnapshotLevel, 1, rec.TXID, snap, time.UnixMilli(rec.Timestamp)); err != nil {
		return fmt.Errorf("upload snapshot of %s: %w", st.db, err)
	}
	return nil
}

// uploadL0 writes a batch's level-0 LTX file.
func (s *Shipper) uploadL0(ctx context.Context, st *stage, f *os.File, recs []storage.TxRecord) error {
	min, max := recs[0].TXID, recs[len(recs)-1].TXID
	l0, err := st.buildLTX(f, recs, false)
	if err != nil {
		return err
	}
	defer l0.Close()
	if err := s.opts.Client.WriteLTXFile(ctx, st.db, 0, min, max, l0, time.UnixMilli(recs[len(recs)-1].Timestamp)); err != nil {
		return fmt.Errorf("upload %s level 0 %s: %w", st.db, ltx.FormatFilename(min, max), err)
	}
	st.keepLTX(0, min, max, l0) // level 1 is compacted from it
	return nil
}

// checkNoForeignHistory refuses to start a database at TXID 1 on a replica
// that already holds another history for it (walsync could not read the
// replica when it first saw the database). Its own earlier upload of the same
// snapshot, interrupted by a crash, is recognised by its checksum.
func (s *Shipper) checkNoForeignHistory(ctx context.Context, db string, maxTXID ltx.TXID, post ltx.Checksum) error {
	fi, err := storage.Latest(ctx, s.opts.Client, db)
	if err != nil || fi == nil {
		return err
	}
	infos, err := s.opts.Client.LTXFiles(ctx, db, storage.SnapshotLevel)
	if err != nil {
		return err
	}
	for _, info := range infos {
		if info.MinTXID == 1 && info.MaxTXID == maxTXID {
			if _, trl, err := storage.ReadHeader(ctx, s.opts.Client, db, info); err == nil && trl.PostApplyChecksum == post {
				return nil
			}
		}
	}
	return fmt.Errorf("the replica %s already holds a different history of %s (up to TXID %d); "+
		"refusing to overwrite it: move that replica directory away or use another replica URL (staged transactions are kept)",
		s.opts.Client.URL(), db, fi.MaxTXID)
}

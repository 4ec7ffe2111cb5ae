package restore

import (
	"context"
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/superfly/ltx"
	"github.com/walsync/walsync/storage"
)

// TXIDAt returns the last transaction committed at or before t: the newest
// file whose LTX header time is not after t, then, from the transaction log
// of the batch that follows it, every transaction still at or before t.
func TXIDAt(ctx context.Context, c storage.Client, db string, t time.Time) (ltx.TXID, error) {
	all, err := storage.AllLTXFiles(ctx, c, db)
	if err != nil {
		return 0, err
	}
	if len(all) == 0 {
		return 0, noBackup(ctx, c, db)
	}
	txlogs, err := c.LTXFiles(ctx, db, storage.TxLogLevel)
	if err != nil {
		return 0, err
	}
	r := newReach(append(append([]*ltx.FileInfo(nil), all...), txlogs...))
	sort.Slice(all, func(i, j int) bool { return all[i].MaxTXID > all[j].MaxTXID })
	ms := t.UnixMilli()
	var base ltx.TXID
	var earliest int64
	for _, fi := range all {
		if !r.has(fi.MaxTXID) {
			continue // no chain stops there (yet)
		}
		hdr, err := readHeader(ctx, c, db, fi)
		if err != nil {
			return 0, err
		}
		if hdr.Timestamp <= ms {
			base = fi.MaxTXID
			break
		}
		earliest = hdr.Timestamp
	}
	if base == 0 {
		return 0, fmt.Errorf("%s has no transaction at or before %s (the earliest kept is at %s)",
			where(c, db), t.UTC().Format(time.RFC3339Nano), time.UnixMilli(earliest).UTC().Format(time.RFC3339Nano))
	}
	// Transactions of the transaction log that goes on from base that are
	// still at or before t.
	for _, fi := range txlogs {
		if fi.MinTXID > base+1 || fi.MaxTXID <= base || !r.has(fi.MinTXID-1) {
			continue
		}
		last, err := lastAtOrBefore(ctx, c, db, fi, base, ms)
		if err != nil {
			return 0, err
		}
		return max(base, last), nil
	}
	return base, nil
}

// lastAtOrBefore returns the last transaction after base of a transaction
// log committed at or before ms (0 if none is).
func lastAtOrBefore(ctx context.Context, c storage.Client, db string, fi *ltx.FileInfo, base ltx.TXID, ms int64) (ltx.TXID, error) {
	name := c.ObjectURL(db, fi.Level, fi.MinTXID, fi.MaxTXID)
	rc, err := c.OpenLTXFile(ctx, db, fi.Level, fi.MinTXID, fi.MaxTXID)
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	tr, closer, err := storage.OpenTxLogObject(rc)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", name, err)
	}
	defer closer.Close()
	var last ltx.TXID
	for {
		r, err := tr.Next()
		if err == io.EOF {
			return last, nil
		}
		if err != nil {
			return 0, fmt.Errorf("%s: %w", name, err)
		}
		if r.TXID <= base {
			continue
		}
		if r.Timestamp > ms {
			return last, nil
		}
		last = r.TXID
	}
}

func readHeader(ctx context.Context, c storage.Client, db string, fi *ltx.FileInfo) (ltx.Header, error) {
	rc, err := c.OpenLTXFile(ctx, db, fi.Level, fi.MinTXID, fi.MaxTXID)
	if err != nil {
		return ltx.Header{}, err
	}
	defer rc.Close()
	hdr, _, err := ltx.DecodeHeader(rc)
	if err != nil {
		return ltx.Header{}, fmt.Errorf("%s: %w", c.ObjectURL(db, fi.Level, fi.MinTXID, fi.MaxTXID), err)
	}
	return hdr, nil
}

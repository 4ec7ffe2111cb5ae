package restore

import (
	"bytes"
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
		return 0, fmt.Errorf("no backup of %q at %s", db, c.URL())
	}
	sort.Slice(all, func(i, j int) bool { return all[i].MaxTXID > all[j].MaxTXID })
	ms := t.UnixMilli()
	var base ltx.TXID
	var earliest int64
	for _, fi := range all {
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
			db, t.UTC().Format(time.RFC3339Nano), time.UnixMilli(earliest).UTC().Format(time.RFC3339Nano))
	}
	// Transactions of the next batch that are still at or before t.
	txlogs, err := c.LTXFiles(ctx, db, storage.TxLogLevel)
	if err != nil {
		return 0, err
	}
	for _, fi := range txlogs {
		if fi.MinTXID > base+1 || fi.MaxTXID <= base {
			continue
		}
		data, err := readAll(ctx, c, db, fi)
		if err != nil {
			return 0, err
		}
		recs, _, err := storage.ReadTxLog(bytes.NewReader(data), int64(len(data)), true)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", c.ObjectURL(db, fi.Level, fi.MinTXID, fi.MaxTXID), err)
		}
		for _, r := range recs {
			if r.TXID <= base {
				continue
			}
			if r.Timestamp > ms {
				break
			}
			base = r.TXID
		}
		break
	}
	return base, nil
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

func readAll(ctx context.Context, c storage.Client, db string, fi *ltx.FileInfo) ([]byte, error) {
	rc, err := c.OpenLTXFile(ctx, db, fi.Level, fi.MinTXID, fi.MaxTXID)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

package restore

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/superfly/ltx"
	"github.com/walsync/walsync/storage"
)

// LevelSummary counts the files of one level.
type LevelSummary struct {
	Level int // storage.TxLogLevel for transaction logs
	Files int
	Bytes int64
}

// Summary describes what a replica holds for one database.
type Summary struct {
	DB             string
	MinTXID        ltx.TXID // earliest restorable transaction
	MaxTXID        ltx.TXID
	MinTime        time.Time
	MaxTime        time.Time
	Levels         []LevelSummary
	TotalBytes     int64
	HasTransaction bool
}

// Summarize lists one database's files.
func Summarize(ctx context.Context, c storage.Client, db string) (Summary, error) {
	s := Summary{DB: db}
	var first, last *ltx.FileInfo
	for level := storage.TxLogLevel; level <= storage.MaxLevel; level++ {
		infos, err := c.LTXFiles(ctx, db, level)
		if err != nil {
			return s, err
		}
		if len(infos) == 0 {
			continue
		}
		ls := LevelSummary{Level: level, Files: len(infos)}
		for _, fi := range infos {
			ls.Bytes += fi.Size
			if level == storage.TxLogLevel {
				continue
			}
			if last == nil || fi.MaxTXID > last.MaxTXID {
				last = fi
			}
			if fi.MinTXID == 1 && (first == nil || fi.MaxTXID < first.MaxTXID) {
				first = fi
			}
		}
		s.TotalBytes += ls.Bytes
		s.Levels = append(s.Levels, ls)
	}
	if last == nil {
		return s, nil
	}
	s.HasTransaction = true
	s.MaxTXID = last.MaxTXID
	if hdr, err := readHeader(ctx, c, db, last); err == nil {
		s.MaxTime = time.UnixMilli(hdr.Timestamp).UTC()
	}
	if first != nil {
		s.MinTXID = first.MaxTXID
		if hdr, err := readHeader(ctx, c, db, first); err == nil {
			s.MinTime = time.UnixMilli(hdr.Timestamp).UTC()
		}
	}
	return s, nil
}

// Problem is one thing wrong with a replica, named by the object.
type Problem struct {
	Object string
	Err    error
}

func (p Problem) String() string { return fmt.Sprintf("%s: %v", p.Object, p.Err) }

// verifyTxLog checks a transaction log object: every record's checksum, the
// object's own (zstd content checksum), and that its transactions follow
// each other (TXIDs and pre-/post-apply checksums) from its first TXID to
// its last.
func verifyTxLog(ctx context.Context, c storage.Client, db string, fi *ltx.FileInfo) error {
	rc, err := c.OpenLTXFile(ctx, db, fi.Level, fi.MinTXID, fi.MaxTXID)
	if err != nil {
		return err
	}
	defer rc.Close()
	tr, closer, err := storage.OpenTxLogObject(rc)
	if err != nil {
		return err
	}
	defer closer.Close()
	var prev *storage.TxRecord
	for {
		r, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		switch {
		case prev == nil && r.TXID != fi.MinTXID:
			return fmt.Errorf("starts at TXID %d, not %d as its name says", r.TXID, fi.MinTXID)
		case prev != nil && r.TXID != prev.TXID+1:
			return fmt.Errorf("TXID %d follows %d", r.TXID, prev.TXID)
		case prev != nil && r.Pre != prev.Post:
			return fmt.Errorf("transaction %d: pre-apply checksum %s does not follow %s", r.TXID, r.Pre, prev.Post)
		}
		prev = &r
	}
	if prev == nil || prev.TXID != fi.MaxTXID {
		return fmt.Errorf("holds transactions that do not match its name")
	}
	return nil
}

// Verify checks every object of a database (LTX file checksums, transaction
// log records), the continuity of the level-0 chain (each file's pre-apply
// checksum equals the post-apply checksum of the file before it), and
// restores the latest state into tmpDir, returning its path for a SQLite
// integrity check by the caller. Problems are returned, not errors, so that
// all of them are reported.
func Verify(ctx context.Context, c storage.Client, db, tmpDir string) (restored string, problems []Problem, err error) {
	type checked struct {
		fi       *ltx.FileInfo
		pre      ltx.Checksum
		post     ltx.Checksum
		noChksum bool
	}
	var l0 []checked
	var upper []*ltx.FileInfo       // levels 1..8: level-0 files they cover expire
	restarts := map[ltx.TXID]bool{} // the TXIDs of the snapshots (1 to TXID)
	for level := storage.TxLogLevel; level <= storage.MaxLevel; level++ {
		infos, err := c.LTXFiles(ctx, db, level)
		if err != nil {
			return "", nil, err
		}
		for _, fi := range infos {
			name := c.ObjectURL(db, fi.Level, fi.MinTXID, fi.MaxTXID)
			if level == storage.TxLogLevel {
				if err := verifyTxLog(ctx, c, db, fi); err != nil {
					problems = append(problems, Problem{name, err})
				}
				continue
			}
			// Streamed: an object of any size costs the same memory.
			rc, err := c.OpenLTXFile(ctx, db, fi.Level, fi.MinTXID, fi.MaxTXID)
			if err != nil {
				problems = append(problems, Problem{name, err})
				continue
			}
			dec := storage.NewDecoder(bufio.NewReaderSize(rc, 256<<10))
			err = dec.Verify()
			rc.Close()
			if err != nil {
				problems = append(problems, Problem{name, err})
				continue
			}
			hdr := dec.Header()
			if hdr.MinTXID != fi.MinTXID || hdr.MaxTXID != fi.MaxTXID {
				problems = append(problems, Problem{name, fmt.Errorf("header says TXIDs %d-%d", hdr.MinTXID, hdr.MaxTXID)})
				continue
			}
			if level == 0 {
				l0 = append(l0, checked{fi, hdr.PreApplyChecksum, dec.Trailer().PostApplyChecksum, hdr.NoChecksum()})
			} else if level < storage.SnapshotLevel {
				upper = append(upper, fi)
			} else if fi.MinTXID == 1 {
				restarts[fi.MaxTXID] = true
			}
		}
	}
	sort.Slice(l0, func(i, j int) bool { return l0[i].fi.MinTXID < l0[j].fi.MinTXID })
	for i := 1; i < len(l0); i++ {
		prev, cur := l0[i-1], l0[i]
		name := c.ObjectURL(db, 0, cur.fi.MinTXID, cur.fi.MaxTXID)
		switch {
		case cur.fi.MinTXID > prev.fi.MaxTXID+1 && !coveredAbove(upper, prev.fi.MaxTXID+1, cur.fi.MinTXID-1) && !restarts[cur.fi.MinTXID]:
			// (A snapshot of cur's first transaction: the history started
			// again there, as for a replica that fell behind the others;
			// the TXIDs before it cannot be restored from this replica.)
			problems = append(problems, Problem{name, fmt.Errorf("level 0 has a gap: TXIDs %d-%d are missing", prev.fi.MaxTXID+1, cur.fi.MinTXID-1)})
		case cur.fi.MinTXID == prev.fi.MaxTXID+1 && !cur.noChksum && !prev.noChksum && cur.pre != prev.post:
			problems = append(problems, Problem{name, fmt.Errorf("pre-apply checksum %s does not follow %s", cur.pre, prev.post)})
		}
	}
	out := filepath.Join(tmpDir, "verify.db")
	os.Remove(out)
	if _, err := Restore(ctx, c, db, out, Options{}); err != nil {
		problems = append(problems, Problem{c.URL() + " (restore)", err})
		return "", problems, nil
	}
	return out, problems, nil
}

// coveredAbove reports whether one file of files spans TXIDs min to max.
func coveredAbove(files []*ltx.FileInfo, min, max ltx.TXID) bool {
	for _, fi := range files {
		if fi.MinTXID <= min && max <= fi.MaxTXID {
			return true
		}
	}
	return false
}

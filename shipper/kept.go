package shipper

// What staging keeps of a database after an upload, in kept/ inside its
// staging directory:
//
//	kept/txlog/<first>-<last>.log   a shipped batch's records (its
//	                                 transactions one by one), until they go
//	                                 up in the database's next transaction-log
//	                                 object (uploadDetail)
//	kept/ltx/<level>/<min>-<max>.ltx copies of the LTX files uploaded at
//	                                 level (0 .. the one below the top), until
//	                                 they are compacted into the level above:
//	                                 compaction reads them here, not back from
//	                                 the replica
//
// Nothing here is needed to restore anything: a kept copy lost is read from
// the replica instead, a kept log lost (dropped when staging is full or over
// --max-staging) leaves its transactions restorable only at batch
// boundaries. Kept files do not count as staged (waiting for upload).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/superfly/ltx"
	"github.com/walsync/walsync/storage"
)

const keptDir = "kept"

func (st *stage) keptTxLogDir() string { return filepath.Join(st.dir, keptDir, "txlog") }

func (st *stage) keptLTXPath(level int, min, max ltx.TXID) string {
	return filepath.Join(st.dir, keptDir, "ltx", strconv.Itoa(level), ltx.FormatFilename(min, max))
}

// keepBatch moves a sealed batch whose transactions are all uploaded into
// kept/txlog, named by its first and last TXID.
func (st *stage) keepBatch(path string, first, last ltx.TXID) error {
	return st.keep(path, filepath.Join(st.keptTxLogDir(), keptLogName(first, last)))
}

func keptLogName(first, last ltx.TXID) string {
	return strings.TrimSuffix(ltx.FormatFilename(first, last), ".ltx") + ".log"
}

// keepMerged moves a merged staged LTX file, uploaded at level 0, into
// kept/ltx/0.
func (st *stage) keepMerged(path string, min, max ltx.TXID) error {
	return st.keep(path, st.keptLTXPath(0, min, max))
}

// keep moves an uploaded staged file to dst under kept/ and takes it off
// the staging total. Keeping is not worth failing the upload for: if the
// move fails the file is removed (its transactions stay restorable at the
// batch's boundaries, a lost copy is read from the replica).
func (st *stage) keep(path, dst string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	err = os.MkdirAll(filepath.Dir(dst), dirMode)
	if err == nil {
		err = os.Rename(path, dst)
	}
	if err != nil {
		return st.removeStaged(path)
	}
	st.stagedBytes.Add(-fi.Size())
	return nil
}

// keptLog is one kept batch.
type keptLog struct {
	path        string
	first, last ltx.TXID
}

// keptLogs lists the kept batches in TXID order.
func (st *stage) keptLogs() ([]keptLog, error) {
	ents, err := os.ReadDir(st.keptTxLogDir())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	var a []keptLog
	for _, e := range ents {
		base, ok := strings.CutSuffix(e.Name(), ".log")
		if !ok {
			continue
		}
		first, last, err := ltx.ParseFilename(base + ".ltx")
		if err != nil {
			continue
		}
		a = append(a, keptLog{filepath.Join(st.keptTxLogDir(), e.Name()), first, last})
	}
	sort.Slice(a, func(i, j int) bool { return a[i].first < a[j].first })
	return a, nil
}

// keepLTX keeps a copy of a file just uploaded at level.
func (st *stage) keepLTX(level int, min, max ltx.TXID, f uploadFile) {
	t, ok := f.(*tempFile)
	if !ok {
		return // built in memory: staging is full
	}
	dst := st.keptLTXPath(level, min, max)
	if err := os.MkdirAll(filepath.Dir(dst), dirMode); err != nil {
		return
	}
	os.Remove(dst) // an earlier attempt's
	_ = os.Link(t.Name(), dst)
}

// openKept opens the kept copy of a replica file, if there is one of its
// size.
func (st *stage) openKept(fi *ltx.FileInfo) (io.ReadCloser, bool) {
	f, err := os.Open(st.keptLTXPath(fi.Level, fi.MinTXID, fi.MaxTXID))
	if err != nil {
		return nil, false
	}
	if info, err := f.Stat(); err != nil || info.Size() != fi.Size {
		f.Close()
		return nil, false
	}
	return f, true
}

// dropKept removes the kept copies of files compacted into the level above.
func (st *stage) dropKept(files []*ltx.FileInfo) {
	for _, fi := range files {
		os.Remove(st.keptLTXPath(fi.Level, fi.MinTXID, fi.MaxTXID))
	}
}

// dropAllKept removes everything kept (staging is full or over its limit)
// and says what per-transaction detail was lost.
func (s *Shipper) dropAllKept(st *stage, why string) {
	logs, _ := st.keptLogs()
	if err := os.RemoveAll(filepath.Join(st.dir, keptDir)); err != nil {
		return
	}
	if len(logs) > 0 {
		s.log.Warn("per-transaction detail not uploaded yet was dropped to free staging: restores between these transactions stop at batch boundaries",
			"db", st.db, "from_txid", logs[0].first, "to_txid", logs[len(logs)-1].last, "reason", why)
	}
}

// stagingFailed frees what staging keeps when a transaction could not be
// staged for want of space: staging what SQLite committed comes first.
func (s *Shipper) stagingFailed(err error) {
	if !errors.Is(err, syscall.ENOSPC) {
		return
	}
	stages := s.allStages()
	for _, st := range stages {
		s.dropAllKept(st, "staging is full")
	}
}

// uploadDetail uploads what kept/txlog holds as transaction-log objects,
// one per contiguous run of transactions (one in steady state), and
// removes the kept logs it uploaded.
func (s *Shipper) uploadDetail(ctx context.Context, st *stage) error {
	logs, err := st.keptLogs()
	if err != nil || len(logs) == 0 {
		return err
	}
	type part struct {
		f   *os.File
		off int64
		end int64
	}
	var run []part
	var runMin, runMax ltx.TXID
	var runTS int64
	var done []string // kept logs wholly uploaded once the run goes up
	var runLogs []string
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	flush := func() error {
		if len(run) == 0 {
			return nil
		}
		var size int64
		for _, p := range run {
			size += p.end - p.off
		}
		parts := run
		records := func() io.Reader {
			rdrs := make([]io.Reader, len(parts))
			for i, p := range parts {
				rdrs[i] = io.NewSectionReader(p.f, p.off, p.end-p.off)
			}
			return io.MultiReader(rdrs...)
		}
		if err := s.uploadTxLog(ctx, st, runMin, runMax, runTS, records, size); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				// Too big to build in memory, and staging is full.
				s.dropAllKept(st, "staging is full")
			}
			return err
		}
		done = append(done, runLogs...)
		run, runLogs = nil, nil
		return nil
	}
	for _, kl := range logs {
		f, err := os.Open(kl.path)
		if err != nil {
			return err
		}
		files = append(files, f)
		info, err := f.Stat()
		if err != nil {
			return err
		}
		recs, _, err := storage.ReadTxLog(f, info.Size(), true)
		if err != nil {
			// Staging damaged under it: this batch's detail is lost, the
			// rest goes up.
			s.log.Error("a kept batch cannot be read: its transactions are restorable only at batch boundaries", "db", st.db, "file", kl.path, "err", err)
			if err := flush(); err != nil {
				return err
			}
			os.Remove(kl.path)
			continue
		}
		for len(recs) > 0 && len(run) > 0 && recs[0].TXID <= runMax {
			recs = recs[1:] // uploaded twice after a crash: once is enough
		}
		if len(recs) == 0 {
			if len(run) == 0 {
				os.Remove(kl.path) // empty
			} else {
				runLogs = append(runLogs, kl.path)
			}
			continue
		}
		if len(run) > 0 && recs[0].TXID != runMax+1 {
			if err := flush(); err != nil {
				return err
			}
		}
		if len(run) == 0 {
			runMin = recs[0].TXID
		}
		last := recs[len(recs)-1]
		run = append(run, part{f, recs[0].Offset, last.End()})
		runMax, runTS = last.TXID, last.Timestamp
		runLogs = append(runLogs, kl.path)
	}
	if err := flush(); err != nil {
		return err
	}
	for _, p := range done {
		os.Remove(p)
	}
	return nil
}

// uploadTxLog compresses records (size bytes; each call of records reads
// them from the start) into a transaction-log object and uploads it. It is
// built in a temporary file in staging or, when staging is full, in memory
// (up to maxInMemoryBuild of records).
func (s *Shipper) uploadTxLog(ctx context.Context, st *stage, min, max ltx.TXID, ts int64, records func() io.Reader, size int64) error {
	name := storage.FormatTxLogFilename(min, max)
	out, err := buildTxLog(st.dir, records(), true)
	if errors.Is(err, syscall.ENOSPC) && size <= maxInMemoryBuild {
		out, err = buildTxLog(st.dir, records(), false)
	}
	if err != nil {
		return fmt.Errorf("build the transaction log %s of %s: %w", name, st.db, err)
	}
	defer out.Close()
	if err := s.opts.Client.WriteLTXFile(ctx, st.db, storage.TxLogLevel, min, max, out, time.UnixMilli(ts)); err != nil {
		return fmt.Errorf("upload %s transaction log %s: %w", st.db, name, err)
	}
	return nil
}

func buildTxLog(dir string, records io.Reader, onDisk bool) (uploadFile, error) {
	if !onDisk {
		m := &memFile{}
		return m, storage.WriteTxLogObject(&m.buf, records)
	}
	tmp, err := os.CreateTemp(dir, ".wtx-*")
	if err != nil {
		return nil, err
	}
	out := &tempFile{File: tmp}
	bw := getBufWriter(tmp)
	defer putBufWriter(bw)
	err = storage.WriteTxLogObject(bw, records)
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		out.Close()
		return nil, err
	}
	return out, nil
}

// detailPending reports whether a kept log holds a transaction in [min, max].
func detailPending(logs []keptLog, min, max ltx.TXID) bool {
	for _, kl := range logs {
		if kl.first <= max && kl.last >= min {
			return true
		}
	}
	return false
}

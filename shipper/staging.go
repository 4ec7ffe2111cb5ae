package shipper

// A database's staging: its directory, the pending transaction log and the
// sealed batches (their format is storage.ReadTxLog's), the positions it
// records, and how it recovers them at start; see the package doc.

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/superfly/ltx"
	"github.com/walsync/walsync/capture"
	"github.com/walsync/walsync/storage"
	"golang.org/x/sys/unix"
)

// leftStaged describes what a failed flush leaves staged.
func (st *stage) leftStaged(root string, err error) error {
	st.mu.Lock()
	shipped, last := st.shipped.TXID, st.pos.TXID
	st.mu.Unlock()
	if last <= shipped {
		return fmt.Errorf("%s: %w", st.db, err)
	}
	return fmt.Errorf("%s: transactions %d to %d stay staged in %s and ship at the next start: %w", st.db, shipped+1, last, root, err)
}

// stage is the on-disk staging of one database.
type stage struct {
	db  string
	o   DBOptions // its settings
	dir string

	shipMu sync.Mutex // one upload of this database at a time

	mu       sync.Mutex
	pending  *os.File
	size     int64 // valid bytes in pending
	unsynced bool  // appended to since pending was last fsynced
	// Batch: while batching > 0, appended records collect in batchBuf and
	// are written to pending with one write; writtenPos is the position of
	// the last record written.
	batching   int
	batchBuf   []byte
	writtenPos capture.Pos
	pos        capture.Pos    // last staged
	wal        capture.WALPos // shared staging: where pos's capture stopped reading the -wal
	// Shared staging, during a capture (sharedCapture's lock): fresh, the
	// pending log is not reloaded yet; lockAppends, transactions appended;
	// sumsMissing, the page checksums of one were not stored.
	sharedFresh bool
	lockAppends int
	sumsMissing bool
	known       bool             // pos comes from this staging
	shipped     capture.Pos      // last uploaded
	compacted   map[int]ltx.TXID // per compaction level: shipped TXID when last compacted
	// newFiles counts, per level, the files this run wrote there since the
	// last compaction into the level above (absent: unknown, e.g. after a
	// restart). A level above one that got fewer than two has nothing to
	// merge, and is skipped without listing the replica.
	newFiles map[int]int
	// expiring: level-0 files covered by level 1, deleted once due (expire.go)
	expiring map[[2]ltx.TXID]expiringL0
	lastRun  []time.Time // per compaction level, then snapshots (compactDue)

	stagedBytes *atomic.Int64 // the shipper's total
	failures    int           // failed shipments in a row
	queued      bool          // a shipment is scheduled
	timer       *time.Timer   // the scheduled shipment's, while it waits
	verified    bool          // compared with the replica in this run
	resync      bool          // staged work was set aside: the capture must start again
	behind      []behindMark  // when the unshipped transactions were staged (status.go)
	markNext    bool          // the next staged transaction starts a batch (sealed since)
	lastErr     string        // the last failed shipment's error, and when
	lastErrAt   time.Time
	active      bool // staged something since the last summary

	loadOnce sync.Once
	loadErr  error

	// Options.Shared (see shared.go).
	shared     bool
	pendingIno uint64 // inode of pending (shared staging)
	posMu      sync.Mutex
	posF       *os.File // staged.pos, kept open
	sealLock   fileLock // capture.lock, for load and seal
	shipLock   fileLock // ship.lock, for shipping
	// ship.lock again, on its own descriptor, for compaction
	compactLock fileLock
	sharedCap   *sharedCapture
}

type posJSON struct {
	TXID     ltx.TXID     `json:"txid"`
	Checksum ltx.Checksum `json:"checksum"`
	PageSize uint32       `json:"page_size"`
	Commit   uint32       `json:"commit"`
}

// lockShip takes st.shipMu, giving up when ctx is done: a flush or a first
// capture must not wait for a long upload beyond its deadline.
func (st *stage) lockShip(ctx context.Context) error {
	for !st.shipMu.TryLock() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: waiting for an upload in progress: %w", st.db, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}

// loadLocked is load, under the capture lock when the staging is shared.
func (st *stage) loadLocked() error {
	if st.shared {
		if err := st.sealLock.lock(); err != nil {
			return err
		}
		defer st.sealLock.unlock()
	}
	return st.load()
}

func (st *stage) load() error {
	if err := st.loadShipped(); err != nil {
		return err
	}
	p, ok, err := st.logPos(true)
	if err != nil {
		return err
	}
	if ok {
		st.mu.Lock()
		st.pos, st.known = p, true
		if p.TXID > st.shipped.TXID && len(st.behind) == 0 {
			// Staged by an earlier run: behind since at least now.
			st.behind = []behindMark{{txid: st.shipped.TXID + 1, at: time.Now()}}
		}
		st.mu.Unlock()
	}
	return nil
}

// logPos returns the position of the last transaction in the staged logs
// (sealed batches, then pending); ok is false when they hold none. With
// repair, a torn tail of pending left by a crash is cut off.
func (st *stage) logPos(repair bool) (pos capture.Pos, ok bool, err error) {
	batches, err := st.sealedBatches()
	if err != nil {
		return pos, false, err
	}
	for _, path := range batches {
		if strings.HasSuffix(path, mergedSuffix) {
			hdr, trl, err := readLTXFile(path)
			if err != nil {
				return pos, false, fmt.Errorf("staged file %s: %w", path, err)
			}
			pos, ok = posOf(hdr, trl), true
			continue
		}
		if p, found, err := lastPos(path, false); err != nil {
			return pos, false, err
		} else if found {
			pos, ok = p, true
		}
	}
	if p, found, err := lastPos(filepath.Join(st.dir, "pending"), repair); err != nil {
		return pos, false, err
	} else if found {
		pos, ok = p, true
	}
	return pos, ok, nil
}

// loadShipped reads shipped.json, the position of the last transaction
// uploaded.
func (st *stage) loadShipped() error {
	var p posJSON
	b, err := os.ReadFile(filepath.Join(st.dir, "shipped.json"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err == nil {
		if err := json.Unmarshal(b, &p); err != nil {
			return fmt.Errorf("shipped.json: %w", err)
		}
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if p.TXID == 0 {
		// Missing, or reserved ahead (see reserveShipped): nothing was
		// uploaded from this staging (or it was reset).
		st.shipped = capture.Pos{}
		return nil
	}
	st.shipped = capture.Pos(p)
	if !st.known || st.pos.TXID < st.shipped.TXID {
		st.pos, st.known = st.shipped, true
	}
	return nil
}

// lastPos reads a log's last valid record; with repair, a torn tail left by a
// crash is cut off.
func lastPos(path string, repair bool) (capture.Pos, bool, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return capture.Pos{}, false, nil
	} else if err != nil {
		return capture.Pos{}, false, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return capture.Pos{}, false, err
	}
	recs, end, _ := storage.ReadTxLog(f, fi.Size(), false)
	if repair && end < fi.Size() {
		if err := f.Truncate(end); err != nil {
			return capture.Pos{}, false, err
		}
	}
	if len(recs) == 0 {
		return capture.Pos{}, false, nil
	}
	r := recs[len(recs)-1]
	return capture.Pos{TXID: r.TXID, Checksum: r.Post, PageSize: r.PageSize, Commit: r.Commit}, true, nil
}

// reserveShipped writes shipped.json ahead of the first upload, while
// staging has space: its later updates can then overwrite it in place when
// the filesystem is full (see overwrite). st.mu is held.
func (st *stage) reserveShipped() error {
	p := filepath.Join(st.dir, "shipped.json")
	if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	b, err := json.Marshal(posJSON{}) // nothing uploaded yet
	if err != nil {
		return err
	}
	return writeFileAtomic(p, b)
}

// validEnd returns the end of a log's last whole record, cutting off
// anything after it (a record whose write failed or was torn by a crash).
func validEnd(f *os.File) (int64, error) {
	fi, err := f.Stat()
	if err != nil || fi.Size() == 0 {
		return 0, err
	}
	_, end, _ := storage.ReadTxLog(f, fi.Size(), false)
	if end < fi.Size() {
		if err := f.Truncate(end); err != nil {
			return 0, err
		}
	}
	return end, nil
}

func (st *stage) hasWork() bool {
	batches, _ := st.sealedBatches()
	if len(batches) > 0 {
		return true
	}
	fi, err := os.Stat(filepath.Join(st.dir, "pending"))
	return err == nil && fi.Size() > 0
}

// append stages a transaction; first reports that it opened a new batch.
func (st *stage) append(tx *capture.Tx) (first bool, err error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.resync {
		return false, fmt.Errorf("%s: %w", st.db, capture.ErrResync)
	}
	if st.shared && (st.batching == 0 || st.sharedFresh) {
		// The caller holds the capture lock (capture.Shared): other
		// processes may have staged since it last did.
		if err := st.sharedPending(); err != nil {
			return false, err
		}
		st.sharedFresh = false
	}
	// A transaction holding every page may jump ahead: a replica behind the
	// others starts its history again from it (Fanout; upload writes a
	// snapshot there).
	restart := tx.Full && !st.shared && tx.TXID > st.pos.TXID+1
	if st.known && !restart && (tx.TXID != st.pos.TXID+1 || st.shared && st.pos.TXID > 0 && tx.PreChecksum != st.pos.Checksum) {
		if st.shared {
			// This process's capture does not continue the chain staged by
			// all of them (its staging was reset): it starts again.
			return false, fmt.Errorf("transaction %d of %s does not follow staged position %d: %w", tx.TXID, st.db, st.pos.TXID, capture.ErrResync)
		}
		return false, fmt.Errorf("transaction %d of %s does not follow staged position %d", tx.TXID, st.db, st.pos.TXID)
	}
	if err := st.openPending(); err != nil {
		return false, err
	}
	rec := storage.TxRecord{
		TXID: tx.TXID, PageSize: tx.PageSize, Commit: tx.Commit, PageCount: uint32(tx.PageCount()),
		Pre: tx.PreChecksum, Post: tx.PostChecksum, Timestamp: tx.Timestamp.UnixMilli(),
	}
	pos := capture.Pos{TXID: tx.TXID, Checksum: tx.PostChecksum, PageSize: tx.PageSize, Commit: tx.Commit}
	if st.batching > 0 {
		// Kept for one write at the end of the batch.
		if st.batchBuf == nil {
			st.batchBuf = getBatchBuf()
		}
		n0 := len(st.batchBuf)
		bb := bytes.NewBuffer(st.batchBuf)
		bw := getBufWriter(bb)
		rw, err := storage.NewTxRecordWriter(bw, rec)
		if err == nil {
			err = tx.ForEachPage(rw.WritePage)
		}
		if err == nil {
			err = rw.Close()
		}
		putBufWriter(bw)
		if err != nil {
			st.batchBuf = bb.Bytes()[:n0]
			return false, fmt.Errorf("stage transaction %d of %s: %w", tx.TXID, st.db, err)
		}
		st.batchBuf = bb.Bytes()
		if st.shared && st.lockAppends == 0 {
			// The capture stores the page checksums of what it stages
			// before staged.pos names it (sharedCapture.Unlock): until
			// then, a process that follows must resync.
			if err := st.sharedStaged(true); err != nil {
				st.batchBuf = st.batchBuf[:n0]
				return false, fmt.Errorf("stage transaction %d of %s: %w", tx.TXID, st.db, err)
			}
		}
		st.lockAppends++
		st.pos, st.known = pos, true
		st.wal = capture.WALPos{} // until the capture says (capture.Shared.Staged)
		st.noteStaged(tx.TXID)
		if len(st.batchBuf) >= maxBatchBuf {
			first, err := st.writeBatchLocked()
			return first, err
		}
		return false, nil
	}
	first = st.size == 0
	bw := getBufWriter(io.NewOffsetWriter(st.pending, st.size))
	defer putBufWriter(bw)
	rw, err := storage.NewTxRecordWriter(bw, rec)
	if err == nil {
		err = tx.ForEachPage(rw.WritePage)
	}
	if err == nil {
		err = rw.Close()
	}
	if err != nil {
		// Cut what was written of the record (ENOSPC, EIO): the log must end
		// with its last whole record, or the next one would be written
		// after garbage and the batch could never be read. The
		// transaction's commit fails; it is captured again later.
		if terr := st.pending.Truncate(st.size); terr != nil {
			st.pending.Close()
			st.pending = nil // reopened and repaired (cut to its last record) at the next append
		}
		return false, fmt.Errorf("stage transaction %d of %s: %w", tx.TXID, st.db, err)
	}
	st.size += rec.Size()
	st.unsynced = true
	st.stagedBytes.Add(rec.Size())
	st.pos, st.writtenPos = pos, pos
	st.wal = capture.WALPos{} // until the capture says (capture.Shared.Staged)
	st.known = true
	st.noteStaged(tx.TXID)
	if st.shared {
		// Until the capture has stored the page checksums (Staged), a
		// process that follows must resync.
		if err := st.sharedStaged(true); err != nil {
			return first, err
		}
	}
	return first, nil
}

// openPending opens the pending log if it is not open, cut to its last
// whole record; st.mu is held.
func (st *stage) openPending() error {
	if st.pending != nil {
		return nil
	}
	if err := os.MkdirAll(st.dir, dirMode); err != nil {
		return err
	}
	if err := st.reserveShipped(); err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(st.dir, "pending"), os.O_RDWR|os.O_CREATE, fileMode)
	if err != nil {
		return err
	}
	end, err := validEnd(f)
	if err != nil {
		f.Close()
		return err
	}
	st.pending, st.size = f, end
	return nil
}

// maxBatchBuf bounds the memory of a batch: past it, its records are
// written at once.
const maxBatchBuf = 1 << 20

// writeBatchLocked writes the records a batch collected to pending; first
// reports that they opened a new batch window. If the write fails, they are
// dropped: the staged position goes back to the last record written. st.mu
// is held.
func (st *stage) writeBatchLocked() (first bool, err error) {
	if len(st.batchBuf) == 0 {
		if st.batching == 0 {
			st.releaseBatchBuf()
		}
		return false, nil
	}
	buf := st.batchBuf
	st.batchBuf = st.batchBuf[:0]
	if err = st.openPending(); err == nil {
		first = st.size == 0
		var n int
		n, err = st.pending.WriteAt(buf, st.size)
		if err == nil && n < len(buf) {
			err = io.ErrShortWrite
		}
	}
	if err != nil {
		if st.pending != nil {
			if terr := st.pending.Truncate(st.size); terr != nil {
				st.pending.Close()
				st.pending = nil
			}
		}
		st.pos = st.writtenPos
		return false, fmt.Errorf("stage transactions of %s: %w (%w)", st.db, err, capture.ErrUnstaged)
	}
	// Start writing them to disk now, without waiting: the fsync that
	// makes them durable (with the database file, at its checkpoint) then
	// finds little left to write, instead of every batch since the last.
	_ = unix.SyncFileRange(int(st.pending.Fd()), st.size, int64(len(buf)), unix.SYNC_FILE_RANGE_WRITE)
	st.size += int64(len(buf))
	st.unsynced = true
	st.stagedBytes.Add(int64(len(buf)))
	st.writtenPos = st.pos
	if st.batching == 0 {
		st.releaseBatchBuf()
	}
	return first, nil
}

// Batch buffers are shared: a database holds one only while it stages a
// batch. A few are kept between batches in a free list the garbage collector
// does not empty (a sync.Pool is emptied at every other collection, and a
// busy database then grew a new buffer, zeroed, at every batch).
var batchBufs = make(chan []byte, 4)

func getBatchBuf() []byte {
	select {
	case b := <-batchBufs:
		return b[:0]
	default:
		return make([]byte, 0, 64<<10)
	}
}

// releaseBatchBuf returns the batch buffer to the pool; st.mu is held.
func (st *stage) releaseBatchBuf() {
	if st.batchBuf != nil && len(st.batchBuf) == 0 {
		if b := st.batchBuf; cap(b) <= 2*maxBatchBuf+256<<10 { // grown past maxBatchBuf by its last record
			select {
			case batchBufs <- b:
			default: // enough kept
			}
		}
		st.batchBuf = nil
	}
}

// Batch runs fn, which may stage many transactions of db (a barrier of
// deferred capture): their records are written to the pending log together,
// with one write, before Batch returns. If that write fails, Batch returns
// the error and the staged position is the last one written; the caller
// must then capture again from Position.
func (s *Shipper) Batch(db string, fn func() error) error {
	ferr, werr := s.batch(db, fn)
	return errors.Join(ferr, werr)
}

// batch is Batch with fn's error and the write's apart.
func (s *Shipper) batch(db string, fn func() error) (ferr, werr error) {
	st, err := s.stage(db)
	if err != nil || st.shared {
		return fn(), nil // shared staging records each transaction as it comes
	}
	st.mu.Lock()
	if st.batching == 0 && len(st.batchBuf) == 0 {
		st.writtenPos = st.pos
	}
	st.batching++
	st.mu.Unlock()
	ferr = fn()
	st.mu.Lock()
	st.batching--
	first, werr := st.writeBatchLocked()
	st.mu.Unlock()
	s.stagingFailed(werr)
	if werr == nil && first {
		s.schedule(st, st.o.SyncInterval)
	}
	if s.opts.MaxStaging > 0 && s.staged.Load() > s.opts.MaxStaging {
		s.overLimit()
	}
	return ferr, werr
}

func (st *stage) sync() error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.pending == nil || !st.unsynced {
		return nil
	}
	if err := st.pending.Sync(); err != nil {
		return err
	}
	st.unsynced = false
	return nil
}

// seal turns the pending log into a sealed batch named by its first TXID.
func (st *stage) seal() error {
	if st.shared {
		if err := st.sealLock.lock(); err != nil {
			return err
		}
		defer st.sealLock.unlock()
		st.mu.Lock()
		defer st.mu.Unlock()
		if err := st.sharedPending(); err != nil {
			return err
		}
		if st.size == 0 {
			return nil
		}
		if err := st.writeStagedPos(stagedPos{pos: st.pos, wal: st.wal}); err != nil {
			return err
		}
	} else {
		st.mu.Lock()
		defer st.mu.Unlock()
	}
	path := filepath.Join(st.dir, "pending")
	if st.pending == nil {
		// Nothing appended in this run; a previous run may have left a log.
		fi, err := os.Stat(path)
		if err != nil || fi.Size() == 0 {
			return nil
		}
	} else if st.size == 0 {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	var h [storage.TxRecordHeadSize]byte
	_, err = f.ReadAt(h[:], 0)
	f.Close()
	if err != nil {
		return fmt.Errorf("read staged log %s: %w", path, err)
	}
	first := ltx.TXID(binary.BigEndian.Uint64(h[16:24]))
	if st.pending != nil {
		if err := st.pending.Sync(); err != nil {
			return err
		}
		st.pending.Close()
		st.pending, st.size = nil, 0
	}
	st.markNext = true
	return os.Rename(path, filepath.Join(st.dir, fmt.Sprintf("batch-%s.log", first)))
}

func (st *stage) sealedBatches() ([]string, error) {
	ents, err := os.ReadDir(st.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	var a []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "batch-") && (strings.HasSuffix(e.Name(), ".log") || strings.HasSuffix(e.Name(), mergedSuffix)) {
			a = append(a, filepath.Join(st.dir, e.Name()))
		}
	}
	sort.Strings(a)
	return a, nil
}

// markShipped records the shipped position; it returns how long the
// oldest transaction just shipped waited.
func (st *stage) markShipped(pos capture.Pos) (time.Duration, error) {
	b, err := json.Marshal(posJSON(pos))
	if err != nil {
		return 0, err
	}
	if err := writeFileAtomic(filepath.Join(st.dir, "shipped.json"), b); err != nil {
		return 0, err
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	st.shipped = pos
	if !st.known {
		st.pos, st.known = pos, true
	}
	return st.noteShipped(), nil
}

func (st *stage) close() {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.pending != nil {
		_ = st.pending.Sync()
		st.pending.Close()
		st.pending = nil
	}
	st.closePosFile()
}

// Package capture turns the file operations SQLite performs on a database, its
// -wal and its -journal into an ordered stream of committed transactions.
//
// It is the pure core shared by the FUSE mount and the VFS: no FUSE, no
// storage, no clock of its own. A front end reports each operation through a
// DB method, passing a closure that performs the operation on the real file;
// the DB decides whether the operation completes a transaction and, if so,
// hands the transaction to its Sink before the operation returns to SQLite.
//
// Commit points:
//
//   - WAL: a frame with a non-zero "database size after commit" whose salts
//     match the WAL header and whose running checksum is valid (exactly the
//     frames SQLite's own recovery would keep; WALCursor reads them). Either
//     each WAL write is reported (WriteWAL) and the write that completes a
//     commit frame captures its transaction, or the -wal is written behind
//     the core's back (FUSE passthrough, the VFS) and SyncWAL, the barrier,
//     captures every transaction committed since the last capture, each
//     with its own TXID. The core itself runs the barrier before anything
//     that can make a frame disappear: a write to or truncation of the
//     database file in WAL mode (a checkpoint), a truncation or removal of
//     the -wal; the front end adds the -wal's fsync, the end of each batch
//     window and the last close. SQLite overwrites frames only after a
//     checkpoint has copied all of them into the database file, and that
//     checkpoint's first write waited for the barrier: no committed frame
//     can be lost. A checkpoint's writes produce no transaction.
//   - Rollback journal (DELETE, TRUNCATE, PERSIST, and exclusive locking):
//     pages written to the database while the journal is live are dirty; the
//     journal being deleted, truncated or having its header zeroed ends the
//     transaction. The dirty pages are then read back and compared with the
//     per-page checksums of the last captured state, so a ROLLBACK (which
//     restores the original pages before ending the journal) ships nothing.
//
// Open (and a rebuild of lost state) replays the database file and then each
// transaction of its WAL, and captures, one by one, those committed after the
// last captured position (see establish).
//
// The database checksum is LTX's: CRC-64/ISO of each page with its page number,
// XORed over all pages but the lock page, kept incrementally per page.
package capture

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/superfly/ltx"
)

// Kind names one of the files of a database.
type Kind int

// The files of a database the core reads.
const (
	DBFile Kind = iota
	WALFile
	JournalFile
)

func (k Kind) String() string {
	switch k {
	case DBFile:
		return "db"
	case WALFile:
		return "wal"
	case JournalFile:
		return "journal"
	}
	return "unknown"
}

// Files gives the core access to the database's files as they are on disk.
type Files interface {
	ReadAt(k Kind, p []byte, off int64) (int, error)
	// WriteAt is used only to make an uncaptured WAL commit frame invalid
	// when staging it failed, so SQLite cannot later recover a transaction
	// whose commit it was told failed.
	WriteAt(k Kind, p []byte, off int64) (int, error)
	// Size returns the file's size, or -1 if it does not exist.
	Size(k Kind) int64
}

// Pos is the position of the last captured transaction of a database.
type Pos struct {
	TXID     ltx.TXID
	Checksum ltx.Checksum // post-apply database checksum
	PageSize uint32
	Commit   uint32
}

// Sink receives committed transactions. It must have made the transaction
// durable (staged) when it returns nil; the transaction's pages are readable
// only during the call.
type Sink func(tx *Tx) error

// Config configures a DB.
type Config struct {
	Name  string
	Files Files
	// Pos is the last captured position (from staging); zero on first sight.
	Pos  Pos
	Now  func() time.Time
	Sink Sink
	// Sums stores the per-page checksums; default an in-memory MemSums.
	// Its content is rebuilt by Open.
	Sums Sums
	// Warn reports conditions the user must know about, such as a journal
	// mode walsync cannot capture. May be nil.
	Warn func(msg string)
	// Shared, if set, coordinates the DBs of several processes capturing
	// the same database (the VFS used by several processes).
	Shared Shared
	// Outside: the front end reads the files from outside, now and then
	// (the watch sidecar), instead of seeing SQLite's writes or being asked
	// before a checkpoint: the WAL may have been restarted, truncated or
	// deleted since the last look. See outsideRestart. One change leaves
	// the core nothing to see: a WAL created, written, checkpointed and
	// deleted between two looks that found none. The front end, which can
	// tell the database file changed, then opens a new DB at the last
	// position (its establish proves or ships the state).
	Outside bool
	// ReadLock, if set, is called before the core reads the database file
	// to prove continuity or to ship the database whole, when a checkpoint
	// of the application must not copy WAL frames the capture has not read
	// into it meanwhile (Outside; the watch sidecar takes a SQLite reader's
	// lock, held until its scan ends). It may fail with the reason to try
	// again later.
	ReadLock func() error
	// Full: the first transaction carries every page, whatever Pos (a
	// replica that is behind the others starts its history again from it).
	Full bool
}

// Shared coordinates several processes that capture one database, each
// with its own DB. Every capture happens under Lock, after the DB has
// adopted the head Load returns: the last transaction staged by any
// process, whose page checksums are in the shared Sums, and where in the
// -wal its capture stopped reading. The Sink and Staged run under the lock,
// so the transactions of all processes form one chain, and each process
// reads the -wal on from where the last capture of any process stopped.
type Shared interface {
	Lock() error
	// Unlock ends a capture. What it staged may be written only now (the
	// transactions of one capture together); an error means it was not,
	// and wraps ErrUnstaged.
	Unlock() error
	// Load returns the head; ok is false when none is recorded yet.
	Load() (h Head, ok bool, err error)
	// Staged records that the transaction at pos is staged, where its
	// capture stopped reading the -wal, and whether its page checksums are
	// stored.
	Staged(pos Pos, wal WALPos, sumsStored bool) error
}

// Head is the last transaction staged by any of the processes that share a
// database's capture (see Shared).
type Head struct {
	Pos Pos
	// WAL: just past the commit frame of the transaction at Pos, in its
	// generation of the -wal; zero when the capture read no WAL.
	WAL WALPos
	// Resync: the next capture must ship the whole database (the staging
	// was reset, or the page checksums of the last transaction were not
	// stored).
	Resync bool
}

// ErrNotDatabase is returned when the main file is not a SQLite database.
var ErrNotDatabase = errors.New("not a SQLite database")

// ErrResync is returned by a Sink that will not stage the transaction
// because the database's history must start again from its replica's
// position (its staging disagreed with the replica). The front end then
// opens a new DB at that position, which ships the database whole.
var ErrResync = errors.New("staging was reset: the capture must start again from the replica's position")

// ErrUnstaged is returned by a stager whose batch of staged transactions
// (see the shipper's Batch) could not be written after the core took them
// as staged: the core is ahead of staging and must be replaced by one
// opened at the staged position, which captures them again.
var ErrUnstaged = errors.New("captured transactions could not be written to staging")

// DB is the capture state machine of one database. Its methods are safe for
// concurrent use; they are serialized internally.
type DB struct {
	mu    sync.Mutex
	cfg   Config
	files Files

	pos      Pos  // last captured transaction
	known    bool // the logical state below has been established
	needFull bool // the next transaction must carry every page

	pageSize uint32
	commit   uint32
	sums     Sums         // per page of the captured state; zero for the lock page
	xor      ltx.Checksum // XOR of sums
	walMode  bool         // page 1 says WAL (file format versions 2)

	wal WALCursor
	// replaying: establish is rewriting the page checksums from the files;
	// if it fails, they describe no staged position (see locked).
	replaying bool

	journalLive bool
	dirty       map[uint32]struct{}
	unjournaled bool // database written with neither a live journal nor WAL
	warnedMode  bool // warned of journal_mode OFF or MEMORY
	warnedCopy  bool // warned of a WAL-mode database written outside SQLite

	// A failed barrier is not tried again before barrierRetry (it would
	// scan the same frames again and again while staging is failing).
	barrierErr     error
	barrierRetry   time.Time
	barrierBackoff time.Duration

	walWritten   int64 // end of the WAL bytes known to be written (on disk at establish, or by writes since)
	lastFrameOff int64 // offset of the frame whose header is in lastFrameHdr
	lastFrameHdr [walFrameHeaderSize]byte
}

// Open establishes the logical state of a database from its files and
// reconciles it with cfg.Pos: a database never captured is shipped as a
// snapshot (TXID 1); one whose state differs from the last captured position
// is shipped in full as the next TXID. A database with a hot journal is
// reconciled once SQLite has rolled the journal back.
func Open(cfg Config) (*DB, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Sums == nil {
		cfg.Sums = &MemSums{}
	}
	d := &DB{cfg: cfg, files: cfg.Files, sums: cfg.Sums, pos: cfg.Pos, dirty: map[uint32]struct{}{}, lastFrameOff: -1}
	d.needFull = d.pos.TXID == 0 || cfg.Full
	d.mu.Lock()
	defer d.mu.Unlock()
	d.journalLive = d.readJournalLive()
	if d.journalLive {
		return d, nil // torn until SQLite rolls the hot journal back
	}
	if err := d.locked(d.establish); err != nil {
		return nil, err
	}
	return d, nil
}

// locked runs a capture under the shared lock, after adopting what other
// processes captured since this DB last did.
func (d *DB) locked(capture func() error) (err error) {
	sh := d.cfg.Shared
	if sh == nil {
		return capture()
	}
	if err := sh.Lock(); err != nil {
		return fmt.Errorf("lock the capture of %s: %w", d.cfg.Name, err)
	}
	cs, caching := d.sums.(CachingSums)
	defer func() {
		if err != nil && d.replaying {
			// Establish failed half way: the shared checksums are those of
			// no staged position. Whoever captures next ships the
			// database whole.
			d.known, d.replaying = false, false
			if serr := sh.Staged(d.pos, WALPos{}, false); serr != nil {
				err = errors.Join(err, serr)
			}
		}
		if caching {
			if ferr := cs.Flush(); ferr != nil {
				// The transactions staged are not described by the shared
				// checksums: whoever captures next ships the database whole.
				d.known = false
				if serr := sh.Staged(d.pos, d.wal.Pos(), false); serr != nil {
					ferr = errors.Join(ferr, serr)
				}
				err = errors.Join(err, fmt.Errorf("store the page checksums of %s: %w", d.cfg.Name, ferr))
			}
		}
		if uerr := sh.Unlock(); uerr != nil {
			err = errors.Join(err, fmt.Errorf("write the capture of %s: %w", d.cfg.Name, uerr))
		}
	}()
	head, ok, err := sh.Load()
	if err != nil {
		return fmt.Errorf("read the staged position of %s: %w", d.cfg.Name, err)
	}
	if caching && ok && (head.Pos != d.pos || head.Resync) {
		cs.Forget() // another process captured: the shared store is newer
	}
	if ok && head.Resync {
		// The shared state cannot be trusted: ship the database whole
		// from the files (this capture's changes included).
		d.pos, d.needFull = head.Pos, true
		d.dirty, d.unjournaled = map[uint32]struct{}{}, false
		return d.establish()
	}
	if ok && head.Pos != d.pos {
		// Another process captured since: its page checksums are in the
		// shared store, its position is the one to follow, and the -wal
		// is read on from where its capture stopped.
		d.pos = head.Pos
		if d.known {
			p := head.Pos
			d.pageSize, d.commit, d.xor = p.PageSize, p.Commit, p.Checksum&^ltx.ChecksumFlag
			if !d.adoptWAL(head.WAL) {
				return d.establish()
			}
		}
	}
	return capture()
}

// adoptWAL moves the WAL cursor to where another process's capture stopped
// reading the -wal. From there SQLite's own rules apply as to this
// process's own position: a later generation found in the file is followed
// as a restart after it. It reports false when the other process read no
// WAL and this one follows one: where that WAL stands relative to the
// other capture is unknown, and the state is established from the files.
func (d *DB) adoptWAL(w WALPos) bool {
	d.lastFrameOff = -1
	if d.wal.Seek(w) {
		d.walWritten = max(d.walWritten, w.End)
		return true
	}
	return w == WALPos{} && !d.walMode
}

// Pos returns the position of the last captured transaction.
func (d *DB) Pos() Pos {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.pos
}

// Checksum returns the database checksum of the current logical state.
func (d *DB) Checksum() ltx.Checksum {
	d.mu.Lock()
	defer d.mu.Unlock()
	return ltx.ChecksumFlag | d.xor
}

type change struct {
	pgno uint32
	sum  ltx.Checksum
	old  ltx.Checksum // in the last captured state; zero past its end
	ref  pageRef
}

// changed sorts candidate changes by page number, fills in their checksums in
// the last captured state and keeps those whose content differs.
func (d *DB) changed(cands []change) ([]change, error) {
	slices.SortFunc(cands, func(a, b change) int { return int(a.pgno) - int(b.pgno) })
	n := len(cands)
	for n > 0 && cands[n-1].pgno > d.commit {
		n--
	}
	if n > 0 {
		pgnos := make([]uint32, n)
		for i := range pgnos {
			pgnos[i] = cands[i].pgno
		}
		old := make([]ltx.Checksum, n)
		if err := runs(pgnos, func(first uint32, i, j int) error {
			return d.sums.ReadSums(first, old[i:j])
		}); err != nil {
			return nil, fmt.Errorf("read page checksums of %s: %w", d.cfg.Name, err)
		}
		for i := range old {
			cands[i].old = old[i]
		}
	}
	out := cands[:0]
	for i, c := range cands {
		if i >= n || c.old != c.sum {
			out = append(out, c)
		}
	}
	return out, nil
}

func (d *DB) readDBPage(pgno uint32) (change, error) {
	bp := getBuf(int(d.pageSize))
	defer putBuf(bp)
	off := int64(pgno-1) * int64(d.pageSize)
	if err := readFull(d.files, DBFile, *bp, off); err != nil {
		return change{}, fmt.Errorf("read %s page %d: %w", d.cfg.Name, pgno, err)
	}
	return change{pgno: pgno, sum: pageChecksum(pgno, *bp), ref: pageRef{pgno: pgno, kind: DBFile, off: off}}, nil
}

// verifyRefs gives each page of a transaction the checksum its content
// must have when it is read back to be staged (see Tx.ForEachPage): the
// changed pages' new checksums, the others' in the captured state. Read from
// outside, a page can change between the scan and the staging (the WAL
// restarted over it, a checkpoint wrote the database file); it is then
// refused rather than staged.
func (d *DB) verifyRefs(refs []pageRef, changes []change) error {
	var chunk []ltx.Checksum // allocated when a page is not a change (a full transaction)
	first := uint32(0)       // page number of chunk[0]; 0: not read
	j := 0                   // refs and changes are both in page order
	for i := range refs {
		r := &refs[i]
		r.verify = true
		for j < len(changes) && changes[j].pgno < r.pgno {
			j++
		}
		if j < len(changes) && changes[j].pgno == r.pgno {
			r.sum = changes[j].sum
			continue
		}
		if chunk == nil {
			chunk = make([]ltx.Checksum, 1024)
		}
		if first == 0 || r.pgno < first || r.pgno >= first+uint32(len(chunk)) {
			first = r.pgno
			if err := d.sums.ReadSums(first, chunk); err != nil {
				return fmt.Errorf("read the page checksums of %s: %w", d.cfg.Name, err)
			}
		}
		r.sum = chunk[r.pgno-first]
	}
	return nil
}

// logicalRef says where the current content of pgno lives, given the WAL index.
func (d *DB) logicalRef(idx map[uint32]int64, pgno uint32) pageRef {
	if off, ok := idx[pgno]; ok {
		return pageRef{pgno: pgno, kind: WALFile, off: off}
	}
	return pageRef{pgno: pgno, kind: DBFile, off: int64(pgno-1) * int64(d.pageSize)}
}

// emit captures a transaction made of changes (pages whose content differs
// from the last captured state) and the new database size, and applies it to
// the state once the sink has staged it.
//
// at is where in the -wal the capture of the transaction stopped reading
// (shared with the other processes capturing the database, see Shared).
func (d *DB) emit(changes []change, commit uint32, at WALPos) error {
	if len(changes) == 0 && commit == d.commit && !d.needFull {
		return nil // a rollback, or a transaction that changed nothing
	}
	lock := ltx.LockPgno(d.pageSize)
	xor, err := d.xorAfter(changes, commit)
	if err != nil {
		return err
	}

	tx := &Tx{
		TXID:         d.pos.TXID + 1,
		PageSize:     d.pageSize,
		Commit:       commit,
		PreChecksum:  d.pos.Checksum,
		PostChecksum: ltx.ChecksumFlag | xor,
		Timestamp:    d.cfg.Now(),
		Full:         d.needFull,
		files:        d.files,
	}
	if tx.Full {
		idx, err := d.walIndex()
		if err != nil {
			return err
		}
		tx.pages = make([]pageRef, 0, commit)
		j := 0
		for pgno := uint32(1); pgno <= commit; pgno++ {
			for j < len(changes) && changes[j].pgno < pgno {
				j++
			}
			switch {
			case pgno == lock:
			case j < len(changes) && changes[j].pgno == pgno:
				tx.pages = append(tx.pages, changes[j].ref)
			default:
				tx.pages = append(tx.pages, d.logicalRef(idx, pgno))
			}
		}
	} else {
		tx.pages = make([]pageRef, len(changes))
		for i, c := range changes {
			tx.pages[i] = c.ref
		}
	}
	if d.cfg.Outside {
		if err := d.verifyRefs(tx.pages, changes); err != nil {
			return err
		}
	}
	if err := d.cfg.Sink(tx); err != nil {
		if errors.Is(err, ErrChangedUnderRead) {
			d.known = false // what was read is not what is there: read it all again
		}
		return fmt.Errorf("stage transaction %d of %s: %w", tx.TXID, d.cfg.Name, err)
	}

	// Staged: apply.
	d.pos = Pos{TXID: tx.TXID, Checksum: tx.PostChecksum, PageSize: d.pageSize, Commit: commit}
	d.needFull = false
	err = d.apply(changes, commit, xor)
	if err != nil {
		// The transaction is staged, so it commits; the checksums are
		// rebuilt from the files before the next capture.
		d.known = false
		if d.cfg.Warn != nil {
			d.cfg.Warn(fmt.Sprintf("database %s: transaction %d is staged but its page checksums could not be stored (%v); "+
				"they are rebuilt from the database at its next write", d.cfg.Name, tx.TXID, err))
		}
	}
	if sh := d.cfg.Shared; sh != nil {
		// Other processes follow this position, and rebuild the checksums
		// first if they are not stored.
		if serr := sh.Staged(d.pos, at, err == nil); serr != nil && d.cfg.Warn != nil {
			d.cfg.Warn(fmt.Sprintf("database %s: record the staged position of transaction %d: %v", d.cfg.Name, tx.TXID, serr))
		}
	}
	return nil
}

// xorAfter returns the database checksum (without its flag) after changes
// and a new size of commit pages.
func (d *DB) xorAfter(changes []change, commit uint32) (ltx.Checksum, error) {
	xor := d.xor
	for _, c := range changes {
		xor ^= c.old ^ c.sum
	}
	if commit < d.commit {
		// Pages cut off by a shrinking database.
		cut := make([]ltx.Checksum, d.commit-commit)
		if err := d.sums.ReadSums(commit+1, cut); err != nil {
			return 0, fmt.Errorf("read page checksums of %s: %w", d.cfg.Name, err)
		}
		for _, c := range cut {
			xor ^= c
		}
	}
	return xor, nil
}

// apply makes a transaction (staged, or replayed by establish) the
// captured state: its pages' checksums, the database size and checksum.
func (d *DB) apply(changes []change, commit uint32, xor ltx.Checksum) error {
	for _, c := range changes {
		if c.pgno == 1 {
			d.walMode = d.page1WAL(c.ref)
		}
	}
	prevCommit := d.commit
	d.commit, d.xor = commit, xor
	return d.storeSums(changes, prevCommit)
}

// storeSums records the checksums of a staged transaction's pages; the
// database had prevCommit pages before it.
func (d *DB) storeSums(changes []change, prevCommit uint32) error {
	if d.commit < prevCommit {
		if err := d.sums.TruncateSums(d.commit); err != nil {
			return err
		}
	}
	if len(changes) == 0 {
		return nil
	}
	pgnos := make([]uint32, len(changes))
	sums := make([]ltx.Checksum, len(changes))
	for i, c := range changes {
		pgnos[i], sums[i] = c.pgno, c.sum
	}
	return runs(pgnos, func(first uint32, i, j int) error { return d.sums.WriteSums(first, sums[i:j]) })
}

func (d *DB) page1WAL(ref pageRef) bool {
	var b [100]byte
	if _, err := d.files.ReadAt(ref.kind, b[:], ref.off); err != nil && err != io.EOF {
		return d.walMode
	}
	h, ok := parseDBHeader(b[:])
	return ok && h.wal
}

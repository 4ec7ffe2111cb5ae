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
//     frames SQLite's own recovery would keep). Checked after each WAL write
//     that ends in such a frame. Writes to the database file while a WAL is in
//     use are checkpoints and produce nothing.
//   - Rollback journal (DELETE, TRUNCATE, PERSIST, and exclusive locking):
//     pages written to the database while the journal is live are dirty; the
//     journal being deleted, truncated or having its header zeroed ends the
//     transaction. The dirty pages are then read back and compared with the
//     per-page checksums of the last captured state, so a ROLLBACK (which
//     restores the original pages before ending the journal) ships nothing.
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
}

// Shared coordinates several processes that capture one database, each
// with its own DB. Every capture happens under Lock, after the DB has
// adopted the position Load returns: the last transaction staged by any
// process, whose page checksums are in the shared Sums. The Sink and Staged
// run under the lock, so the transactions of all processes form one chain.
type Shared interface {
	Lock() error
	Unlock()
	// Load returns the last staged position; ok is false when none is
	// recorded yet. resync: the next capture must ship the whole database
	// (the staging was reset, or the page checksums of the last
	// transaction were not stored).
	Load() (pos Pos, resync, ok bool, err error)
	// Staged records that the transaction at pos is staged and whether its
	// page checksums are stored.
	Staged(pos Pos, sumsStored bool) error
}

// ErrNotDatabase is returned when the main file is not a SQLite database.
var ErrNotDatabase = errors.New("not a SQLite database")

// ErrResync is returned by a Sink that will not stage the transaction
// because the database's history must start again from its replica's
// position (its staging disagreed with the replica). The front end then
// opens a new DB at that position, which ships the database whole.
var ErrResync = errors.New("staging was reset: the capture must start again from the replica's position")

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

	wal walState

	journalLive bool
	dirty       map[uint32]struct{}
	unjournaled bool // database written with neither a live journal nor WAL
	warnedMode  bool // warned of journal_mode OFF or MEMORY
	warnedCopy  bool // warned of a WAL-mode database written outside SQLite

	walWritten   int64 // end of the WAL bytes known to be written (on disk at establish, or by writes since)
	lastFrameOff int64 // offset of the frame whose header is in lastFrameHdr
	lastFrameHdr [walFrameHeaderSize]byte
}

// walState is what the core keeps of the WAL: a few words, whatever its size.
// Where each page's latest frame is (the WAL index) is rebuilt from the
// frame headers on the rare occasions it is needed (walIndex).
type walState struct {
	valid bool
	hdr   walHeader
	end   int64     // offset just past the last committed frame
	cksum [2]uint32 // running checksum at end
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
	d.needFull = d.pos.TXID == 0
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
func (d *DB) locked(capture func() error) error {
	sh := d.cfg.Shared
	if sh == nil {
		return capture()
	}
	if err := sh.Lock(); err != nil {
		return fmt.Errorf("lock the capture of %s: %w", d.cfg.Name, err)
	}
	defer sh.Unlock()
	p, resync, ok, err := sh.Load()
	if err != nil {
		return fmt.Errorf("read the staged position of %s: %w", d.cfg.Name, err)
	}
	if ok && resync {
		// The shared state cannot be trusted: ship the database whole
		// from the files (this capture's changes included).
		d.pos, d.needFull = p, true
		d.dirty, d.unjournaled = map[uint32]struct{}{}, false
		return d.establish()
	}
	if ok && p != d.pos {
		// Another process captured since: its page checksums are in the
		// shared store, its position is the one to follow.
		d.pos = p
		if d.known {
			d.pageSize, d.commit, d.xor = p.PageSize, p.Commit, p.Checksum&^ltx.ChecksumFlag
		}
	}
	return capture()
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

// WriteWAL performs apply (a write of n bytes at off to the -wal) and captures
// any transaction it commits.
func (d *DB) WriteWAL(off int64, data []byte, apply func() error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := apply(); err != nil {
		return err
	}
	n := int64(len(data))
	d.walWritten = max(d.walWritten, off+n)
	if off < walHeaderSize {
		d.readWALHeader()
	}
	if !d.known && !d.journalLive && d.wal.valid {
		// The state was lost (its checksums could not be stored): rebuild
		// it from the files; what this write committed is shipped with it.
		return d.locked(d.establish)
	}
	if !d.wal.valid || !d.known || off+n <= d.wal.end {
		return nil
	}
	// Only a write that ends inside a commit frame of the current generation
	// can complete a transaction.
	fsz := int64(d.wal.hdr.pageSize) + walFrameHeaderSize
	fstart := walHeaderSize + (off+n-1-walHeaderSize)/fsz*fsz
	if fstart < d.wal.end {
		return nil
	}
	// SQLite writes a frame's header, then its page data: keep the header
	// of the last written frame so the data write needs no read.
	switch {
	case off == fstart && n >= walFrameHeaderSize:
		copy(d.lastFrameHdr[:], data)
		d.lastFrameOff = fstart
	case off >= fstart+walFrameHeaderSize && d.lastFrameOff == fstart:
		// Page data of the frame whose header was written last.
	default:
		if _, err := d.files.ReadAt(WALFile, d.lastFrameHdr[:], fstart); err != nil {
			return nil
		}
		d.lastFrameOff = fstart
	}
	f := parseWALFrame(d.lastFrameHdr[:])
	if f.commit == 0 || f.salt1 != d.wal.hdr.salt1 || f.salt2 != d.wal.hdr.salt2 {
		return nil
	}
	if d.walWritten < fstart+fsz {
		// The frame's page data has not been written yet (SQLite writes
		// the header first): the write that completes it is the commit.
		return nil
	}
	// The commit frame's page is in hand: neither the scan nor staging
	// reads it back.
	var tail *frameInHand
	switch ps := int64(d.wal.hdr.pageSize); {
	case off == fstart+walFrameHeaderSize && n == ps && d.lastFrameOff == fstart:
		tail = &frameInHand{off: fstart, hdr: d.lastFrameHdr, page: data}
	case off == fstart && n == fsz:
		tail = &frameInHand{off: fstart, hdr: d.lastFrameHdr, page: data[walFrameHeaderSize:]}
	}
	return d.locked(func() error { return d.scanWAL(false, fstart+fsz, tail) })
}

// frameInHand is a WAL frame whose bytes the caller holds (the write that
// completed it), valid during the call that captures it.
type frameInHand struct {
	off  int64
	hdr  [walFrameHeaderSize]byte
	page []byte
}

// TruncateWAL performs apply (a truncation of the -wal to size).
func (d *DB) TruncateWAL(size int64, apply func() error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := apply(); err != nil {
		return err
	}
	d.walWritten = min(d.walWritten, size)
	if size < d.wal.end {
		// SQLite truncates the WAL only after a complete checkpoint.
		d.wal = walState{}
		d.lastFrameOff = -1
	}
	return nil
}

// RemoveWAL performs apply (the deletion of the -wal).
func (d *DB) RemoveWAL(apply func() error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := apply(); err != nil {
		return err
	}
	d.wal = walState{}
	d.lastFrameOff = -1
	d.walWritten = 0
	return nil
}

// WriteDB performs apply (a write of n bytes at off to the database file).
func (d *DB) WriteDB(off, n int64, apply func() error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := apply(); err != nil {
		return err
	}
	switch {
	case d.journalLive:
		d.markDirty(off, n)
	case d.wal.valid:
		// A checkpoint: the logical database does not change.
	default:
		d.markDirty(off, n)
		d.unjournaled = true
		d.warnUnjournaled()
	}
	return nil
}

// TruncateDB performs apply (a truncation of the database file to size).
// Under a live journal it is part of the transaction, with a WAL it is a
// checkpoint's; otherwise, when it cuts into the database, the file is
// changed outside any transaction (a file copied over the database) and
// captured with the writes that follow.
func (d *DB) TruncateDB(size int64, apply func() error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := apply(); err != nil {
		return err
	}
	// SQLite also cuts a file back to the database's size outside a
	// transaction (pages a rolled-back transaction grew): that changes
	// nothing captured. Cutting into the database does.
	if !d.journalLive && !d.wal.valid && size < int64(d.commit)*int64(d.pageSize) {
		d.unjournaled = true
		d.warnUnjournaled()
	}
	return nil
}

// warnUnjournaled warns, once per database, that it is written outside
// SQLite's transactions. A WAL-mode database written without a WAL to
// checkpoint is being replaced (a file copied over it); any other is in
// journal_mode OFF or MEMORY. Either way the changes are captured when the
// last handle closes.
func (d *DB) warnUnjournaled() {
	if d.cfg.Warn == nil {
		return
	}
	if d.walMode {
		if d.warnedCopy {
			return
		}
		d.warnedCopy = true
		d.cfg.Warn(fmt.Sprintf("database %s is written outside any SQLite transaction (a file copied over it?): "+
			"its new content is captured when the last handle on it closes", d.cfg.Name))
		return
	}
	if d.warnedMode {
		return
	}
	d.warnedMode = true
	d.cfg.Warn(fmt.Sprintf("database %s is written without a rollback journal or WAL (journal_mode OFF or MEMORY): "+
		"walsync cannot see its transaction boundaries and captures it only when its last connection closes; "+
		"use journal_mode WAL, DELETE, TRUNCATE or PERSIST", d.cfg.Name))
}

func (d *DB) markDirty(off, n int64) {
	ps := int64(d.pageSize)
	if ps == 0 {
		ps = 512 // page size not known yet: over-approximate
	}
	if n <= 0 {
		return
	}
	for p := off / ps; p <= (off+n-1)/ps; p++ {
		d.dirty[uint32(p+1)] = struct{}{}
	}
}

// WriteJournal performs apply (a write of data at off to the -journal). A
// write that zeroes the header of a live journal commits the transaction; it
// is captured before the write is applied.
func (d *DB) WriteJournal(off int64, data []byte, apply func() error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.endJournal(off == 0 && len(data) >= 8 && isZero(data[:8]), apply); err != nil {
		return err
	}
	if off < 8 {
		return d.journalChanged()
	}
	return nil
}

// TruncateJournal performs apply (a truncation of the -journal to size).
func (d *DB) TruncateJournal(size int64, apply func() error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.endJournal(size < 8, apply); err != nil {
		return err
	}
	return d.journalChanged()
}

// RemoveJournal performs apply (the deletion of the -journal).
func (d *DB) RemoveJournal(apply func() error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.endJournal(true, apply)
}

// endJournal performs apply; when apply ends a live journal (ends), the
// transaction is captured first, so a commit never returns to SQLite
// uncaptured. If apply fails, liveness is read back from the file.
func (d *DB) endJournal(ends bool, apply func() error) error {
	if ends && d.journalLive {
		if err := d.locked(d.finalize); err != nil {
			return err
		}
		d.journalLive = false
	}
	if err := apply(); err != nil {
		d.journalLive = d.readJournalLive()
		return err
	}
	return nil
}

// JournalOpened tells the core a -journal was created or opened.
func (d *DB) JournalOpened() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.journalChanged()
}

// Closed tells the core the last handle on the database file was released.
// Changes written without a journal (journal_mode OFF or MEMORY) are captured
// now: no transaction can be in progress without an open handle.
func (d *DB) Closed() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.unjournaled && !d.journalLive {
		return d.locked(d.finalize)
	}
	return nil
}

// journalChanged re-reads whether the journal is live; a live journal that
// ended without passing through a commit hook is finalized now.
func (d *DB) journalChanged() error {
	live := d.readJournalLive()
	if d.journalLive && !live {
		d.journalLive = false
		return d.locked(d.finalize)
	}
	d.journalLive = live
	return nil
}

func (d *DB) readJournalLive() bool {
	var b [8]byte
	if d.files.Size(JournalFile) < int64(len(b)) {
		return false
	}
	if n, _ := d.files.ReadAt(JournalFile, b[:], 0); n < len(b) {
		return false
	}
	return !isZero(b[:])
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// readWALHeader reads the WAL header and starts a new generation when its
// salts changed (SQLite restarted the WAL after a complete checkpoint).
func (d *DB) readWALHeader() {
	var b [walHeaderSize]byte
	if n, _ := d.files.ReadAt(WALFile, b[:], 0); n < len(b) {
		d.wal = walState{}
		return
	}
	h, ok := parseWALHeader(b[:])
	if !ok || (d.pageSize != 0 && h.pageSize != d.pageSize) {
		d.wal = walState{}
		return
	}
	if d.wal.valid && h.salt1 == d.wal.hdr.salt1 && h.salt2 == d.wal.hdr.salt2 {
		return
	}
	d.wal = walState{valid: true, hdr: h, end: walHeaderSize, cksum: h.cksum}
	d.lastFrameOff = -1
}

type walPage struct {
	off  int64 // offset of the page data in the WAL
	sum  ltx.Checksum
	data []byte // the page data, when in hand
}

// scanWAL validates frames after the last committed one, up to end (or the
// end of the file when end is 0), and captures every transaction they
// commit. In recovery it only rebuilds the WAL index. tail, if not nil, is
// the last frame, in hand.
func (d *DB) scanWAL(recovery bool, end int64, tail *frameInHand) error {
	ps := int64(d.wal.hdr.pageSize)
	fsz := ps + walFrameHeaderSize
	bp := getBuf(int(fsz))
	defer putBuf(bp)
	buf := *bp
	off, cksum := d.wal.end, d.wal.cksum
	var pending map[uint32]walPage
	for end == 0 || off < end {
		hdr, page := buf[:walFrameHeaderSize], buf[walFrameHeaderSize:]
		var inHand []byte
		if tail != nil && off == tail.off {
			hdr, page, inHand = tail.hdr[:], tail.page, tail.page
		} else if n, _ := d.files.ReadAt(WALFile, buf, off); int64(n) < fsz {
			return nil
		}
		f := parseWALFrame(hdr)
		if f.salt1 != d.wal.hdr.salt1 || f.salt2 != d.wal.hdr.salt2 || f.pgno == 0 {
			return nil
		}
		cksum = walChecksum(d.wal.hdr.bigEndian, cksum, hdr[:8])
		cksum = walChecksum(d.wal.hdr.bigEndian, cksum, page)
		if cksum != f.cksum {
			return nil
		}
		if pending == nil {
			pending = map[uint32]walPage{}
		}
		p := walPage{off: off + walFrameHeaderSize, data: inHand}
		if !recovery {
			p.sum = pageChecksum(f.pgno, page)
		}
		pending[f.pgno] = p
		off += fsz
		if f.commit == 0 {
			continue
		}
		if recovery {
			d.commit = f.commit
		} else if err := d.commitWAL(pending, f.commit, off); err != nil {
			return err
		}
		d.wal.end, d.wal.cksum = off, cksum
		pending = nil
	}
	return nil
}

// walIndex maps each page to the offset of the page data of its latest
// committed frame in the current WAL generation, as SQLite's wal-index does.
func (d *DB) walIndex() (map[uint32]int64, error) {
	idx := map[uint32]int64{}
	if !d.wal.valid {
		return idx, nil
	}
	fsz := int64(d.wal.hdr.pageSize) + walFrameHeaderSize
	var h [walFrameHeaderSize]byte
	type frame struct {
		pgno uint32
		off  int64
	}
	var pending []frame
	for off := int64(walHeaderSize); off+fsz <= d.wal.end; off += fsz {
		if err := readFull(d.files, WALFile, h[:], off); err != nil {
			return nil, fmt.Errorf("read %s WAL frame at %d: %w", d.cfg.Name, off, err)
		}
		f := parseWALFrame(h[:])
		pending = append(pending, frame{f.pgno, off + walFrameHeaderSize})
		if f.commit == 0 {
			continue
		}
		for _, p := range pending {
			if p.pgno <= f.commit {
				idx[p.pgno] = p.off
			}
		}
		for pgno := range idx {
			if pgno > f.commit {
				delete(idx, pgno)
			}
		}
		pending = pending[:0]
	}
	return idx, nil
}

// commitWAL captures the transaction whose commit frame ends at end.
func (d *DB) commitWAL(pending map[uint32]walPage, commit uint32, end int64) error {
	if d.pageSize == 0 {
		d.pageSize = d.wal.hdr.pageSize
	}
	lock := ltx.LockPgno(d.pageSize)
	changes := make([]change, 0, len(pending))
	for pgno, p := range pending {
		if pgno <= commit && pgno != lock {
			changes = append(changes, change{pgno: pgno, sum: p.sum, ref: pageRef{pgno, WALFile, p.off, p.data}})
		}
	}
	// Pages the database grew into without a frame read from the database file.
	for pgno := d.commit + 1; pgno <= commit; pgno++ {
		if _, ok := pending[pgno]; !ok && pgno != lock {
			c, err := d.readDBPage(pgno)
			if err != nil {
				return err
			}
			changes = append(changes, c)
		}
	}
	changes, err := d.changed(changes)
	if err == nil {
		err = d.emit(changes, commit)
	}
	if err != nil {
		// SQLite will report the commit as failed; make sure its recovery
		// can never resurrect it.
		var zero [walFrameHeaderSize]byte
		_, _ = d.files.WriteAt(WALFile, zero[:], end-int64(d.wal.hdr.pageSize)-walFrameHeaderSize)
		return err
	}
	return nil
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

// logicalRef says where the current content of pgno lives, given the WAL index.
func (d *DB) logicalRef(idx map[uint32]int64, pgno uint32) pageRef {
	if off, ok := idx[pgno]; ok {
		return pageRef{pgno: pgno, kind: WALFile, off: off}
	}
	return pageRef{pgno: pgno, kind: DBFile, off: int64(pgno-1) * int64(d.pageSize)}
}

// finalize ends a rollback-journal transaction: the dirty pages are compared
// with the last captured state and what changed is captured.
func (d *DB) finalize() error {
	if !d.known {
		d.dirty, d.unjournaled = map[uint32]struct{}{}, false
		return d.establish()
	}
	// The dirty pages stay recorded until the transaction is staged, so a
	// failed capture is retried whole by the next commit point.
	if err := d.captureDirty(d.dirty); err != nil {
		return err
	}
	d.dirty, d.unjournaled = map[uint32]struct{}{}, false
	return nil
}

// captureDirty compares the dirty pages (and any pages the database grew
// into) with the last captured state and captures what changed.
func (d *DB) captureDirty(dirty map[uint32]struct{}) error {
	size := d.files.Size(DBFile)
	var hb [100]byte
	if size < int64(len(hb)) {
		return nil // an empty database: nothing to capture
	}
	if _, err := d.files.ReadAt(DBFile, hb[:], 0); err != nil {
		return fmt.Errorf("read %s header: %w", d.cfg.Name, err)
	}
	h, ok := parseDBHeader(hb[:])
	if !ok {
		return nil
	}
	if d.pageSize != 0 && h.pageSize != d.pageSize {
		// VACUUM changed the page size: every page is new.
		d.needFull = true
		return d.establish()
	}
	d.pageSize = h.pageSize
	commit := h.nPages
	if commit == 0 {
		commit = uint32(size / int64(h.pageSize))
	}
	lock := ltx.LockPgno(d.pageSize)
	changes := make([]change, 0, len(dirty))
	for pgno := range dirty {
		if pgno > commit || pgno == lock {
			continue
		}
		c, err := d.readDBPage(pgno)
		if err != nil {
			return err
		}
		changes = append(changes, c)
	}
	for pgno := d.commit + 1; pgno <= commit; pgno++ {
		if _, ok := dirty[pgno]; !ok && pgno != lock {
			c, err := d.readDBPage(pgno)
			if err != nil {
				return err
			}
			changes = append(changes, c)
		}
	}
	changes, err := d.changed(changes)
	if err != nil {
		return err
	}
	return d.emit(changes, commit)
}

// establish reads the logical state from the files (the database plus the
// committed frames of the WAL) and reconciles it with the last position.
func (d *DB) establish() error {
	d.known = false
	d.pageSize, d.commit, d.xor, d.walMode = 0, 0, 0, false
	d.wal = walState{}
	size := d.files.Size(DBFile)
	if size >= 100 {
		var hb [100]byte
		if _, err := d.files.ReadAt(DBFile, hb[:], 0); err != nil {
			return fmt.Errorf("read %s header: %w", d.cfg.Name, err)
		}
		h, ok := parseDBHeader(hb[:])
		if !ok {
			return fmt.Errorf("%s: %w", d.cfg.Name, ErrNotDatabase)
		}
		d.pageSize, d.walMode = h.pageSize, h.wal
		d.commit = h.nPages
		if d.commit == 0 {
			d.commit = uint32(size / int64(h.pageSize))
		}
	} else if size > 0 {
		return fmt.Errorf("%s: %w", d.cfg.Name, ErrNotDatabase)
	}
	d.walWritten = max(0, d.files.Size(WALFile))
	d.readWALHeader()
	if d.wal.valid {
		if d.pageSize == 0 {
			d.pageSize = d.wal.hdr.pageSize
		}
		if err := d.scanWAL(true, 0, nil); err != nil {
			return err
		}
	}
	if err := d.sums.TruncateSums(0); err != nil {
		return fmt.Errorf("reset page checksums of %s: %w", d.cfg.Name, err)
	}
	if d.commit == 0 {
		d.known = true // an empty database: nothing to ship until it has a page
		if d.pos.TXID != 0 {
			d.needFull = true
		}
		return nil
	}
	idx, err := d.walIndex()
	if err != nil {
		return err
	}
	lock := ltx.LockPgno(d.pageSize)
	bp := getBuf(int(d.pageSize))
	defer putBuf(bp)
	var chunk [1024]ltx.Checksum
	for first := uint32(1); first <= d.commit; first += uint32(len(chunk)) {
		n := min(uint32(len(chunk)), d.commit-first+1)
		for i := range n {
			pgno := first + i
			if pgno == lock {
				chunk[i] = 0
				continue
			}
			ref := d.logicalRef(idx, pgno)
			if err := readFull(d.files, ref.kind, *bp, ref.off); err != nil {
				return fmt.Errorf("read %s page %d: %w", d.cfg.Name, pgno, err)
			}
			chunk[i] = pageChecksum(pgno, *bp)
			d.xor ^= chunk[i]
		}
		if err := d.sums.WriteSums(first, chunk[:n]); err != nil {
			return fmt.Errorf("write page checksums of %s: %w", d.cfg.Name, err)
		}
	}
	d.known = true
	if d.pos.TXID != 0 && (d.pos.Checksum != ltx.ChecksumFlag|d.xor || d.pos.Commit != d.commit || d.pos.PageSize != d.pageSize) {
		d.needFull = true // continuity with the last capture cannot be proven
	}
	if d.commit == 0 {
		return nil // nothing to ship until the database has a page
	}
	if d.needFull {
		if d.pos.TXID != 0 && d.cfg.Warn != nil {
			d.cfg.Warn(fmt.Sprintf("database %s: its state on disk cannot be proven to follow transaction %d "+
				"(changed outside walsync, or a new page size): shipping the whole database as transaction %d (resync)",
				d.cfg.Name, d.pos.TXID, d.pos.TXID+1))
		}
		return d.emit(nil, d.commit)
	}
	return nil
}

// emit captures a transaction made of changes (pages whose content differs
// from the last captured state) and the new database size, and applies it to
// the state once the sink has staged it.
func (d *DB) emit(changes []change, commit uint32) error {
	if len(changes) == 0 && commit == d.commit && !d.needFull {
		return nil // a rollback, or a transaction that changed nothing
	}
	lock := ltx.LockPgno(d.pageSize)
	xor := d.xor
	for _, c := range changes {
		xor ^= c.old ^ c.sum
	}
	if commit < d.commit {
		// Pages cut off by a shrinking database.
		cut := make([]ltx.Checksum, d.commit-commit)
		if err := d.sums.ReadSums(commit+1, cut); err != nil {
			return fmt.Errorf("read page checksums of %s: %w", d.cfg.Name, err)
		}
		for _, c := range cut {
			xor ^= c
		}
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
	if err := d.cfg.Sink(tx); err != nil {
		return fmt.Errorf("stage transaction %d of %s: %w", tx.TXID, d.cfg.Name, err)
	}

	// Staged: apply.
	for _, c := range changes {
		if c.pgno == 1 {
			d.walMode = d.page1WAL(c.ref)
		}
	}
	d.pos = Pos{TXID: tx.TXID, Checksum: tx.PostChecksum, PageSize: d.pageSize, Commit: commit}
	d.needFull = false
	prevCommit := d.commit
	d.commit, d.xor = commit, xor
	err := d.storeSums(changes, prevCommit)
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
		if serr := sh.Staged(d.pos, err == nil); serr != nil && d.cfg.Warn != nil {
			d.cfg.Warn(fmt.Sprintf("database %s: record the staged position of transaction %d: %v", d.cfg.Name, tx.TXID, serr))
		}
	}
	return nil
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

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
	// Warn reports conditions the user must know about, such as a journal
	// mode walsync cannot capture. May be nil.
	Warn func(msg string)
}

// ErrNotDatabase is returned when the main file is not a SQLite database.
var ErrNotDatabase = errors.New("not a SQLite database")

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
	sums     []ltx.Checksum // per page, index pgno-1; zero for the lock page
	xor      ltx.Checksum   // XOR of sums
	walMode  bool           // page 1 says WAL (file format versions 2)

	wal walState

	journalLive bool
	dirty       map[uint32]struct{}
	unjournaled bool // database written with neither a live journal nor WAL
	warnedMode  bool

	buf []byte

	lastFrameOff int64 // offset of the frame whose header is in lastFrameHdr
	lastFrameHdr [walFrameHeaderSize]byte
}

type walState struct {
	valid  bool
	hdr    walHeader
	end    int64            // offset just past the last committed frame
	cksum  [2]uint32        // running checksum at end
	frames map[uint32]int64 // pgno -> offset of page data of its latest committed frame
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
	d := &DB{cfg: cfg, files: cfg.Files, pos: cfg.Pos, dirty: map[uint32]struct{}{}, lastFrameOff: -1}
	d.needFull = d.pos.TXID == 0
	d.mu.Lock()
	defer d.mu.Unlock()
	d.journalLive = d.readJournalLive()
	if d.journalLive {
		return d, nil // torn until SQLite rolls the hot journal back
	}
	if err := d.establish(); err != nil {
		return nil, err
	}
	return d, nil
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
	if off < walHeaderSize {
		d.readWALHeader()
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
	return d.scanWAL(false, fstart+fsz)
}

// TruncateWAL performs apply (a truncation of the -wal to size).
func (d *DB) TruncateWAL(size int64, apply func() error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := apply(); err != nil {
		return err
	}
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
	case d.wal.valid || d.walMode:
		// A checkpoint: the logical database does not change.
	default:
		d.markDirty(off, n)
		d.unjournaled = true
		if !d.warnedMode && d.cfg.Warn != nil {
			d.warnedMode = true
			d.cfg.Warn(fmt.Sprintf("database %s is written without a rollback journal or WAL (journal_mode OFF or MEMORY): "+
				"walsync cannot see its transaction boundaries and captures it only when its last connection closes; "+
				"use journal_mode WAL, DELETE, TRUNCATE or PERSIST", d.cfg.Name))
		}
	}
	return nil
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
		if err := d.finalize(); err != nil {
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
		return d.finalize()
	}
	return nil
}

// journalChanged re-reads whether the journal is live; a live journal that
// ended without passing through a commit hook is finalized now.
func (d *DB) journalChanged() error {
	live := d.readJournalLive()
	if d.journalLive && !live {
		d.journalLive = false
		return d.finalize()
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
	off int64 // offset of the page data in the WAL
	sum ltx.Checksum
}

// scanWAL validates frames after the last committed one, up to end (or the
// end of the file when end is 0), and captures every transaction they
// commit. In recovery it only rebuilds the WAL index.
func (d *DB) scanWAL(recovery bool, end int64) error {
	ps := int64(d.wal.hdr.pageSize)
	fsz := ps + walFrameHeaderSize
	if int64(cap(d.buf)) < fsz {
		d.buf = make([]byte, fsz)
	}
	buf := d.buf[:fsz]
	off, cksum := d.wal.end, d.wal.cksum
	var pending map[uint32]walPage
	for end == 0 || off < end {
		if n, _ := d.files.ReadAt(WALFile, buf, off); int64(n) < fsz {
			return nil
		}
		f := parseWALFrame(buf)
		if f.salt1 != d.wal.hdr.salt1 || f.salt2 != d.wal.hdr.salt2 || f.pgno == 0 {
			return nil
		}
		cksum = walChecksum(d.wal.hdr.bigEndian, cksum, buf[:8])
		cksum = walChecksum(d.wal.hdr.bigEndian, cksum, buf[walFrameHeaderSize:])
		if cksum != f.cksum {
			return nil
		}
		if pending == nil {
			pending = map[uint32]walPage{}
		}
		p := walPage{off: off + walFrameHeaderSize}
		if !recovery {
			p.sum = pageChecksum(f.pgno, buf[walFrameHeaderSize:])
		}
		pending[f.pgno] = p
		off += fsz
		if f.commit == 0 {
			continue
		}
		if recovery {
			d.applyWALIndex(pending, f.commit)
			d.commit = f.commit
		} else if err := d.commitWAL(pending, f.commit, off); err != nil {
			return err
		}
		d.wal.end, d.wal.cksum = off, cksum
		pending = nil
	}
	return nil
}

func (d *DB) applyWALIndex(pending map[uint32]walPage, commit uint32) {
	if d.wal.frames == nil {
		d.wal.frames = map[uint32]int64{}
	}
	for pgno, p := range pending {
		if pgno <= commit {
			d.wal.frames[pgno] = p.off
		}
	}
	for pgno := range d.wal.frames {
		if pgno > commit {
			delete(d.wal.frames, pgno)
		}
	}
}

// commitWAL captures the transaction whose commit frame ends at end.
func (d *DB) commitWAL(pending map[uint32]walPage, commit uint32, end int64) error {
	if d.pageSize == 0 {
		d.pageSize = d.wal.hdr.pageSize
	}
	lock := ltx.LockPgno(d.pageSize)
	var changes []change
	for pgno, p := range pending {
		if pgno > commit || pgno == lock {
			continue
		}
		if pgno > d.commit || d.sums[pgno-1] != p.sum {
			changes = append(changes, change{pgno: pgno, sum: p.sum, ref: pageRef{pgno, WALFile, p.off}})
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
	if err := d.emit(changes, commit); err != nil {
		// SQLite will report the commit as failed; make sure its recovery
		// can never resurrect it.
		var zero [walFrameHeaderSize]byte
		_, _ = d.files.WriteAt(WALFile, zero[:], end-int64(d.wal.hdr.pageSize)-walFrameHeaderSize)
		return err
	}
	d.applyWALIndex(pending, commit)
	return nil
}

type change struct {
	pgno uint32
	sum  ltx.Checksum
	ref  pageRef
}

func (d *DB) readDBPage(pgno uint32) (change, error) {
	buf := d.pageBuf()
	off := int64(pgno-1) * int64(d.pageSize)
	if err := readFull(d.files, DBFile, buf, off); err != nil {
		return change{}, fmt.Errorf("read %s page %d: %w", d.cfg.Name, pgno, err)
	}
	return change{pgno: pgno, sum: pageChecksum(pgno, buf), ref: pageRef{pgno, DBFile, off}}, nil
}

func (d *DB) pageBuf() []byte {
	if uint32(cap(d.buf)) < d.pageSize {
		d.buf = make([]byte, d.pageSize+walFrameHeaderSize)
	}
	return d.buf[:d.pageSize]
}

// logicalRef says where the current content of pgno lives.
func (d *DB) logicalRef(pgno uint32) pageRef {
	if off, ok := d.wal.frames[pgno]; ok {
		return pageRef{pgno, WALFile, off}
	}
	return pageRef{pgno, DBFile, int64(pgno-1) * int64(d.pageSize)}
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
	var changes []change
	for pgno := range dirty {
		if pgno > commit || pgno == lock {
			continue
		}
		c, err := d.readDBPage(pgno)
		if err != nil {
			return err
		}
		if pgno > d.commit || d.sums[pgno-1] != c.sum {
			changes = append(changes, c)
		}
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
	return d.emit(changes, commit)
}

// establish reads the logical state from the files (the database plus the
// committed frames of the WAL) and reconciles it with the last position.
func (d *DB) establish() error {
	d.known = false
	d.pageSize, d.commit, d.sums, d.xor, d.walMode = 0, 0, nil, 0, false
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
	d.readWALHeader()
	if d.wal.valid {
		if d.pageSize == 0 {
			d.pageSize = d.wal.hdr.pageSize
		}
		if err := d.scanWAL(true, 0); err != nil {
			return err
		}
	}
	d.sums = make([]ltx.Checksum, d.commit)
	if d.commit == 0 {
		d.known = true // an empty database: nothing to ship until it has a page
		if d.pos.TXID != 0 {
			d.needFull = true
		}
		return nil
	}
	lock := ltx.LockPgno(d.pageSize)
	buf := d.pageBuf()
	for pgno := uint32(1); pgno <= d.commit; pgno++ {
		if pgno == lock {
			continue
		}
		ref := d.logicalRef(pgno)
		if err := readFull(d.files, ref.kind, buf, ref.off); err != nil {
			return fmt.Errorf("read %s page %d: %w", d.cfg.Name, pgno, err)
		}
		d.sums[pgno-1] = pageChecksum(pgno, buf)
		d.xor ^= d.sums[pgno-1]
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
		if c.pgno <= d.commit {
			xor ^= d.sums[c.pgno-1]
		}
		xor ^= c.sum
	}
	for pgno := commit + 1; pgno <= d.commit; pgno++ {
		xor ^= d.sums[pgno-1] // pages cut off by a shrinking database
	}
	slices.SortFunc(changes, func(a, b change) int { return int(a.pgno) - int(b.pgno) })

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
				tx.pages = append(tx.pages, d.logicalRef(pgno))
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
	if int(commit) > len(d.sums) {
		d.sums = append(d.sums, make([]ltx.Checksum, int(commit)-len(d.sums))...)
	}
	for pgno := commit + 1; pgno <= d.commit; pgno++ {
		d.sums[pgno-1] = 0
	}
	d.sums = d.sums[:commit]
	for _, c := range changes {
		d.sums[c.pgno-1] = c.sum
		if c.pgno == 1 {
			d.walMode = d.page1WAL(c.ref)
		}
	}
	d.commit, d.xor = commit, xor
	d.pos = Pos{TXID: tx.TXID, Checksum: tx.PostChecksum, PageSize: d.pageSize, Commit: commit}
	d.needFull = false
	return nil
}

func (d *DB) page1WAL(ref pageRef) bool {
	var b [100]byte
	if _, err := d.files.ReadAt(ref.kind, b[:], ref.off); err != nil && err != io.EOF {
		return d.walMode
	}
	h, ok := parseDBHeader(b[:])
	return ok && h.wal
}

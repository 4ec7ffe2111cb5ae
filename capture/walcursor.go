package capture

import "github.com/superfly/ltx"

// WALCursor follows the committed frames of one WAL file: from a position
// (the offset just past the last committed frame of a generation, the
// generation's salts and the running checksum at that offset) it reads the
// frames that follow, to the end of the file or to a limit, and reports every
// transaction they commit, exactly as SQLite's recovery would keep them:
// salts equal to the header's, a valid running checksum, and a frame with a
// non-zero "database size after commit" ending each transaction.
//
// It reads a file another process may be appending to (the -wal in FUSE
// passthrough, or written by SQLite straight through the VFS): a frame still
// being written fails its checksum and ends the scan, to be read again by the
// next one. A WALCursor is not safe for concurrent use.
type WALCursor struct {
	valid bool
	hdr   walHeader
	end   int64     // offset just past the last committed frame
	cksum [2]uint32 // running checksum at end
	// brk: where the last scan found the generation's chain of frames
	// broken (the first frame after end, past any uncommitted ones, that
	// does not continue it), and what is there: a whole frame (its header
	// in brkHdr) or the end of the file (brkEOF). Neither when the scan
	// stopped at its limit or on an error. See FollowRestart.
	brk      int64
	brkHdr   [walFrameHeaderSize]byte
	brkFrame bool
	brkEOF   bool
}

// WALPos is where a WALCursor stands, in a form another process's cursor
// can take up (see Shared): the generation (its header's byte order, page
// size and salts), the offset just past the last committed frame read and
// the running checksum there. The zero WALPos is no WAL.
type WALPos struct {
	BigEndian    bool
	PageSize     uint32
	Salt1, Salt2 uint32
	End          int64
	Cksum        [2]uint32
}

// Pos returns the cursor's position; zero when it follows no WAL.
func (c *WALCursor) Pos() WALPos {
	if !c.valid {
		return WALPos{}
	}
	return c.posAt(c.end, c.cksum)
}

// posAt is the position in the cursor's generation just past the commit
// frame ending at end, whose running checksum is cksum.
func (c *WALCursor) posAt(end int64, cksum [2]uint32) WALPos {
	return WALPos{BigEndian: c.hdr.bigEndian, PageSize: c.hdr.pageSize, Salt1: c.hdr.salt1, Salt2: c.hdr.salt2, End: end, Cksum: cksum}
}

// Seek moves the cursor to p, which another cursor reported. It reports
// false, and resets the cursor, when p is not a position in a WAL (zero,
// or not at a frame boundary of its page size).
func (c *WALCursor) Seek(p WALPos) bool {
	fsz := int64(p.PageSize) + walFrameHeaderSize
	if !ltx.IsValidPageSize(p.PageSize) || p.End < walHeaderSize || (p.End-walHeaderSize)%fsz != 0 {
		c.Reset()
		return false
	}
	*c = WALCursor{valid: true, end: p.End, cksum: p.Cksum,
		hdr: walHeader{bigEndian: p.BigEndian, pageSize: p.PageSize, salt1: p.Salt1, salt2: p.Salt2}}
	return true
}

// WALReader reads a WAL file.
type WALReader interface {
	ReadAt(p []byte, off int64) (int, error)
}

// WALTx is a committed transaction found by a scan: the latest frame of
// each page it wrote, and the database size after it.
type WALTx struct {
	Pages  map[uint32]WALPage
	Commit uint32    // database size in pages after the transaction
	End    int64     // offset just past its commit frame
	Cksum  [2]uint32 // the running checksum at End
}

// WALPage is the latest frame of a page in a transaction.
type WALPage struct {
	Off  int64  // offset of the page data in the WAL
	Data []byte // the page, when the caller of the scan had it in hand
	sum  ltx.Checksum
}

func (c *WALCursor) frameSize() int64 { return int64(c.hdr.pageSize) + walFrameHeaderSize }

// Reset forgets the WAL (it was truncated, deleted or is not valid).
func (c *WALCursor) Reset() { *c = WALCursor{} }

// ReadHeader reads the WAL header. A header with other salts starts a new
// generation (SQLite restarted the WAL after a complete checkpoint): the
// cursor moves to its first frame and restarted is true. A missing or invalid
// header, or one whose page size is not pageSize (when non-zero), resets the
// cursor.
func (c *WALCursor) ReadHeader(r WALReader, pageSize uint32) (restarted bool) {
	var b [walHeaderSize]byte
	if n, _ := r.ReadAt(b[:], 0); n < len(b) {
		c.Reset()
		return false
	}
	h, ok := parseWALHeader(b[:])
	if !ok || (pageSize != 0 && h.pageSize != pageSize) {
		c.Reset()
		return false
	}
	if c.valid && h.salt1 == c.hdr.salt1 && h.salt2 == c.hdr.salt2 {
		return false
	}
	*c = WALCursor{valid: true, hdr: h, end: walHeaderSize, cksum: h.cksum}
	return true
}

// Intact reports whether the last committed frame the cursor read is still
// in the file as it was read (its running checksum unchanged). It is false
// when frames the cursor passed were overwritten without a new generation:
// the cursor captured a transaction that SQLite then did not count as
// committed (its commit failed after the frames were written) and SQLite
// wrote other frames over it.
func (c *WALCursor) Intact(r WALReader) bool {
	if !c.valid || c.end <= walHeaderSize {
		return true
	}
	var h [walFrameHeaderSize]byte
	if n, _ := r.ReadAt(h[:], c.end-c.frameSize()); n < len(h) {
		return false
	}
	f := parseWALFrame(h[:])
	return f.cksum == c.cksum && f.salt1 == c.hdr.salt1 && f.salt2 == c.hdr.salt2
}

// frameInHand is a WAL frame whose bytes the caller holds (the write that
// completed it), valid during the call that captures it.
type frameInHand struct {
	off  int64
	hdr  [walFrameHeaderSize]byte
	page []byte
}

// FollowRestart is for a reader that sees the WAL only now and then (the
// watch sidecar, reading from outside between its scans): the WAL's header
// now starts the generation next, not the cursor's. SQLite restarts a WAL
// only after a checkpoint copied every frame the old generation committed
// into the database file; if that generation committed frames after the
// cursor that no scan read, the new one may have overwritten them, or a
// truncation cut them.
//
// FollowRestart first reads what the old generation committed after the
// cursor and is still in the file (calling commit for each transaction, as
// Scan). Then the old generation provably ended there when all of this
// holds, and the cursor moves to the first frame of next:
//
//   - next's salt-1 is the old one plus one: SQLite adds one at each
//     restart (and draws new salts only for a WAL no connection restarted
//     yet), so exactly one restart happened and next is the only
//     generation written since the old one ended;
//   - the old chain breaks on a whole frame, or exactly at the end of the
//     file (a frame cut short there may be a truncation's doing);
//   - next's frames (read after that) all lie before the break: next never
//     wrote there, nor was writing there while it was read. SQLite writes a
//     generation's frames in order, each continuing its chain, so the old
//     generation wrote nothing there either and committed nothing past it;
//     and after wal_checkpoint(TRUNCATE) empties the file every byte to its
//     end is next's, so none happened.
//
// Otherwise ended is false, and the caller must establish the state from
// the files. One case passes these tests wrongly: a WAL truncated by
// journal_size_limit to exactly the end of a frame, at the end of the
// frames a scan read, with the old generation's later commits beyond it;
// it needs a limit of 32 + n × (page size + 24) bytes for some n. And
// one by chance: a -wal deleted and created again (its salts drawn at
// random) whose salt-1 happens to be the old generation's plus one, then
// restarted (2^-32 per new -wal, on top of commits not read in between).
func (c *WALCursor) FollowRestart(r WALReader, next walHeader, commit func(tx *WALTx) error) (ended bool, err error) {
	if !c.valid || next.pageSize != c.hdr.pageSize || next.salt1 != c.hdr.salt1+1 {
		return false, nil
	}
	if err := c.scan(r, 0, nil, commit); err != nil {
		return false, err
	}
	// The scan, with no limit, ended on a whole frame or at the end of
	// the file; then exactly there, not inside a frame.
	fsz, p := c.frameSize(), c.brk
	if c.brkEOF {
		var b [1]byte
		if n, _ := r.ReadAt(b[:], p-1); n != 1 {
			return false, nil // the file ends before
		}
		if n, _ := r.ReadAt(b[:], p); n != 0 {
			return false, nil // a frame cut short
		}
	}
	if walExtent(r, next, fsz) >= p {
		return false, nil
	}
	*c = WALCursor{valid: true, hdr: next, end: walHeaderSize, cksum: next.cksum}
	return true, nil
}

// walExtent returns the offset just past the frames at the start of the
// file that carry h's salts (written by h's generation, committed or not).
func walExtent(r WALReader, h walHeader, fsz int64) int64 {
	ra := &readAhead{r: r, size: max(fsz, scanReadAhead/fsz*fsz)}
	defer ra.release()
	off := int64(walHeaderSize)
	for {
		b := ra.frame(off, fsz)
		if b == nil {
			return off
		}
		if f := parseWALFrame(b); f.salt1 != h.salt1 || f.salt2 != h.salt2 {
			return off
		}
		off += fsz
	}
}

// peekWALHeader reads and validates the WAL header without moving a cursor.
func peekWALHeader(r WALReader) (walHeader, bool) {
	var b [walHeaderSize]byte
	if n, _ := r.ReadAt(b[:], 0); n < len(b) {
		return walHeader{}, false
	}
	return parseWALHeader(b[:])
}

// Scan reads the frames after the cursor, up to limit (0: the end of the
// file), and calls commit for every transaction they complete, in order.
// The cursor moves past a transaction only when commit returns nil; an error
// ends the scan and is returned, the transaction to be read again.
// The transaction is valid only during the call.
func (c *WALCursor) Scan(r WALReader, limit int64, commit func(tx *WALTx) error) error {
	return c.scan(r, limit, nil, commit)
}

// Scans read ahead this many bytes at once, and keep in hand the pages of a
// transaction up to keepBytes (a larger one's pages are read again when
// staged).
const (
	scanReadAhead = 128 << 10
	keepBytes     = 4 << 20
	arenaChunk    = 64<<10 + walFrameHeaderSize // holds the largest page
)

func (c *WALCursor) scan(r WALReader, limit int64, tail *frameInHand, commit func(tx *WALTx) error) error {
	if !c.valid {
		return nil
	}
	fsz := c.frameSize()
	ahead := scanReadAhead / fsz * fsz
	if limit > 0 {
		ahead = min(ahead, (limit-c.end+fsz-1)/fsz*fsz) // no bigger a buffer than the frames to read
	}
	ra := &readAhead{r: r, size: max(fsz, ahead)}
	defer ra.release()
	off, cksum := c.end, c.cksum
	var tx *WALTx
	var keep arena // the pending transaction's pages
	defer keep.release()
	c.brkFrame, c.brkEOF = false, false
	broken := func(off int64, hdr []byte) error {
		c.brk, c.brkFrame = off, true
		copy(c.brkHdr[:], hdr)
		return nil
	}
	for limit == 0 || off < limit {
		var hdr, page, inHand []byte
		if tail != nil && off == tail.off {
			hdr, page, inHand = tail.hdr[:], tail.page, tail.page
		} else if hdr = ra.frame(off, fsz); hdr == nil {
			c.brk, c.brkEOF = off, true
			return nil // not written (yet), or unreadable: the next scan reads it
		} else {
			hdr, page = hdr[:walFrameHeaderSize], hdr[walFrameHeaderSize:]
		}
		f := parseWALFrame(hdr)
		if f.salt1 != c.hdr.salt1 || f.salt2 != c.hdr.salt2 || f.pgno == 0 {
			return broken(off, hdr)
		}
		next := walChecksum(c.hdr.bigEndian, cksum, hdr[:8])
		next = walChecksum(c.hdr.bigEndian, next, page)
		if next != f.cksum {
			return broken(off, hdr)
		}
		cksum = next
		if tx == nil {
			tx = &WALTx{Pages: map[uint32]WALPage{}}
			keep.reset()
		}
		if inHand == nil {
			// A copy: the read-ahead buffer moves on before the commit.
			inHand = keep.copy(page)
		}
		tx.Pages[f.pgno] = WALPage{Off: off + walFrameHeaderSize, Data: inHand, sum: pageChecksum(f.pgno, page)}
		off += fsz
		if f.commit == 0 {
			continue
		}
		tx.Commit, tx.End, tx.Cksum = f.commit, off, cksum
		if err := commit(tx); err != nil {
			return err
		}
		c.end, c.cksum = off, cksum
		tx = nil
	}
	return nil
}

// readAhead reads a WAL in large chunks for a scan.
type readAhead struct {
	r     WALReader
	size  int64
	bp    *[]byte
	start int64 // offset of buf[0]
	n     int64 // bytes valid in buf
}

// frame returns the fsz bytes at off, or nil when the file ends before.
func (ra *readAhead) frame(off, fsz int64) []byte {
	if ra.bp == nil || off < ra.start || off+fsz > ra.start+ra.n {
		if ra.bp == nil {
			ra.bp = getBuf(int(ra.size))
		}
		n, _ := ra.r.ReadAt((*ra.bp)[:ra.size], off)
		ra.start, ra.n = off, int64(n)
		if ra.n < fsz {
			return nil
		}
	}
	i := off - ra.start
	return (*ra.bp)[i : i+fsz]
}

func (ra *readAhead) release() {
	if ra.bp != nil {
		putBuf(ra.bp)
	}
}

// arena keeps copies of the pages of one transaction, in chunks from the
// shared buffer pools, up to keepBytes.
type arena struct {
	chunks []*[]byte
	used   int // bytes used in the last chunk
	total  int
}

// copy returns a copy of p in the arena, or nil when the arena is full.
func (a *arena) copy(p []byte) []byte {
	if a.total+len(p) > keepBytes {
		return nil
	}
	if len(a.chunks) == 0 || a.used+len(p) > arenaChunk {
		a.chunks = append(a.chunks, getBuf(arenaChunk))
		a.used = 0
	}
	c := *a.chunks[len(a.chunks)-1]
	dst := c[a.used : a.used+len(p) : a.used+len(p)]
	copy(dst, p)
	a.used += len(p)
	a.total += len(p)
	return dst
}

// reset starts a new transaction, keeping one chunk.
func (a *arena) reset() {
	for _, c := range a.chunks[min(1, len(a.chunks)):] {
		putBuf(c)
	}
	a.chunks = a.chunks[:min(1, len(a.chunks))]
	a.used, a.total = 0, 0
}

func (a *arena) release() {
	for _, c := range a.chunks {
		putBuf(c)
	}
	a.chunks = nil
}

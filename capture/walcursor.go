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
}

// WALReader reads a WAL file.
type WALReader interface {
	ReadAt(p []byte, off int64) (int, error)
}

// WALTx is a committed transaction found by a scan: the latest frame of
// each page it wrote, and the database size after it.
type WALTx struct {
	Pages  map[uint32]WALPage
	Commit uint32 // database size in pages after the transaction
	End    int64  // offset just past its commit frame
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
	for limit == 0 || off < limit {
		var hdr, page, inHand []byte
		if tail != nil && off == tail.off {
			hdr, page, inHand = tail.hdr[:], tail.page, tail.page
		} else if hdr = ra.frame(off, fsz); hdr == nil {
			return nil // not written (yet), or unreadable: the next scan reads it
		} else {
			hdr, page = hdr[:walFrameHeaderSize], hdr[walFrameHeaderSize:]
		}
		f := parseWALFrame(hdr)
		if f.salt1 != c.hdr.salt1 || f.salt2 != c.hdr.salt2 || f.pgno == 0 {
			return nil
		}
		cksum = walChecksum(c.hdr.bigEndian, cksum, hdr[:8])
		cksum = walChecksum(c.hdr.bigEndian, cksum, page)
		if cksum != f.cksum {
			return nil
		}
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
		tx.Commit, tx.End = f.commit, off
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

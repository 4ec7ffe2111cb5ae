package capture_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/superfly/ltx"
	"github.com/walsync/walsync/capture"
)

// This file holds the test harness shared by the unit tests below and by
// FuzzCapture: an in-memory capture.Files, writers of SQLite database pages and
// WAL frames (written independently of the package's own parsers), a reference
// model of the database SQLite would see, and a Sink that encodes, verifies
// and applies every transaction to a replica.

var be = binary.BigEndian

// ---------------------------------------------------------------------------
// In-memory files.

// memFiles is an in-memory capture.Files: one byte slice per file, with an
// existence flag. Reads behave like os.File.ReadAt.
type memFiles struct {
	mu     sync.Mutex
	data   [3][]byte
	exists [3]bool
	// beforeRead, when set, runs before each read, outside the lock: a
	// test makes SQLite act between two reads of a look from outside.
	beforeRead func(k capture.Kind, off int64)
	// failRead, when set, fails the reads it returns an error for.
	failRead func(k capture.Kind, off int64) error
}

var _ capture.Files = (*memFiles)(nil)

func (f *memFiles) ReadAt(k capture.Kind, p []byte, off int64) (int, error) {
	if hook := f.beforeRead; hook != nil {
		hook(k, off)
	}
	if fail := f.failRead; fail != nil {
		if err := fail(k, off); err != nil {
			return 0, err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.exists[k] {
		return 0, fs.ErrNotExist
	}
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	b := f.data[k]
	if off >= int64(len(b)) {
		return 0, io.EOF
	}
	n := copy(p, b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *memFiles) WriteAt(k capture.Kind, p []byte, off int64) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.exists[k] {
		return 0, fs.ErrNotExist
	}
	f.putLocked(k, off, p)
	return len(p), nil
}

func (f *memFiles) Size(k capture.Kind) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.exists[k] {
		return -1
	}
	return int64(len(f.data[k]))
}

func (f *memFiles) putLocked(k capture.Kind, off int64, p []byte) {
	f.exists[k] = true
	if end := off + int64(len(p)); end > int64(len(f.data[k])) {
		f.data[k] = append(f.data[k], make([]byte, end-int64(len(f.data[k])))...)
	}
	copy(f.data[k][off:], p)
}

// put writes p at off, creating the file if needed.
func (f *memFiles) put(k capture.Kind, off int64, p []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.putLocked(k, off, p)
}

// setSize truncates or zero-extends the file, creating it if needed.
func (f *memFiles) setSize(k capture.Kind, size int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.exists[k] = true
	if size <= int64(len(f.data[k])) {
		f.data[k] = f.data[k][:size:size]
		return
	}
	f.data[k] = append(f.data[k], make([]byte, size-int64(len(f.data[k])))...)
}

func (f *memFiles) remove(k capture.Kind) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.exists[k], f.data[k] = false, nil
}

// get returns a copy of the file, nil if it does not exist.
func (f *memFiles) get(k capture.Kind) []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.exists[k] {
		return nil
	}
	return bytes.Clone(f.data[k])
}

// journalLive reports what SQLite calls a live (hot) journal: one whose first
// 8 bytes are not zero.
func (f *memFiles) journalLive() bool {
	j := f.get(capture.JournalFile)
	return len(j) >= 8 && !allZero(j[:8])
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// ---------------------------------------------------------------------------
// SQLite file formats, written independently of the package.

const (
	walHdrSize   = 32
	frameHdrSize = 24
)

var journalMagic = []byte{0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7}

// walSum is SQLite's WAL checksum (walChecksumBytes), continued from s over b.
func walSum(bigEndian bool, s [2]uint32, b []byte) [2]uint32 {
	var order binary.ByteOrder = binary.LittleEndian
	if bigEndian {
		order = binary.BigEndian
	}
	s0, s1 := s[0], s[1]
	for i := 0; i+8 <= len(b); i += 8 {
		s0 += order.Uint32(b[i:]) + s1
		s1 += order.Uint32(b[i+4:]) + s0
	}
	return [2]uint32{s0, s1}
}

// walWriter encodes a WAL header and frames, keeping the running checksum in
// memory as SQLite does.
type walWriter struct {
	ps           int
	bigEndian    bool
	ckptSeq      uint32
	salt1, salt2 uint32
	cksum        [2]uint32
}

func (w *walWriter) fsz() int64 { return int64(w.ps) + frameHdrSize }

// frameOff is the offset of frame i (1-based).
func (w *walWriter) frameOff(i int) int64 { return walHdrSize + int64(i-1)*w.fsz() }

func (w *walWriter) header() []byte {
	b := make([]byte, walHdrSize)
	magic := uint32(0x377f0682)
	if w.bigEndian {
		magic = 0x377f0683
	}
	be.PutUint32(b[0:], magic)
	be.PutUint32(b[4:], 3007000)
	be.PutUint32(b[8:], uint32(w.ps)) // SQLite writes 65536 as is here
	be.PutUint32(b[12:], w.ckptSeq)
	be.PutUint32(b[16:], w.salt1)
	be.PutUint32(b[20:], w.salt2)
	s := walSum(w.bigEndian, [2]uint32{}, b[:24])
	be.PutUint32(b[24:], s[0])
	be.PutUint32(b[28:], s[1])
	w.cksum = s
	return b
}

// encodeFrame encodes a frame whose checksum continues from seed.
func (w *walWriter) encodeFrame(seed [2]uint32, pgno, commit uint32, data []byte) ([]byte, [2]uint32) {
	if len(data) != w.ps {
		panic("bad page length")
	}
	b := make([]byte, frameHdrSize+len(data))
	be.PutUint32(b[0:], pgno)
	be.PutUint32(b[4:], commit)
	be.PutUint32(b[8:], w.salt1)
	be.PutUint32(b[12:], w.salt2)
	copy(b[frameHdrSize:], data)
	s := walSum(w.bigEndian, seed, b[:8])
	s = walSum(w.bigEndian, s, data)
	be.PutUint32(b[16:], s[0])
	be.PutUint32(b[20:], s[1])
	return b, s
}

// frame encodes the next frame and advances the running checksum.
func (w *walWriter) frame(pgno, commit uint32, data []byte) []byte {
	b, s := w.encodeFrame(w.cksum, pgno, commit, data)
	w.cksum = s
	return b
}

// fillPage returns a deterministic pseudo-random page.
func fillPage(ps int, pgno uint32, seed uint64) []byte {
	b := make([]byte, ps)
	x := seed*0x9e3779b97f4a7c15 ^ uint64(pgno)*0xbf58476d1ce4e5b9 ^ 0x94d049bb133111eb
	for i := 0; i < ps; i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		binary.LittleEndian.PutUint64(b[i:], x)
	}
	return b
}

type dbHdr struct {
	wal      bool
	counter  uint32
	nPages   uint32
	validFor uint32 // version-valid-for; equal to counter for a trusted size
}

// setDBHeader writes the 100-byte database header into page 1.
func setDBHeader(p []byte, ps int, h dbHdr) {
	copy(p, "SQLite format 3\x00")
	f := uint16(ps)
	if ps == 65536 {
		f = 1
	}
	be.PutUint16(p[16:], f)
	v := byte(1)
	if h.wal {
		v = 2
	}
	p[18], p[19] = v, v
	p[20], p[21], p[22], p[23] = 0, 64, 32, 32
	be.PutUint32(p[24:], h.counter)
	be.PutUint32(p[28:], h.nPages)
	clear(p[32:92])
	be.PutUint32(p[44:], 4) // schema format
	be.PutUint32(p[56:], 1) // UTF-8
	be.PutUint32(p[92:], h.validFor)
	be.PutUint32(p[96:], 3046000)
}

func readDBHeader(p []byte) dbHdr {
	return dbHdr{wal: p[18] == 2 && p[19] == 2, counter: be.Uint32(p[24:]), nPages: be.Uint32(p[28:]), validFor: be.Uint32(p[92:])}
}

// page1 returns a page 1 with a valid header and pseudo-random content.
func page1(ps int, wal bool, counter, nPages uint32, seed uint64) []byte {
	p := fillPage(ps, 1, seed)
	setDBHeader(p, ps, dbHdr{wal: wal, counter: counter, nPages: nPages, validFor: counter})
	return p
}

// newDB returns the bytes of an n-page database.
func newDB(ps int, wal bool, n int, seed uint64) []byte {
	var b []byte
	for pgno := 1; pgno <= n; pgno++ {
		if pgno == 1 {
			b = append(b, page1(ps, wal, 1, uint32(n), seed)...)
		} else {
			b = append(b, fillPage(ps, uint32(pgno), seed)...)
		}
	}
	return b
}

// journalHeader is the first journal header as SQLite writes it before the
// journal is synced: the magic still zero.
func journalHeader(ps int, origPages uint32) []byte {
	b := make([]byte, 28)
	be.PutUint32(b[12:], 0x12345678) // nonce
	be.PutUint32(b[16:], origPages)
	be.PutUint32(b[20:], 512)
	be.PutUint32(b[24:], uint32(ps))
	return b
}

// journalMagicHeader is the write that makes the journal live.
func journalMagicHeader(nRec uint32) []byte {
	b := append([]byte(nil), journalMagic...)
	return be.AppendUint32(b, nRec)
}

// ---------------------------------------------------------------------------
// Reference model: what SQLite would see.

type model struct {
	ps   int
	data []byte // the logical database, whole pages

	walValid  bool
	bigEndian bool
	salt1     uint32
	salt2     uint32
	walEnd    int64     // end of the last valid commit frame, or 32
	walCksum  [2]uint32 // running checksum at walEnd
	walCommit uint32    // database size of the last valid commit, 0 if none
	walPages  map[uint32][]byte
	walAny    map[uint32]bool // pages with a frame up to the last commit
}

func (m *model) pages() int {
	if m.ps == 0 {
		return 0
	}
	return len(m.data) / m.ps
}

func (m *model) page(pgno int) []byte {
	return m.data[(pgno-1)*m.ps : pgno*m.ps]
}

func (m *model) checksum() ltx.Checksum { return refChecksum(m.data, m.ps) }

// computeModel rebuilds the database SQLite would see from the files: the
// database file overlaid with the WAL frames up to the last valid commit
// frame (SQLite's WAL recovery), truncated to that commit's size; without
// committed frames, the database file cut to its in-header size when valid,
// its size in whole pages otherwise.
func computeModel(f *memFiles) (*model, error) {
	m := &model{}
	db := f.get(capture.DBFile)
	nPages := 0
	if len(db) >= 100 {
		if string(db[:16]) != "SQLite format 3\x00" {
			return nil, errors.New("model: database header invalid")
		}
		ps := int(be.Uint16(db[16:]))
		if ps == 1 {
			ps = 65536
		}
		if ps < 512 || ps > 65536 || ps&(ps-1) != 0 {
			return nil, errors.New("model: page size invalid")
		}
		m.ps = ps
		h := readDBHeader(db)
		if h.counter == h.validFor && h.nPages != 0 {
			nPages = int(h.nPages)
		} else {
			nPages = len(db) / ps
		}
	} else if len(db) > 0 {
		return nil, errors.New("model: database shorter than its header")
	}

	wal := f.get(capture.WALFile)
	var overlay map[uint32][]byte
	if len(wal) >= walHdrSize {
		magic := be.Uint32(wal[0:])
		ps := int(be.Uint32(wal[8:]))
		if ps == 1 {
			ps = 65536
		}
		big := magic == 0x377f0683
		ok := (magic == 0x377f0682 || big) && be.Uint32(wal[4:]) == 3007000 &&
			ps >= 512 && ps <= 65536 && ps&(ps-1) == 0 && (m.ps == 0 || m.ps == ps)
		var s [2]uint32
		if ok {
			s = walSum(big, [2]uint32{}, wal[:24])
			ok = s[0] == be.Uint32(wal[24:]) && s[1] == be.Uint32(wal[28:])
		}
		if ok {
			m.ps = ps
			m.walValid, m.bigEndian = true, big
			m.salt1, m.salt2 = be.Uint32(wal[16:]), be.Uint32(wal[20:])
			m.walEnd, m.walCksum = walHdrSize, s
			fsz := int64(ps) + frameHdrSize
			type fr struct {
				pgno uint32
				data []byte
			}
			var frames []fr
			for off := int64(walHdrSize); off+fsz <= int64(len(wal)); off += fsz {
				h := wal[off : off+frameHdrSize]
				pgno, commit := be.Uint32(h[0:]), be.Uint32(h[4:])
				if be.Uint32(h[8:]) != m.salt1 || be.Uint32(h[12:]) != m.salt2 || pgno == 0 {
					break
				}
				s = walSum(big, s, h[:8])
				s = walSum(big, s, wal[off+frameHdrSize:off+fsz])
				if s[0] != be.Uint32(h[16:]) || s[1] != be.Uint32(h[20:]) {
					break
				}
				frames = append(frames, fr{pgno, wal[off+frameHdrSize : off+fsz]})
				if commit != 0 {
					m.walEnd, m.walCksum, m.walCommit = off+fsz, s, commit
					overlay = map[uint32][]byte{}
					for _, x := range frames {
						overlay[x.pgno] = x.data
					}
				}
			}
		}
	}
	if m.walCommit != 0 {
		nPages = int(m.walCommit)
		m.walPages = map[uint32][]byte{}
		m.walAny = map[uint32]bool{}
		for pgno, data := range overlay {
			m.walAny[pgno] = true
			if pgno <= m.walCommit {
				m.walPages[pgno] = data
			}
		}
	}
	if nPages > 1<<16 {
		return nil, fmt.Errorf("model: database of %d pages", nPages)
	}
	m.data = make([]byte, nPages*m.ps)
	for pgno := 1; pgno <= nPages; pgno++ {
		dst := m.data[(pgno-1)*m.ps : pgno*m.ps]
		if p, ok := m.walPages[uint32(pgno)]; ok {
			copy(dst, p)
		} else if off := (pgno - 1) * m.ps; off < len(db) {
			copy(dst, db[off:])
		}
	}
	return m, nil
}

// refChecksum is the LTX database checksum (lock page excluded).
func refChecksum(data []byte, ps int) ltx.Checksum {
	if len(data) == 0 {
		return ltx.ChecksumFlag
	}
	c, err := ltx.ChecksumReader(bytes.NewReader(data), ps)
	if err != nil {
		panic(err)
	}
	return c
}

// diffPages returns the pages of next that differ from prev (or are new).
func diffPages(prev, next []byte, ps int) []uint32 {
	var a []uint32
	for pgno := 1; pgno*ps <= len(next); pgno++ {
		off := (pgno - 1) * ps
		if off+ps > len(prev) || !bytes.Equal(prev[off:off+ps], next[off:off+ps]) {
			a = append(a, uint32(pgno))
		}
	}
	return a
}

// ---------------------------------------------------------------------------
// Harness.

type txRecord struct {
	TXID         ltx.TXID
	Full         bool
	PageSize     uint32
	Commit       uint32
	PreChecksum  ltx.Checksum
	PostChecksum ltx.Checksum
	Pgnos        []uint32
}

var errBoom = errors.New("boom: staging failed")

type harness struct {
	t     testing.TB
	files *memFiles
	db    *capture.DB

	sinkErr   error // returned by the sink when set
	failOnce  bool  // the next sink call returns errBoom
	sinkCalls int

	txs      []txRecord
	nextTXID ltx.TXID
	prevPost ltx.Checksum
	replica  []byte
	ps       int

	warns     []string
	instWarns int // "without a rollback journal" warnings of the current DB

	context func() string // appended to failure messages when set
	sums    capture.Sums  // the checksum store; nil: the default
	// deferWAL: WAL writes go to the file without the DB seeing them (FUSE
	// passthrough, the VFS); SyncWAL and the other barriers capture them.
	deferWAL bool
	outside  bool // Config.Outside: the watch sidecar
	shared   *memShared
	// beforeSink runs as the sink is called, before it reads the pages.
	beforeSink func()
	// readLocks counts Config.ReadLock calls; readLockErr is their result.
	readLocks   int
	readLockErr error
	clock       time.Duration // added to the DB's clock
}

func newHarness(t testing.TB, files *memFiles) *harness {
	return &harness{t: t, files: files}
}

func (h *harness) fatalf(format string, args ...any) {
	h.t.Helper()
	if h.context != nil {
		format += " (%s)"
		args = append(args, h.context())
	}
	h.t.Fatalf(format, args...)
}

func (h *harness) config(pos capture.Pos) capture.Config {
	return capture.Config{
		Name:    "test.db",
		Files:   h.files,
		Pos:     pos,
		Now:     func() time.Time { return time.UnixMilli(1700000000000).Add(h.clock) },
		Sink:    h.sink,
		Sums:    h.sums,
		Outside: h.outside,
		Shared:  h.sharedOrNil(),
		ReadLock: func() error {
			h.readLocks++
			return h.readLockErr
		},
		Warn: func(msg string) {
			h.warns = append(h.warns, msg)
			if strings.Contains(msg, "without a rollback journal") {
				h.instWarns++
			}
		},
	}
}

// open opens a DB at pos; the replica must already hold pos's state.
func (h *harness) open(pos capture.Pos) error {
	h.nextTXID, h.prevPost = pos.TXID+1, pos.Checksum
	h.instWarns = 0
	db, err := capture.Open(h.config(pos))
	if err != nil {
		return err
	}
	h.db = db
	return nil
}

func (h *harness) mustOpen(pos capture.Pos) {
	h.t.Helper()
	if err := h.open(pos); err != nil {
		h.fatalf("Open: %v", err)
	}
}

func (h *harness) last() txRecord {
	h.t.Helper()
	if len(h.txs) == 0 {
		h.fatalf("no transaction captured")
	}
	return h.txs[len(h.txs)-1]
}

// sink checks and applies one transaction.
func (h *harness) sink(tx *capture.Tx) error {
	h.t.Helper()
	h.sinkCalls++
	if h.beforeSink != nil {
		h.beforeSink()
	}
	// A stager reads the pages first: a page changed under the read is
	// its error, nothing is staged.
	if err := tx.ForEachPage(func(uint32, []byte) error { return nil }); errors.Is(err, capture.ErrChangedUnderRead) {
		return err
	}
	if h.sinkErr != nil {
		return h.sinkErr
	}
	if h.failOnce {
		h.failOnce = false
		return errBoom
	}
	if tx.TXID != h.nextTXID {
		h.fatalf("tx TXID %d, want %d", tx.TXID, h.nextTXID)
	}
	if tx.TXID == 1 && !tx.Full {
		h.fatalf("tx 1 is not a full snapshot")
	}
	if tx.TXID > 1 && tx.PreChecksum != h.prevPost {
		h.fatalf("tx %d pre-checksum %s, want previous post-checksum %s", tx.TXID, tx.PreChecksum, h.prevPost)
	}
	if tx.PostChecksum&ltx.ChecksumFlag == 0 {
		h.fatalf("tx %d post-checksum %s lacks the flag", tx.TXID, tx.PostChecksum)
	}
	ps := int(tx.PageSize)
	if !ltx.IsValidPageSize(tx.PageSize) {
		h.fatalf("tx %d page size %d", tx.TXID, tx.PageSize)
	}
	pgnos := tx.Pgnos()
	if len(pgnos) != tx.PageCount() {
		h.fatalf("tx %d: %d pgnos, PageCount %d", tx.TXID, len(pgnos), tx.PageCount())
	}
	for i, p := range pgnos {
		if p == 0 || p > tx.Commit || (i > 0 && p <= pgnos[i-1]) || p == ltx.LockPgno(tx.PageSize) {
			h.fatalf("tx %d: bad page list %v (commit %d)", tx.TXID, pgnos, tx.Commit)
		}
	}
	if tx.Full {
		var want []uint32
		for p := uint32(1); p <= tx.Commit; p++ {
			if p != ltx.LockPgno(tx.PageSize) {
				want = append(want, p)
			}
		}
		if !slices.Equal(pgnos, want) {
			h.fatalf("full tx %d carries pages %v, want 1..%d", tx.TXID, pgnos, tx.Commit)
		}
	}
	// ForEachPage must hand out the same pages as the LTX file carries.
	fromTx := map[uint32][]byte{}
	if err := tx.ForEachPage(func(pgno uint32, data []byte) error {
		fromTx[pgno] = bytes.Clone(data)
		return nil
	}); err != nil {
		h.fatalf("tx %d ForEachPage: %v", tx.TXID, err)
	}

	var buf bytes.Buffer
	if err := tx.WriteLTX(&buf); err != nil {
		h.fatalf("tx %d WriteLTX: %v", tx.TXID, err)
	}
	if err := ltx.NewDecoder(bytes.NewReader(buf.Bytes())).Verify(); err != nil {
		h.fatalf("tx %d: LTX does not verify: %v", tx.TXID, err)
	}
	dec := ltx.NewDecoder(bytes.NewReader(buf.Bytes()))
	if err := dec.DecodeHeader(); err != nil {
		h.fatalf("tx %d DecodeHeader: %v", tx.TXID, err)
	}
	hdr := dec.Header()
	wantPre := tx.PreChecksum
	if tx.TXID == 1 {
		wantPre = 0
	}
	if hdr.PageSize != tx.PageSize || hdr.Commit != tx.Commit || hdr.MinTXID != tx.TXID || hdr.MaxTXID != tx.TXID || hdr.PreApplyChecksum != wantPre {
		h.fatalf("tx %d: LTX header %+v", tx.TXID, hdr)
	}
	var decoded []uint32
	pages := map[uint32][]byte{}
	for {
		var ph ltx.PageHeader
		data := make([]byte, ps)
		err := dec.DecodePage(&ph, data)
		if err == io.EOF {
			break
		} else if err != nil {
			h.fatalf("tx %d DecodePage: %v", tx.TXID, err)
		}
		decoded = append(decoded, ph.Pgno)
		pages[ph.Pgno] = data
		if !bytes.Equal(data, fromTx[ph.Pgno]) {
			h.fatalf("tx %d page %d: LTX content differs from ForEachPage", tx.TXID, ph.Pgno)
		}
	}
	if err := dec.Close(); err != nil {
		h.fatalf("tx %d decoder Close: %v", tx.TXID, err)
	}
	if !slices.Equal(decoded, pgnos) {
		h.fatalf("tx %d: LTX pages %v, Pgnos %v", tx.TXID, decoded, pgnos)
	}
	if got := dec.Trailer().PostApplyChecksum; got != tx.PostChecksum {
		h.fatalf("tx %d: LTX post-apply checksum %s, want %s", tx.TXID, got, tx.PostChecksum)
	}

	// Apply to the replica.
	if tx.Full {
		h.replica, h.ps = nil, ps
	} else if h.ps != 0 && h.ps != ps {
		h.fatalf("tx %d: page size %d on a replica of page size %d", tx.TXID, ps, h.ps)
	}
	h.ps = ps
	size := int(tx.Commit) * ps
	if len(h.replica) < size {
		h.replica = append(h.replica, make([]byte, size-len(h.replica))...)
	}
	for pgno, data := range pages {
		copy(h.replica[(int(pgno)-1)*ps:], data)
	}
	h.replica = h.replica[:size]
	if got := refChecksum(h.replica, ps); got != tx.PostChecksum {
		h.fatalf("tx %d: replica checksum %s after applying, post-checksum says %s", tx.TXID, got, tx.PostChecksum)
	}

	h.txs = append(h.txs, txRecord{
		TXID: tx.TXID, Full: tx.Full, PageSize: tx.PageSize, Commit: tx.Commit,
		PreChecksum: tx.PreChecksum, PostChecksum: tx.PostChecksum, Pgnos: pgnos,
	})
	h.nextTXID++
	h.prevPost = tx.PostChecksum
	return nil
}

// check compares the DB, its position and the replica with the model. It is
// valid whenever no journal is live and nothing was written without one.
func (h *harness) check(where string) *model {
	h.t.Helper()
	m, err := computeModel(h.files)
	if err != nil {
		h.fatalf("%s: %v", where, err)
	}
	sum := m.checksum()
	if got := h.db.Checksum(); got != sum {
		h.fatalf("%s: db.Checksum() = %s, model %s (%d pages)", where, got, sum, m.pages())
	}
	pos := h.db.Pos()
	if pos.TXID != h.nextTXID-1 {
		h.fatalf("%s: Pos().TXID = %d, want %d", where, pos.TXID, h.nextTXID-1)
	}
	if pos.TXID != 0 {
		if pos.Checksum != sum {
			h.fatalf("%s: Pos().Checksum = %s, model %s", where, pos.Checksum, sum)
		}
		if int(pos.Commit) != m.pages() || int(pos.PageSize) != m.ps {
			h.fatalf("%s: Pos() = %+v, model has %d pages of %d bytes", where, pos, m.pages(), m.ps)
		}
	}
	if !bytes.Equal(h.replica, m.data) {
		h.fatalf("%s: replica (%d bytes) differs from the model (%d bytes) at pages %v",
			where, len(h.replica), len(m.data), diffPages(h.replica, m.data, max(m.ps, 512)))
	}
	return m
}

func (h *harness) mustModel() *model {
	h.t.Helper()
	m, err := computeModel(h.files)
	if err != nil {
		h.fatalf("%v", err)
	}
	return m
}

// ntx runs fn and returns the transactions it captured.
func (h *harness) ntx(fn func()) []txRecord {
	n := len(h.txs)
	fn()
	return h.txs[n:]
}

// Operations, each performing the change on the in-memory files in apply.

func (h *harness) writeWAL(off int64, b []byte) error {
	b = bytes.Clone(b)
	if h.deferWAL {
		h.files.put(capture.WALFile, off, b)
		return nil
	}
	return h.db.WriteWAL(off, b, func() error { h.files.put(capture.WALFile, off, b); return nil })
}

func (h *harness) writeDB(off int64, b []byte) error {
	b = bytes.Clone(b)
	return h.db.WriteDB(off, int64(len(b)), func() error { h.files.put(capture.DBFile, off, b); return nil })
}

func (h *harness) writeJournal(off int64, b []byte) error {
	b = bytes.Clone(b)
	return h.db.WriteJournal(off, b, func() error { h.files.put(capture.JournalFile, off, b); return nil })
}

func (h *harness) truncateJournal(size int64) error {
	return h.db.TruncateJournal(size, func() error { h.files.setSize(capture.JournalFile, size); return nil })
}

func (h *harness) removeJournal() error {
	return h.db.RemoveJournal(func() error { h.files.remove(capture.JournalFile); return nil })
}

func (h *harness) truncateWAL(size int64) error {
	return h.db.TruncateWAL(size, func() error { h.files.setSize(capture.WALFile, size); return nil })
}

func (h *harness) removeWAL() error {
	return h.db.RemoveWAL(func() error { h.files.remove(capture.WALFile); return nil })
}

func (h *harness) createJournal() error {
	h.files.setSize(capture.JournalFile, 0)
	return h.db.JournalOpened()
}

func (h *harness) must(err error) {
	h.t.Helper()
	if err != nil {
		h.fatalf("%v", err)
	}
}

// ---------------------------------------------------------------------------
// Test-side SQLite simulation helpers.

// sqliteWAL writes WAL frames as SQLite does: each frame's header, then its
// page data, as two writes.
type sqliteWAL struct {
	h    *harness
	w    *walWriter
	next int // next frame number
}

type framePage struct {
	pgno uint32
	data []byte
}

// writeFrame appends one frame (commit != 0 for a commit frame) and returns
// the transactions captured by its header write and by its data write.
func (s *sqliteWAL) writeFrame(pgno, commit uint32, data []byte) (hdrTxs, dataTxs []txRecord) {
	s.h.t.Helper()
	b := s.w.frame(pgno, commit, data)
	off := s.w.frameOff(s.next)
	s.next++
	hdrTxs = s.h.ntx(func() { s.h.must(s.h.writeWAL(off, b[:frameHdrSize])) })
	dataTxs = s.h.ntx(func() { s.h.must(s.h.writeWAL(off+frameHdrSize, b[frameHdrSize:])) })
	return hdrTxs, dataTxs
}

// commitTx writes frames for pages, the last one the commit frame, and
// checks that only the commit frame's data write captured a transaction.
func (s *sqliteWAL) commitTx(commit uint32, pages ...framePage) txRecord {
	s.h.t.Helper()
	prev := s.h.mustModel()
	for i, p := range pages {
		c := uint32(0)
		if i == len(pages)-1 {
			c = commit
		}
		hdr, data := s.writeFrame(p.pgno, c, p.data)
		if len(hdr) != 0 {
			s.h.fatalf("frame header write of page %d captured %d transactions", p.pgno, len(hdr))
		}
		if c == 0 && len(data) != 0 {
			s.h.fatalf("non-commit frame of page %d captured %d transactions", p.pgno, len(data))
		}
		if c != 0 && len(data) != 1 {
			s.h.fatalf("commit frame captured %d transactions, want 1", len(data))
		}
		if c == 0 {
			s.h.check("after a non-commit frame")
		}
	}
	m := s.h.check("after commit")
	tx := s.h.last()
	if !tx.Full {
		if want := diffPages(prev.data, m.data, m.ps); !slices.Equal(tx.Pgnos, want) {
			s.h.fatalf("tx %d carries pages %v, want the changed pages %v", tx.TXID, tx.Pgnos, want)
		}
	}
	if tx.Commit != commit {
		s.h.fatalf("tx %d commit %d, want %d", tx.TXID, tx.Commit, commit)
	}
	return tx
}

// checkpoint copies the committed WAL pages into the database file through
// WriteDB and truncates the database file to the committed size; it must
// capture nothing.
func checkpoint(h *harness) {
	h.t.Helper()
	m := h.mustModel()
	if m.walCommit == 0 {
		return
	}
	pgnos := make([]uint32, 0, len(m.walPages))
	for pgno := range m.walPages {
		pgnos = append(pgnos, pgno)
	}
	slices.Sort(pgnos)
	for _, pgno := range pgnos {
		if got := h.ntx(func() { h.must(h.writeDB(int64(pgno-1)*int64(m.ps), m.walPages[pgno])) }); len(got) != 0 {
			h.fatalf("checkpoint write of page %d captured %d transactions", pgno, len(got))
		}
		h.check("during checkpoint")
	}
	h.files.setSize(capture.DBFile, int64(m.walCommit)*int64(m.ps))
	h.check("after checkpoint")
}

// journalTx runs a rollback-journal transaction up to the point where the
// journal is live and the database pages are written; end finishes it.
func journalBegin(h *harness, origPages int) {
	h.t.Helper()
	if !h.files.has(capture.JournalFile) {
		h.must(h.createJournal())
	} else {
		h.must(h.db.JournalOpened())
	}
	h.must(h.writeJournal(0, journalHeader(h.ps, uint32(origPages))))
	h.must(h.writeJournal(512, fillPage(512, 0, 77))) // page records
	if h.files.journalLive() {
		h.fatalf("journal live before its magic was written")
	}
	h.must(h.writeJournal(0, journalMagicHeader(1)))
	if !h.files.journalLive() {
		h.fatalf("journal not live after its magic was written")
	}
}

const (
	modeDelete = iota
	modeTruncate
	modePersist
)

var modeNames = []string{"DELETE", "TRUNCATE", "PERSIST"}

func journalEnd(h *harness, mode int) {
	h.t.Helper()
	switch mode {
	case modeDelete:
		h.must(h.removeJournal())
	case modeTruncate:
		h.must(h.truncateJournal(0))
	case modePersist:
		h.must(h.writeJournal(0, make([]byte, 28)))
	}
}

func (f *memFiles) has(k capture.Kind) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.exists[k]
}

// setupWAL creates an n-page WAL-mode database, opens it (capturing the
// snapshot) and writes a WAL header.
func setupWAL(t *testing.T, ps int, bigEndian bool, n int) (*harness, *sqliteWAL) {
	t.Helper()
	files := &memFiles{}
	files.put(capture.DBFile, 0, newDB(ps, true, n, 1))
	h := newHarness(t, files)
	h.mustOpen(capture.Pos{})
	if len(h.txs) != 1 || !h.txs[0].Full || h.txs[0].TXID != 1 || h.txs[0].Commit != uint32(n) {
		t.Fatalf("Open captured %+v, want one full snapshot of %d pages", h.txs, n)
	}
	h.check("after open")
	w := &walWriter{ps: ps, bigEndian: bigEndian, salt1: 0x11111111, salt2: 0x2222abcd}
	s := &sqliteWAL{h: h, w: w, next: 1}
	if got := h.ntx(func() { h.must(h.writeWAL(0, w.header())) }); len(got) != 0 {
		t.Fatalf("WAL header captured %d transactions", len(got))
	}
	h.check("after WAL header")
	return h, s
}

// nextPage1 returns page 1 of the model with its change counter advanced and
// its size set to nPages.
func nextPage1(m *model, nPages uint32, seed uint64) []byte {
	hd := readDBHeader(m.page(1))
	p := page1(m.ps, hd.wal, hd.counter+1, nPages, seed)
	return p
}

// ---------------------------------------------------------------------------
// Unit tests.

func TestWALCommits(t *testing.T) {
	for _, tc := range []struct {
		name      string
		ps        int
		bigEndian bool
	}{
		{"ps1024-le", 1024, false},
		{"ps512-be", 512, true},
		{"ps4096-le", 4096, false},
		{"ps65536-be", 65536, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, s := setupWAL(t, tc.ps, tc.bigEndian, 2)
			ps := tc.ps
			m := h.mustModel()

			// Grow to 3 pages: page 2 changed, page 3 new, page 1 commits.
			tx := s.commitTx(3,
				framePage{2, fillPage(ps, 2, 10)},
				framePage{3, fillPage(ps, 3, 10)},
				framePage{1, nextPage1(m, 3, 10)})
			if tx.TXID != 2 || tx.Full {
				t.Fatalf("tx %+v", tx)
			}
			// A single page, not page 1, as the commit frame.
			s.commitTx(3, framePage{3, fillPage(ps, 3, 11)})
			// The same page twice in one transaction: the last frame wins.
			s.commitTx(3, framePage{2, fillPage(ps, 2, 12)}, framePage{2, fillPage(ps, 2, 13)})
			// Shrink to 2 pages.
			m = h.mustModel()
			tx = s.commitTx(2, framePage{1, nextPage1(m, 2, 14)})
			if tx.Commit != 2 {
				t.Fatalf("shrink: tx %+v", tx)
			}
			// Grow to 5 pages.
			m = h.mustModel()
			s.commitTx(5,
				framePage{3, fillPage(ps, 3, 15)},
				framePage{4, fillPage(ps, 4, 15)},
				framePage{5, fillPage(ps, 5, 15)},
				framePage{1, nextPage1(m, 5, 15)})
			// A frame past the commit size does not count.
			s.commitTx(5, framePage{9, fillPage(ps, 9, 16)}, framePage{4, fillPage(ps, 4, 16)})
			// A commit that rewrites a page with its current content is
			// no transaction at all.
			m = h.mustModel()
			got := h.ntx(func() {
				_, d := s.writeFrame(3, 5, bytes.Clone(m.page(3)))
				if len(d) != 0 {
					t.Fatalf("unchanged commit captured %+v", d)
				}
			})
			if len(got) != 0 {
				t.Fatalf("unchanged commit captured %+v", got)
			}
			h.check("after unchanged commit")
			// And the sequence continues.
			tx = s.commitTx(5, framePage{5, fillPage(ps, 5, 17)})
			if tx.TXID != 8 {
				t.Fatalf("tx %+v, want TXID 8", tx)
			}
			for i, r := range h.txs {
				if r.TXID != ltx.TXID(i+1) {
					t.Fatalf("tx %d has TXID %d", i, r.TXID)
				}
			}
		})
	}
}

// TestWALEmptyDatabase: the first commit of a database whose file is empty
// is its snapshot.
func TestWALEmptyDatabase(t *testing.T) {
	const ps = 1024
	files := &memFiles{}
	files.setSize(capture.DBFile, 0)
	// The WAL header exists at Open (an empty database file without one is
	// TestOpenEmptyDatabase).
	w := &walWriter{ps: ps, salt1: 7, salt2: 8}
	files.put(capture.WALFile, 0, w.header())
	h := newHarness(t, files)
	h.mustOpen(capture.Pos{})
	if len(h.txs) != 0 {
		t.Fatalf("empty database captured %+v", h.txs)
	}
	h.check("open")
	s := &sqliteWAL{h: h, w: w, next: 1}
	// The same header written again changes nothing.
	h.must(h.writeWAL(0, w.header()))
	h.check("header")
	tx := s.commitTx(2, framePage{2, fillPage(ps, 2, 1)}, framePage{1, page1(ps, true, 1, 2, 1)})
	if tx.TXID != 1 || !tx.Full || !slices.Equal(tx.Pgnos, []uint32{1, 2}) {
		t.Fatalf("first commit: %+v", tx)
	}
	m := h.mustModel()
	s.commitTx(2, framePage{2, fillPage(ps, 2, 2)})
	s.commitTx(3, framePage{3, fillPage(ps, 3, 2)}, framePage{1, nextPage1(m, 3, 2)})
	// Checkpoints into the empty file capture nothing.
	checkpoint(h)
}

func TestWALUncommittedAndInvalidFrames(t *testing.T) {
	const ps = 1024
	h, s := setupWAL(t, ps, false, 3)
	s.commitTx(3, framePage{2, fillPage(ps, 2, 1001)})
	base := h.check("base")
	fsz := s.w.fsz()

	expectNone := func(what string, fn func()) {
		t.Helper()
		if got := h.ntx(fn); len(got) != 0 {
			t.Fatalf("%s captured %+v", what, got)
		}
		h.check(what)
	}

	// Frames without a commit frame.
	for i, pgno := range []uint32{1, 2, 3} {
		data := fillPage(ps, pgno, 100)
		if pgno == 1 {
			data = nextPage1(base, 3, 100)
		}
		expectNone(fmt.Sprintf("uncommitted frame %d", i), func() {
			if hdr, d := s.writeFrame(pgno, 0, data); len(hdr)+len(d) != 0 {
				t.Fatalf("uncommitted frame captured")
			}
		})
	}
	slot := s.next
	off := s.w.frameOff(slot)
	good := s.w.cksum
	data := fillPage(ps, 3, 101)

	// A commit frame with a bad checksum.
	b, _ := s.w.encodeFrame(good, 3, 3, data)
	b[17] ^= 0x40
	expectNone("bad checksum header", func() { h.must(h.writeWAL(off, b[:frameHdrSize])) })
	expectNone("bad checksum data", func() { h.must(h.writeWAL(off+frameHdrSize, b[frameHdrSize:])) })

	// A commit frame with a valid checksum chain but the wrong salt.
	wrong := *s.w
	wrong.salt1++
	b, _ = wrong.encodeFrame(good, 3, 3, data)
	expectNone("wrong salt", func() { h.must(h.writeWAL(off, b)) })
	wrong = *s.w
	wrong.salt2 ^= 0x100
	b, _ = wrong.encodeFrame(good, 3, 3, data)
	expectNone("wrong salt-2", func() { h.must(h.writeWAL(off, b[:frameHdrSize])) })
	expectNone("wrong salt-2 data", func() { h.must(h.writeWAL(off+frameHdrSize, b[frameHdrSize:])) })

	// Page number zero.
	b, _ = s.w.encodeFrame(good, 0, 3, data)
	expectNone("page 0", func() { h.must(h.writeWAL(off, b)) })

	// A right header (the slot still holds other page data), then page
	// data other than the checksummed one.
	b, _ = s.w.encodeFrame(good, 3, 3, fillPage(ps, 3, 104))
	expectNone("header", func() { h.must(h.writeWAL(off, b[:frameHdrSize])) })
	expectNone("other data", func() { h.must(h.writeWAL(off+frameHdrSize, fillPage(ps, 3, 102))) })
	b, _ = s.w.encodeFrame(good, 3, 3, data)

	// A commit frame whose chain continues from a corrupted frame: an
	// earlier frame of the transaction (slot-1) gets different data.
	prevOff := s.w.frameOff(slot - 1)
	saved := h.files.get(capture.WALFile)[prevOff : prevOff+fsz]
	expectNone("corrupt earlier frame", func() { h.must(h.writeWAL(prevOff+frameHdrSize, fillPage(ps, 3, 103))) })
	expectNone("commit after corrupt frame", func() { h.must(h.writeWAL(off, b)) })
	// (Restoring the earlier frame now would make SQLite's recovery accept
	// the commit; SQLite never does that, it rewrites the headers through
	// the commit frame, see TestWALInPlaceRewrite.)
	h.files.put(capture.WALFile, off, make([]byte, fsz)) // back to nothing
	expectNone("restore", func() { h.must(h.writeWAL(prevOff, saved)) })

	// Garbage in the uncommitted part of the WAL, at and across frame
	// boundaries.
	end := base.walEnd
	for i, g := range []struct{ off, n int64 }{
		{end, 7}, {end + 3, 24}, {end + fsz - 5, 40}, {end, fsz}, {end + 2*fsz + 24, 100},
		{end + frameHdrSize, int64(ps)}, {end + 5*fsz, 3 * fsz},
	} {
		junk := fillPage(int(g.n+7)&^7, uint32(i), 999)[:g.n]
		expectNone(fmt.Sprintf("garbage %d", i), func() { h.must(h.writeWAL(g.off, junk)) })
	}
	// Garbage shaped like a commit frame header with the right salts.
	junk := make([]byte, frameHdrSize)
	be.PutUint32(junk[0:], 2)
	be.PutUint32(junk[4:], 3)
	be.PutUint32(junk[8:], s.w.salt1)
	be.PutUint32(junk[12:], s.w.salt2)
	be.PutUint32(junk[16:], 0xdeadbeef)
	expectNone("fake commit header", func() { h.must(h.writeWAL(end, junk)) })
	expectNone("fake commit data", func() { h.must(h.writeWAL(end+frameHdrSize, fillPage(ps, 2, 5))) })

	// A valid transaction written over all of it is captured.
	s.next = int((end-walHdrSize)/fsz) + 1
	s.w.cksum = base.walCksum
	m := h.mustModel()
	tx := s.commitTx(4,
		framePage{4, fillPage(ps, 4, 200)},
		framePage{2, fillPage(ps, 2, 200)},
		framePage{1, nextPage1(m, 4, 200)})
	if tx.TXID != 3 {
		t.Fatalf("tx %+v, want TXID 3", tx)
	}
}

// TestWALGarbageHeader: garbage over the WAL header makes the WAL invalid; with
// the WAL checkpointed that changes nothing, and a new WAL is captured.
func TestWALGarbageHeader(t *testing.T) {
	const ps = 512
	h, s := setupWAL(t, ps, false, 2)
	s.commitTx(2, framePage{2, fillPage(ps, 2, 1001)})
	checkpoint(h)
	if got := h.ntx(func() { h.must(h.writeWAL(0, fillPage(64, 0, 3))) }); len(got) != 0 {
		t.Fatalf("garbage header captured %+v", got)
	}
	h.check("garbage header")
	if got := h.ntx(func() { h.must(h.writeWAL(5, fillPage(ps+40, 0, 4))) }); len(got) != 0 {
		t.Fatalf("garbage captured %+v", got)
	}
	h.check("garbage")
	s.w.salt1++
	s.w.salt2 = 0x5a5a5a5a
	s.w.ckptSeq++
	h.must(h.writeWAL(0, s.w.header()))
	h.check("new header")
	s.next = 1
	tx := s.commitTx(2, framePage{2, fillPage(ps, 2, 5)})
	if tx.TXID != 3 {
		t.Fatalf("tx %+v", tx)
	}
}

func TestWALRestart(t *testing.T) {
	for _, how := range []string{"header", "truncate", "remove", "truncate-tail"} {
		t.Run(how, func(t *testing.T) {
			const ps = 1024
			h, s := setupWAL(t, ps, false, 2)
			for i := 0; i < 3; i++ {
				m := h.mustModel()
				n := uint32(m.pages() + 1)
				s.commitTx(n, framePage{n, fillPage(ps, n, uint64(i))}, framePage{2, fillPage(ps, 2, uint64(i))},
					framePage{1, nextPage1(m, n, uint64(i))})
			}
			// Shrink in the last transaction so the checkpoint truncates.
			m := h.mustModel()
			s.commitTx(4, framePage{1, nextPage1(m, 4, 9)})
			// Some uncommitted frames of an abandoned transaction.
			s.writeFrame(3, 0, fillPage(ps, 3, 50))
			h.check("abandoned frame")
			checkpoint(h)
			if got := len(h.files.get(capture.DBFile)); got != 4*ps {
				t.Fatalf("database file of %d bytes after checkpoint", got)
			}
			switch how {
			case "truncate":
				h.must(h.truncateWAL(0))
				h.check("truncate")
			case "remove":
				h.must(h.removeWAL())
				h.check("remove")
			case "truncate-tail":
				// journal_size_limit after a restart: truncation past the
				// committed frames changes nothing.
				m := h.mustModel()
				h.must(h.truncateWAL(m.walEnd + 10))
				h.check("truncate tail")
			}
			before := len(h.txs)
			s.w.ckptSeq++
			s.w.salt1++
			s.w.salt2 = 0x77777777
			h.must(h.writeWAL(0, s.w.header()))
			if len(h.txs) != before {
				t.Fatalf("restart header captured a transaction")
			}
			h.check("restart header")
			s.next = 1
			tx := s.commitTx(4, framePage{3, fillPage(ps, 3, 60)})
			if tx.TXID != ltx.TXID(before+1) || !slices.Equal(tx.Pgnos, []uint32{3}) {
				t.Fatalf("tx %+v", tx)
			}
			m = h.mustModel()
			s.commitTx(5, framePage{5, fillPage(ps, 5, 61)}, framePage{1, nextPage1(m, 5, 61)})
			// A second restart in the same run.
			checkpoint(h)
			s.w.ckptSeq++
			s.w.salt1++
			h.must(h.writeWAL(0, s.w.header()))
			h.check("second restart")
			s.next = 1
			s.commitTx(5, framePage{2, fillPage(ps, 2, 62)})
		})
	}
}

// TestWALInPlaceRewrite reproduces SQLite's sqlite3WalFrames with iReCksum: a
// transaction whose frames were spilled rewrites one of them in place, writes
// the commit frame, then rewrites the frame headers (checksums) from the
// rewritten frame through the commit frame.
func TestWALInPlaceRewrite(t *testing.T) {
	const ps = 1024
	h, s := setupWAL(t, ps, false, 3)
	s.commitTx(3, framePage{2, fillPage(ps, 2, 1001)})
	m0 := h.check("base")

	expectNone := func(what string, fn func()) {
		t.Helper()
		if got := h.ntx(fn); len(got) != 0 {
			t.Fatalf("%s captured %+v", what, got)
		}
		h.check(what)
	}
	first := s.next
	// Spill: frames of pages 2 and 3, no commit.
	expectNone("spill", func() {
		s.writeFrame(2, 0, fillPage(ps, 2, 10))
		s.writeFrame(3, 0, fillPage(ps, 3, 10))
	})
	// Commit call: page 2 again, rewritten in place.
	expectNone("in-place data", func() {
		h.must(h.writeWAL(s.w.frameOff(first)+frameHdrSize, fillPage(ps, 2, 11)))
	})
	// New frames, the running checksum continuing from what was written
	// before the rewrite.
	expectNone("new frames", func() {
		s.writeFrame(4, 0, fillPage(ps, 4, 11))
		s.writeFrame(1, 4, nextPage1(m0, 4, 11))
	})
	last := s.next - 1
	// walRewriteChecksums: from the rewritten frame through the commit.
	wal := h.files.get(capture.WALFile)
	prevOff := s.w.frameOff(first - 1)
	seed := [2]uint32{be.Uint32(wal[prevOff+16:]), be.Uint32(wal[prevOff+20:])}
	for i := first; i <= last; i++ {
		off := s.w.frameOff(i)
		wal := h.files.get(capture.WALFile)
		hdr := wal[off : off+frameHdrSize]
		b, next := s.w.encodeFrame(seed, be.Uint32(hdr), be.Uint32(hdr[4:]), wal[off+frameHdrSize:off+s.w.fsz()])
		seed = next
		got := h.ntx(func() { h.must(h.writeWAL(off, b[:frameHdrSize])) })
		if i < last && len(got) != 0 {
			t.Fatalf("header rewrite of frame %d captured %+v", i, got)
		}
		if i == last && len(got) != 1 {
			t.Fatalf("header rewrite of the commit frame captured %d transactions, want 1", len(got))
		}
	}
	m := h.check("after rewrite")
	tx := h.last()
	if !slices.Equal(tx.Pgnos, []uint32{1, 2, 3, 4}) || tx.Commit != 4 {
		t.Fatalf("tx %+v", tx)
	}
	if !bytes.Equal(m.page(2), fillPage(ps, 2, 11)) {
		t.Fatalf("page 2 is not the rewritten content")
	}
	// The WAL continues from there.
	s.w.cksum = seed
	s.commitTx(4, framePage{4, fillPage(ps, 4, 12)})
}

// TestWALSplitWrites: writes of a frame cut at arbitrary points (SQLite splits
// a write at its sync point), and a whole transaction in one write.
func TestWALSplitWrites(t *testing.T) {
	const ps = 512
	h, s := setupWAL(t, ps, false, 2)
	m := h.mustModel()
	frames := [][]byte{
		s.w.frame(2, 0, fillPage(ps, 2, 1001)),
		s.w.frame(3, 0, fillPage(ps, 3, 1)),
		s.w.frame(1, 3, nextPage1(m, 3, 1)),
	}
	var all []byte
	for _, f := range frames {
		all = append(all, f...)
	}
	off := s.w.frameOff(1)
	cuts := []int64{10, 24, 30, 536, 600, 1072, 1080, 1096, 1500, int64(len(all)) - 1}
	prev := int64(0)
	for _, c := range cuts {
		if got := h.ntx(func() { h.must(h.writeWAL(off+prev, all[prev:c])) }); len(got) != 0 {
			t.Fatalf("partial write [%d,%d) captured %+v", prev, c, got)
		}
		h.check("partial")
		prev = c
	}
	if got := h.ntx(func() { h.must(h.writeWAL(off+prev, all[prev:])) }); len(got) != 1 {
		t.Fatalf("last byte of the commit frame captured %d transactions", len(got))
	}
	h.check("complete")
	// Two transactions in a single write: both captured, in order.
	m = h.mustModel()
	all = nil
	all = append(all, s.w.frame(2, 3, fillPage(ps, 2, 2))...)
	all = append(all, s.w.frame(4, 0, fillPage(ps, 4, 2))...)
	all = append(all, s.w.frame(1, 4, nextPage1(m, 4, 2))...)
	if got := h.ntx(func() { h.must(h.writeWAL(s.w.frameOff(4), all)) }); len(got) != 2 || got[0].Commit != 3 || got[1].Commit != 4 {
		t.Fatalf("two commits in one write captured %+v", got)
	}
	h.check("two commits")
	// A header and its page data in one write, plus the next WAL header
	// region untouched.
	m = h.mustModel()
	s.next = 7
	b := s.w.frame(1, 4, nextPage1(m, 4, 3))
	if got := h.ntx(func() { h.must(h.writeWAL(s.w.frameOff(7), b)) }); len(got) != 1 {
		t.Fatalf("whole-frame write captured %d", len(got))
	}
	h.check("whole frame")
}

// TestWALPaddingFrames: with synchronous=FULL SQLite pads the WAL to a
// sector boundary by repeating the commit frame; the copies change nothing.
func TestWALPaddingFrames(t *testing.T) {
	const ps = 512
	h, s := setupWAL(t, ps, false, 2)
	data := fillPage(ps, 2, 5)
	s.commitTx(2, framePage{2, data})
	for i := 0; i < 3; i++ {
		if hdr, d := s.writeFrame(2, 2, data); len(hdr)+len(d) != 0 {
			t.Fatalf("padding frame %d captured a transaction", i)
		}
		h.check("padding")
	}
	s.commitTx(2, framePage{2, fillPage(ps, 2, 6)})
}

func TestJournalModes(t *testing.T) {
	for mode, name := range modeNames {
		t.Run(name, func(t *testing.T) {
			const ps = 1024
			files := &memFiles{}
			files.put(capture.DBFile, 0, newDB(ps, false, 3, 1))
			h := newHarness(t, files)
			h.mustOpen(capture.Pos{})
			if len(h.txs) != 1 || !h.txs[0].Full {
				t.Fatalf("open: %+v", h.txs)
			}
			h.check("open")

			// Commit: pages 1 and 2 change.
			m := h.mustModel()
			journalBegin(h, 3)
			h.check("journal live, database untouched")
			n := len(h.txs)
			h.must(h.writeDB(ps, fillPage(ps, 2, 2)))
			h.must(h.writeDB(0, nextPage1(m, 3, 2)))
			if len(h.txs) != n {
				t.Fatalf("db writes under a live journal captured a transaction")
			}
			journalEnd(h, mode)
			if len(h.txs) != n+1 {
				t.Fatalf("end of journal captured %d transactions, want 1", len(h.txs)-n)
			}
			if tx := h.last(); tx.TXID != 2 || !slices.Equal(tx.Pgnos, []uint32{1, 2}) || tx.Commit != 3 {
				t.Fatalf("tx %+v", tx)
			}
			h.check("commit")
			if len(h.warns) != 0 {
				t.Fatalf("warnings: %q", h.warns)
			}

			// Grow: pages 4 and 5 written in one write.
			m = h.mustModel()
			journalBegin(h, 3)
			h.must(h.writeDB(3*ps, append(fillPage(ps, 4, 3), fillPage(ps, 5, 3)...)))
			h.must(h.writeDB(0, nextPage1(m, 5, 3)))
			journalEnd(h, mode)
			if tx := h.last(); tx.TXID != 3 || !slices.Equal(tx.Pgnos, []uint32{1, 4, 5}) || tx.Commit != 5 {
				t.Fatalf("grow tx %+v", tx)
			}
			h.check("grow")

			// ROLLBACK: pages written, the database grown, then the
			// originals written back and the file truncated.
			orig := h.files.get(capture.DBFile)
			m = h.mustModel()
			n = len(h.txs)
			journalBegin(h, 5)
			h.must(h.writeDB(ps, fillPage(ps, 2, 4)))
			h.must(h.writeDB(4*ps, fillPage(ps, 5, 4)))
			h.must(h.writeDB(5*ps, fillPage(ps, 6, 4)))
			h.must(h.writeDB(0, nextPage1(m, 6, 4)))
			for pgno := 1; pgno <= 5; pgno++ {
				h.must(h.writeDB(int64(pgno-1)*ps, orig[(pgno-1)*ps:pgno*ps]))
			}
			h.files.setSize(capture.DBFile, int64(len(orig)))
			journalEnd(h, mode)
			if len(h.txs) != n {
				t.Fatalf("rollback captured %+v", h.txs[n:])
			}
			h.check("rollback")

			// A transaction that writes a page with its current content
			// is nothing either.
			journalBegin(h, 5)
			h.must(h.writeDB(2*ps, orig[2*ps:3*ps]))
			journalEnd(h, mode)
			if len(h.txs) != n {
				t.Fatalf("no-op transaction captured %+v", h.txs[n:])
			}

			// Shrink to 2 pages: the file is truncated before the journal
			// ends, as SQLite's commit phase one does.
			m = h.mustModel()
			journalBegin(h, 5)
			h.must(h.writeDB(0, nextPage1(m, 2, 5)))
			h.files.setSize(capture.DBFile, 2*ps)
			journalEnd(h, mode)
			tx := h.last()
			if tx.TXID != 4 || tx.Commit != 2 || !slices.Equal(tx.Pgnos, []uint32{1}) {
				t.Fatalf("shrink tx %+v", tx)
			}
			if want := h.check("shrink").checksum(); tx.PostChecksum != want {
				t.Fatalf("shrink post-checksum %s, want %s", tx.PostChecksum, want)
			}

			// Shrink in the header only, the file left longer: the
			// in-header size is what counts.
			m = h.mustModel()
			journalBegin(h, 2)
			h.must(h.writeDB(0, nextPage1(m, 1, 6)))
			journalEnd(h, mode)
			if tx := h.last(); tx.Commit != 1 {
				t.Fatalf("header shrink tx %+v", tx)
			}
			h.check("header shrink")
			// Grow back into the stale page without writing it: the page
			// comes from the file.
			m = h.mustModel()
			journalBegin(h, 1)
			h.must(h.writeDB(0, nextPage1(m, 2, 7)))
			journalEnd(h, mode)
			if tx := h.last(); tx.Commit != 2 || !slices.Equal(tx.Pgnos, []uint32{1, 2}) {
				t.Fatalf("regrow tx %+v", tx)
			}
			h.check("regrow")

			// A page 1 whose size SQLite would not trust (version-valid-for
			// differs from the change counter): the file size counts.
			m = h.mustModel()
			p := nextPage1(m, 40, 8)
			be.PutUint32(p[92:], 1)
			journalBegin(h, 2)
			h.must(h.writeDB(0, p))
			h.must(h.writeDB(2*ps, fillPage(ps, 3, 8)))
			journalEnd(h, mode)
			if tx := h.last(); tx.Commit != 3 {
				t.Fatalf("untrusted header tx %+v", tx)
			}
			h.check("untrusted header")
		})
	}
}

// TestJournalEmptyDatabase: a database created under a rollback journal. As
// in the front ends, the DB is opened by the first write to the empty
// database file, the journal being live by then.
func TestJournalEmptyDatabase(t *testing.T) {
	const ps = 4096
	files := &memFiles{}
	files.setSize(capture.DBFile, 0)
	files.put(capture.JournalFile, 0, journalHeader(ps, 0))
	files.put(capture.JournalFile, 0, journalMagicHeader(1))
	h := newHarness(t, files)
	h.ps = ps
	h.mustOpen(capture.Pos{})
	h.must(h.writeDB(0, newDB(ps, false, 2, 1)))
	if len(h.txs) != 0 {
		t.Fatalf("captured %+v under a live journal", h.txs)
	}
	h.must(h.removeJournal())
	if len(h.txs) != 1 || !h.txs[0].Full || h.txs[0].Commit != 2 {
		t.Fatalf("txs %+v", h.txs)
	}
	h.check("created")
	m := h.mustModel()
	journalBegin(h, 2)
	h.must(h.writeDB(ps, fillPage(ps, 2, 2)))
	h.must(h.writeDB(0, nextPage1(m, 2, 2)))
	h.must(h.removeJournal())
	if tx := h.last(); tx.TXID != 2 || !slices.Equal(tx.Pgnos, []uint32{1, 2}) {
		t.Fatalf("tx %+v", tx)
	}
	h.check("second")
}

func TestOpen(t *testing.T) {
	const ps = 1024
	t.Run("stale-pos", func(t *testing.T) {
		files := &memFiles{}
		files.put(capture.DBFile, 0, newDB(ps, false, 3, 1))
		h := newHarness(t, files)
		pos := capture.Pos{TXID: 7, Checksum: ltx.ChecksumFlag | 12345, PageSize: ps, Commit: 3}
		h.mustOpen(pos)
		if len(h.txs) != 1 {
			t.Fatalf("Open captured %d transactions, want 1", len(h.txs))
		}
		tx := h.txs[0]
		if tx.TXID != 8 || !tx.Full || tx.PreChecksum != pos.Checksum || tx.Commit != 3 {
			t.Fatalf("resync tx %+v", tx)
		}
		if len(h.warns) != 1 || !strings.Contains(h.warns[0], "resync") {
			t.Fatalf("warnings %q", h.warns)
		}
		h.check("resync")
	})
	t.Run("matching-pos", func(t *testing.T) {
		files := &memFiles{}
		files.put(capture.DBFile, 0, newDB(ps, false, 3, 1))
		h := newHarness(t, files)
		m := h.mustModel()
		h.replica, h.ps = bytes.Clone(m.data), ps
		h.mustOpen(capture.Pos{TXID: 7, Checksum: m.checksum(), PageSize: ps, Commit: 3})
		if len(h.txs) != 0 || len(h.warns) != 0 {
			t.Fatalf("Open captured %+v, warned %q", h.txs, h.warns)
		}
		h.check("open")
		journalBegin(h, 3)
		h.must(h.writeDB(2*ps, fillPage(ps, 3, 2)))
		h.must(h.removeJournal())
		if tx := h.last(); tx.TXID != 8 || tx.PreChecksum != m.checksum() || tx.Full {
			t.Fatalf("tx %+v", tx)
		}
		h.check("tx")
	})
	t.Run("matching-checksum-other-commit", func(t *testing.T) {
		files := &memFiles{}
		files.put(capture.DBFile, 0, newDB(ps, false, 3, 1))
		h := newHarness(t, files)
		m := h.mustModel()
		h.mustOpen(capture.Pos{TXID: 7, Checksum: m.checksum(), PageSize: ps, Commit: 4})
		if len(h.txs) != 1 || !h.txs[0].Full || h.txs[0].TXID != 8 {
			t.Fatalf("Open captured %+v", h.txs)
		}
		h.check("open")
	})
	t.Run("wal", func(t *testing.T) {
		// A database with committed frames and an uncommitted tail.
		files := &memFiles{}
		files.put(capture.DBFile, 0, newDB(ps, true, 2, 1))
		w := &walWriter{ps: ps, salt1: 3, salt2: 4}
		wal := w.header()
		m0, _ := computeModel(files)
		wal = append(wal, w.frame(3, 0, fillPage(ps, 3, 2))...)
		wal = append(wal, w.frame(1, 3, nextPage1(m0, 3, 2))...)
		wal = append(wal, w.frame(2, 3, fillPage(ps, 2, 3))...)
		wal = append(wal, w.frame(3, 0, fillPage(ps, 3, 4))...)
		files.put(capture.WALFile, 0, wal)
		m, _ := computeModel(files)
		if m.pages() != 3 || !bytes.Equal(m.page(2), fillPage(ps, 2, 3)) || !bytes.Equal(m.page(3), fillPage(ps, 3, 2)) {
			t.Fatalf("model does not overlay the WAL")
		}

		// Never captured: a snapshot of the overlaid state.
		h := newHarness(t, files)
		h.mustOpen(capture.Pos{})
		if len(h.txs) != 1 || !h.txs[0].Full || h.txs[0].Commit != 3 {
			t.Fatalf("Open captured %+v", h.txs)
		}
		h.check("snapshot")

		// Matching position: nothing; the WAL continues.
		h2 := newHarness(t, files)
		h2.replica, h2.ps = bytes.Clone(m.data), ps
		h2.mustOpen(h.db.Pos())
		if len(h2.txs) != 0 {
			t.Fatalf("reopen captured %+v", h2.txs)
		}
		h2.check("reopen")
		s := &sqliteWAL{h: h2, w: w, next: 4}
		w.cksum = m.walCksum
		tx := s.commitTx(3, framePage{3, fillPage(ps, 3, 5)})
		if tx.TXID != 2 {
			t.Fatalf("tx %+v", tx)
		}
	})
	t.Run("hot-journal", func(t *testing.T) {
		for _, match := range []bool{true, false} {
			for mode, name := range modeNames {
				t.Run(fmt.Sprintf("%s-match=%v", name, match), func(t *testing.T) {
					files := &memFiles{}
					files.put(capture.DBFile, 0, newDB(ps, false, 3, 1))
					m, _ := computeModel(files)
					orig := bytes.Clone(m.data)
					// The crashed transaction: live journal, pages written,
					// the database grown.
					files.put(capture.JournalFile, 0, journalHeader(ps, 3))
					files.put(capture.JournalFile, 0, journalMagicHeader(2))
					files.put(capture.DBFile, ps, fillPage(ps, 2, 9))
					files.put(capture.DBFile, 0, nextPage1(m, 4, 9))
					files.put(capture.DBFile, 3*ps, fillPage(ps, 4, 9))

					h := newHarness(t, files)
					pos := capture.Pos{TXID: 4, Checksum: m.checksum(), PageSize: ps, Commit: 3}
					if !match {
						pos.Checksum ^= 0x10
					}
					h.replica, h.ps = bytes.Clone(orig), ps
					h.mustOpen(pos)
					if len(h.txs) != 0 {
						t.Fatalf("Open with a hot journal captured %+v", h.txs)
					}
					// SQLite rolls the journal back.
					h.must(h.db.JournalOpened())
					h.must(h.writeDB(0, orig[:ps]))
					h.must(h.writeDB(ps, orig[ps:2*ps]))
					h.files.setSize(capture.DBFile, 3*ps)
					if len(h.txs) != 0 {
						t.Fatalf("rollback writes captured %+v", h.txs)
					}
					journalEnd(h, mode)
					if match {
						if len(h.txs) != 0 {
							t.Fatalf("reconciliation captured %+v", h.txs)
						}
					} else {
						if len(h.txs) != 1 || !h.txs[0].Full || h.txs[0].TXID != 5 || h.txs[0].PreChecksum != pos.Checksum {
							t.Fatalf("reconciliation captured %+v, want a full TXID 5", h.txs)
						}
					}
					h.check("reconciled")
					// And the database continues.
					m = h.mustModel()
					journalBegin(h, 3)
					h.must(h.writeDB(0, nextPage1(m, 3, 10)))
					journalEnd(h, mode)
					h.check("next")
					if tx := h.last(); tx.Full || !slices.Equal(tx.Pgnos, []uint32{1}) {
						t.Fatalf("tx %+v", tx)
					}
				})
			}
		}
	})
	t.Run("not-a-database", func(t *testing.T) {
		for _, b := range [][]byte{fillPage(4096, 1, 1), []byte("SQLite format 3"), fillPage(512, 1, 2)[:99]} {
			files := &memFiles{}
			files.put(capture.DBFile, 0, b)
			if _, err := capture.Open(capture.Config{Name: "x", Files: files, Sink: func(*capture.Tx) error { return nil }}); !errors.Is(err, capture.ErrNotDatabase) {
				t.Fatalf("Open(%d bytes of garbage) = %v, want ErrNotDatabase", len(b), err)
			}
		}
		if !capture.IsDatabaseHeader(newDB(512, false, 1, 1)) || capture.IsDatabaseHeader([]byte("SQLite format 2\x00")) {
			t.Fatal("IsDatabaseHeader")
		}
	})
}

func TestSinkErrorWAL(t *testing.T) {
	const ps = 1024
	h, s := setupWAL(t, ps, false, 2)
	s.commitTx(2, framePage{2, fillPage(ps, 2, 1001)})
	before := h.check("before")
	pos := h.db.Pos()

	first := s.next
	cks := s.w.cksum
	frames := []framePage{{3, fillPage(ps, 3, 2)}, {1, nextPage1(before, 3, 2)}}
	s.writeFrame(frames[0].pgno, 0, frames[0].data)
	b := s.w.frame(frames[1].pgno, 3, frames[1].data)
	off := s.w.frameOff(first + 1)
	h.must(h.writeWAL(off, b[:frameHdrSize]))
	h.sinkErr = errBoom
	err := h.writeWAL(off+frameHdrSize, b[frameHdrSize:])
	if !errors.Is(err, errBoom) {
		t.Fatalf("WriteWAL with a failing sink = %v, want errBoom", err)
	}
	if h.sinkCalls == 0 {
		t.Fatal("sink not called")
	}
	h.sinkErr = nil
	if got := h.db.Pos(); got != pos {
		t.Fatalf("Pos advanced to %+v after a failed stage", got)
	}
	if hdr := h.files.get(capture.WALFile)[off : off+frameHdrSize]; !allZero(hdr) {
		t.Fatalf("the uncaptured commit frame header was not invalidated: %x", hdr)
	}
	h.check("after failure") // SQLite's recovery no longer sees the commit

	// SQLite retries the transaction from its first frame. The commit
	// frame's page data is still in place from the failed attempt, so the
	// commit is complete (and captured) as soon as its header is written
	// again; exactly one transaction either way.
	s.next, s.w.cksum = first, cks
	var got []txRecord
	for i, fp := range frames {
		c := uint32(0)
		if i == len(frames)-1 {
			c = 3
		}
		hdr, data := s.writeFrame(fp.pgno, c, fp.data)
		got = append(append(got, hdr...), data...)
	}
	if len(got) != 1 || got[0].TXID != pos.TXID+1 || !slices.Equal(got[0].Pgnos, []uint32{1, 3}) {
		t.Fatalf("retry captured %+v, want one transaction %d", got, pos.TXID+1)
	}
	h.check("retried")
	// A retry with other content is captured at its commit frame's data.
	s.commitTx(3, framePage{2, fillPage(ps, 2, 3)})
	m := h.mustModel()
	first, cks = s.next, s.w.cksum
	s.writeFrame(3, 0, fillPage(ps, 3, 4))
	b = s.w.frame(1, 3, nextPage1(m, 3, 4))
	off = s.w.frameOff(s.next)
	h.must(h.writeWAL(off, b[:frameHdrSize]))
	h.sinkErr = errBoom
	if err := h.writeWAL(off+frameHdrSize, b[frameHdrSize:]); !errors.Is(err, errBoom) {
		t.Fatalf("WriteWAL with a failing sink = %v", err)
	}
	h.sinkErr = nil
	h.check("second failure")
	s.next, s.w.cksum = first, cks
	s.commitTx(3, framePage{3, fillPage(ps, 3, 5)}, framePage{1, nextPage1(m, 3, 5)})
}

func TestSinkErrorJournal(t *testing.T) {
	const ps = 1024
	setup := func(t *testing.T) (*harness, []byte) {
		files := &memFiles{}
		files.put(capture.DBFile, 0, newDB(ps, false, 3, 1))
		h := newHarness(t, files)
		h.mustOpen(capture.Pos{})
		h.check("open")
		return h, h.files.get(capture.DBFile)
	}
	for mode, name := range modeNames {
		t.Run(name+"-rollback-then-retry", func(t *testing.T) {
			h, orig := setup(t)
			pos := h.db.Pos()
			m := h.mustModel()
			journalBegin(h, 3)
			h.must(h.writeDB(ps, fillPage(ps, 2, 2)))
			h.must(h.writeDB(0, nextPage1(m, 3, 2)))
			h.sinkErr = errBoom
			var err error
			switch mode {
			case modeDelete:
				err = h.removeJournal()
			case modeTruncate:
				err = h.truncateJournal(0)
			case modePersist:
				err = h.writeJournal(0, make([]byte, 28))
			}
			h.sinkErr = nil
			if !errors.Is(err, errBoom) {
				t.Fatalf("end of journal with a failing sink = %v", err)
			}
			if got := h.db.Pos(); got != pos {
				t.Fatalf("Pos advanced to %+v", got)
			}
			if !h.files.journalLive() {
				t.Fatal("the journal was ended although the transaction was not staged")
			}
			// SQLite's commit failed: the hot journal is rolled back.
			h.must(h.db.JournalOpened())
			h.must(h.writeDB(0, orig[:2*ps]))
			journalEnd(h, mode)
			if len(h.txs) != 1 {
				t.Fatalf("rollback captured %+v", h.txs[1:])
			}
			h.check("rolled back")
			// The transaction again.
			journalBegin(h, 3)
			h.must(h.writeDB(ps, fillPage(ps, 2, 2)))
			h.must(h.writeDB(0, nextPage1(m, 3, 2)))
			journalEnd(h, mode)
			if tx := h.last(); tx.TXID != pos.TXID+1 || !slices.Equal(tx.Pgnos, []uint32{1, 2}) {
				t.Fatalf("retried tx %+v", tx)
			}
			h.check("retried")
		})
	}
	t.Run("DELETE-retry-same-event", func(t *testing.T) {
		// The front end retries the journal deletion (the journal is
		// still live on disk, the database holds the new pages): the
		// transaction must be captured with the same TXID.
		h, _ := setup(t)
		pos := h.db.Pos()
		m := h.mustModel()
		journalBegin(h, 3)
		h.must(h.writeDB(ps, fillPage(ps, 2, 2)))
		h.must(h.writeDB(0, nextPage1(m, 3, 2)))
		h.sinkErr = errBoom
		if err := h.removeJournal(); !errors.Is(err, errBoom) {
			t.Fatalf("RemoveJournal = %v", err)
		}
		h.sinkErr = nil
		if !h.files.journalLive() || h.db.Pos() != pos {
			t.Fatal("state advanced")
		}
		h.must(h.removeJournal())
		if len(h.txs) == 1 {
			t.Fatal("after a failed Sink the retried RemoveJournal captured nothing")
		}
		if tx := h.last(); tx.TXID != pos.TXID+1 || !slices.Equal(tx.Pgnos, []uint32{1, 2}) {
			t.Fatalf("retried tx %+v", tx)
		}
		h.check("retried")
	})
	t.Run("Closed-retry", func(t *testing.T) {
		// journal_mode OFF: the capture at Closed fails, the next Closed
		// must capture the same changes.
		h, _ := setup(t)
		pos := h.db.Pos()
		h.must(h.writeDB(ps, fillPage(ps, 2, 2)))
		h.sinkErr = errBoom
		if err := h.db.Closed(); !errors.Is(err, errBoom) {
			t.Fatalf("Closed = %v", err)
		}
		h.sinkErr = nil
		if h.db.Pos() != pos {
			t.Fatal("state advanced")
		}
		h.must(h.db.Closed())
		if len(h.txs) == 1 {
			t.Fatal("after a failed Sink at Closed the unjournaled changes were never captured")
		}
		if tx := h.last(); tx.TXID != pos.TXID+1 || !slices.Equal(tx.Pgnos, []uint32{2}) {
			t.Fatalf("retried tx %+v", tx)
		}
		h.check("retried")
	})
}

func TestUnjournaledWrites(t *testing.T) {
	const ps = 512
	files := &memFiles{}
	files.put(capture.DBFile, 0, newDB(ps, false, 3, 1))
	h := newHarness(t, files)
	h.mustOpen(capture.Pos{})
	h.check("open")
	m := h.mustModel()
	n := len(h.txs)
	h.must(h.writeDB(ps, fillPage(ps, 2, 2)))
	h.must(h.writeDB(0, nextPage1(m, 4, 2)))
	h.must(h.writeDB(3*ps, fillPage(ps, 4, 2)))
	if len(h.txs) != n {
		t.Fatalf("unjournaled writes captured %+v", h.txs[n:])
	}
	if h.instWarns != 1 || len(h.warns) != 1 {
		t.Fatalf("warnings %q, want exactly one", h.warns)
	}
	h.must(h.db.Closed())
	if len(h.txs) != n+1 {
		t.Fatalf("Closed captured %d transactions", len(h.txs)-n)
	}
	if tx := h.last(); !slices.Equal(tx.Pgnos, []uint32{1, 2, 4}) || tx.Commit != 4 {
		t.Fatalf("tx %+v", tx)
	}
	h.check("closed")
	h.must(h.db.Closed())
	if len(h.txs) != n+1 {
		t.Fatal("second Closed captured again")
	}
	h.must(h.writeDB(2*ps, fillPage(ps, 3, 3)))
	h.must(h.db.Closed())
	if tx := h.last(); !slices.Equal(tx.Pgnos, []uint32{3}) {
		t.Fatalf("tx %+v", tx)
	}
	if len(h.warns) != 1 {
		t.Fatalf("warned again: %q", h.warns)
	}
	h.check("closed again")
	// A journaled transaction afterwards warns no more.
	m = h.mustModel()
	journalBegin(h, 4)
	h.must(h.writeDB(0, nextPage1(m, 4, 4)))
	journalEnd(h, modeDelete)
	h.check("journaled")
	if len(h.warns) != 1 {
		t.Fatalf("warned again: %q", h.warns)
	}
	// In WAL mode with a WAL, database writes are checkpoints: no warning,
	// nothing captured.
	files2 := &memFiles{}
	files2.put(capture.DBFile, 0, newDB(ps, true, 2, 1))
	files2.put(capture.WALFile, 0, (&walWriter{ps: ps, salt1: 1, salt2: 2}).header())
	h2 := newHarness(t, files2)
	h2.mustOpen(capture.Pos{})
	h2.must(h2.writeDB(ps, fillPage(ps, 2, 1))) // same content, as a checkpoint writes
	h2.must(h2.db.Closed())
	if len(h2.warns) != 0 || len(h2.txs) != 1 {
		t.Fatalf("WAL-mode database write: warns %q, txs %+v", h2.warns, h2.txs)
	}
	h2.check("wal")
	// Without a WAL there is nothing to checkpoint: a write is a change
	// made outside SQLite (a file copied over the database), captured at
	// the last close.
	h2.must(h2.removeWAL())
	h2.must(h2.writeDB(ps, fillPage(ps, 2, 9)))
	if len(h2.txs) != 1 || len(h2.warns) != 1 || !strings.Contains(h2.warns[0], "outside any SQLite transaction") {
		t.Fatalf("WAL-mode database written without a WAL: warns %q, txs %+v", h2.warns, h2.txs)
	}
	h2.must(h2.db.Closed())
	if tx := h2.last(); tx.TXID != 2 || !slices.Equal(tx.Pgnos, []uint32{2}) {
		t.Fatalf("the outside write was captured as %+v", tx)
	}
	h2.check("overwritten")
}

// TestOverwriteInPlace: a WAL-mode database whose last connection closed
// (checkpointed, WAL removed) is replaced by copying another database over
// it: truncated, rewritten page by page, closed. The replica must follow,
// whatever the new file's page count, page size or journal mode.
func TestOverwriteInPlace(t *testing.T) {
	for _, tc := range []struct {
		name  string
		ps    int
		wal   bool
		pages int
	}{
		{"smaller-delete", 1024, false, 2},
		{"larger-wal", 1024, true, 7},
		{"new-page-size", 512, true, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, s := setupWAL(t, 1024, false, 4)
			m := h.mustModel()
			s.commitTx(4, framePage{2, fillPage(1024, 2, 5)}, framePage{1, nextPage1(m, 4, 5)})
			checkpoint(h)
			h.must(h.removeWAL())
			h.check("closed")
			// cp other.db app.db
			h.must(h.db.TruncateDB(0, func() error { h.files.setSize(capture.DBFile, 0); return nil }))
			img := newDB(tc.ps, tc.wal, tc.pages, 99)
			for off := 0; off < len(img); off += 4096 {
				h.must(h.writeDB(int64(off), img[off:min(off+4096, len(img))]))
			}
			n := len(h.txs)
			h.must(h.db.Closed())
			if len(h.txs) != n+1 {
				t.Fatalf("the copy captured %d transactions, want 1", len(h.txs)-n)
			}
			h.check("after the copy")
		})
	}
}

// TestWriteJournalApplyError: the header-zeroing write of a PERSIST journal is
// captured before it is applied; when applying it fails the journal is still
// live and SQLite rolls it back (its handle still open, no JournalOpened),
// which must be captured like any journaled change.
func TestWriteJournalApplyError(t *testing.T) {
	const ps = 512
	files := &memFiles{}
	files.put(capture.DBFile, 0, newDB(ps, false, 2, 1))
	h := newHarness(t, files)
	h.mustOpen(capture.Pos{})
	orig := h.files.get(capture.DBFile)
	m := h.mustModel()
	journalBegin(h, 2)
	h.must(h.writeDB(ps, fillPage(ps, 2, 2)))
	h.must(h.writeDB(0, nextPage1(m, 2, 2)))
	ioErr := errors.New("EIO")
	err := h.db.WriteJournal(0, make([]byte, 28), func() error { return ioErr })
	if !errors.Is(err, ioErr) {
		t.Fatalf("WriteJournal = %v", err)
	}
	if len(h.txs) != 2 {
		t.Fatalf("the commit was not captured before the write: %+v", h.txs)
	}
	h.check("captured") // the journal is live, but the database holds the transaction
	// SQLite rolls the journal back (its handle still open) and zeroes it.
	h.must(h.writeDB(0, orig))
	if len(h.warns) != 0 {
		t.Fatalf("rollback writes under the still-live journal warned: %q", h.warns)
	}
	journalEnd(h, modePersist)
	if len(h.txs) != 3 {
		t.Fatalf("rollback of the hot journal captured %d transactions, want 1", len(h.txs)-2)
	}
	h.check("rolled back")
}

// TestConcurrentUse: the DB serializes its methods.
func TestConcurrentUse(t *testing.T) {
	const ps = 512
	h, s := setupWAL(t, ps, false, 2)
	s.commitTx(2, framePage{2, fillPage(ps, 2, 1001)})
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 200; j++ {
				_ = h.db.Checksum()
				_ = h.db.Pos()
			}
		}()
	}
	for i := 0; i < 5; i++ {
		s.commitTx(2, framePage{2, fillPage(ps, 2, uint64(10+i))})
	}
	wg.Wait()
}

// TestOpenEmptyDatabase: an empty or missing database file with neither a live
// journal nor a WAL. dbfiles.Capture opens the DB at the first write of page 1
// to an empty file, so this is how journal_mode OFF/MEMORY databases start;
// and a crash in the first transaction of a new database leaves a hot journal
// whose rollback truncates the file back to empty.
func TestOpenEmptyDatabase(t *testing.T) {
	const ps = 1024
	for _, name := range []string{"empty", "missing", "hot-journal-to-empty"} {
		t.Run(name, func(t *testing.T) {
			files := &memFiles{}
			switch name {
			case "empty":
				files.setSize(capture.DBFile, 0)
			case "hot-journal-to-empty":
				files.put(capture.DBFile, 0, newDB(ps, false, 1, 1))
				files.put(capture.JournalFile, 0, journalHeader(ps, 0))
				files.put(capture.JournalFile, 0, journalMagicHeader(1))
			}
			h := newHarness(t, files)
			// panics runs fn and returns what it panicked with.
			panics := func(fn func()) (p any) {
				defer func() { p = recover() }()
				fn()
				return nil
			}
			var err error
			if p := panics(func() { err = h.open(capture.Pos{}) }); p != nil {
				t.Fatalf("capture.Open panics on an empty database file without a live journal or WAL: %v", p)
			}
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if name == "hot-journal-to-empty" {
				// SQLite rolls the creation back.
				h.must(h.db.JournalOpened())
				files.setSize(capture.DBFile, 0)
				if p := panics(func() { err = h.removeJournal() }); p != nil {
					t.Fatalf("the end of a hot journal that leaves the database empty panics: %v", p)
				}
				if err != nil {
					t.Fatalf("RemoveJournal: %v", err)
				}
			}
			if len(h.txs) != 0 {
				t.Fatalf("an empty database captured %+v", h.txs)
			}
			h.check("open")
			// journal_mode OFF: page 1 written, the database closed.
			h.must(h.writeDB(0, newDB(ps, false, 2, 1)))
			h.must(h.db.Closed())
			if len(h.txs) != 1 || !h.txs[0].Full || h.txs[0].Commit != 2 {
				t.Fatalf("created database captured %+v", h.txs)
			}
			h.check("closed")
		})
	}
}

// TestJournalPageSizeChange: VACUUM with a new page_size under a rollback
// journal rewrites every page; the transaction is shipped in full.
func TestJournalPageSizeChange(t *testing.T) {
	files := &memFiles{}
	files.put(capture.DBFile, 0, newDB(1024, false, 4, 1))
	h := newHarness(t, files)
	h.mustOpen(capture.Pos{})
	h.check("open")
	prev := h.last()
	journalBegin(h, 4)
	h.must(h.writeDB(0, newDB(512, false, 6, 2)))
	h.files.setSize(capture.DBFile, 6*512)
	h.must(h.removeJournal())
	tx := h.last()
	if tx.TXID != 2 || !tx.Full || tx.PageSize != 512 || tx.Commit != 6 || tx.PreChecksum != prev.PostChecksum {
		t.Fatalf("VACUUM tx %+v", tx)
	}
	h.check("vacuum")
	m := h.mustModel()
	journalBegin(h, 6)
	h.must(h.writeDB(512, fillPage(512, 2, 3)))
	h.must(h.writeDB(0, nextPage1(m, 6, 3)))
	h.must(h.removeJournal())
	if tx := h.last(); tx.TXID != 3 || tx.Full || !slices.Equal(tx.Pgnos, []uint32{1, 2}) {
		t.Fatalf("tx %+v", tx)
	}
	h.check("after")
}

// TestWALInvalidEarlierFrame: the commit frame is fine, an earlier frame of
// its transaction has a valid checksum chain but the wrong salts, or page
// number zero: SQLite's recovery stops there, so nothing commits.
func TestWALInvalidEarlierFrame(t *testing.T) {
	const ps = 512
	for _, bad := range []string{"salt1", "salt2", "pgno0"} {
		t.Run(bad, func(t *testing.T) {
			h, s := setupWAL(t, ps, false, 2)
			s.commitTx(2, framePage{2, fillPage(ps, 2, 1001)})
			m := h.mustModel()
			first, cks := s.next, s.w.cksum
			other := *s.w
			pgno := uint32(2)
			switch bad {
			case "salt1":
				other.salt1++
			case "salt2":
				other.salt2++
			case "pgno0":
				pgno = 0
			}
			// Frame 1 of the transaction, encoded with the running
			// checksum but the wrong salts or page number.
			b, next := other.encodeFrame(s.w.cksum, pgno, 0, fillPage(ps, 2, 2))
			s.w.cksum = next
			s.next++
			h.must(h.writeWAL(s.w.frameOff(first), b))
			if hdr, d := s.writeFrame(1, 2, nextPage1(m, 2, 2)); len(hdr)+len(d) != 0 {
				t.Fatalf("commit after an invalid frame captured %+v", append(hdr, d...))
			}
			h.check("after")
			s.next, s.w.cksum = first, cks
			s.commitTx(2, framePage{2, fillPage(ps, 2, 3)}, framePage{1, nextPage1(m, 2, 3)})
		})
	}
}

// TestWALGrowWithoutFrame: a commit that grows the database over pages it has
// no frame for (and no earlier frame in the WAL has): SQLite reads them from
// the database file.
func TestWALGrowWithoutFrame(t *testing.T) {
	const ps = 1024
	h, s := setupWAL(t, ps, false, 4)
	m := h.mustModel()
	s.commitTx(2, framePage{1, nextPage1(m, 2, 1)})
	m = h.mustModel()
	tx := s.commitTx(4, framePage{1, nextPage1(m, 4, 2)})
	if !slices.Equal(tx.Pgnos, []uint32{1, 3, 4}) {
		t.Fatalf("tx %+v", tx)
	}
	m = h.mustModel()
	if !bytes.Equal(m.page(4), fillPage(ps, 4, 1)) {
		t.Fatal("model: page 4 is not the database file's")
	}
}

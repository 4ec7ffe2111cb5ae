package capture_test

import (
	"bytes"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/superfly/ltx"
	"github.com/walsync/walsync/capture"
)

// FuzzCapture drives a DB through a sequence of SQLite-like file operations
// decoded from the fuzz input and checks, after every DB call, that the
// captured state matches the reference model (the database SQLite would
// see), that every transaction verifies as an LTX file and chains onto the
// previous one, and that applying the transactions to a replica reproduces
// the database byte for byte.
func FuzzCapture(f *testing.F) {
	seeds := [][]byte{
		// WAL mode, 1024-byte pages: frames, commits, restart, reopen.
		{0x05, 0, 1, 4, 0, 5, 7, 1, 2, 4, 9, 1, 10, 0, 4, 2, 13, 0, 5, 3, 11, 0, 12, 0, 0, 4, 1},
		// WAL mode, big-endian checksums, in-place rewrites and padding.
		{0x06, 0, 3, 0, 1, 0, 2, 4, 0, 0, 0, 0, 4, 1, 2, 3, 0, 0, 6, 0, 1, 4, 3, 0, 0, 0, 0, 4, 0, 0, 0},
		// Rollback journal: commits, rollbacks, crashes, unjournaled writes, switch to WAL.
		{0x00, 0, 1, 2, 3, 0, 1, 3, 2, 1, 0, 4, 0, 2, 1, 5, 2, 3, 6, 1, 7, 0, 0, 1, 2, 4, 0, 1, 5, 3, 2},
		// Empty database in WAL mode, garbage, checkpoints, switch to rollback.
		{0x0d, 4, 1, 0, 2, 7, 200, 30, 4, 3, 1, 9, 1, 7, 3, 0, 4, 0, 0, 14, 1, 0, 0, 2, 16 + 2, 1, 0},
		// Empty database in rollback mode, stale position.
		{0x18, 0, 2, 1, 0, 3, 1, 1, 4, 2, 2, 0, 6, 0, 5, 1, 1, 0, 0, 7, 0, 1, 1},
		// Stale position, WAL mode.
		{0x35, 4, 1, 1, 0, 13, 0, 0, 4, 0, 2, 3, 8, 0, 1, 1, 4, 2, 2, 10, 4, 1},
	}
	for _, s := range seeds {
		f.Add(s)
	}
	// Longer pseudo-random inputs for every start: page size, checksum
	// byte order, journal mode, empty database, stale position.
	for b0 := 0; b0 < 32; b0 += 3 {
		f.Add(randomInput(uint64(b0), byte(b0), 400))
	}
	for b0 := 0; b0 < 32; b0 += 5 {
		f.Add(randomInput(uint64(500+b0), byte(b0)|0x84, 400)) // WAL, deferred capture
	}
	f.Add(randomInput(99, 0x05|0x20, 1500))
	f.Add(randomInput(97, 0x05|0x80, 1500))
	f.Add(randomInput(98, 0x00|0x40, 1500))
	f.Fuzz(func(t *testing.T, in []byte) {
		runFuzz(t, in)
	})
}

// randomInput is a deterministic pseudo-random fuzz input starting with b0.
func randomInput(seed uint64, b0 byte, n int) []byte {
	b := fillPage((n+7)&^7, 0, seed+1)[:n]
	b[0] = b0
	return b
}

// TestCaptureRandomSequences runs the FuzzCapture driver over pseudo-random
// inputs, so that a plain go test covers long operation sequences.
func TestCaptureRandomSequences(t *testing.T) {
	n := 120
	if testing.Short() {
		n = 30
	}
	for i := 0; i < n; i++ {
		b0 := byte(i)
		if i%3 == 0 {
			b0 |= 0x84 // WAL with deferred capture
		}
		in := randomInput(uint64(1000+i), b0, 200+(i%5)*150)
		t.Run("", func(t *testing.T) { runFuzz(t, in) })
	}
}

const (
	fuzzMaxPages = 12
	fuzzMaxSteps = 48
)

type fuzzReader struct {
	b []byte
	i int
}

func (r *fuzzReader) more() bool { return r.i < len(r.b) }

func (r *fuzzReader) byte() byte {
	if r.i >= len(r.b) {
		return 0
	}
	c := r.b[r.i]
	r.i++
	return c
}

func (r *fuzzReader) n(k int) int { return int(r.byte()) % k }

func (r *fuzzReader) u32() uint32 {
	return uint32(r.byte()) | uint32(r.byte())<<8 | uint32(r.byte())<<16 | uint32(r.byte())<<24
}

type fuzzer struct {
	t         *testing.T
	r         *fuzzReader
	h         *harness
	ps        int
	wal       bool // journal_mode=WAL: page 1 says so
	bigEndian bool

	w       *walWriter // the current WAL generation, nil without a WAL
	tx      *fuzzTx    // the WAL transaction in progress
	saltSeq uint32
	seed    uint64 // makes every generated page unique

	deferred    bool   // WAL writes bypass the DB; barriers capture them
	unjournaled bool   // database written without a journal, not yet Closed
	failed      bool   // a DB call failed as the sink was told to fail
	last        *model // the model at the last check
	lastStep    string // for failure messages
	ops         []string
}

type fuzzTx struct {
	next     int64    // offset of the next frame
	view     [][]byte // the pages as the transaction sees them
	origSize int
	frames   []fuzzFrame
	written  map[uint32]bool
	tainted  bool // garbage was written while the transaction was open
}

type fuzzFrame struct {
	off          int64
	pgno, commit uint32
}

func runFuzz(t *testing.T, in []byte) {
	r := &fuzzReader{b: in}
	b0 := r.byte()
	f := &fuzzer{t: t, r: r, ps: 512 << (b0 & 1), bigEndian: b0&2 != 0, wal: b0&4 != 0, deferred: b0&0x80 != 0}
	empty := b0&8 != 0
	stale := b0&16 != 0
	files := &memFiles{}
	n := 1 + int(b0>>5)%3
	if empty {
		// As the front ends do, the DB is opened once there is something
		// to read: a WAL header, or the first page write under a live
		// journal. (Open on an empty file with neither panics, see
		// TestOpenEmptyDatabase.)
		files.setSize(capture.DBFile, 0)
		if f.wal {
			f.saltSeq++
			f.w = &walWriter{ps: f.ps, bigEndian: f.bigEndian, salt1: f.saltSeq*0x9e3779b1 + 1, salt2: r.u32()}
			files.put(capture.WALFile, 0, f.w.header())
		} else {
			files.put(capture.JournalFile, 0, journalHeader(f.ps, 0))
			files.put(capture.JournalFile, 0, journalMagicHeader(1))
		}
	} else {
		files.put(capture.DBFile, 0, newDB(f.ps, f.wal, n, 1))
	}
	f.h = newHarness(t, files)
	f.h.deferWAL = f.deferred
	f.h.context = func() string { return "ops " + joinOps(f.ops) + ", at " + f.lastStep }
	pos := capture.Pos{}
	if stale && !empty {
		pos = capture.Pos{TXID: 9, Checksum: ltx.ChecksumFlag | 0xabcdef, PageSize: uint32(f.ps), Commit: uint32(n)}
	}
	f.h.mustOpen(pos)
	if !empty && (len(f.h.txs) != 1 || !f.h.txs[0].Full || f.h.txs[0].TXID != pos.TXID+1) {
		t.Fatalf("Open captured %+v, want one full transaction %d", f.h.txs, pos.TXID+1)
	}
	if empty && len(f.h.txs) != 0 {
		t.Fatalf("Open of an empty database captured %+v", f.h.txs)
	}
	f.checkNow("open")
	if empty && !f.wal {
		f.op("create")
		f.journalTx(outcomeCommit, true, false, true)
	}

	for step := 0; r.more() && step < fuzzMaxSteps; step++ {
		op := r.n(17)
		f.failed = false
		if f.wal {
			switch op {
			case 16:
				f.op("overwrite")
				f.opOverwrite()
			case 0, 1, 2, 3:
				f.op("frame")
				f.opFrame()
			case 4, 5, 6, 15:
				f.op("commit")
				f.armFailure()
				f.opCommit()
				f.h.failOnce = false
			case 7:
				f.op("garbage")
				f.opGarbage()
			case 8:
				f.op("abandon")
				f.tx = nil
			case 9:
				f.op("checkpoint")
				f.checkpoint(r.n(2) == 0)
			case 10:
				f.op("restart")
				f.opRestart()
			case 11:
				f.op("truncate-wal")
				f.opTruncateWAL()
			case 12:
				f.op("remove-wal")
				f.opRemoveWAL()
			case 13:
				f.op("reopen")
				f.opReopen()
			case 14:
				f.op("to-rollback")
				f.opToRollback()
			}
		} else {
			switch op % 8 {
			case 0, 1, 2:
				f.op("journal-commit")
				f.armFailure()
				f.journalTx(outcomeCommit, false, false, false)
				f.h.failOnce = false
			case 3:
				f.op("journal-rollback")
				f.journalTx(outcomeRollback, false, false, false)
			case 4:
				f.op("journal-crash")
				f.journalTx(outcomeCrash, false, false, false)
			case 5:
				f.op("unjournaled")
				f.opUnjournaled()
			case 6:
				f.op("reopen")
				f.opReopen()
			case 7:
				f.op("to-wal")
				f.journalTx(outcomeCommit, true, true, false)
				f.wal = true
			}
		}
		if f.deferred && f.wal && f.checkable() {
			// The barriers a front end adds: an fsync of the -wal, the end
			// of a batch window. Sometimes left out, so that a later one
			// (or a checkpoint) captures several transactions at once.
			if f.r.n(3) == 0 {
				f.op("sync-wal")
				f.armFailure()
				f.call("sync wal", f.h.db.SyncWAL)
				f.h.failOnce = false
				if f.failed {
					// A failed barrier fails at once until its backoff ends.
					f.op("sync-failed")
					if err := f.h.db.SyncWAL(); !errors.Is(err, errBoom) {
						f.fatalf("a barrier right after a failed one returned %v, want the same failure", err)
					}
					f.h.clock += 3 * time.Second
					f.call("sync wal again", f.h.db.SyncWAL)
				}
			}
			continue
		}
		f.checkNow("after op")
	}

	// A DB opened at the last position on the same files agrees and
	// captures nothing.
	if !f.h.files.journalLive() && !f.emptyPanics() {
		f.tx = nil
		if f.deferred {
			f.op("final-sync")
			f.call("final sync", f.h.db.SyncWAL)
		}
		f.op("final-reopen")
		n := len(f.h.txs)
		f.h.mustOpen(f.h.db.Pos())
		if len(f.h.txs) != n {
			f.fatalf("reopen at the last position captured %+v", f.h.txs[n:])
		}
		f.checkNow("final reopen")
	}
	t.Logf("ops %s: %d transactions", joinOps(f.ops), len(f.h.txs))
}

func (f *fuzzer) op(name string) { f.ops = append(f.ops, name) }

// armFailure sometimes makes the sink fail the next transaction.
func (f *fuzzer) armFailure() {
	f.failed = false
	if f.r.n(6) == 0 {
		f.op("sink-fails")
		f.h.failOnce = true
	}
}

func (f *fuzzer) fatalf(format string, args ...any) {
	f.t.Helper()
	f.t.Fatalf("ops %s, at %s: "+format, append([]any{joinOps(f.ops), f.lastStep}, args...)...)
}

func (f *fuzzer) checkable() bool {
	return !f.unjournaled && !f.h.files.journalLive()
}

// checkNow checks the DB against the model when it is meaningful.
func (f *fuzzer) checkNow(where string) {
	f.t.Helper()
	if !f.checkable() {
		return
	}
	f.lastStep = where
	f.last = f.h.check(where)
}

func joinOps(a []string) string {
	var b bytes.Buffer
	for i, s := range a {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(s)
	}
	return b.String()
}

// call runs one DB method; it must capture at most one transaction, and one
// only if the database changed since the last check.
func (f *fuzzer) call(what string, fn func() error) {
	f.t.Helper()
	f.lastStep = what
	n := len(f.h.txs)
	armed := f.h.failOnce
	if err := fn(); err != nil {
		if !armed || f.h.failOnce || !errors.Is(err, errBoom) {
			f.fatalf("%s: %v", what, err)
		}
		f.failed = true
	}
	got := len(f.h.txs) - n
	if got > 1 && !f.deferred {
		f.fatalf("%s captured %d transactions", what, got)
	}
	if !f.checkable() || (f.deferred && (walWrites[what] || f.failed)) {
		return // a deferred capture lags until its next barrier
	}
	if f.deferred {
		f.checkNow(what)
		return
	}
	prev := f.last
	f.checkNow(what)
	if got == 1 && prev != nil && bytes.Equal(prev.data, f.last.data) && prev.ps == f.last.ps {
		f.fatalf("%s captured transaction %+v but the database did not change", what, f.h.last())
	}
}

// walWrites are the calls that only write the -wal: with deferred capture the
// DB does not see them.
var walWrites = map[string]bool{"wal write": true, "wal header": true, "restart": true,
	"in-place rewrite": true, "checksum rewrite": true, "garbage": true}

func (f *fuzzer) model() *model {
	f.t.Helper()
	m, err := computeModel(f.h.files)
	if err != nil {
		f.fatalf("%v", err)
	}
	return m
}

func (f *fuzzer) fsz() int64 { return int64(f.ps) + frameHdrSize }

func (f *fuzzer) nextSeed() uint64 {
	f.seed++
	return f.seed<<8 | uint64(f.r.byte())
}

// content returns new content for pgno in a database of size pages whose
// current pages are view; page 1 gets a valid header with the change counter
// advanced.
func (f *fuzzer) content(pgno uint32, view [][]byte, size int, wal bool) []byte {
	if pgno == 1 {
		var counter uint32
		if len(view) > 0 && len(view[0]) >= 100 {
			counter = readDBHeader(view[0]).counter
		}
		return page1(f.ps, wal, counter+1, uint32(size), f.nextSeed())
	}
	if int(pgno) <= len(view) && view[pgno-1] != nil && f.r.n(8) == 0 {
		return bytes.Clone(view[pgno-1]) // rewritten unchanged
	}
	return fillPage(f.ps, pgno, f.nextSeed())
}

// ---------------------------------------------------------------------------
// WAL mode.

// ensureWAL writes a WAL header when there is no valid WAL (everything is in
// the database file then).
func (f *fuzzer) ensureWAL() {
	if f.model().walValid && f.w != nil {
		return
	}
	f.saltSeq++
	seq := uint32(0)
	if f.w != nil {
		seq = f.w.ckptSeq + 1
	}
	f.w = &walWriter{ps: f.ps, bigEndian: f.bigEndian, ckptSeq: seq, salt1: f.saltSeq*0x9e3779b1 + 1, salt2: f.r.u32()}
	hdr := f.w.header()
	f.call("wal header", func() error { return f.h.writeWAL(0, hdr) })
}

func (f *fuzzer) beginTx() {
	if f.tx != nil {
		return
	}
	f.ensureWAL()
	m := f.model()
	if !m.walValid || m.salt1 != f.w.salt1 || m.salt2 != f.w.salt2 {
		f.fatalf("generator: the WAL is not the generation being written")
	}
	f.w.cksum = m.walCksum
	tx := &fuzzTx{next: m.walEnd, origSize: m.pages(), written: map[uint32]bool{}}
	for p := 1; p <= m.pages(); p++ {
		tx.view = append(tx.view, bytes.Clone(m.page(p)))
	}
	f.tx = tx
}

// writeFrameBytes writes an encoded frame as SQLite does (header, then page
// data), sometimes cut at other points.
func (f *fuzzer) writeFrameBytes(off int64, b []byte) {
	cuts := []int{frameHdrSize}
	switch f.r.n(5) {
	case 0:
		cuts = nil // one write
	case 1:
		cuts = []int{1 + f.r.n(frameHdrSize-1), frameHdrSize}
	case 2:
		cuts = []int{frameHdrSize, frameHdrSize + 8*(1+f.r.n(f.ps/8-1))}
	}
	prev := 0
	for _, c := range append(cuts, len(b)) {
		part := b[prev:c]
		at := off + int64(prev)
		f.call("wal write", func() error { return f.h.writeWAL(at, part) })
		if f.failed {
			return // SQLite's write failed: the transaction is over
		}
		prev = c
	}
}

func (f *fuzzer) appendFrame(pgno, commit uint32, data []byte) {
	tx := f.tx
	for len(tx.view) < int(pgno) {
		tx.view = append(tx.view, make([]byte, f.ps))
	}
	b := f.w.frame(pgno, commit, data)
	off := tx.next
	tx.next += f.fsz()
	tx.frames = append(tx.frames, fuzzFrame{off, pgno, commit})
	tx.written[pgno] = true
	tx.view[pgno-1] = data
	f.writeFrameBytes(off, b)
}

func (f *fuzzer) opFrame() {
	f.beginTx()
	tx := f.tx
	size := len(tx.view)
	pgno := uint32(1 + f.r.n(min(size+1, fuzzMaxPages)))
	if int(pgno) > size {
		size = int(pgno)
	}
	f.appendFrame(pgno, 0, f.content(pgno, tx.view, size, true))
}

func (f *fuzzer) opCommit() {
	f.beginTx()
	tx := f.tx
	size := len(tx.view)
	newSize := size
	switch f.r.n(4) {
	case 1:
		newSize = min(size+1+f.r.n(3), fuzzMaxPages)
	case 2:
		newSize = size - 1 - f.r.n(2)
	}
	newSize = max(newSize, 1)
	// SQLite writes every page it allocates. A page the database grows
	// into without a frame is read from the database file, unless an
	// earlier frame of the WAL has it: SQLite then reads that stale frame
	// (and so does the model) while the DB reads the database file; SQLite
	// never produces that, so it is not generated.
	walAny := f.model().walAny
	for p := tx.origSize + 1; p <= newSize; p++ {
		if tx.written[uint32(p)] {
			continue
		}
		if p > 1 && !walAny[uint32(p)] && f.r.n(4) == 0 {
			for len(tx.view) < p {
				tx.view = append(tx.view, nil)
			}
			continue
		}
		f.appendFrame(uint32(p), 0, f.content(uint32(p), tx.view, newSize, true))
	}
	// SQLite rewrites a page already spilled in this transaction in place.
	rewriteFrom := -1
	if !tx.tainted && len(tx.frames) > 0 && f.r.n(3) == 0 {
		i := f.r.n(len(tx.frames))
		fr := tx.frames[i]
		latest := true
		for _, g := range tx.frames[i+1:] {
			latest = latest && g.pgno != fr.pgno
		}
		if latest && fr.pgno != 1 {
			data := fillPage(f.ps, fr.pgno, f.nextSeed())
			f.call("in-place rewrite", func() error { return f.h.writeWAL(fr.off+frameHdrSize, data) })
			tx.view[fr.pgno-1] = data
			rewriteFrom = i
		}
	}
	// Page 1 carries the database size.
	commitPgno := uint32(1 + f.r.n(newSize))
	if readDBHeader(tx.view[0]).nPages != uint32(newSize) || !tx.written[1] && f.r.n(4) == 0 {
		p1 := f.content(1, tx.view, newSize, true)
		if commitPgno != 1 {
			f.appendFrame(1, 0, p1)
		} else {
			tx.view[0] = p1
		}
	}
	var data []byte
	if commitPgno == 1 {
		data = tx.view[0]
	} else {
		data = f.content(commitPgno, tx.view, newSize, true)
	}
	f.appendFrame(commitPgno, uint32(newSize), data)
	if rewriteFrom >= 0 && !f.failed {
		// walRewriteChecksums: from the rewritten frame through the commit
		// frame, seeded with the checksum stored before it.
		wal := f.h.files.get(capture.WALFile)
		first := tx.frames[rewriteFrom].off
		seedOff := first - f.fsz() + 16
		if first == walHdrSize {
			seedOff = 24
		}
		seed := [2]uint32{be.Uint32(wal[seedOff:]), be.Uint32(wal[seedOff+4:])}
		for _, fr := range tx.frames[rewriteFrom:] {
			page := wal[fr.off+frameHdrSize : fr.off+f.fsz()]
			var b []byte
			b, seed = f.w.encodeFrame(seed, fr.pgno, fr.commit, page)
			f.call("checksum rewrite", func() error { return f.h.writeWAL(fr.off, b[:frameHdrSize]) })
		}
		f.w.cksum = seed
	}
	if f.failed {
		// The commit failed and its frame was invalidated: SQLite rolls
		// the transaction back and the next one starts over it.
		f.op("commit-failed")
		f.tx = nil
		return
	}
	// synchronous=FULL pads the WAL with copies of the commit frame.
	if f.r.n(5) == 0 {
		for k := 0; k <= f.r.n(2); k++ {
			f.appendFrame(commitPgno, uint32(newSize), data)
		}
	}
	f.tx = nil
}

// opGarbage writes random bytes into the part of the WAL SQLite has not
// committed (or anywhere when there is no valid WAL).
func (f *fuzzer) opGarbage() {
	m := f.model()
	base := int64(0)
	if m.walValid {
		base = m.walEnd
	}
	off := base + int64(f.r.byte())*f.fsz()/85
	n := 1 + f.r.n(250)*(f.ps+frameHdrSize+40)/250
	junk := fillPage((n+7)&^7, uint32(n), f.nextSeed())[:n]
	if f.w != nil && n >= frameHdrSize && f.r.n(3) == 0 {
		// Shaped like a commit frame header of this generation.
		be.PutUint32(junk[0:], uint32(1+f.r.n(fuzzMaxPages)))
		be.PutUint32(junk[4:], uint32(1+f.r.n(fuzzMaxPages)))
		be.PutUint32(junk[8:], f.w.salt1)
		be.PutUint32(junk[12:], f.w.salt2)
	}
	if f.tx != nil {
		f.tx.tainted = true
	}
	f.call("garbage", func() error { return f.h.writeWAL(off, junk) })
}

// checkpoint copies committed WAL pages into the database file; a full
// checkpoint copies all and truncates the database file to the committed
// size.
func (f *fuzzer) checkpoint(full bool) {
	m := f.model()
	if m.walCommit == 0 {
		return
	}
	pgnos := make([]uint32, 0, len(m.walPages))
	for p := range m.walPages {
		pgnos = append(pgnos, p)
	}
	slices.Sort(pgnos)
	if !full {
		pgnos = pgnos[:f.r.n(len(pgnos)+1)]
	}
	for _, p := range pgnos {
		data := m.walPages[p]
		f.call("checkpoint write", func() error { return f.h.writeDB(int64(p-1)*int64(f.ps), data) })
	}
	if full {
		f.h.files.setSize(capture.DBFile, int64(m.walCommit)*int64(f.ps))
		f.checkNow("checkpoint truncate")
	}
}

func (f *fuzzer) opRestart() {
	f.tx = nil
	if f.w == nil || !f.model().walValid {
		f.ensureWAL()
		return
	}
	f.checkpoint(true)
	f.saltSeq++
	f.w = &walWriter{ps: f.ps, bigEndian: f.bigEndian, ckptSeq: f.w.ckptSeq + 1, salt1: f.saltSeq*0x9e3779b1 + 1, salt2: f.r.u32()}
	hdr := f.w.header()
	f.call("restart", func() error { return f.h.writeWAL(0, hdr) })
}

func (f *fuzzer) opTruncateWAL() {
	f.tx = nil
	if !f.h.files.has(capture.WALFile) {
		return
	}
	f.checkpoint(true)
	if m := f.model(); m.walValid && f.r.n(3) == 0 {
		// journal_size_limit: the tail past the committed frames.
		size := m.walEnd + int64(f.r.n(3))*f.fsz() + int64(f.r.n(64))
		f.call("truncate wal tail", func() error { return f.h.truncateWAL(size) })
		return
	}
	f.call("truncate wal", func() error { return f.h.truncateWAL(0) })
	f.w = nil
}

func (f *fuzzer) opRemoveWAL() {
	f.tx = nil
	if !f.h.files.has(capture.WALFile) {
		return
	}
	f.checkpoint(true)
	f.call("remove wal", f.h.removeWAL)
	f.w = nil
}

// opOverwrite: the last connection closes (a full checkpoint, the WAL
// removed), then another database is copied over this one: the file is
// truncated, written page by page and closed, outside any transaction.
func (f *fuzzer) opOverwrite() {
	f.tx = nil
	if f.h.files.has(capture.WALFile) {
		f.checkpoint(true)
		f.call("remove wal", f.h.removeWAL)
	}
	f.w = nil
	wal := f.r.n(2) == 0
	img := newDB(f.ps, wal, 1+f.r.n(fuzzMaxPages-1), f.nextSeed())
	f.unjournaled = true
	f.call("truncate db", func() error {
		return f.h.db.TruncateDB(0, func() error { f.h.files.setSize(capture.DBFile, 0); return nil })
	})
	for off := 0; off < len(img); off += f.ps {
		f.call("copy over", func() error { return f.h.writeDB(int64(off), img[off:off+f.ps]) })
	}
	f.unjournaled = false
	f.call("closed after copy", f.h.db.Closed)
	f.wal = wal
}

// opToRollback: journal_mode=DELETE: checkpoint, delete the WAL, then a
// rollback-journal transaction writing page 1 with the rollback versions.
func (f *fuzzer) opToRollback() {
	f.tx = nil
	if f.h.files.has(capture.WALFile) {
		f.checkpoint(true)
		f.call("remove wal", f.h.removeWAL)
	}
	f.w = nil
	f.journalTx(outcomeCommit, true, false, false)
	f.wal = false
}

// emptyPanics reports a state Open panics on (an empty database file, no
// valid WAL, no live journal: see TestOpenEmptyDatabase), kept out of the
// fuzzer so that it can look for other bugs.
func (f *fuzzer) emptyPanics() bool {
	return f.h.files.Size(capture.DBFile) < 100 && !f.model().walValid && !f.h.files.journalLive()
}

func (f *fuzzer) opReopen() {
	if f.r.n(2) == 0 {
		f.tx = nil // else the writer goes on with its transaction
	}
	if f.emptyPanics() {
		return
	}
	pos := f.h.db.Pos()
	stale := pos.TXID > 0 && f.r.n(4) == 0
	if stale {
		pos.Checksum ^= ltx.Checksum(1+f.r.n(255)) << 8
	}
	n := len(f.h.txs)
	f.h.mustOpen(pos)
	got := f.h.txs[n:]
	switch {
	case !stale && f.deferred:
		// Commits the old DB had not captured yet (walsync killed before
		// its next barrier) are captured one by one by the new one.
		for _, tx := range got {
			if tx.Full && pos.TXID != 0 {
				f.fatalf("reopen with uncaptured commits captured a full transaction %+v", got)
			}
		}
	case !stale && len(got) != 0:
		f.fatalf("reopen at the current position captured %+v", got)
	case stale && f.last.pages() > 0 && (len(got) != 1 || !got[0].Full || got[0].TXID != pos.TXID+1 || got[0].PreChecksum != pos.Checksum):
		f.fatalf("reopen at a stale position captured %+v", got)
	}
	f.checkNow("reopen")
}

// ---------------------------------------------------------------------------
// Rollback-journal mode.

const (
	outcomeCommit = iota
	outcomeRollback
	outcomeCrash
)

// journalTx runs a rollback-journal transaction. force writes page 1 with
// the WAL versions when wal, the rollback ones otherwise. begun: the journal
// is live already.
func (f *fuzzer) journalTx(outcome int, force, wal, begun bool) {
	mode := f.r.n(3)
	m := f.model()
	if m.ps == 0 {
		m.ps = f.ps
	}
	orig := f.h.files.get(capture.DBFile)
	origSize := m.pages()
	view := make([][]byte, 0, origSize)
	for p := 1; p <= origSize; p++ {
		view = append(view, bytes.Clone(m.page(p)))
	}

	if !begun {
		if !f.h.files.has(capture.JournalFile) {
			f.h.files.setSize(capture.JournalFile, 0)
		}
		f.call("journal opened", f.h.db.JournalOpened)
		hdr := journalHeader(f.ps, uint32(origSize))
		f.call("journal header", func() error { return f.h.writeJournal(0, hdr) })
		rec := fillPage(f.ps+8, 0, f.nextSeed())
		f.call("journal record", func() error { return f.h.writeJournal(512, rec) })
		magic := journalMagicHeader(1)
		f.call("journal magic", func() error { return f.h.writeJournal(0, magic) })
	}
	if outcome == outcomeCrash && origSize == 0 {
		// Rolling a hot journal back to an empty database panics (see
		// TestOpenEmptyDatabase): roll back without the crash.
		outcome = outcomeRollback
	}

	newSize := origSize
	switch f.r.n(4) {
	case 1:
		newSize = min(origSize+1+f.r.n(3), fuzzMaxPages)
	case 2:
		newSize = origSize - 1 - f.r.n(2)
	}
	newSize = max(newSize, 1)
	writes := map[uint32][]byte{}
	for k := f.r.n(3); k >= 0; k-- {
		p := uint32(1 + f.r.n(newSize))
		if p != 1 {
			writes[p] = f.content(p, view, newSize, wal)
		}
	}
	for p := origSize + 1; p <= newSize; p++ {
		if f.r.n(4) != 0 {
			writes[uint32(p)] = f.content(uint32(p), view, newSize, wal)
		}
	}
	if force || newSize != origSize || f.r.n(3) == 0 {
		p1 := f.content(1, view, newSize, wal && force || !force && f.wal)
		if !force && f.r.n(6) == 0 {
			// A writer that leaves the in-header size untrusted.
			be.PutUint32(p1[92:], be.Uint32(p1[24:])-1)
			be.PutUint32(p1[28:], uint32(f.r.n(20)))
		}
		writes[1] = p1
	}
	pgnos := make([]uint32, 0, len(writes))
	for p := range writes {
		pgnos = append(pgnos, p)
	}
	slices.Sort(pgnos)
	for i := 0; i < len(pgnos); i++ {
		p := pgnos[i]
		data := writes[p]
		if i+1 < len(pgnos) && pgnos[i+1] == p+1 && f.r.n(3) == 0 {
			data = append(bytes.Clone(data), writes[p+1]...)
			i++
		}
		off := int64(p-1) * int64(f.ps)
		f.call("db write", func() error { return f.h.writeDB(off, data) })
	}
	if newSize <= origSize && newSize > 1 && f.r.n(4) == 0 {
		// A write of part of a page.
		p := 2 + f.r.n(newSize-1)
		off := int64(p-1)*int64(f.ps) + int64(8*f.r.n(f.ps/8))
		part := fillPage(64, uint32(p), f.nextSeed())[:8*(1+f.r.n(8))]
		f.call("partial db write", func() error { return f.h.writeDB(off, part) })
	}
	f.h.files.setSize(capture.DBFile, int64(newSize)*int64(f.ps))

	switch outcome {
	case outcomeCommit:
	case outcomeRollback:
		f.restore(orig)
	case outcomeCrash:
		pos := f.h.db.Pos()
		n := len(f.h.txs)
		f.lastStep = "open with a hot journal"
		f.h.mustOpen(pos)
		if len(f.h.txs) != n {
			f.fatalf("Open with a hot journal captured %+v", f.h.txs[n:])
		}
		f.call("hot journal opened", f.h.db.JournalOpened)
		f.restore(orig)
	}
	f.endJournal(mode)
	if f.failed {
		// The journal could not be ended: the commit failed, the journal
		// is hot and SQLite rolls it back.
		f.op("rollback-after-failure")
		if !f.h.files.journalLive() {
			f.fatalf("journal ended although staging failed")
		}
		f.failed = false
		f.call("hot journal opened", f.h.db.JournalOpened)
		f.restore(orig)
		f.endJournal(mode)
	}
}

// restore writes the original pages back, as a rollback does.
func (f *fuzzer) restore(orig []byte) {
	cur := f.h.files.get(capture.DBFile)
	for off := 0; off < len(orig); off += f.ps {
		end := min(off+f.ps, len(orig))
		if end > len(cur) || !bytes.Equal(cur[off:end], orig[off:end]) {
			page := orig[off:end]
			at := int64(off)
			f.call("rollback write", func() error { return f.h.writeDB(at, page) })
		}
	}
	f.h.files.setSize(capture.DBFile, int64(len(orig)))
}

func (f *fuzzer) endJournal(mode int) {
	switch mode {
	case modeDelete:
		f.call("remove journal", f.h.removeJournal)
	case modeTruncate:
		f.call("truncate journal", func() error { return f.h.truncateJournal(0) })
	case modePersist:
		f.call("zero journal header", func() error { return f.h.writeJournal(0, make([]byte, 28)) })
	}
}

// opUnjournaled writes pages with neither journal nor WAL (journal_mode OFF)
// and closes the database.
func (f *fuzzer) opUnjournaled() {
	m := f.model()
	if m.ps == 0 {
		m.ps = f.ps
	}
	size := m.pages()
	view := make([][]byte, 0, size)
	for p := 1; p <= size; p++ {
		view = append(view, bytes.Clone(m.page(p)))
	}
	warned := f.h.instWarns
	f.unjournaled = true
	for k := f.r.n(3); k >= 0; k-- {
		p := uint32(1 + f.r.n(min(size+1, fuzzMaxPages)))
		if int(p) > size || size == 0 {
			// Grow by one page: page 1 carries the new size.
			size++
			p = uint32(size)
			data := f.content(p, view, size, false)
			view = append(view, data)
			f.call("unjournaled write", func() error { return f.h.writeDB(int64(p-1)*int64(f.ps), data) })
			if p == 1 {
				continue
			}
			p = 1
		}
		data := f.content(p, view, size, false)
		view[p-1] = data
		f.call("unjournaled write", func() error { return f.h.writeDB(int64(p-1)*int64(f.ps), data) })
	}
	f.unjournaled = false
	f.call("closed", f.h.db.Closed)
	if f.h.instWarns != 1 || warned > 1 {
		f.fatalf("%d journal-mode warnings from this DB, want 1", f.h.instWarns)
	}
}

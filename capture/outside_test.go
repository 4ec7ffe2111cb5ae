package capture_test

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/superfly/ltx"
	"github.com/walsync/walsync/capture"
)

// Config.Outside: the front end reads the files now and then (the watch
// sidecar) and sees neither SQLite's writes nor its checkpoints. Between two
// looks SQLite may have checkpointed, restarted the WAL, truncated it.

// setupOutside is setupWAL with a DB that reads from outside.
func setupOutside(t *testing.T) (*harness, *sqliteWAL) {
	h, s := setupWAL(t, 1024, false, 3)
	h.deferWAL, h.outside = true, true
	h.mustOpen(h.db.Pos())
	return h, s
}

// rawCheckpoint copies every committed WAL page into the database file as
// SQLite's checkpoint does, unseen by the DB.
func rawCheckpoint(h *harness) {
	h.t.Helper()
	m := h.mustModel()
	for pgno, data := range m.walPages {
		h.files.put(capture.DBFile, int64(pgno-1)*int64(m.ps), data)
	}
	if m.walCommit != 0 {
		h.files.setSize(capture.DBFile, int64(m.walCommit)*int64(m.ps))
	}
}

// restart starts a new WAL generation as SQLite does after a checkpoint:
// salt-1 plus one (or the salts given), a new header, frames from the start.
// The file keeps its size.
func (s *sqliteWAL) restart(salts ...uint32) {
	w := &walWriter{ps: s.w.ps, bigEndian: s.w.bigEndian, salt1: s.w.salt1 + 1, salt2: s.w.salt2*7 + 3}
	if len(salts) == 2 {
		w.salt1, w.salt2 = salts[0], salts[1]
	}
	s.w, s.next = w, 1
	s.h.files.put(capture.WALFile, 0, w.header())
}

func (s *sqliteWAL) commitPage(pgno uint32, seed uint64) {
	s.rawCommit(3, framePage{pgno, fillPage(1024, pgno, 1000+seed)}) // never a page setupWAL wrote
}

func (h *harness) sync() []txRecord {
	h.t.Helper()
	got := h.ntx(func() { h.must(h.db.SyncWAL()) })
	h.check("after a look")
	return got
}

func wantIncrements(t *testing.T, got []txRecord, n int) {
	t.Helper()
	if len(got) != n {
		t.Fatalf("captured %d transactions, want %d one by one: %+v", len(got), n, got)
	}
	for _, tx := range got {
		if tx.Full {
			t.Fatalf("transaction %d shipped the database whole; want each commit on its own: %+v", tx.TXID, got)
		}
	}
}

func wantWhole(t *testing.T, got []txRecord) {
	t.Helper()
	if len(got) == 0 || !got[len(got)-1].Full {
		t.Fatalf("captured %+v; want the database whole (continuity cannot be proven)", got)
	}
}

// TestOutsideRestartFollowed: a restart after every commit was read, or
// with commits not read yet still in the file, is followed commit by commit
// when nothing the old generation committed can be missing.
func TestOutsideRestartFollowed(t *testing.T) {
	t.Run("all read, old generation at the end of the file", func(t *testing.T) {
		h, s := setupOutside(t)
		s.commitPage(2, 1)
		s.commitPage(3, 2)
		wantIncrements(t, h.sync(), 2)
		rawCheckpoint(h)
		s.restart()
		s.commitPage(2, 3)
		wantIncrements(t, h.sync(), 1)
	})
	t.Run("commits not read yet, still in the file", func(t *testing.T) {
		h, s := setupOutside(t)
		s.commitPage(2, 1)
		wantIncrements(t, h.sync(), 1)
		s.commitPage(3, 2) // frames 2 and 3: not read before the restart
		s.commitPage(2, 3)
		rawCheckpoint(h)
		s.restart()
		s.commitPage(3, 4) // frame 1 of the new generation
		wantIncrements(t, h.sync(), 3)
	})
	t.Run("old generation followed by an older one's frames", func(t *testing.T) {
		h, s := setupOutside(t)
		for i := range 5 {
			s.commitPage(2, uint64(10+i))
		}
		wantIncrements(t, h.sync(), 5)
		rawCheckpoint(h)
		s.restart()
		s.commitPage(3, 20)
		s.commitPage(3, 21)
		wantIncrements(t, h.sync(), 2)
		s.commitPage(2, 22) // frame 3, then frame 4 is the first generation's
		rawCheckpoint(h)
		s.restart()
		s.commitPage(2, 23)
		wantIncrements(t, h.sync(), 2)
	})
}

// TestOutsideRestartWhileLooking: SQLite checkpoints and restarts the WAL
// in the middle of a look, before any one of its reads: the look never
// adopts the new generation without FollowRestart's proof (commits of the
// old one not read yet would be lost under the increments that follow).
// Every transaction shipped is a state SQLite committed, and the next look
// reaches the database.
func TestOutsideRestartWhileLooking(t *testing.T) {
	last := 0 // the last read of a look: the next run's restart comes too late
	for at := 1; last == 0; at++ {
		t.Run(fmt.Sprintf("before read %d", at), func(t *testing.T) {
			h, s := setupOutside(t)
			committed := map[ltx.Checksum]bool{}
			commit := func(pgno uint32, seed uint64) {
				s.commitPage(pgno, seed)
				committed[h.mustModel().checksum()] = true
			}
			commit(2, 1)
			commit(3, 2)
			wantIncrements(t, h.sync(), 2)
			commit(2, 3) // not read before the restart
			commit(3, 4)
			reads, fired := 0, false
			h.files.beforeRead = func(k capture.Kind, off int64) {
				if reads++; reads < at {
					return
				}
				h.files.beforeRead, fired = nil, true
				rawCheckpoint(h)
				s.restart()
				commit(2, 5) // over the old generation's first frame
			}
			got := h.ntx(func() { h.must(h.db.SyncWAL()) })
			if !fired {
				last = at - 1
				return
			}
			got = append(got, h.sync()...)
			for _, tx := range got {
				if !committed[tx.PostChecksum] {
					t.Fatalf("transaction %d (%+v) is not a state SQLite committed", tx.TXID, tx)
				}
			}
		})
	}
	if last < 3 { // the header, the last frame read, the frames after it
		t.Fatalf("a look made %d reads: the test did not restart the WAL between them", last)
	}
}

// setupTwoPasses leaves a DB whose next look establishes the state in two
// passes: a restart it cannot prove (new salts), then two commits after
// the captured position, both in the WAL.
func setupTwoPasses(t *testing.T) (*harness, *sqliteWAL) {
	t.Helper()
	h, s := setupOutside(t)
	s.commitPage(2, 1)
	wantIncrements(t, h.sync(), 1)
	rawCheckpoint(h)
	s.restart(0x5eed0001, 0x5eed0002) // new salts: not provable, established
	s.commitPage(2, 2)
	s.commitPage(3, 3)
	return h, s
}

// TestOutsideCheckpointBetweenPasses: establishing the state replays the
// database file and the WAL twice (first to find the captured position,
// then to capture what follows it). A checkpoint may copy frames into the
// database file between the two passes, as the read slot walsync holds lets
// it: the second pass must not capture increments over that mixture (a
// page the checkpoint copied would look unchanged and never ship).
func TestOutsideCheckpointBetweenPasses(t *testing.T) {
	h, _ := setupTwoPasses(t)
	ps := int64(h.mustModel().ps)
	reads := 0
	h.files.beforeRead = func(k capture.Kind, off int64) {
		if k != capture.DBFile || off != ps {
			return
		}
		if reads++; reads == 2 { // page 2, read again by the second pass
			h.files.beforeRead = nil
			rawCheckpoint(h) // copies page 2 of the new generation
		}
	}
	h.sync()
	if reads < 2 {
		t.Fatalf("page 2 of the database file was read %d times: the test did not run a checkpoint between two passes", reads)
	}
}

// TestOutsideRestartBetweenPasses: the WAL is checkpointed whole and
// restarted between the two passes of establish, so the second pass finds
// none of the commits after the position the first pass matched. Those
// commits are in the database file now: it must not take the position as
// matched and capture nothing (they would never ship, and the next
// increment would go over a state the replica lacks); it establishes again
// and ships them (whole: they cannot be told apart any more).
func TestOutsideRestartBetweenPasses(t *testing.T) {
	h, s := setupTwoPasses(t)
	headers, restarted := 0, false
	h.files.beforeRead = func(k capture.Kind, off int64) {
		if k != capture.WALFile || off != 0 {
			return
		}
		// Reads of the WAL header: the look's, establish's, its first
		// pass's; then the second pass's.
		if headers++; headers == 4 {
			h.files.beforeRead = nil
			rawCheckpoint(h)
			s.restart()
			restarted = true
		}
	}
	got := h.sync()
	if !restarted {
		t.Fatalf("the WAL header was read %d times: the test did not restart the WAL between two passes", headers)
	}
	wantWhole(t, got)
}

// TestOutsideRestartNotProven: whatever may hide a commit of the old
// generation makes the DB establish the state again from the files: the
// database ships whole when it differs from the last captured position,
// never a wrong increment; and nothing ships when it is the same.
func TestOutsideRestartNotProven(t *testing.T) {
	t.Run("the new generation overwrote a commit not read", func(t *testing.T) {
		h, s := setupOutside(t)
		s.commitPage(2, 1)
		wantIncrements(t, h.sync(), 1)
		s.commitPage(3, 2) // frame 2: never read
		rawCheckpoint(h)
		s.restart()
		s.commitPage(2, 3)
		s.commitPage(2, 4) // frame 2 again, the new generation's
		wantWhole(t, h.sync())
	})
	t.Run("two restarts", func(t *testing.T) {
		h, s := setupOutside(t)
		for i := range 3 {
			s.commitPage(2, uint64(1+i))
		}
		wantIncrements(t, h.sync(), 3)
		rawCheckpoint(h)
		s.restart()
		s.commitPage(3, 5) // the whole second generation: never read
		rawCheckpoint(h)
		s.restart()
		s.commitPage(2, 6)
		wantWhole(t, h.sync())
	})
	t.Run("new salts drawn at random", func(t *testing.T) {
		h, s := setupOutside(t)
		s.commitPage(2, 1)
		wantIncrements(t, h.sync(), 1)
		s.commitPage(3, 2)
		rawCheckpoint(h)
		s.restart(0x5eed0001, 0x5eed0002)
		s.commitPage(2, 3)
		wantWhole(t, h.sync())
	})
	t.Run("truncated and written again", func(t *testing.T) {
		h, s := setupOutside(t)
		s.commitPage(2, 1)
		s.commitPage(3, 2)
		wantIncrements(t, h.sync(), 2)
		s.commitPage(2, 3) // frame 3: never read
		rawCheckpoint(h)
		h.files.setSize(capture.WALFile, 0) // wal_checkpoint(TRUNCATE)
		s.restart()
		s.commitPage(3, 4)
		wantWhole(t, h.sync())
	})
	t.Run("truncated and regrown to the frames read", func(t *testing.T) {
		h, s := setupOutside(t)
		s.commitPage(2, 1)
		s.commitPage(3, 2)
		wantIncrements(t, h.sync(), 2)
		s.commitPage(2, 3)
		rawCheckpoint(h)
		h.files.setSize(capture.WALFile, 0)
		s.restart()
		s.commitPage(3, 4)
		s.commitPage(2, 5) // the file ends where the last look's frames did
		wantWhole(t, h.sync())
	})
	t.Run("frame cut short at the end", func(t *testing.T) {
		h, s := setupOutside(t)
		s.commitPage(2, 1)
		s.commitPage(3, 2)
		wantIncrements(t, h.sync(), 2)
		s.commitPage(3, 3)
		s.commitPage(2, 4)
		rawCheckpoint(h)
		s.restart()
		h.files.setSize(capture.WALFile, s.w.frameOff(3)+100) // journal_size_limit inside frame 3
		s.commitPage(3, 5)
		wantWhole(t, h.sync())
	})
	t.Run("nothing missed: proven by the database's checksum", func(t *testing.T) {
		h, s := setupOutside(t)
		s.commitPage(2, 1)
		wantIncrements(t, h.sync(), 1)
		rawCheckpoint(h)
		s.restart(0x5eed0001, 0x5eed0002)
		s.commitPage(3, 2)
		wantIncrements(t, h.sync(), 1) // established: the file is at the position, the new commit follows
	})
}

// TestOutsideWALGone: a WAL deleted (the last connection closed after its
// checkpoint) or emptied after commits no look read ships the database
// whole; one whose commits were all read ships nothing. A WAL that appears
// is proven against the database file before it is followed.
func TestOutsideWALGone(t *testing.T) {
	h, s := setupOutside(t)
	s.commitPage(2, 1)
	wantIncrements(t, h.sync(), 1)
	rawCheckpoint(h)
	h.files.remove(capture.WALFile)
	wantIncrements(t, h.sync(), 0)

	s.restart()
	s.commitPage(3, 2)
	wantIncrements(t, h.sync(), 1) // a new WAL: established, then followed
	s.commitPage(2, 3)             // never read
	rawCheckpoint(h)
	h.files.remove(capture.WALFile)
	wantWhole(t, h.sync())

	// A new WAL whose first generation no look read before a restart.
	s.restart()
	s.commitPage(3, 4)
	rawCheckpoint(h)
	s.restart()
	s.commitPage(2, 5)
	wantWhole(t, h.sync())
}

// TestOutsideChangedUnderRead: a page read back to be staged that is not
// what the capture read (a checkpoint wrote the database file in between)
// is refused, nothing is staged, and the next look stages the right state.
func TestOutsideChangedUnderRead(t *testing.T) {
	h, s := setupOutside(t)
	s.commitPage(2, 1)
	wantIncrements(t, h.sync(), 1)
	s.commitPage(3, 2) // never read: the database ships whole
	rawCheckpoint(h)
	h.files.remove(capture.WALFile)
	page := h.mustModel().page(3)
	h.beforeSink = func() {
		h.beforeSink = nil
		h.files.put(capture.DBFile, 2*1024, fillPage(1024, 3, 99)) // the checkpoint of a later commit
	}
	n := len(h.txs)
	if err := h.db.SyncWAL(); !errors.Is(err, capture.ErrChangedUnderRead) || len(h.txs) != n {
		t.Fatalf("SyncWAL = %v with %d transactions staged; want ErrChangedUnderRead and none", err, len(h.txs)-n)
	}
	h.files.put(capture.DBFile, 2*1024, page)
	h.clock += time.Minute
	wantWhole(t, h.sync())
}

// TestOutsideReadLock: the database file is read for a proof or a
// snapshot only under Config.ReadLock, and its failure is returned.
func TestOutsideReadLock(t *testing.T) {
	h, s := setupOutside(t)
	s.commitPage(2, 1)
	locks := h.readLocks
	wantIncrements(t, h.sync(), 1)
	if h.readLocks != locks {
		t.Fatalf("ReadLock called %d times for commits read from the WAL alone", h.readLocks-locks)
	}
	s.commitPage(3, 2)
	rawCheckpoint(h)
	h.files.remove(capture.WALFile)
	h.readLockErr = errBoom
	if err := h.db.SyncWAL(); !errors.Is(err, errBoom) {
		t.Fatalf("SyncWAL with ReadLock failing = %v, want its error", err)
	}
	h.readLockErr = nil
	h.clock += time.Minute // past the failed barrier's backoff
	locks = h.readLocks
	wantWhole(t, h.sync())
	if h.readLocks == locks {
		t.Fatal("the database was read whole without ReadLock")
	}
}

// FuzzOutside drives a DB that reads from outside (Config.Outside) through
// what SQLite does between two of its looks, decoded from the fuzz input:
// commits, transactions abandoned after some frames, checkpoints (partial
// or whole), WAL restarts (salt-1 plus one, or new salts), wal_checkpoint
// (TRUNCATE), journal_size_limit cutting the file after a restart, the last
// connection closing (WAL deleted); and a look (SyncWAL) now and then.
// After every look the replica must be the database SQLite would see
// (the reference model): a restart is followed, or the state established
// from the files, never a wrong increment.
func FuzzOutside(f *testing.F) {
	for i := range 12 {
		f.Add(randomInput(uint64(7000+i), byte(i%2), 300)) // odd: two processes
	}
	f.Fuzz(func(t *testing.T, in []byte) { runOutside(t, in) })
}

// TestOutsideRandomSequences runs FuzzOutside's driver over pseudo-random
// inputs in a plain go test.
func TestOutsideRandomSequences(t *testing.T) {
	n := 150
	if testing.Short() {
		n = 40
	}
	for i := range n {
		in := randomInput(uint64(9000+i), byte(i/4%2), 200+(i%4)*100) // odd first byte: two processes
		t.Run("", func(t *testing.T) { runOutside(t, in) })
	}
}

func runOutside(t *testing.T, in []byte) {
	const ps, pages = 1024, 6
	r := &fuzzReader{b: in}
	files := &memFiles{}
	files.put(capture.DBFile, 0, newDB(ps, true, pages, 1))
	h := newHarness(t, files)
	h.deferWAL, h.outside = true, true
	h.mustOpen(capture.Pos{})
	b0 := r.byte()
	s := &sqliteWAL{h: h, w: &walWriter{ps: ps, salt1: 0x10000000 + uint32(b0), salt2: 0x2222abcd}}
	var ops []string
	h.context = func() string { return "ops " + joinOps(ops) }
	// An odd first byte: two processes capture the database (the VFS in
	// two processes), and each look is made by one of them, as the input
	// says. Whichever looks, the replica must be the database.
	var procs []*capture.DB
	if b0&1 == 1 {
		procs = []*capture.DB{h.db, h.share()}
	}
	k := 0 // the process looking
	pick := func() string {
		if procs == nil {
			return ""
		}
		k = r.n(2)
		h.db = procs[k]
		return fmt.Sprintf("@%c", 'a'+k)
	}
	// atHead makes h.db the process that captured last, for the checks (the
	// other adopts its position at its next capture).
	atHead := func() {
		for _, d := range procs {
			if d.Pos() == h.shared.head.Pos {
				h.db = d
			}
		}
	}
	seed := uint64(1000)
	// begin positions the next frames after the last commit, as SQLite
	// does (frames of an abandoned transaction are written over).
	begin := func() {
		m := h.mustModel()
		if !m.walValid {
			s.w.cksum = [2]uint32{}
			files.put(capture.WALFile, 0, s.w.header())
			m = h.mustModel()
		}
		s.next = int((m.walEnd-walHdrSize)/s.w.fsz()) + 1
		s.w.cksum = m.walCksum
	}
	fullyCheckpointed := false
	// committed: the states SQLite committed, by checksum; every
	// transaction shipped must be one of them.
	committed := map[ltx.Checksum]bool{h.mustModel().checksum(): true}
	// history: the states SQLite committed, in order. Transactions ship
	// states in that order (a resync ships the latest again): never one
	// older than the last shipped, as a second read of frames already
	// captured would.
	history := []ltx.Checksum{h.mustModel().checksum()}
	at, shipped := 0, len(h.txs)
	inOrder := func() {
		for _, tx := range h.txs[shipped:] {
			i := at
			for i < len(history) && history[i] != tx.PostChecksum {
				i++
			}
			if i == len(history) {
				h.fatalf("transaction %d is no state SQLite committed since the last one shipped", tx.TXID)
			}
			at = i
		}
		shipped = len(h.txs)
	}
	noteCommit := func() {
		committed[h.mustModel().checksum()] = true
		history = append(history, h.mustModel().checksum())
	}
	// look is the sidecar's scan: with no WAL to read, a database file
	// changed since the last look (its WAL came and went in between) is
	// established again, as the front end does (see Config.Outside).
	lastDB := files.get(capture.DBFile)
	look := func(what string) {
		ops = append(ops, what+pick())
		if db := files.get(capture.DBFile); !h.mustModel().walValid && !bytes.Equal(db, lastDB) {
			ops = append(ops, "db-changed")
			if procs != nil {
				h.mustOpen(h.shared.head.Pos)
				procs[k] = h.db
			} else {
				h.mustOpen(h.db.Pos())
			}
		}
		h.must(h.db.SyncWAL())
		inOrder()
		atHead()
		h.check(what)
		lastDB = files.get(capture.DBFile)
	}
	// fresh draws a salt-1 as SQLite does for a WAL no connection
	// restarted yet (a new -wal): random, so it is never, but by a chance of
	// 2^-32, another generation's plus one (FollowRestart's premise). Drawn
	// from the input, a salt-1 like an earlier one's would let the fuzzer
	// break the premise, not the code.
	nfresh := uint32(0)
	fresh := func() uint32 {
		nfresh++
		return 0x80000000 | nfresh<<20 | uint32(r.byte())
	}
	// act runs one of SQLite's operations (op <= 10); false: none ran.
	act := func(op int) bool {
		switch {
		case op <= 3:
			ops = append(ops, "commit")
			begin()
			var fp []framePage
			for range 1 + r.n(3) {
				seed++
				pgno := uint32(2 + r.n(pages-1))
				fp = append(fp, framePage{pgno, fillPage(ps, pgno, seed)})
			}
			s.rawCommit(pages, fp...)
			fullyCheckpointed = false
			noteCommit()
		case op == 4:
			ops = append(ops, "abandon")
			begin()
			seed++
			s.rawCommit(0, framePage{uint32(2 + r.n(pages-1)), fillPage(ps, 2, seed)})
		case op == 5:
			ops = append(ops, "checkpoint")
			if r.n(2) == 0 {
				rawCheckpoint(h)
				fullyCheckpointed = true
			} else if m := h.mustModel(); len(m.walPages) > 0 {
				for pgno, data := range m.walPages { // some of them: a checkpoint interrupted
					files.put(capture.DBFile, int64(pgno-1)*ps, data)
					break
				}
			}
		case op == 6 || op == 7:
			if !fullyCheckpointed {
				return false // SQLite restarts a WAL only once a checkpoint copied all of it
			}
			ops = append(ops, "restart")
			w := &walWriter{ps: ps, salt1: s.w.salt1 + 1, salt2: s.w.salt2*7 + uint32(r.byte())}
			if r.n(8) == 0 {
				ops[len(ops)-1] = "restart-new-salts"
				w.salt1 = fresh()
			}
			s.w, s.next = w, 1
			files.put(capture.WALFile, 0, w.header())
			fullyCheckpointed = false
			if r.n(4) == 0 {
				// journal_size_limit, at the first commit of the new
				// generation: the file cut inside a frame (a cut at the end
				// of a frame is the one case the proof cannot tell; see
				// FollowRestart).
				begin()
				seed++
				s.rawCommit(pages, framePage{2, fillPage(ps, 2, seed)})
				noteCommit()
				ops = append(ops, "limit")
				cut := s.w.frameOff(s.next) + int64(1+r.n(int(s.w.fsz())-1)) + int64(r.n(3))*s.w.fsz()
				if files.Size(capture.WALFile) > cut {
					files.setSize(capture.WALFile, cut)
				}
			}
		case op == 8:
			ops = append(ops, "truncate")
			rawCheckpoint(h)
			files.setSize(capture.WALFile, 0)
			s.w = &walWriter{ps: ps, salt1: s.w.salt1 + 1, salt2: s.w.salt2*5 + 1}
			fullyCheckpointed = false
		case op == 9:
			ops = append(ops, "close")
			rawCheckpoint(h)
			files.remove(capture.WALFile)
			s.w = &walWriter{ps: ps, salt1: fresh(), salt2: s.w.salt2*3 + 1}
			fullyCheckpointed = false
		case op == 10:
			// What a writer does at a checkpoint's end: the whole WAL
			// copied, the next transaction restarts it and commits.
			ops = append(ops, "checkpoint-restart-commit")
			rawCheckpoint(h)
			w := &walWriter{ps: ps, salt1: s.w.salt1 + 1, salt2: s.w.salt2*7 + uint32(r.byte())}
			s.w, s.next = w, 1
			files.put(capture.WALFile, 0, w.header())
			begin()
			seed++
			s.rawCommit(pages, framePage{uint32(2 + r.n(pages-1)), fillPage(ps, 2, seed)})
			fullyCheckpointed = false
			noteCommit()
		default:
			return false
		}
		return true
	}
	for step := 0; r.more() && step < 60; step++ {
		switch op := r.n(13); {
		case op < 10:
			act(op)
		case op == 10:
			// SQLite acts between two reads of a look (the look goes on
			// with what it reads): what ships is still only states SQLite
			// committed, and the next look reaches the database.
			at, what := 1+r.n(6), r.n(11)
			reads := 0
			files.beforeRead = func(k capture.Kind, off int64) {
				if reads++; reads == at {
					files.beforeRead = nil
					ops = append(ops, fmt.Sprintf("during read %d:", at))
					act(what)
				}
			}
			ops = append(ops, "look"+pick())
			// It may fail (a file gone under a read): the front end tries
			// again at its next look.
			got := h.ntx(func() { _ = h.db.SyncWAL() })
			files.beforeRead = nil
			for _, tx := range got {
				if !committed[tx.PostChecksum] {
					h.fatalf("transaction %d is not a state SQLite committed", tx.TXID)
				}
			}
			inOrder()
			look("look after")
		default:
			look("look")
		}
	}
	look("last look")
}

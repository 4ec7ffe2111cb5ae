package integration

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/walsync/walsync/internal/s3test"
)

// The torture suite (`make torture`): walsync is killed with SIGKILL at
// random moments while several processes (Python's sqlite3 module and the
// sqlite3 shell) commit and roll back transactions in every journal mode,
// and while the S3 replica behind a fault-injecting proxy answers 503s,
// drops connections, stalls or is down. Each writer appends a transaction's
// (writer, seq) to its own log only after COMMIT returned success; at the
// end every logged transaction must be in the restores (walsync's and
// Litestream's, from the S3 server itself), no rolled-back row may be, and
// the restores must equal the source databases.
//
// WALSYNC_TORTURE_CYCLES (or -torture.cycles) sets the number of kill
// cycles; unset, a short run of tortureShortCycles cycles is part of
// `make test`. WALSYNC_TORTURE_SEED replays the random choices of a run (the
// timing of processes is not replayable).

var tortureCyclesFlag = flag.Int("torture.cycles", 0, "kill -9 cycles of TestTorture (default: $WALSYNC_TORTURE_CYCLES, else a short run)")

const tortureShortCycles = 5

// tortureDB is one database under torture and its journal mode.
type tortureDB struct{ rel, mode string }

type tortureFigures struct {
	cycles, acked, lost, rolledBack, faults, kills int64
}

// tortureDrained waits until everything staged is uploaded; if it is not
// within a minute, that is a test error naming the last errors walsync logged.
func tortureDrained(t *testing.T, m *mount, when string) bool {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for zeros := 0; zeros < 2; time.Sleep(50 * time.Millisecond) {
		if m.stagedBytes() == 0 {
			zeros++
		} else {
			zeros = 0
		}
		if time.Now().After(deadline) {
			var errs []string
			for _, l := range strings.Split(m.log.String(), "\n") {
				if strings.Contains(l, "level=ERROR") || strings.Contains(l, "level=WARN") {
					errs = append(errs, l)
				}
			}
			t.Errorf("%s: %d bytes still staged after a minute; walsync's last errors:\n%s", when, m.stagedBytes(), strings.Join(errs[max(0, len(errs)-5):], "\n"))
			return false
		}
	}
	return true
}

// tortureSaveLog appends the log of the mount's current walsync run to a file.
func tortureSaveLog(t *testing.T, m *mount, path, header string) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fmt.Fprintf(f, "===== %s =====\n%s", header, m.log)
	if strings.Contains(m.log.String(), "DATA RACE") {
		t.Errorf("data race in walsync (%s); logs in %s", header, path)
	}
}

// tortureKill9 kills walsync with SIGKILL, first checking that it did not
// exit by itself.
func tortureKill9(t *testing.T, m *mount, logPath, header string) {
	t.Helper()
	select {
	case err := <-m.done:
		m.cmd = nil
		tortureSaveLog(t, m, logPath, header+" (exited by itself)")
		t.Fatalf("walsync exited by itself (%v) before the kill of %s; log in %s", err, header, logPath)
	default:
	}
	tortureSaveLog(t, m, logPath, header)
	m.kill9()
}

func tortureCyclesWanted(t *testing.T) int {
	if *tortureCyclesFlag > 0 {
		return *tortureCyclesFlag
	}
	if s := os.Getenv("WALSYNC_TORTURE_CYCLES"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("WALSYNC_TORTURE_CYCLES=%q: want a positive number", s)
		}
		return n
	}
	return tortureShortCycles
}

// TestTorture: see the comment at the top of the file.
func TestTorture(t *testing.T) {
	cycles := tortureCyclesWanted(t)
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("WALSYNC_TORTURE_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("WALSYNC_TORTURE_SEED=%q: %v", s, err)
		}
		seed = v
	}
	t.Logf("torture: seed=%d cycles=%d (WALSYNC_TORTURE_SEED=%d replays the random choices)", seed, cycles, seed)
	fmt.Printf("torture: seed=%d cycles=%d\n", seed, cycles)
	rnd := rand.New(rand.NewPCG(seed, 0x70727475))

	// Logs of every walsync run and the writers' logs, kept if the test fails.
	keep, err := os.MkdirTemp("", "walsync-torture-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("walsync and writer logs kept in %s (seed %d)", keep, seed)
			fmt.Printf("torture: logs kept in %s (seed %d)\n", keep, seed)
		} else {
			os.RemoveAll(keep)
		}
	})
	deadline := time.Now().Add(55 * time.Minute)
	if d, ok := t.Deadline(); ok {
		deadline = d.Add(-90 * time.Second)
	}

	ls := litestream(t)
	srv := s3test.Start(t)
	srv.CreateBucket(t, "torture")
	srv.SetEnv(t)
	fig := &tortureFigures{cycles: int64(cycles)}
	start := time.Now()

	tortureKillCycles(t, srv, ls, rnd, keep, cycles, deadline, fig)
	tortureStagingFull(t, srv, ls, rnd, keep, deadline, fig)

	line := fmt.Sprintf("torture: cycles=%d transactions_acknowledged=%d lost=%d rolled_back_found=%d faults_injected=%d kills=%d",
		fig.cycles, fig.acked, fig.lost, fig.rolledBack, fig.faults, fig.kills)
	t.Logf("%s", line)
	fmt.Println(line)
	t.Logf("torture: seed=%d took %s", seed, time.Since(start).Round(time.Second))
	if fig.lost != 0 || fig.rolledBack != 0 {
		t.Fatalf("torture found %d lost acknowledged transactions and %d rolled-back rows (seed %d)", fig.lost, fig.rolledBack, seed)
	}
}

// tortureKillCycles: writers on four databases (one per journal mode), a
// Python process and a sqlite3 shell loop on each; walsync killed and
// restarted `cycles` times with the proxy in a random mode; then a replica
// outage of several seconds under writes; then the checks.
func tortureKillCycles(t *testing.T, srv *s3test.Server, ls string, rnd *rand.Rand, keep string, cycles int, deadline time.Time, fig *tortureFigures) {
	proxy := startFaultProxy(t, srv.Endpoint)
	m := newS3Mount(t, srv, proxy.endpoint(), "s3://torture/kill", "--retry-max-backoff", "1s")
	logPath := filepath.Join(keep, "walsync-kill.log")
	dbs := []tortureDB{{"wal.db", "WAL"}, {"delete.db", "DELETE"}, {"truncate.db", "TRUNCATE"}, {"persist/persist.db", "PERSIST"}}
	for _, d := range dbs {
		shell(t, m.path(d.rel), "PRAGMA journal_mode="+d.mode+";\n"+tortureSchema+
			"INSERT INTO scratch SELECT value, 'init', randomblob(800) FROM generate_series(1, 200);\n")
	}
	stopFile := filepath.Join(keep, "stop-kill")
	var writers []*tortureWriter
	for _, d := range dbs {
		base := strings.ToLower(d.mode)
		for _, sh := range []bool{false, true} {
			name := "py-" + base
			if sh {
				name = "sh-" + base
			}
			writers = append(writers, &tortureWriter{name: name, shell: sh, db: d, path: filepath.Join(m.mnt, d.rel),
				log: filepath.Join(keep, name+".log"), seed: rnd.Uint64(), profile: "mixed", stopFile: stopFile})
		}
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	stopWriters := func() bool {
		stop.Store(true)
		os.WriteFile(stopFile, nil, 0o644)
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
			return true
		case <-time.After(3 * time.Minute):
			t.Errorf("writers did not stop within 3 minutes (a hung FUSE operation?)")
			return false
		}
	}
	for _, w := range writers {
		wg.Add(1)
		go func() { defer wg.Done(); w.run(&stop, deadline) }()
	}
	t.Cleanup(func() {
		if !stop.Load() {
			stopWriters()
		}
	})

	// Every proxy mode in the first three cycles, then random ones.
	modes := []string{"", "chaos", "down"}
	rnd.Shuffle(len(modes), func(i, j int) { modes[i], modes[j] = modes[j], modes[i] })
	time.Sleep(time.Second)
	ackedBefore := tortureAckedTotal(t, writers)
	stalls := 0
	for c := 1; c <= cycles; c++ {
		if time.Now().After(deadline) {
			t.Errorf("the test deadline came after %d of %d cycles", c-1, cycles)
			fig.cycles = int64(c - 1)
			break
		}
		mode := modes[(c-1)%3]
		if c > 3 {
			mode = []string{"", "", "chaos", "chaos", "down"}[rnd.IntN(5)]
		}
		proxy.mode.Store(mode)
		run := time.Duration(300+rnd.IntN(2200)) * time.Millisecond
		if rnd.IntN(7) == 0 {
			run = time.Duration(30+rnd.IntN(250)) * time.Millisecond // while it starts up and catches up
		}
		time.Sleep(run)
		tortureKill9(t, m, logPath, fmt.Sprintf("cycle %d: proxy %q, killed after %s", c, mode, run))
		fig.kills++
		time.Sleep(time.Duration(rnd.IntN(400)) * time.Millisecond) // writers meet a dead mount
		m.start()
		if c%10 == 0 || c == cycles {
			acked := tortureAckedTotal(t, writers)
			if acked <= ackedBefore {
				stalls++
				t.Errorf("cycle %d: no transaction acknowledged in the last 10 cycles", c)
			}
			t.Logf("cycle %d/%d: %d transactions acknowledged, proxy faults %d", c, cycles, acked, proxy.faults.Load())
			ackedBefore = acked
		}
	}

	// The replica disappears for several seconds while the writers write,
	// then comes back: walsync catches up by itself.
	proxy.mode.Store("")
	time.Sleep(time.Second)
	logMark := len(m.log.String())
	proxy.mode.Store("down")
	outageEnd := time.Now().Add(8 * time.Second)
	var stagedInOutage int64
	for time.Now().Before(outageEnd) {
		stagedInOutage = max(stagedInOutage, m.stagedBytes())
		time.Sleep(200 * time.Millisecond)
	}
	proxy.mode.Store("")
	recovered := false
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		if strings.Contains(m.log.String()[logMark:], "upload recovered") {
			recovered = true
			break
		}
	}
	afterOutage := m.log.String()[logMark:]
	if !strings.Contains(afterOutage, "upload failed") || !recovered || stagedInOutage == 0 {
		t.Errorf("replica outage: failures logged %v, recovery logged %v, staged bytes during the outage %d",
			strings.Contains(afterOutage, "upload failed"), recovered, stagedInOutage)
	}
	time.Sleep(2 * time.Second) // writes after the outage
	ackedAfterRestart := tortureAckedTotal(t, writers)

	if !stopWriters() {
		tortureSaveLog(t, m, logPath, "writers hung")
		t.Fatalf("writers hung; walsync logs in %s", logPath)
	}
	for _, w := range writers {
		t.Log(w.summary())
		if w.commits == 0 || w.hung > 0 || w.crashes > 0 {
			t.Errorf("writer %s: %d commits, %d hung shell invocations, %d crashed processes", w.name, w.commits, w.hung, w.crashes)
		}
		if n := w.malformed(); n > 0 {
			// Seen only by a writer whose mount was killed under it (see
			// tortureWriter.malformed); the integrity checks below decide.
			t.Logf("writer %s: SQLite reported the database malformed %d times (times in %s.errors, walsync's kills in %s)",
				w.name, n, w.log, logPath)
		}
	}
	if ackedAfterRestart <= ackedBefore || stalls > 0 {
		t.Errorf("the writers made no progress after the restarts (acknowledged %d, then %d)", ackedBefore, ackedAfterRestart)
	}
	fig.acked += tortureAckedTotal(t, writers)
	lostTx, rolledBack, _ := tortureVerify(t, srv, ls, m, "kill", dbs, writers)
	fig.lost += lostTx
	fig.rolledBack += rolledBack
	m.stop()
	tortureSaveLog(t, m, logPath, "last run, stopped")
	fig.faults += proxy.faults.Load()
	if proxy.faults.Load() == 0 {
		t.Error("the proxy injected no fault")
	}
}

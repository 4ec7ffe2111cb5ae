package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The writer processes of the torture suite and what they acknowledged.

const tortureSchema = `CREATE TABLE t(id INTEGER PRIMARY KEY, writer TEXT NOT NULL, seq INTEGER NOT NULL, part INTEGER NOT NULL, v TEXT, b BLOB, UNIQUE(writer, seq, part));
CREATE TABLE scratch(id INTEGER PRIMARY KEY, v TEXT, b BLOB);
`

// tortureWriterPy is one writer process. Its argument is a JSON object; it
// prints its figures as JSON on its last line. A transaction's "seq n" is
// appended to the log only after COMMIT returned; a failure closes the
// connection and reconnects after a short sleep.
const tortureWriterPy = `
import json, os, random, sqlite3, sys, time
a = json.loads(sys.argv[1])
rnd = random.Random(a['seed'])
MARK = 'ROLLED-BACK'
W = a['writer']
seq = a['seq0']
st = {'commits': 0, 'failures': 0, 'rollbacks': 0, 'connects': 0, 'errors': {}}
log = open(a['log'], 'a')
errlog = open(a['log'] + '.errors', 'a')
conn = None

def insert(c, n, size, v, first=0):
    c.executemany('INSERT INTO t(writer, seq, part, v, b) VALUES(?, ?, ?, ?, randomblob(?))',
                  [(W, seq, first + i, v, size) for i in range(n)])

def drop():
    global conn
    if conn is not None:
        try:
            conn.close()
        except Exception:
            pass
    conn = None

while time.time() < a['deadline'] and not os.path.exists(a['stop']):
    if a['max_tx'] and st['commits'] + st['failures'] >= a['max_tx']:
        break
    if a['max_fail'] and st['failures'] >= a['max_fail']:
        break
    seq += 1
    try:
        if conn is None:
            conn = sqlite3.connect('file:%s?mode=rw' % a['path'], uri=True, timeout=10, isolation_level=None)
            st['connects'] += 1
            conn.execute('PRAGMA journal_mode=%s' % a['mode']).fetchall()
            conn.execute('PRAGMA synchronous=%s' % rnd.choice(['NORMAL', 'FULL']))
            conn.execute('PRAGMA cache_size=%d' % rnd.choice([2, 20, -2000]))
        r = rnd.random()
        if a['profile'] == 'fill':
            # Many pages per transaction; the database does not grow.
            n = 1
            conn.execute('BEGIN IMMEDIATE')
            insert(conn, n, 200, 'row')
            conn.execute('UPDATE scratch SET v = ?, b = randomblob(800) WHERE id % 2 = ?', ('%s-%d' % (W, seq), seq % 2))
            if r < 0.2:
                conn.execute('SAVEPOINT s')
                insert(conn, 3, 100, MARK, 1000)
                conn.execute('ROLLBACK TO s')
                conn.execute('RELEASE s')
            conn.execute('COMMIT')
        elif a['profile'] == 'small':
            # One row: fills the last bytes of a filesystem.
            n = 1
            conn.execute('BEGIN IMMEDIATE')
            insert(conn, n, 50, 'row')
            conn.execute('COMMIT')
        elif r < 0.15:
            # A rollback whose pages spill to the database file or WAL first.
            conn.execute('PRAGMA cache_size=2')
            conn.execute('BEGIN IMMEDIATE')
            insert(conn, rnd.randint(100, 300), 1000, MARK)
            conn.execute('UPDATE scratch SET v = ?, b = randomblob(700) WHERE id % 3 = ?', (MARK, rnd.randrange(3)))
            conn.execute('ROLLBACK')
            conn.execute('PRAGMA cache_size=%d' % rnd.choice([2, 20, -2000]))
            st['rollbacks'] += 1
            time.sleep(rnd.random() * 0.01)
            continue
        else:
            big = r > 0.92
            n = rnd.randint(20, 120) if big else rnd.randint(1, 3)
            conn.execute('BEGIN IMMEDIATE')
            insert(conn, n, rnd.randint(400, 900) if big else rnd.randint(20, 300), 'row')
            if big:
                conn.execute('UPDATE scratch SET v = ?, b = randomblob(800) WHERE id % 4 = ?', ('%s-%d' % (W, seq), rnd.randrange(4)))
            conn.execute('COMMIT')
        log.write('%d %d\n' % (seq, n))
        log.flush()
        st['commits'] += 1
        time.sleep(rnd.random() * 0.01)
    except Exception as e:
        st['failures'] += 1
        msg = ('%s: %s' % (type(e).__name__, e))[:200]
        st['errors'][msg] = st['errors'].get(msg, 0) + 1
        errlog.write('%.6f seq %d: %s\n' % (time.time(), seq, msg.replace('\n', ' ')))
        errlog.flush()
        drop()
        time.sleep(0.05 + rnd.random() * 0.2)
drop()
log.close()
print(json.dumps(st))
`

// tortureWriter is one writer: a supervised Python process (started again
// if it dies) or a loop of sqlite3 shell invocations.
type tortureWriter struct {
	name  string
	shell bool // the sqlite3 shell; else Python
	db    tortureDB
	path  string // the database through the mount
	log   string // "seq n" per acknowledged transaction
	seed  uint64

	// Python only.
	profile        string // "mixed", "fill" (many pages per transaction) or "small" (one row)
	maxFail, maxTx int    // 0: unbounded
	stopFile       string

	mu                                     sync.Mutex
	gens                                   int // Python processes started: each has its own range of seq
	commits, failures, rollbacks, connects int64
	crashes, hung                          int64
	sigbus                                 int64 // killed by SIGBUS on the -shm mapping of a dead mount
	errors                                 map[string]int64
}

func (w *tortureWriter) addError(msg string, n int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.errors == nil {
		w.errors = map[string]int64{}
	}
	if len(msg) > 200 {
		msg = msg[:200]
	}
	w.errors[msg] += n
}

// malformed counts the errors in which SQLite reported the database
// corrupt. A writer whose mount is killed under it can see one: on the dead
// mount, pages still in its page cache read back, and a read past the end
// of the file the kernel last knew returns nothing, which SQLite takes for
// a page of zeros. It cannot write anything there; the integrity checks of
// the sources and restores decide. Each error is logged with its time in
// the writer's .errors file, to match against the kills in walsync's log.
func (w *tortureWriter) malformed() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	var n int64
	for msg, c := range w.errors {
		if strings.Contains(msg, "malformed") {
			n += c
		}
	}
	return n
}

func (w *tortureWriter) summary() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var errs []string
	for msg, n := range w.errors {
		errs = append(errs, fmt.Sprintf("%dx %q", n, msg))
	}
	sort.Strings(errs)
	return fmt.Sprintf("%s (%s, %s): commits=%d failures=%d rollbacks=%d connects=%d crashes=%d sigbus=%d hung=%d errors=[%s]",
		w.name, w.db.rel, w.db.mode, w.commits, w.failures, w.rollbacks, w.connects, w.crashes, w.sigbus, w.hung, strings.Join(errs, "; "))
}

// run writes until stop is set or the deadline passes (Python: also until
// maxTx transactions or maxFail failures).
func (w *tortureWriter) run(stop *atomic.Bool, deadline time.Time) {
	if w.shell {
		w.runShell(stop, deadline)
		return
	}
	// A Python process that dies (a signal, e.g. SIGBUS on the -shm of a
	// killed mount) is started again with a fresh range of seq.
	for i := 0; i < 1000 && !stop.Load() && time.Now().Before(deadline); i++ {
		w.mu.Lock()
		gen := w.gens
		w.gens++
		w.mu.Unlock()
		args, _ := json.Marshal(map[string]any{
			"path": w.path, "writer": w.name, "log": w.log, "mode": w.db.mode, "seed": w.seed + uint64(gen),
			"seq0": gen * 100_000_000, "stop": w.stopFile, "deadline": float64(deadline.UnixNano()) / 1e9,
			"profile": w.profile, "max_fail": w.maxFail, "max_tx": w.maxTx,
		})
		cmd := exec.Command(python, "-c", tortureWriterPy, string(args))
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		var st struct {
			Commits, Failures, Rollbacks, Connects int64
			Errors                                 map[string]int64
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if jerr := json.Unmarshal([]byte(lines[len(lines)-1]), &st); jerr == nil {
			w.mu.Lock()
			w.commits += st.Commits
			w.failures += st.Failures
			w.rollbacks += st.Rollbacks
			w.connects += st.Connects
			w.mu.Unlock()
			for msg, n := range st.Errors {
				w.addError(msg, n)
			}
		}
		if err == nil {
			return // stopped, deadline, or its bounds reached
		}
		// SIGBUS: the process touched its mapping of a WAL database's -shm
		// after walsync, which serves that file, was killed. Any FUSE
		// filesystem that dies does this to mapped files (README,
		// trade-offs); the supervisor starts the writer again. Any other
		// death is a failure.
		var ee *exec.ExitError
		sigbus := errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signal() == syscall.SIGBUS
		w.mu.Lock()
		if sigbus {
			w.sigbus++
		} else {
			w.crashes++
		}
		w.mu.Unlock()
		w.addError(fmt.Sprintf("python exited: %v %s", err, lastLine(stderr.String())), 1)
		time.Sleep(100 * time.Millisecond)
	}
}

func (w *tortureWriter) runShell(stop *atomic.Bool, deadline time.Time) {
	rnd := rand.New(rand.NewPCG(w.seed, 1))
	logf, err := os.OpenFile(w.log, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		w.addError(err.Error(), 1)
		return
	}
	defer logf.Close()
	errf, err := os.OpenFile(w.log+".errors", os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		w.addError(err.Error(), 1)
		return
	}
	defer errf.Close()
	seq := 0
	for i := 0; i < 1_000_000 && !stop.Load() && time.Now().Before(deadline); i++ {
		var b strings.Builder
		b.WriteString(".timeout 10000\n")
		fmt.Fprintf(&b, "PRAGMA journal_mode=%s;\nPRAGMA synchronous=%s;\n", w.db.mode, []string{"NORMAL", "FULL"}[rnd.IntN(2)])
		if rnd.IntN(6) == 0 {
			// A rollback after its pages spilled (cache_size=2).
			seq++
			fmt.Fprintf(&b, "PRAGMA cache_size=2;\nBEGIN IMMEDIATE;\n"+
				"INSERT INTO t(writer, seq, part, v, b) SELECT '%s', %d, value, '%s', randomblob(1000) FROM generate_series(1, %d);\n"+
				"UPDATE scratch SET v = '%s', b = randomblob(600) WHERE id %% 3 = %d;\nROLLBACK;\nPRAGMA cache_size=-2000;\n",
				w.name, seq, rolledBackMarker, 100+rnd.IntN(200), rolledBackMarker, rnd.IntN(3))
		}
		seq++
		n, size := 1+rnd.IntN(3), 20+rnd.IntN(300)
		big := rnd.IntN(12) == 0
		if big {
			n, size = 20+rnd.IntN(100), 400+rnd.IntN(500)
		}
		fmt.Fprintf(&b, "BEGIN IMMEDIATE;\nINSERT INTO t(writer, seq, part, v, b) SELECT '%s', %d, value, 'row', randomblob(%d) FROM generate_series(0, %d);\n",
			w.name, seq, size, n-1)
		if big {
			fmt.Fprintf(&b, "UPDATE scratch SET v = '%s-%d', b = randomblob(800) WHERE id %% 4 = %d;\n", w.name, seq, rnd.IntN(4))
		}
		b.WriteString("COMMIT;\n")
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		cmd := exec.CommandContext(ctx, "sqlite3", "-bail", "file:"+w.path+"?mode=rw")
		cmd.Stdin = strings.NewReader(b.String())
		out, err := cmd.CombinedOutput()
		hung := ctx.Err() != nil
		cancel()
		if err == nil {
			// The shell exits 0 with -bail only if every statement, COMMIT
			// included, succeeded.
			if _, werr := fmt.Fprintf(logf, "%d %d\n", seq, n); werr != nil {
				w.addError(werr.Error(), 1)
				return
			}
			w.mu.Lock()
			w.commits++
			w.mu.Unlock()
			time.Sleep(time.Duration(rnd.IntN(10)) * time.Millisecond)
			continue
		}
		w.mu.Lock()
		w.failures++
		if hung {
			w.hung++
		}
		w.mu.Unlock()
		w.addError(lastLine(string(out)), 1)
		fmt.Fprintf(errf, "%.6f seq %d: %s\n", float64(time.Now().UnixNano())/1e9, seq, strings.ReplaceAll(strings.TrimSpace(string(out)), "\n", " "))
		time.Sleep(time.Duration(50+rnd.IntN(200)) * time.Millisecond)
	}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return s
}

// tortureAcked reads a writer's log: seq -> rows of the acknowledged transaction.
func tortureAcked(t *testing.T, w *tortureWriter) map[int64]int64 {
	t.Helper()
	acked := map[int64]int64{}
	f, err := os.Open(w.log)
	if os.IsNotExist(err) {
		return acked
	} else if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) != 2 {
			t.Fatalf("%s: bad log line %q", w.log, sc.Text())
		}
		seq, err1 := strconv.ParseInt(fields[0], 10, 64)
		n, err2 := strconv.ParseInt(fields[1], 10, 64)
		if err1 != nil || err2 != nil {
			t.Fatalf("%s: bad log line %q", w.log, sc.Text())
		}
		acked[seq] = n
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return acked
}

func tortureAckedTotal(t *testing.T, writers []*tortureWriter) int64 {
	var n int64
	for _, w := range writers {
		n += int64(len(tortureAcked(t, w)))
	}
	return n
}

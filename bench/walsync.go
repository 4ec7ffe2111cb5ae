package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	mountTimeout = 10 * time.Second
	exitTimeout  = 60 * time.Second
)

// walsync is one running `walsync mount`.
type walsync struct {
	// exitTimeout bounds the flush at stop; default exitTimeout.
	exitTimeout time.Duration

	cmd  *exec.Cmd
	mnt  string
	log  syncBuffer    // its stdout and stderr
	done chan struct{} // closed when it has exited; err is then set
	err  error
}

// startWalsync runs `walsync mount` and waits until mnt shows up in
// /proc/self/mountinfo. On failure nothing is left running or mounted.
func startWalsync(bin, mnt, data, replicaURL string, syncInterval time.Duration, extra []string, env ...string) (*walsync, error) {
	w := &walsync{mnt: mnt, done: make(chan struct{}), exitTimeout: exitTimeout}
	w.cmd = exec.Command(bin, append([]string{"mount", mnt, "--data", data, "--replica", replicaURL,
		"--sync-interval", syncInterval.String()}, extra...)...)
	w.cmd.Env = append(os.Environ(), env...)
	w.cmd.Stdout, w.cmd.Stderr = &w.log, &w.log
	// Its own process group: a Ctrl-C on the terminal reaches walsync only
	// through stop, after the databases are closed.
	w.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := w.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start walsync: %w", err)
	}
	go func() { w.err = w.cmd.Wait(); close(w.done) }()

	deadline := time.Now().Add(mountTimeout)
	for !mounted(mnt) {
		select {
		case <-w.done:
			return nil, fmt.Errorf("walsync exited before mounting %s: %v%s", mnt, w.err, w.logText())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			err := fmt.Errorf("%s not mounted %v after starting walsync%s", mnt, mountTimeout, w.logText())
			return nil, errors.Join(err, w.stop())
		}
	}
	return w, nil
}

func (w *walsync) pid() int { return w.cmd.Process.Pid }

// stop sends SIGINT, waits for walsync to exit and makes sure the mount is
// gone. The error is nil only for a clean exit that unmounted.
func (w *walsync) stop() error {
	var errs []error
	select {
	case <-w.done: // already exited: report how
	default:
		_ = w.cmd.Process.Signal(os.Interrupt)
		select {
		case <-w.done:
		case <-time.After(w.exitTimeout):
			errs = append(errs, fmt.Errorf("walsync did not exit %v after SIGINT; killed it", w.exitTimeout))
			_ = w.cmd.Process.Kill()
			<-w.done
		}
	}
	if w.err != nil {
		errs = append(errs, fmt.Errorf("walsync exited with %v", w.err))
	}
	if mounted(w.mnt) {
		errs = append(errs, fmt.Errorf("%s still mounted after walsync exited", w.mnt))
		if out, err := exec.Command("umount", "-l", w.mnt).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("umount -l %s: %v %s", w.mnt, err, out))
		}
	}
	return errors.Join(errs...)
}

// logText is walsync's output, set off for an error message.
func (w *walsync) logText() string {
	return "\n--- walsync output ---\n" + strings.TrimRight(w.log.String(), "\n") + "\n--- end of walsync output ---"
}

// problems returns walsync's log lines that report warnings, errors, panics
// or data races.
func (w *walsync) problems() []string {
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(w.log.String()))
	for sc.Scan() {
		l := sc.Text()
		if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") ||
			strings.HasPrefix(l, "panic:") || strings.HasPrefix(l, "fatal error:") ||
			strings.Contains(l, "DATA RACE") {
			lines = append(lines, l)
		}
	}
	return lines
}

// mounted reports whether mp is a mount point in /proc/self/mountinfo.
func mounted(mp string) bool {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	defer f.Close()
	unescape := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 4 && unescape.Replace(fields[4]) == mp {
			return true
		}
	}
	return false
}

// syncBuffer is a bytes.Buffer safe for concurrent writes and reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

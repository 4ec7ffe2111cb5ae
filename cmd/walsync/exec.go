package main

// mount --exec: the application runs as walsync's child. walsync stops when
// it exits and exits with its status, so a container's or a unit's only
// process is walsync and the backup is flushed before the exit.

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"syscall"
)

type child struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // from Wait
}

// startChild runs command with /bin/sh -c, signals forwarded to it; when it
// exits, sig is cancelled (walsync stops).
func startChild(command, mountpoint string, sig *signals) (*child, error) {
	cmd := exec.Command("/bin/sh", "-c", command)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), "WALSYNC_MOUNT="+mountpoint)
	// Its own process group, which the signals go to: /bin/sh stays the
	// parent of a command line that is not a single command, and a signal
	// to the shell alone would leave the application running, orphaned,
	// over a mount that is gone.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("--exec %q: %w", command, err)
	}
	c := &child{cmd: cmd, done: make(chan struct{})}
	sig.forwardTo(cmd.Process)
	slog.Info("started the --exec command", "pid", cmd.Process.Pid, "command", command)
	go func() {
		c.err = cmd.Wait()
		sig.forwardTo(nil)
		slog.Info("the --exec command exited: stopping", "status", c.status())
		close(c.done)
		sig.cancel()
	}()
	return c, nil
}

// status is the child's exit status as a shell reports it (128+N for a
// signal).
func (c *child) status() int {
	var ee *exec.ExitError
	if !errors.As(c.err, &ee) {
		if c.err != nil {
			return 1
		}
		return 0
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ee.ExitCode()
}

// exitStatus waits for the child and returns walsync's exit: the child's
// status, or 1 when it succeeded and the flush did not.
func (c *child) exitStatus(flushErr error) error {
	<-c.done
	code := c.status()
	switch {
	case code != 0 && flushErr != nil:
		return exitError{code: code, err: flushErr}
	case code != 0:
		return exitError{code: code}
	case flushErr != nil:
		return flushErr
	}
	return nil
}

// exitError makes walsync exit with code, printing err if there is one.
type exitError struct {
	code int
	err  error
}

func (e exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e exitError) Unwrap() error { return e.err }

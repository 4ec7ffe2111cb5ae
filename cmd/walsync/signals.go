package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// signals: the first SIGINT or SIGTERM cancels ctx (walsync stops,
// flushing); a second one exits at once. While a child started by --exec
// runs, each signal goes to it instead, and walsync stops when it exits.
type signals struct {
	ctx    context.Context
	cancel context.CancelFunc

	mu    sync.Mutex
	child *os.Process
}

func handleSignals() *signals {
	s := &signals{}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		stopping := false
		for sig := range ch {
			s.mu.Lock()
			p := s.child
			s.mu.Unlock()
			switch {
			case p != nil:
				slog.Info("signal received: passed to the --exec command", "signal", sig.String(), "pid", p.Pid)
				// To its process group (startChild): the shell and
				// what it runs.
				if err := syscall.Kill(-p.Pid, sig.(syscall.Signal)); err != nil {
					_ = p.Signal(sig)
				}
			case !stopping:
				stopping = true
				slog.Info("signal received: stopping", "signal", sig.String())
				s.cancel()
			default:
				slog.Error("second signal: exiting without flushing; staged transactions ship at the next start")
				os.Exit(1)
			}
		}
	}()
	return s
}

// forwardTo sends the signals to p from now on (nil: no more).
func (s *signals) forwardTo(p *os.Process) {
	s.mu.Lock()
	s.child = p
	s.mu.Unlock()
}

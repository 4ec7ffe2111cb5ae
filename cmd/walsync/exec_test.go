package main

import (
	"errors"
	"testing"
	"time"
)

// TestChildStatus: walsync's exit follows the --exec command's: its exit
// code, 128+N for a signal, and 1 when it succeeded but the flush failed.
func TestChildStatus(t *testing.T) {
	flushErr := errors.New("flush failed")
	for _, c := range []struct {
		command  string
		flushErr error
		want     int
	}{
		{"exit 0", nil, 0},
		{"exit 7", nil, 7},
		{"exit 7", flushErr, 7},
		{"kill -TERM $$", nil, 143},
		{"exit 0", flushErr, 1},
	} {
		sig := handleSignals()
		ch, err := startChild(c.command, t.TempDir(), sig)
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-sig.ctx.Done(): // the child's exit stops walsync
		case <-time.After(10 * time.Second):
			t.Fatalf("%q: its exit did not stop walsync", c.command)
		}
		err = ch.exitStatus(c.flushErr)
		got := 0
		var ee exitError
		switch {
		case errors.As(err, &ee):
			got = ee.code
		case err != nil:
			got = 1
		}
		if got != c.want {
			t.Errorf("%q with flush error %v: exit %d (%v), want %d", c.command, c.flushErr, got, err, c.want)
		}
		if c.flushErr != nil && !errors.Is(err, c.flushErr) {
			t.Errorf("%q: the flush error is lost: %v", c.command, err)
		}
	}
}

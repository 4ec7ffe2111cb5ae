package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// lockDataDir takes the lock that makes one walsync mount the only user of a
// data directory: two would capture the same databases into one staging and
// corrupt the replica. The lock is held (by its open descriptor) until the
// process exits; the file holds the owner's PID for the error message.
func lockDataDir(stateDir string) (*os.File, error) {
	p := filepath.Join(stateDir, "lock")
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			owner := "another process"
			if b, _ := os.ReadFile(p); len(strings.TrimSpace(string(b))) > 0 {
				if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
					owner = fmt.Sprintf("walsync process %d", pid)
				}
			}
			return nil, fmt.Errorf("the data directory %s is in use by %s: one walsync mount per data directory (stop the other one, or give this one another --data)",
				filepath.Dir(stateDir), owner)
		}
		return nil, fmt.Errorf("lock %s: %w", p, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}

package main

import (
	"fmt"
	"os"
	"os/exec"
	"strings"

	"golang.org/x/sys/unix"
)

// checkFUSEAccess tells a user who cannot mount what is missing, before
// anything else is tried: root mounts directly; anyone else needs the
// setuid helper fusermount3 (Debian's fuse3 package; go-fuse also takes the
// older fusermount) and read-write access to /dev/fuse.
func checkFUSEAccess() error {
	if os.Geteuid() == 0 {
		return nil
	}
	var missing []string
	helper := ""
	for _, name := range []string{"fusermount3", "fusermount"} {
		if p, err := exec.LookPath(name); err == nil {
			helper = p
			break
		}
	}
	if helper == "" {
		missing = append(missing, "no fusermount3 in PATH (install Debian's fuse3 package)")
	}
	if err := unix.Access("/dev/fuse", unix.R_OK|unix.W_OK); err != nil {
		missing = append(missing, fmt.Sprintf("/dev/fuse is not readable and writable by this user (%v)", err))
	}
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("walsync mount needs root, or fusermount3 and access to /dev/fuse: %s", strings.Join(missing, "; "))
}

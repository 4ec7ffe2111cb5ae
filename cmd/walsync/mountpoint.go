package main

// The mount point: checked before mounting, and a dead walsync mount left
// there by a killed process is cleaned up.

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

func checkMountpoint(mp string) error {
	if err := cleanDeadMount(mp); err != nil {
		return err
	}
	fi, err := os.Stat(mp)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("mount point %s does not exist: create it with mkdir -p %s", mp, mp)
	} else if err != nil {
		return fmt.Errorf("mount point %s: %w", mp, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("mount point %s is not a directory", mp)
	}
	if fstype, err := mountType(mp); err == nil && fstype != "" {
		return fmt.Errorf("mount point %s is already mounted (%s): unmount it first (umount %s)", mp, fstype, mp)
	}
	return nil
}

// cleanDeadMount unmounts a walsync mount at mp whose process is gone (it
// was killed): the kernel answers ENOTCONN to anything that reaches it.
func cleanDeadMount(mp string) error {
	fstype, err := mountType(mp)
	if err != nil || !strings.HasPrefix(fstype, "fuse") {
		return nil
	}
	var st unix.Statfs_t
	if err := unix.Statfs(mp, &st); !errors.Is(err, syscall.ENOTCONN) {
		return nil // alive (or not FUSE's to judge): checked as any mount
	}
	if fstype != "fuse.walsync" {
		return fmt.Errorf("mount point %s holds a dead FUSE mount (%s) of another program: unmount it first (umount -l %s)", mp, fstype, mp)
	}
	if err := syscall.Unmount(mp, syscall.MNT_DETACH); err != nil {
		return fmt.Errorf("mount point %s holds a dead walsync mount (walsync was killed) that cannot be unmounted: %w (try umount -l %s)", mp, err, mp)
	}
	slog.Warn("a dead walsync mount, left by a walsync that was killed, was unmounted", "mountpoint", mp)
	return nil
}

// mount is one line of /proc/self/mountinfo.
type mount struct{ point, fstype, source string }

// mounts lists the mounts in /proc/self/mountinfo, in their order
// (a later one over the same point is on top).
func mounts() ([]mount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []mount
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		m := mount{point: unescapeMount(fields[4])}
		// After the optional fields, "-", the type and the source.
		for i := 5; i+1 < len(fields); i++ {
			if fields[i] == "-" {
				m.fstype = fields[i+1]
				if i+2 < len(fields) {
					m.source = unescapeMount(fields[i+2])
				}
				break
			}
		}
		out = append(out, m)
	}
	return out, sc.Err()
}

// mountType returns the filesystem type of the topmost mount at mp ("" when
// nothing is mounted there).
func mountType(mp string) (string, error) {
	ms, err := mounts()
	var fstype string
	for _, m := range ms {
		if m.point == mp {
			fstype = m.fstype
		}
	}
	return fstype, err
}

func unescapeMount(s string) string {
	return strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(s)
}

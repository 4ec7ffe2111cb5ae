package fusefs

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// An orphan is a process that still has a file of the data directory open
// through a previous mount of it whose walsync died (kill -9, out of
// memory). Such a process can go on committing to a -wal in passthrough (the
// kernel writes it without walsync) for as long as its cached attributes
// last, with its own view of the -shm and its own locks: if a new mount
// served the same database meanwhile, two writers would append to one WAL
// and corrupt it. So a new mount waits for the orphans to close those files
// (SQLite fails them soon: the dead mount answers nothing else) before it
// serves anything; what they committed is then in the -wal, captured at the
// start.

// orphanWait bounds the wait; past it the mount fails, naming the processes.
const orphanWait = 60 * time.Second

// orphan is one open file of a previous, dead mount.
type orphan struct {
	pid  int
	comm string
	path string
}

func (o orphan) String() string { return fmt.Sprintf("pid %d (%s) has %s open", o.pid, o.comm, o.path) }

// waitForOrphans returns once no process has a file of the data directory
// open through a detached (dead) mount, or an error after orphanWait.
func (w *FS) waitForOrphans(mountpoint string) error {
	deadline := time.Now().Add(orphanWait)
	logged := time.Time{}
	for {
		orphans := w.findOrphans(mountpoint)
		if len(orphans) == 0 {
			if !logged.IsZero() {
				w.log.Info("the processes of the previous mount have closed its files")
			}
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes still use files of %s through a previous walsync mount that died, and could write "+
				"them beside a new one; stop them, then start walsync again: %s", w.root, joinOrphans(orphans))
		}
		if time.Since(logged) > 5*time.Second {
			w.log.Warn("waiting for processes still using the previous (dead) mount to close its files before mounting",
				"processes", joinOrphans(orphans))
			logged = time.Now()
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func joinOrphans(os []orphan) string {
	var b strings.Builder
	for i, o := range os {
		if i == 5 {
			fmt.Fprintf(&b, "; and %d more", len(os)-5)
			break
		}
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(o.String())
	}
	return b.String()
}

// findOrphans lists the open files, in every process, that are on a mount
// no longer in the mount table (detached: umount -l of a dead FUSE mount)
// and name a file of the data directory (the path is shown relative to the
// detached mount's root, or under the mount point).
func (w *FS) findOrphans(mountpoint string) []orphan {
	mounted := mountIDs()
	if mounted == nil {
		return nil
	}
	ns, _ := os.Readlink("/proc/self/ns/mnt")
	procs, _ := os.ReadDir("/proc")
	var out []orphan
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if pns, _ := os.Readlink(filepath.Join("/proc", p.Name(), "ns", "mnt")); pns != ns {
			continue // another mount namespace: its mounts are not in this table
		}
		fdDir := filepath.Join("/proc", p.Name(), "fd")
		fds, err := os.ReadDir(fdDir)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			target, err := os.Readlink(filepath.Join(fdDir, fd.Name()))
			if err != nil || !strings.HasPrefix(target, "/") {
				continue // sockets, pipes, anonymous files
			}
			id, ok := fdMountID(filepath.Join("/proc", p.Name(), "fdinfo", fd.Name()))
			if !ok || mounted[id] {
				continue
			}
			rel := strings.TrimSuffix(target, " (deleted)")
			if strings.HasPrefix(rel, mountpoint+"/") {
				rel = strings.TrimPrefix(rel, mountpoint)
			}
			if rel == "/" {
				continue
			}
			if _, err := os.Lstat(filepath.Join(w.root, rel)); err != nil {
				continue
			}
			comm, _ := os.ReadFile(filepath.Join("/proc", p.Name(), "comm"))
			out = append(out, orphan{pid: pid, comm: strings.TrimSpace(string(comm)), path: filepath.Join(mountpoint, rel)})
		}
	}
	return out
}

// mountIDs returns the ids of the mounts in this process's mount table.
func mountIDs() map[int]bool {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	ids := map[int]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 0 {
			if id, err := strconv.Atoi(fields[0]); err == nil {
				ids[id] = true
			}
		}
	}
	return ids
}

// fdMountID reads the mount id of an open file from its fdinfo.
func fdMountID(fdinfo string) (int, bool) {
	b, err := os.ReadFile(fdinfo)
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "mnt_id:"); ok {
			id, err := strconv.Atoi(strings.TrimSpace(v))
			return id, err == nil
		}
	}
	return 0, false
}

package integration

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestLockAfterInodeNumberReuse: one file must stay one kernel inode for as
// long as it is open, or SQLite's locks (which the kernel keeps per FUSE
// inode) stop excluding the processes that opened it at different times,
// and two writers corrupt the database. It broke when a file reused the
// inode number of a deleted one whose FUSE_FORGET walsync handled after
// the new file's creation: go-fuse (before v2.12) then dropped the new
// file's entry from its inode-number table, the next lookup handed the
// kernel a second node id, and the kernel a second inode for the same
// file. CI saw a DELETE-mode database corrupted by it at the start of the
// torture run (files are created and deleted there in quick succession).
//
// The FORGET of the old file is delayed deterministically: the old file is
// deleted in the data directory (so the kernel keeps its inode cached),
// the new one is created through the mount and takes its inode number,
// then the kernel drops the old inode and sends the FORGET.
func TestLockAfterInodeNumberReuse(t *testing.T) {
	m := newMount(t)
	dir := "reuse"
	if err := os.MkdirAll(filepath.Join(m.mnt, dir), 0o755); err != nil {
		t.Fatal(err)
	}
	ino := func(p string) uint64 {
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		return st.Ino
	}
	lock := func(f *os.File) error {
		return unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 0, Len: 0})
	}
	for attempt := 0; attempt < 20; attempt++ {
		oldRel := filepath.Join(dir, "old-"+string(rune('a'+attempt)))
		newRel := filepath.Join(dir, "new-"+string(rune('a'+attempt)))
		if err := os.WriteFile(filepath.Join(m.mnt, oldRel), []byte("old"), 0o644); err != nil {
			t.Fatal(err)
		}
		oldIno := ino(filepath.Join(m.data, oldRel))
		if err := os.Remove(filepath.Join(m.data, oldRel)); err != nil { // the kernel still has it cached
			t.Fatal(err)
		}
		first, err := os.OpenFile(filepath.Join(m.mnt, newRel), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer first.Close()
		if ino(filepath.Join(m.data, newRel)) != oldIno {
			continue // the filesystem gave it another inode number: try again
		}
		if err := lock(first); err != nil {
			t.Fatalf("lock %s: %v", newRel, err)
		}
		// The old name's dentry expires (1 s); its lookup fails, and the
		// kernel drops the old inode: walsync gets its FORGET.
		time.Sleep(1200 * time.Millisecond)
		if _, err := os.Stat(filepath.Join(m.mnt, oldRel)); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("stat %s after its deletion: %v", oldRel, err)
		}
		if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("2"), 0o200); err != nil {
			t.Fatalf("drop the kernel's unused inodes: %v", err)
		}
		time.Sleep(1200 * time.Millisecond) // the new name's dentry expires too
		second, err := os.OpenFile(filepath.Join(m.mnt, newRel), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer second.Close()
		err = lock(second)
		if err == nil {
			t.Fatalf("a second open of %s took a write lock while the first held one: the mount gave one file two kernel inodes "+
				"(the inode number of a deleted file was reused and its forget dropped the new file's identity)", newRel)
		}
		if !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EACCES) {
			t.Fatalf("lock the second open of %s: %v", newRel, err)
		}
		return
	}
	t.Fatal("the data directory's filesystem never reused a deleted file's inode number in 20 tries: the case cannot be set up here")
}

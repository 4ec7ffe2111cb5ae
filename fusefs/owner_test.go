package fusefs

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
)

func caller(uid, gid uint32) context.Context {
	return fuse.NewContext(context.Background(), &fuse.Caller{Owner: fuse.Owner{Uid: uid, Gid: gid}})
}

// TestPermits: the check walsync makes itself (for a file that appeared
// behind the kernel's back) follows the owner, group and other bits.
func TestPermits(t *testing.T) {
	st := &syscall.Stat_t{Mode: syscall.S_IFREG | 0o640, Uid: 1000, Gid: 2000}
	for _, c := range []struct {
		uid, gid uint32
		flags    uint32
		want     bool
	}{
		{1000, 1, syscall.O_RDWR, true}, // owner rw-
		{1000, 1, syscall.O_RDONLY | syscall.O_TRUNC, true},
		{1, 2000, syscall.O_RDONLY, true},  // group r--
		{1, 2000, syscall.O_WRONLY, false}, // group cannot write
		{1, 2000, syscall.O_RDONLY | syscall.O_TRUNC, false},
		{1, 1, syscall.O_RDONLY, false}, // other ---
		{0, 0, syscall.O_RDWR, true},    // root
	} {
		if got := permits(caller(c.uid, c.gid), st, c.flags); got != c.want {
			t.Errorf("uid %d gid %d flags %#o on 0640 1000:2000: %v, want %v", c.uid, c.gid, c.flags, got, c.want)
		}
	}
}

// TestOwn: a node created through the mount gets the caller's owner (the
// group of a set-group-ID directory) and exactly the mode asked, whatever
// walsync's umask.
func TestOwn(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("TestOwn needs root (walsync's tests run as root): it changes owners")
	}
	dir := t.TempDir()
	w := &FS{root: dir}
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)

	f := filepath.Join(dir, "file")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	st, errno := w.own(caller(1234, 5678), f, -1, 0o664, syscall.Unlink)
	if errno != 0 || st.Uid != 1234 || st.Gid != 5678 || st.Mode&0o7777 != 0o664 {
		t.Fatalf("file: %v uid %d gid %d mode %o", errno, st.Uid, st.Gid, st.Mode&0o7777)
	}
	// Through the descriptor of the file just created.
	g, err := os.OpenFile(filepath.Join(dir, "byfd"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	st, errno = w.own(caller(1234, 5678), g.Name(), int(g.Fd()), 0o640, syscall.Unlink)
	if errno != 0 || st.Uid != 1234 || st.Gid != 5678 || st.Mode&0o7777 != 0o640 {
		t.Fatalf("by descriptor: %v uid %d gid %d mode %o", errno, st.Uid, st.Gid, st.Mode&0o7777)
	}
	sgid := filepath.Join(dir, "shared")
	if err := os.Mkdir(sgid, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(sgid, 0, 4242); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Chmod(sgid, 0o2775); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(sgid, "sub")
	if err := syscall.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	st, errno = w.own(caller(1234, 5678), sub, -1, 0o750, syscall.Rmdir)
	if errno != 0 || st.Uid != 1234 || st.Gid != 4242 || st.Mode&0o7777 != 0o2750 {
		t.Fatalf("directory in a set-group-ID directory: %v uid %d gid %d mode %o", errno, st.Uid, st.Gid, st.Mode&0o7777)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink("file", link); err != nil {
		t.Fatal(err)
	}
	if st, errno = w.own(caller(1234, 5678), link, -1, 0, syscall.Unlink); errno != 0 || st.Uid != 1234 {
		t.Fatalf("symlink: %v uid %d", errno, st.Uid)
	}
	if fi, err := os.Stat(f); err != nil || fi.Mode().Perm() != 0o664 {
		t.Fatalf("chown of the link followed it: %v %v", fi, err)
	}
}

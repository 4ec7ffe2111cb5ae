package control_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/walsync/walsync/control"
)

func socketPath(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), control.SocketName)
	if len(p) >= 104 { // sun_path: 108 bytes on Linux, 104 on the BSDs
		t.Skipf("socket path %s too long for a Unix socket", p)
	}
	return p
}

func listen(t *testing.T, s *control.Server, path string) {
	t.Helper()
	stop, err := s.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
}

func sampleStatus() control.Status {
	errAt := time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)
	return control.Status{
		Version: "v1.2.3", PID: 4242, MountPoint: "/mnt/db", Data: "/var/lib/walsync",
		Replicas: []string{"file:///backups", "s3://bucket/prefix"},
		Databases: []control.DBStatus{
			{DB: "a.db", TXID: 1 << 60, StagedBytes: 12345, Replicas: []control.ReplicaPos{
				{URL: "file:///backups", TXID: 1<<60 - 1, LagSeconds: 1.5},
				{URL: "s3://bucket/prefix", TXID: 17, LagSeconds: 3600.25, Failing: true, LastError: "503 Slow Down", LastErrorAt: &errAt},
			}},
			{DB: "dir/b c.db", TXID: 3, Replicas: []control.ReplicaPos{{URL: "file:///backups", TXID: 3}}},
		},
	}
}

// TestListenSocketMode: the socket is a socket, readable and writable by
// its owner only.
func TestListenSocketMode(t *testing.T) {
	path := socketPath(t)
	listen(t, &control.Server{Status: sampleStatus}, path)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		t.Errorf("%s is %v, not a socket", path, fi.Mode())
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("socket mode %o, want 600", perm)
	}
}

// TestGetStatus: the status goes through the socket unchanged (TXIDs above
// 2^53 included).
func TestGetStatus(t *testing.T) {
	path := socketPath(t)
	listen(t, &control.Server{Status: sampleStatus}, path)
	got, err := control.GetStatus(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	if want := sampleStatus(); !reflect.DeepEqual(got, want) {
		t.Errorf("GetStatus:\n got %+v\nwant %+v", got, want)
	}
}

// TestSnapshot: the database name reaches the server intact, whatever it
// holds, and the snapshot's TXID comes back.
func TestSnapshot(t *testing.T) {
	path := socketPath(t)
	var mu sync.Mutex
	var asked []string
	listen(t, &control.Server{
		Status: sampleStatus,
		Snapshot: func(ctx context.Context, db string) (uint64, error) {
			mu.Lock()
			defer mu.Unlock()
			asked = append(asked, db)
			return 1<<60 + uint64(len(asked)), nil
		},
	}, path)
	names := []string{"t/a b.db", "x+y&z=1%2F#?.db", "é/ü.db"}
	for i, db := range names {
		txid, err := control.Snapshot(context.Background(), path, db)
		if err != nil {
			t.Fatalf("Snapshot(%q): %v", db, err)
		}
		if want := uint64(1<<60 + i + 1); txid != want {
			t.Errorf("Snapshot(%q) = %d, want %d", db, txid, want)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if !reflect.DeepEqual(asked, names) {
		t.Errorf("the server was asked for %q, want %q", asked, names)
	}
}

// TestSnapshotError: the server's error comes back as its text.
func TestSnapshotError(t *testing.T) {
	path := socketPath(t)
	listen(t, &control.Server{
		Status: sampleStatus,
		Snapshot: func(ctx context.Context, db string) (uint64, error) {
			return 0, fmt.Errorf("no database %q under the mount /mnt/db", db)
		},
	}, path)
	txid, err := control.Snapshot(context.Background(), path, "missing.db")
	if err == nil {
		t.Fatalf("Snapshot succeeded with TXID %d", txid)
	}
	if want := `no database "missing.db" under the mount /mnt/db`; err.Error() != want {
		t.Errorf("Snapshot error %q, want %q", err, want)
	}
	if txid != 0 {
		t.Errorf("Snapshot returned TXID %d with an error", txid)
	}
}

// TestSnapshotCanceled: a caller that gives up cancels the snapshot's
// context on the server.
func TestSnapshotCanceled(t *testing.T) {
	path := socketPath(t)
	started, serverDone := make(chan struct{}), make(chan error, 1)
	listen(t, &control.Server{
		Status: sampleStatus,
		Snapshot: func(ctx context.Context, db string) (uint64, error) {
			close(started)
			select {
			case <-ctx.Done():
				serverDone <- ctx.Err()
				return 0, ctx.Err()
			case <-time.After(10 * time.Second):
				serverDone <- errors.New("the snapshot's context was not canceled within 10s")
				return 1, nil
			}
		},
	}, path)
	ctx, cancel := context.WithCancel(context.Background())
	clientDone := make(chan error, 1)
	go func() {
		_, err := control.Snapshot(ctx, path, "a.db")
		clientDone <- err
	}()
	<-started
	cancel()
	if err := <-clientDone; !errors.Is(err, context.Canceled) {
		t.Errorf("Snapshot with its context canceled: %v, want context.Canceled", err)
	}
	if err := <-serverDone; !errors.Is(err, context.Canceled) {
		t.Errorf("server side: %v", err)
	}
}

// TestNotRunning: no socket is ErrNotRunning, for both requests.
func TestNotRunning(t *testing.T) {
	path := socketPath(t)
	if _, err := control.GetStatus(context.Background(), path); !errors.Is(err, control.ErrNotRunning) {
		t.Errorf("GetStatus with no socket: %v, want ErrNotRunning", err)
	}
	if _, err := control.Snapshot(context.Background(), path, "a.db"); !errors.Is(err, control.ErrNotRunning) {
		t.Errorf("Snapshot with no socket: %v, want ErrNotRunning", err)
	}
}

// staleSocket leaves a socket nobody listens on at path, as a process
// killed with SIGKILL does.
func staleSocket(t *testing.T, path string) {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("no stale socket left at %s: %v %v", path, fi, err)
	}
}

// TestStaleSocket: a socket left by a dead process answers ErrNotRunning,
// and Listen replaces it.
func TestStaleSocket(t *testing.T) {
	path := socketPath(t)
	staleSocket(t, path)
	if _, err := control.GetStatus(context.Background(), path); !errors.Is(err, control.ErrNotRunning) {
		t.Fatalf("GetStatus on a stale socket: %v, want ErrNotRunning", err)
	}
	listen(t, &control.Server{Status: sampleStatus}, path)
	got, err := control.GetStatus(context.Background(), path)
	if err != nil {
		t.Fatalf("GetStatus after Listen replaced the stale socket: %v", err)
	}
	if got.PID != 4242 {
		t.Errorf("GetStatus PID %d, want 4242", got.PID)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("replaced socket: %v %v, want mode 600", fi, err)
	}
}

// TestStop: stop closes the server and removes the socket.
func TestStop(t *testing.T) {
	path := socketPath(t)
	stop, err := (&control.Server{Status: sampleStatus}).Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := control.GetStatus(context.Background(), path); err != nil {
		t.Fatal(err)
	}
	stop()
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket still at %s after stop: %v", path, err)
	}
	if _, err := control.GetStatus(context.Background(), path); !errors.Is(err, control.ErrNotRunning) {
		t.Errorf("GetStatus after stop: %v, want ErrNotRunning", err)
	}
}

// TestListenBadPath: a socket in a missing directory is an error.
func TestListenBadPath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing", control.SocketName)
	if stop, err := (&control.Server{Status: sampleStatus}).Listen(path); err == nil {
		stop()
		t.Fatal("Listen in a missing directory succeeded")
	}
}

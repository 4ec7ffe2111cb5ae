package shipper

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// TestPrivateDirWhileFilesComeAndGo: another process staging into the same
// directory (the VFS loaded by several) renames and removes files while
// PrivateDir walks it; that is not an error.
func TestPrivateDirWhileFilesComeAndGo(t *testing.T) {
	dir := t.TempDir()
	sub := filepath.Join(dir, "db")
	if err := os.MkdirAll(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			p := filepath.Join(sub, fmt.Sprintf("batch-%d.log", i%50))
			_ = os.WriteFile(p, []byte("x"), 0o644)
			_ = os.Remove(p)
		}
	}()
	defer func() { close(stop); wg.Wait() }()
	for i := 0; i < 300; i++ {
		if err := PrivateDir(dir); err != nil {
			t.Fatalf("walk %d: %v", i, err)
		}
	}
}

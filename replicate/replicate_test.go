package replicate

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"
)

// TestJournalRollback: an update interrupted after its journal was written
// (pages overwritten, file cut) is rolled back to the original bytes, and a
// torn last journal record does not stop the pages before it.
func TestJournalRollback(t *testing.T) {
	const ps = 1024
	dir := t.TempDir()
	path := filepath.Join(dir, "db")
	orig := make([]byte, 4*ps)
	rand.Read(orig)
	if err := os.WriteFile(path, orig, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := writeJournal(path+"-journal", f, []uint32{1, 3, 4}, ps, 4); err != nil {
		t.Fatal(err)
	}
	junk := make([]byte, ps)
	rand.Read(junk)
	f.WriteAt(junk, 0)
	f.WriteAt(junk, 2*ps)
	f.Truncate(3 * ps) // page 4 cut off
	if err := rollback(path+"-journal", f); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	if !bytes.Equal(got, orig) {
		t.Fatal("rollback did not restore the original file")
	}
	if _, err := os.Stat(path + "-journal"); !os.IsNotExist(err) {
		t.Fatal("journal not removed")
	}
	if err := rollback(path+"-journal", f); err != nil {
		t.Fatalf("rollback without a journal: %v", err)
	}
}

package dbfiles

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/superfly/ltx"
)

// TestSumsFile: checksums are stored 8 bytes per page in a file that
// survives Close, reads past its end are zero, truncation forgets.
func TestSumsFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", "page-checksums")
	s := &SumsFile{Path: path}
	if err := s.WriteSums(3, []ltx.Checksum{0x0102030405060708, 9}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	got := make([]ltx.Checksum, 5)
	if err := s.ReadSums(1, got); err != nil {
		t.Fatal(err)
	}
	if want := []ltx.Checksum{0, 0, 0x0102030405060708, 9, 0}; !slices.Equal(got, want) {
		t.Fatalf("read %x, want %x", got, want)
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() != 4*8 {
		t.Fatalf("file: %v %v, want 32 bytes", fi, err)
	}
	if err := s.TruncateSums(3); err != nil {
		t.Fatal(err)
	}
	if err := s.ReadSums(3, got[:2]); err != nil || got[0] != 0x0102030405060708 || got[1] != 0 {
		t.Fatalf("after truncating to 3 pages: %x %v", got[:2], err)
	}
	s.Close()
}

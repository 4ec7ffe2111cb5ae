package restore

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/walsync/walsync/storage/file"
)

// TestNoBackupMessages: a URL without a backup is named in full (never as
// an empty database name); a replica root says how to restore one of its
// databases.
func TestNoBackupMessages(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "tenants", "a.db", "ltx", "0"), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	_, _, err := Plan(ctx, file.New(root), "", 0)
	if err == nil || !strings.Contains(err.Error(), "replica root holding 1 databases") ||
		!strings.Contains(err.Error(), "walsync ls file://"+root) || !strings.Contains(err.Error(), "file://"+root+"/tenants/a.db") {
		t.Fatalf("restore of a replica root: %v", err)
	}
	nope := filepath.Join(root, "nope.db")
	for _, err := range []error{
		func() error { _, _, err := Plan(ctx, file.New(nope), "", 0); return err }(),
		func() error { _, err := TXIDAt(ctx, file.New(nope), "", time.Now()); return err }(),
	} {
		if err == nil || !strings.Contains(err.Error(), "no backup at file://"+nope) || strings.Contains(err.Error(), `""`) {
			t.Fatalf("restore of a URL without a backup: %v", err)
		}
	}
}

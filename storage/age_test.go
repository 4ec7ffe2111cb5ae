package storage_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/superfly/ltx"
	"github.com/walsync/walsync/storage"
	_ "github.com/walsync/walsync/storage/file"
)

func newIdentity(t *testing.T) *age.X25519Identity {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestAgeEncryption: objects written with recipients are stored encrypted
// (no plaintext in the files) and read back with any one of the matching
// identities; without one, or with another, reading fails naming the
// object; objects written before encryption was turned on are read as
// they are; large objects (encrypted through a temporary file) too.
func TestAgeEncryption(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	url := "file://" + root
	oldKey, newKey, other := newIdentity(t), newIdentity(t), newIdentity(t)
	open := func(o storage.Options) storage.Client {
		c, err := storage.OpenWith(ctx, url, o)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	marker := []byte("MARKER-7c1e-plaintext")
	plainBody := append([]byte("before encryption "), marker...)
	secretBody := append([]byte("after encryption "), marker...)
	big := bytes.Repeat(marker, 3<<20/len(marker)+1) // past the in-memory limit
	if err := open(storage.Options{}).WriteLTXFile(ctx, "a.db", 0, 1, 1, bytes.NewReader(plainBody), time.Now()); err != nil {
		t.Fatal(err)
	}
	w := open(storage.Options{AgeRecipients: []age.Recipient{oldKey.Recipient(), newKey.Recipient()}})
	if err := w.WriteLTXFile(ctx, "a.db", 0, 2, 2, bytes.NewReader(secretBody), time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteLTXFile(ctx, "a.db", 9, 1, 2, bytes.NewReader(big), time.Now()); err != nil {
		t.Fatal(err)
	}
	// On disk: the first object in plaintext, the others not.
	var files []string
	_ = filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	plain := 0
	for _, p := range files {
		b, _ := os.ReadFile(p)
		if bytes.Contains(b, marker) {
			plain++
			if !bytes.Equal(b, plainBody) {
				t.Errorf("%s holds the plaintext marker", p)
			}
		} else if !bytes.HasPrefix(b, []byte("age-encryption.org/v1\n")) {
			t.Errorf("%s is neither the plaintext object nor age", p)
		}
	}
	if len(files) != 3 || plain != 1 {
		t.Fatalf("%d files, %d with the marker; want 3 and 1: %v", len(files), plain, files)
	}
	read := func(c storage.Client, level int, min, max uint64) ([]byte, error) {
		r, err := c.OpenLTXFile(ctx, "a.db", level, ltx.TXID(min), ltx.TXID(max))
		if err != nil {
			return nil, err
		}
		defer r.Close()
		return io.ReadAll(r)
	}
	for _, id := range []*age.X25519Identity{oldKey, newKey} { // a key rotation: either opens
		c := open(storage.Options{AgeIdentities: []age.Identity{id}})
		for _, o := range []struct {
			level    int
			min, max uint64
			want     []byte
		}{{0, 1, 1, plainBody}, {0, 2, 2, secretBody}, {9, 1, 2, big}} {
			if got, err := read(c, o.level, o.min, o.max); err != nil || !bytes.Equal(got, o.want) {
				t.Fatalf("level %d %d-%d read with an identity: %d bytes, %v", o.level, o.min, o.max, len(got), err)
			}
		}
	}
	for name, o := range map[string]storage.Options{
		"without an identity": {},
		"with another":        {AgeIdentities: []age.Identity{other}},
	} {
		_, err := read(open(o), 0, 2, 2)
		want := open(o).ObjectURL("a.db", 0, 2, 2)
		if !errors.Is(err, storage.ErrEncrypted) || !strings.Contains(err.Error(), want) {
			t.Errorf("read %s: %v; want an error naming %s", name, err, want)
		}
	}
}

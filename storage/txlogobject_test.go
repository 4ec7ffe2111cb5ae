package storage

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/superfly/ltx"
)

// txLogOf writes n records, each rewriting page 2 with 100 new random bytes
// (an insert into a leaf page), and returns the raw log and each record's
// page.
func txLogOf(t *testing.T, n int) ([]byte, [][]byte) {
	const ps = 4096
	rng := rand.New(rand.NewPCG(1, 2))
	page := make([]byte, ps)
	var buf bytes.Buffer
	var versions [][]byte
	for i := 0; i < n; i++ {
		at := (i * 100) % (ps - 100)
		for j := at; j < at+100; j++ {
			page[j] = byte(rng.Uint32())
		}
		versions = append(versions, bytes.Clone(page))
		rec := TxRecord{TXID: ltx.TXID(10 + i), PageSize: ps, Commit: 2, PageCount: 1, Pre: ltx.Checksum(i), Post: ltx.Checksum(i + 1), Timestamp: int64(i)}
		writeRecord(t, &buf, rec, map[uint32][]byte{2: page}, []uint32{2})
	}
	return buf.Bytes(), versions
}

func readObject(t *testing.T, obj []byte) ([]TxRecord, [][]byte, error) {
	t.Helper()
	tr, c, err := OpenTxLogObject(bytes.NewReader(obj))
	if err != nil {
		return nil, nil, err
	}
	defer c.Close()
	var recs []TxRecord
	var pages [][]byte
	for {
		rec, err := tr.Next()
		if err == io.EOF {
			return recs, pages, nil
		}
		if err != nil {
			return recs, pages, err
		}
		recs = append(recs, rec)
		for i := uint32(0); i < rec.PageCount; i++ {
			buf := make([]byte, rec.PageSize)
			if _, err := tr.ReadPage(buf); err != nil {
				return recs, pages, err
			}
			pages = append(pages, buf)
		}
	}
}

// TestTxLogObject: records compressed into an object read back page for
// page; successive versions of a page cost about what changed in them; a
// flipped or missing byte anywhere is an error, never other data.
func TestTxLogObject(t *testing.T) {
	raw, versions := txLogOf(t, 300)
	var obj bytes.Buffer
	if err := WriteTxLogObject(&obj, bytes.NewReader(raw)); err != nil {
		t.Fatal(err)
	}
	// 300 versions of a 4 KiB page, 100 random bytes new in each: about
	// 300 × 100 bytes of entropy, far from 300 × 4 KiB raw.
	if obj.Len() > 3*300*100 {
		t.Fatalf("object %d bytes for %d raw: the versions of a page are not compressed against each other", obj.Len(), len(raw))
	}
	recs, pages, err := readObject(t, obj.Bytes())
	if err != nil || len(recs) != 300 {
		t.Fatalf("read %d records: %v", len(recs), err)
	}
	for i, r := range recs {
		if r.TXID != ltx.TXID(10+i) || r.Post != ltx.Checksum(i+1) || !bytes.Equal(pages[i], versions[i]) {
			t.Fatalf("record %d: %+v", i, r)
		}
	}

	for _, at := range []int{0, 5, obj.Len() / 2, obj.Len() - 2} {
		bad := bytes.Clone(obj.Bytes())
		bad[at] ^= 0x10
		got, gotPages, err := readObject(t, bad)
		if err == nil {
			// A bit of the frame header that changes nothing read (the
			// window size): the content checksum vouches for the data.
			if len(got) != len(recs) || !bytes.Equal(bytes.Join(gotPages, nil), bytes.Join(pages, nil)) {
				t.Fatalf("flipped byte at %d of %d: other data, no error", at, len(bad))
			}
			continue
		}
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("flipped byte at %d of %d: %v", at, len(bad), err)
		}
	}
	if _, _, err := readObject(t, obj.Bytes()[:obj.Len()-3]); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("truncated object: %v", err)
	}
}

// TestTxLogObjectLegacy: an object written before compression (raw
// records, named .ltx) reads the same.
func TestTxLogObjectLegacy(t *testing.T) {
	raw, versions := txLogOf(t, 3)
	recs, pages, err := readObject(t, raw)
	if err != nil || len(recs) != 3 || !bytes.Equal(pages[2], versions[2]) {
		t.Fatalf("legacy object: %d records, %v", len(recs), err)
	}
	bad := bytes.Clone(raw)
	bad[len(bad)/2] ^= 1
	if _, _, err := readObject(t, bad); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("flipped byte in a legacy object: %v", err)
	}
}

func TestTxLogFilenames(t *testing.T) {
	name := FormatTxLogFilename(1, 0x2a)
	if name != "0000000000000001-000000000000002a.wtx" {
		t.Fatalf("name %q", name)
	}
	for _, c := range []struct {
		name   string
		legacy bool
		ok     bool
	}{{name, false, true}, {LegacyTxLogFilename(1, 0x2a), true, true}, {"0000000000000001-000000000000002a.txt", false, false}} {
		min, max, legacy, err := ParseTxLogFilename(c.name)
		if (err == nil) != c.ok || c.ok && (min != 1 || max != 0x2a || legacy != c.legacy) {
			t.Fatalf("%s: %d %d %v %v", c.name, min, max, legacy, err)
		}
	}
}

package storage

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"filippo.io/age"
	"github.com/superfly/ltx"
)

// Client-side encryption with age (https://age-encryption.org): with
// Options.AgeRecipients every object written is encrypted to each of them;
// every object read that starts with age's header is decrypted with
// Options.AgeIdentities, and one that does not (written before encryption
// was turned on) is read as it is. LTX checksums are inside the plaintext
// and verified after decryption; a backend's own checksum (S3's SHA-256)
// is over what it stores. Litestream cannot read an encrypted replica.

// ageMagic starts every age file.
const ageMagic = "age-encryption.org/v1\n"

// ErrEncrypted reports an encrypted object read without an identity that
// opens it.
var ErrEncrypted = errors.New("encrypted with age")

// ageMemLimit: objects up to this size are encrypted in memory before an
// upload, larger ones into a temporary file (an upload must be able to
// start again from the beginning; the file holds ciphertext only). Small:
// up to 32 uploads run at once under a heap limit of a few tens of MiB.
const ageMemLimit = 1 << 20

// ageClient encrypts what it writes and decrypts what it reads.
type ageClient struct {
	Client
	recipients []age.Recipient
	identities []age.Identity
}

// withAge wraps c. Without recipients nothing is encrypted; encrypted
// objects are still recognized, so reading one without an identity says so.
func withAge(c Client, o Options) Client {
	return &ageClient{Client: c, recipients: o.AgeRecipients, identities: o.AgeIdentities}
}

func (a *ageClient) WriteLTXFile(ctx context.Context, db string, level int, min, max ltx.TXID, r io.ReadSeeker, ts time.Time) error {
	if len(a.recipients) == 0 {
		return a.Client.WriteLTXFile(ctx, db, level, min, max, r, ts)
	}
	size, err := r.Seek(0, io.SeekEnd)
	if err == nil {
		_, err = r.Seek(0, io.SeekStart)
	}
	if err != nil {
		return err
	}
	var body io.ReadSeeker
	if size <= ageMemLimit {
		var buf bytes.Buffer
		buf.Grow(int(size) + 512)
		if err := a.encrypt(&buf, r); err != nil {
			return err
		}
		body = bytes.NewReader(buf.Bytes())
	} else {
		f, err := os.CreateTemp("", "walsync-age-*")
		if err != nil {
			return fmt.Errorf("encrypt %s: %w", a.ObjectURL(db, level, min, max), err)
		}
		defer os.Remove(f.Name())
		defer f.Close()
		bw := bufio.NewWriterSize(f, 256<<10)
		if err := a.encrypt(bw, r); err != nil {
			return err
		}
		if err := bw.Flush(); err != nil {
			return fmt.Errorf("encrypt %s: %w", a.ObjectURL(db, level, min, max), err)
		}
		body = f
	}
	return a.Client.WriteLTXFile(ctx, db, level, min, max, body, ts)
}

func (a *ageClient) encrypt(dst io.Writer, src io.Reader) error {
	w, err := age.Encrypt(dst, a.recipients...)
	if err == nil {
		_, err = io.Copy(w, src)
	}
	if err == nil {
		err = w.Close()
	}
	if err != nil {
		return fmt.Errorf("encrypt with age: %w", err)
	}
	return nil
}

func (a *ageClient) OpenLTXFile(ctx context.Context, db string, level int, min, max ltx.TXID) (io.ReadCloser, error) {
	rc, err := a.Client.OpenLTXFile(ctx, db, level, min, max)
	if err != nil {
		return nil, err
	}
	br := bufio.NewReaderSize(rc, 16<<10)
	head, _ := br.Peek(len(ageMagic))
	if string(head) != ageMagic {
		return readCloser{br, rc}, nil // written without encryption
	}
	url := a.ObjectURL(db, level, min, max)
	if len(a.identities) == 0 {
		rc.Close()
		return nil, fmt.Errorf("%s is %w: give the identity that opens it (--age-identity FILE, or WALSYNC_AGE_IDENTITY)", url, ErrEncrypted)
	}
	dr, err := age.Decrypt(br, a.identities...)
	if err != nil {
		rc.Close()
		var nm *age.NoIdentityMatchError
		if errors.As(err, &nm) {
			return nil, fmt.Errorf("%s is %w for other recipients: none of the identities given opens it", url, ErrEncrypted)
		}
		return nil, fmt.Errorf("decrypt %s: %w", url, err)
	}
	return readCloser{dr, rc}, nil
}

// readCloser reads from r and closes c.
type readCloser struct {
	r io.Reader
	c io.Closer
}

func (rc readCloser) Read(p []byte) (int, error) { return rc.r.Read(p) }
func (rc readCloser) Close() error               { return rc.c.Close() }

// The optional interfaces of the backend, passed through.

func (a *ageClient) Check(ctx context.Context) error {
	if ch, ok := a.Client.(interface{ Check(context.Context) error }); ok {
		return ch.Check(ctx)
	}
	return nil
}

func (a *ageClient) CheckWritable(ctx context.Context) error {
	if ch, ok := a.Client.(interface{ CheckWritable(context.Context) error }); ok {
		return ch.CheckWritable(ctx)
	}
	return nil
}

func (a *ageClient) Levels(ctx context.Context, db string) ([]int, error) {
	return levelsOf(ctx, a.Client, db)
}

func (a *ageClient) Databases(ctx context.Context) ([]string, error) {
	if dl, ok := a.Client.(DatabaseLister); ok {
		return dl.Databases(ctx)
	}
	return nil, fmt.Errorf("%s cannot list its databases", a.URL())
}

// Unwrap returns the backend.
func (a *ageClient) Unwrap() Client { return a.Client }

// ParseAgeRecipients parses age public keys (age1...) separated by spaces,
// commas or lines; a line starting with # is a comment. src names where
// they come from, for errors.
func ParseAgeRecipients(src, text string) ([]age.Recipient, error) {
	var recs []age.Recipient
	for _, line := range strings.Split(text, "\n") {
		if line = strings.TrimSpace(line); strings.HasPrefix(line, "#") {
			continue
		}
		for _, f := range strings.FieldsFunc(line, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\r' }) {
			r, err := age.ParseX25519Recipient(f)
			if err != nil {
				return nil, fmt.Errorf("age recipient %q in %s: %v", f, src, err)
			}
			recs = append(recs, r)
		}
	}
	return recs, nil
}

// ParseAgeIdentities parses age identities (AGE-SECRET-KEY-1..., one per
// line, as age-keygen writes them). src names where they come from; the
// keys never appear in errors.
func ParseAgeIdentities(src string, text []byte) ([]age.Identity, error) {
	ids, err := age.ParseIdentities(bytes.NewReader(text))
	if err != nil {
		return nil, fmt.Errorf("age identity in %s: not a valid identity file", src)
	}
	return ids, nil
}

// SetAge sets the keys of client-side encryption: objects are encrypted to
// recs and to the public key of each identity, and read with ids.
// Recipients need an identity: walsync reads back what it uploads
// (positions, compaction, restore).
func (o *Options) SetAge(recs []age.Recipient, ids []age.Identity) error {
	if len(recs) > 0 && len(ids) == 0 {
		return errors.New("age recipients are given without an identity: walsync reads back what it uploads " +
			"(positions, compaction, restore), so give the identity (--age-identity, or WALSYNC_AGE_IDENTITY) as well")
	}
	for _, id := range ids {
		if x, ok := id.(*age.X25519Identity); ok {
			recs = append(recs, x.Recipient())
		}
	}
	o.AgeRecipients, o.AgeIdentities = recs, ids
	return nil
}

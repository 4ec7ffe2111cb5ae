// Package storage defines the replica backend interface that the shipper
// writes to and the read side (restore) reads from, plus URL parsing.
//
// A replica root holds one directory (or key prefix) per database, named by
// the database's path relative to the mount. Inside it, LTX files live at the
// keys Litestream 0.5 uses for that kind of backend (see each backend), so
// Litestream can restore walsync's backups and the other way round.
//
// walsync adds one kind of object Litestream ignores: a transaction log per
// level-0 batch (TxLogLevel), holding every transaction of the batch as its
// own LTX file, so a restore can stop at any single transaction even though
// the level-0 file of the batch is compacted.
package storage

import (
	"context"
	"errors"
	"filippo.io/age"
	"fmt"
	"io"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/superfly/ltx"
)

// Levels of the LTX files.
const (
	// SnapshotLevel holds full snapshots (MinTXID 1).
	SnapshotLevel = 9
	// MaxLevel is the highest LTX level.
	MaxLevel = 9
	// TxLogLevel names walsync's per-batch transaction logs. It is not an
	// LTX level and is stored outside the directories Litestream reads.
	TxLogLevel = -1
)

// ErrNotFound is returned when an object does not exist.
var ErrNotFound = errors.New("not found")

// ErrUnavailable matches (errors.Is) an error that a retry may cure: the
// backend did not answer (connection refused or reset, timeout) or answered
// that it is failing or overloaded (HTTP 5xx, 408, 429). Every other error is
// a definite answer (no such bucket, access denied, bad credentials).
var ErrUnavailable = errors.New("replica unavailable")

// Unavailable marks err as one a retry may cure (see ErrUnavailable).
func Unavailable(err error) error {
	if err == nil {
		return nil
	}
	return unavailableError{err}
}

type unavailableError struct{ error }

func (e unavailableError) Unwrap() error        { return e.error }
func (e unavailableError) Is(target error) bool { return target == ErrUnavailable }

// Client is a replica backend. db is the database path relative to the root,
// with forward slashes.
type Client interface {
	// URL returns the replica root URL.
	URL() string
	// LTXFiles lists one level of one database, sorted by MinTXID.
	LTXFiles(ctx context.Context, db string, level int) ([]*ltx.FileInfo, error)
	// OpenLTXFile opens a file. It returns ErrNotFound if it does not exist.
	OpenLTXFile(ctx context.Context, db string, level int, minTXID, maxTXID ltx.TXID) (io.ReadCloser, error)
	// WriteLTXFile stores a file atomically; writing the same file twice is
	// harmless. ts is the LTX header time.
	WriteLTXFile(ctx context.Context, db string, level int, minTXID, maxTXID ltx.TXID, r io.ReadSeeker, ts time.Time) error
	// DeleteLTXFiles removes files; missing files are not an error.
	DeleteLTXFiles(ctx context.Context, db string, files []*ltx.FileInfo) error
	// ObjectURL names a file for messages: its full path or key.
	ObjectURL(db string, level int, minTXID, maxTXID ltx.TXID) string
}

// Options are backend settings that do not fit in a URL.
type Options struct {
	// Endpoint is the URL of an S3-compatible server (MinIO, R2, ...); it
	// implies path-style addressing. Empty: AWS_ENDPOINT_URL_S3 or
	// AWS_ENDPOINT_URL, else AWS.
	Endpoint string
	// Region overrides the region from the environment or shared config.
	Region string
	// SSE asks S3 to encrypt every object walsync uploads with its own keys:
	// "AES256" (SSE-S3) or "aws:kms" (SSE-KMS, with SSEKMSKeyID or the
	// account's default key). Empty: the bucket's default encryption.
	SSE         string
	SSEKMSKeyID string
	// SSECustomerKey (SSE-C): the 32-byte key S3 encrypts each upload with
	// and needs again to read it. Not with SSE.
	SSECustomerKey []byte
	// AgeRecipients: every object written is encrypted to each of them
	// (age.go). AgeIdentities open the encrypted objects read.
	AgeRecipients []age.Recipient
	AgeIdentities []age.Identity
}

// Server-side encryption modes (Options.SSE).
const (
	SSES3  = "AES256"
	SSEKMS = "aws:kms"
)

// Validate reports options that cannot work together, naming them.
func (o Options) Validate() error {
	switch o.SSE {
	case "", SSES3, SSEKMS:
	default:
		return fmt.Errorf("server-side encryption %q: use %s (SSE-S3) or %s (SSE-KMS)", o.SSE, SSES3, SSEKMS)
	}
	if o.SSEKMSKeyID != "" && o.SSE != SSEKMS {
		return fmt.Errorf("a KMS key id is given without server-side encryption %s", SSEKMS)
	}
	if o.SSECustomerKey != nil {
		if len(o.SSECustomerKey) != 32 {
			return fmt.Errorf("the SSE-C key is %d bytes; it must be 32 (AES-256)", len(o.SSECustomerKey))
		}
		if o.SSE != "" {
			return fmt.Errorf("SSE-C and server-side encryption %s exclude each other: choose one", o.SSE)
		}
	}
	return nil
}

// Check asks a backend that can tell (S3: the bucket exists and the
// credentials work) whether the replica is usable, within 30 seconds. Its
// error matches ErrUnavailable when the backend did not answer definitely.
func Check(ctx context.Context, c Client) error {
	ch, ok := c.(interface{ Check(context.Context) error })
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return ch.Check(ctx)
}

// Opener builds a Client for a parsed URL. Backends register one each.
type Opener func(ctx context.Context, u *url.URL, o Options) (Client, error)

var openers = map[string]Opener{}

// Register makes a backend available for a URL scheme.
func Register(scheme string, o Opener) { openers[scheme] = o }

// Open returns the client for a replica URL such as file:///backups.
func Open(rawURL string) (Client, error) {
	return OpenWith(context.Background(), rawURL, Options{})
}

// OpenWith returns the client for a replica URL with backend options.
func OpenWith(ctx context.Context, rawURL string, o Options) (Client, error) {
	u, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if u.Scheme != "s3" && (o.SSE != "" || o.SSECustomerKey != nil) {
		return nil, fmt.Errorf("%s: server-side encryption applies to s3:// replicas only", rawURL)
	}
	op, ok := openers[u.Scheme]
	if !ok {
		return nil, fmt.Errorf("replica URL %q: unsupported scheme %q (supported: %s)", rawURL, u.Scheme, strings.Join(schemes(), ", "))
	}
	c, err := op(ctx, u, o)
	if err != nil {
		return nil, err
	}
	return withAge(c, o), nil
}

func schemes() []string {
	var a []string
	for s := range openers {
		a = append(a, s+"://")
	}
	return a
}

// ParseURL parses and checks a replica URL.
func ParseURL(rawURL string) (*url.URL, error) {
	if rawURL == "" {
		return nil, errors.New("replica URL is empty: give one such as file:///var/backups/walsync")
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("replica URL %q cannot be parsed: %w", rawURL, err)
	}
	if u.Scheme == "" {
		return nil, fmt.Errorf("replica URL %q has no scheme: use file:///absolute/dir", rawURL)
	}
	if u.Scheme == "s3" && u.Host == "" {
		return nil, fmt.Errorf("replica URL %q has no bucket: use s3://bucket/prefix", rawURL)
	}
	if u.Scheme == "file" {
		if u.Host != "" && u.Host != "localhost" {
			return nil, fmt.Errorf("replica URL %q: a file URL needs an absolute path after file:// (file:///dir), not host %q", rawURL, u.Host)
		}
		if !filepath.IsAbs(u.Path) {
			return nil, fmt.Errorf("replica URL %q: the path must be absolute (file:///dir)", rawURL)
		}
	}
	return u, nil
}

// Latest returns the last file of a database across all levels (the one with
// the highest MaxTXID), or nil if the database has no files.
func Latest(ctx context.Context, c Client, db string) (*ltx.FileInfo, error) {
	levels, err := levelsOf(ctx, c, db)
	if err != nil {
		return nil, err
	}
	var last *ltx.FileInfo
	for _, level := range levels {
		infos, err := c.LTXFiles(ctx, db, level)
		if err != nil {
			return nil, err
		}
		for _, fi := range infos {
			if last == nil || fi.MaxTXID > last.MaxTXID {
				last = fi
			}
		}
	}
	return last, nil
}

// NewDecoder returns an LTX decoder that streams: it does not build the page
// index of the file in memory (walsync never looks pages up), so decoding a
// file costs the same memory whatever the database's size.
func NewDecoder(r io.Reader) *ltx.Decoder {
	dec := ltx.NewDecoder(r)
	dec.SetRetainPageIndex(false)
	return dec
}

// NewEncoder returns an LTX encoder whose page index goes to a temporary
// file in dir past 16 Ki pages, so encoding a large database does not keep
// an index entry per page in memory.
func NewEncoder(w io.Writer, dir string) (*ltx.Encoder, error) {
	enc, err := ltx.NewEncoder(w)
	if err != nil {
		return nil, err
	}
	enc.SetSpillDir(dir)
	enc.SetSpillThreshold(spillThreshold)
	return enc, nil
}

// spillThreshold is the number of page index entries an encoder keeps in
// memory.
const spillThreshold = 16 << 10

// SetCompactorSpill makes a compactor's output index spill like NewEncoder's.
func SetCompactorSpill(c *ltx.Compactor, dir string) {
	c.SetSpillDir(dir)
	c.SetSpillThreshold(spillThreshold)
}

// ReadHeader opens a file and decodes its header and trailer.
func ReadHeader(ctx context.Context, c Client, db string, fi *ltx.FileInfo) (ltx.Header, ltx.Trailer, error) {
	rc, err := c.OpenLTXFile(ctx, db, fi.Level, fi.MinTXID, fi.MaxTXID)
	if err != nil {
		return ltx.Header{}, ltx.Trailer{}, err
	}
	defer rc.Close()
	dec := NewDecoder(rc)
	if err := dec.Verify(); err != nil {
		return ltx.Header{}, ltx.Trailer{}, fmt.Errorf("%s: %w", c.ObjectURL(db, fi.Level, fi.MinTXID, fi.MaxTXID), err)
	}
	return dec.Header(), dec.Trailer(), nil
}

// ErrCorrupt reports an object whose content fails verification.
var ErrCorrupt = errors.New("corrupt object")

// Chain picks, from files of any levels, the shortest contiguous chain that
// starts right after TXID from and reaches as far as possible without passing
// to (0: no limit). At each step it takes the file that starts at the next
// TXID and ends furthest.
func Chain(files []*ltx.FileInfo, from, to ltx.TXID) []*ltx.FileInfo {
	var chain []*ltx.FileInfo
	for pos := from; to == 0 || pos < to; {
		var best *ltx.FileInfo
		for _, fi := range files {
			if fi.MinTXID == pos+1 && (to == 0 || fi.MaxTXID <= to) && (best == nil || fi.MaxTXID > best.MaxTXID) {
				best = fi
			}
		}
		if best == nil {
			break
		}
		chain = append(chain, best)
		pos = best.MaxTXID
	}
	return chain
}

// AllLTXFiles lists levels 0 to MaxLevel of a database.
func AllLTXFiles(ctx context.Context, c Client, db string) ([]*ltx.FileInfo, error) {
	levels, err := levelsOf(ctx, c, db)
	if err != nil {
		return nil, err
	}
	var all []*ltx.FileInfo
	for _, level := range levels {
		infos, err := c.LTXFiles(ctx, db, level)
		if err != nil {
			return nil, err
		}
		all = append(all, infos...)
	}
	return all, nil
}

// LevelLister is implemented by backends that can tell in one request which
// levels (0 to MaxLevel) of a database hold files: a database seen for the
// first time costs one S3 LIST, not one per level.
type LevelLister interface {
	Levels(ctx context.Context, db string) ([]int, error)
}

func levelsOf(ctx context.Context, c Client, db string) ([]int, error) {
	if ll, ok := c.(LevelLister); ok {
		return ll.Levels(ctx, db)
	}
	levels := make([]int, 0, MaxLevel+1)
	for level := 0; level <= MaxLevel; level++ {
		levels = append(levels, level)
	}
	return levels, nil
}

// DatabaseLister is implemented by backends that can find the databases
// under their root ("" is a database at the root itself).
type DatabaseLister interface {
	Databases(ctx context.Context) ([]string, error)
}

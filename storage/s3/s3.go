// Package s3 is the s3:// replica backend, for AWS S3 and S3-compatible
// servers (MinIO, versitygw, Cloudflare R2, Tigris, Backblaze B2), in the
// layout Litestream 0.5 uses for S3:
//
//	<prefix>/<db>/<level as %04x>/<minTXID>-<maxTXID>.ltx
//
// plus walsync's transaction logs at <prefix>/<db>/txlog/<minTXID>-<maxTXID>.ltx.
//
// Credentials and region come from the standard AWS chain (environment,
// shared config, IMDS). An endpoint (Options.Endpoint, or AWS_ENDPOINT_URL_S3 /
// AWS_ENDPOINT_URL) selects path-style addressing. Every upload carries an
// SHA-256 checksum that the server verifies and the metadata
// litestream-timestamp; downloads ask for checksum validation. Server-side
// encryption (SSE-S3, SSE-KMS, SSE-C) applies to every upload, and SSE-C's
// key to every download (Options).
package s3

import (
	"context"
	"crypto/md5"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/superfly/ltx"
	"github.com/walsync/walsync/storage"
)

func init() {
	storage.Register("s3", func(ctx context.Context, u *url.URL, o storage.Options) (storage.Client, error) {
		return New(ctx, u.Host, strings.Trim(u.Path, "/"), o)
	})
}

// Client stores LTX files in one bucket under a prefix.
type Client struct {
	api      *s3.Client
	bucket   string
	prefix   string
	endpoint string
	sse      sse
}

// sse is the server-side encryption of every upload and, for SSE-C, the
// key every download needs.
type sse struct {
	mode, kmsKeyID string
	// SSE-C: the key and its MD5, base64 as the headers carry them
	customerKey, customerKeyMD5 string
}

func newSSE(o storage.Options) sse {
	s := sse{mode: o.SSE, kmsKeyID: o.SSEKMSKeyID}
	if o.SSECustomerKey != nil {
		sum := md5.Sum(o.SSECustomerKey)
		s.customerKey = base64.StdEncoding.EncodeToString(o.SSECustomerKey)
		s.customerKeyMD5 = base64.StdEncoding.EncodeToString(sum[:])
	}
	return s
}

func (s sse) put(in *s3.PutObjectInput) {
	if s.mode != "" {
		in.ServerSideEncryption = types.ServerSideEncryption(s.mode)
	}
	if s.kmsKeyID != "" {
		in.SSEKMSKeyId = aws.String(s.kmsKeyID)
	}
	if s.customerKey != "" {
		in.SSECustomerAlgorithm = aws.String("AES256")
		in.SSECustomerKey = aws.String(s.customerKey)
		in.SSECustomerKeyMD5 = aws.String(s.customerKeyMD5)
	}
}

func (s sse) get(in *s3.GetObjectInput) {
	if s.customerKey != "" {
		in.SSECustomerAlgorithm = aws.String("AES256")
		in.SSECustomerKey = aws.String(s.customerKey)
		in.SSECustomerKeyMD5 = aws.String(s.customerKeyMD5)
	}
}

// New returns a client for s3://bucket/prefix.
func New(ctx context.Context, bucket, prefix string, o storage.Options) (*Client, error) {
	var opts []func(*config.LoadOptions) error
	if o.Region != "" {
		opts = append(opts, config.WithRegion(o.Region))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("load AWS configuration: %w", err)
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	endpoint := o.Endpoint
	if endpoint == "" {
		endpoint = firstEnv("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
	}
	api := s3.NewFromConfig(cfg, func(so *s3.Options) {
		if endpoint != "" {
			so.BaseEndpoint = aws.String(endpoint)
			so.UsePathStyle = true
		}
		so.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		so.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	})
	return &Client{api: api, bucket: bucket, prefix: prefix, endpoint: endpoint, sse: newSSE(o)}, nil
}

func firstEnv(names ...string) string {
	for _, n := range names {
		if v := os.Getenv(n); v != "" {
			return v
		}
	}
	return ""
}

// URL returns the s3:// URL of the root.
func (c *Client) URL() string {
	u := "s3://" + c.bucket
	if c.prefix != "" {
		u += "/" + c.prefix
	}
	return u
}

// Describe says where the bucket is, for error messages.
func (c *Client) Describe() string {
	if c.endpoint != "" {
		return fmt.Sprintf("bucket %q at %s", c.bucket, c.endpoint)
	}
	return fmt.Sprintf("bucket %q on AWS S3", c.bucket)
}

func (c *Client) levelPrefix(db string, level int) string {
	dir := fmt.Sprintf("%04x", level)
	if level == storage.TxLogLevel {
		dir = "txlog"
	}
	return path.Join(c.prefix, db, dir) + "/"
}

func (c *Client) key(db string, level int, min, max ltx.TXID) string {
	return c.levelPrefix(db, level) + storage.Filename(level, min, max)
}

// Check verifies at startup that the bucket exists and the credentials work.
// An answer that the bucket is missing or the credentials are refused is
// returned as it is; no answer, or a failing server, matches
// storage.ErrUnavailable (the caller may go on and retry later).
func (c *Client) Check(ctx context.Context) error {
	_, err := c.api.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(c.bucket)})
	if err == nil {
		return nil
	}
	if transient(err) {
		return storage.Unavailable(fmt.Errorf("cannot reach %s now: %w", c.Describe(), err))
	}
	return fmt.Errorf("cannot use %s: %w (check the bucket name, the endpoint, the region and the AWS credentials)", c.Describe(), err)
}

// transient reports whether err is one a retry may cure: the request was
// not answered (refused, reset, timed out) or the server said it is failing
// or overloaded.
func transient(err error) bool {
	var se *smithyhttp.RequestSendError
	if errors.As(err, &se) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) {
		s := re.HTTPStatusCode()
		return s >= 500 || s == 408 || s == 429
	}
	return false
}

// LTXFiles lists one level of a database.
func (c *Client) LTXFiles(ctx context.Context, db string, level int) ([]*ltx.FileInfo, error) {
	var a []*ltx.FileInfo
	p := s3.NewListObjectsV2Paginator(c.api, &s3.ListObjectsV2Input{Bucket: aws.String(c.bucket), Prefix: aws.String(c.levelPrefix(db, level))})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list %s in %s: %w", c.levelPrefix(db, level), c.Describe(), err)
		}
		for _, obj := range page.Contents {
			min, max, err := storage.ParseFilename(level, path.Base(aws.ToString(obj.Key)))
			if err != nil {
				continue
			}
			a = append(a, &ltx.FileInfo{Level: level, MinTXID: min, MaxTXID: max, Size: aws.ToInt64(obj.Size), CreatedAt: aws.ToTime(obj.LastModified)})
		}
	}
	sort.Slice(a, func(i, j int) bool {
		if a[i].MinTXID != a[j].MinTXID {
			return a[i].MinTXID < a[j].MinTXID
		}
		return a[i].MaxTXID < a[j].MaxTXID
	})
	return a, nil
}

// Levels lists the level directories of a database in one request per
// 1,000 entries (a delimiter listing).
func (c *Client) Levels(ctx context.Context, db string) ([]int, error) {
	prefix := path.Join(c.prefix, db) + "/"
	var levels []int
	p := s3.NewListObjectsV2Paginator(c.api, &s3.ListObjectsV2Input{Bucket: aws.String(c.bucket), Prefix: aws.String(prefix), Delimiter: aws.String("/")})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list %s in %s: %w", prefix, c.Describe(), err)
		}
		for _, cp := range page.CommonPrefixes {
			dir := strings.TrimSuffix(strings.TrimPrefix(aws.ToString(cp.Prefix), prefix), "/")
			if len(dir) != 4 {
				continue
			}
			if l, err := strconv.ParseUint(dir, 16, 8); err == nil && int(l) <= storage.MaxLevel {
				levels = append(levels, int(l))
			}
		}
	}
	sort.Ints(levels)
	return levels, nil
}

// OpenLTXFile downloads one file, validating its checksum when the server has one.
func (c *Client) OpenLTXFile(ctx context.Context, db string, level int, min, max ltx.TXID) (io.ReadCloser, error) {
	key := c.key(db, level, min, max)
	get := func(key string) (*s3.GetObjectOutput, error) {
		in := &s3.GetObjectInput{Bucket: aws.String(c.bucket), Key: aws.String(key), ChecksumMode: types.ChecksumModeEnabled}
		c.sse.get(in)
		return c.api.GetObject(ctx, in)
	}
	out, err := get(key)
	var nsk *types.NoSuchKey
	if errors.As(err, &nsk) && level == storage.TxLogLevel {
		key = c.levelPrefix(db, level) + storage.LegacyTxLogFilename(min, max)
		out, err = get(key)
	}
	if err != nil {
		if errors.As(err, &nsk) {
			return nil, fmt.Errorf("s3://%s/%s: %w", c.bucket, key, storage.ErrNotFound)
		}
		return nil, fmt.Errorf("get s3://%s/%s: %w", c.bucket, key, err)
	}
	return out.Body, nil
}

// WriteLTXFile uploads one file with an SHA-256 checksum the server verifies.
func (c *Client) WriteLTXFile(ctx context.Context, db string, level int, min, max ltx.TXID, r io.ReadSeeker, ts time.Time) error {
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		return err
	}
	key := c.key(db, level, min, max)
	in := &s3.PutObjectInput{
		Bucket:            aws.String(c.bucket),
		Key:               aws.String(key),
		Body:              r,
		ChecksumAlgorithm: types.ChecksumAlgorithmSha256,
		Metadata:          map[string]string{"litestream-timestamp": ts.UTC().Format(time.RFC3339Nano)},
	}
	c.sse.put(in)
	_, err := c.api.PutObject(ctx, in)
	if err != nil {
		return fmt.Errorf("put s3://%s/%s: %w", c.bucket, key, err)
	}
	return nil
}

// DeleteLTXFiles removes files, up to 1,000 keys per request (a
// transaction log's two: its name and its legacy one).
func (c *Client) DeleteLTXFiles(ctx context.Context, db string, files []*ltx.FileInfo) error {
	for len(files) > 0 {
		n := min(len(files), 500)
		objs := make([]types.ObjectIdentifier, 0, n)
		for _, fi := range files[:n] {
			objs = append(objs, types.ObjectIdentifier{Key: aws.String(c.key(db, fi.Level, fi.MinTXID, fi.MaxTXID))})
			if fi.Level == storage.TxLogLevel {
				objs = append(objs, types.ObjectIdentifier{Key: aws.String(c.levelPrefix(db, fi.Level) + storage.LegacyTxLogFilename(fi.MinTXID, fi.MaxTXID))})
			}
		}
		out, err := c.api.DeleteObjects(ctx, &s3.DeleteObjectsInput{Bucket: aws.String(c.bucket), Delete: &types.Delete{Objects: objs, Quiet: aws.Bool(true)}})
		if err != nil {
			return fmt.Errorf("delete from %s: %w", c.Describe(), err)
		}
		if len(out.Errors) > 0 {
			e := out.Errors[0]
			return fmt.Errorf("delete s3://%s/%s: %s", c.bucket, aws.ToString(e.Key), aws.ToString(e.Message))
		}
		files = files[n:]
	}
	return nil
}

// ObjectURL returns the object's s3:// URL.
func (c *Client) ObjectURL(db string, level int, min, max ltx.TXID) string {
	return "s3://" + c.bucket + "/" + c.key(db, level, min, max)
}

// Databases lists the keys under the prefix and returns the database paths
// that hold LTX files.
func (c *Client) Databases(ctx context.Context) ([]string, error) {
	prefix := c.prefix
	if prefix != "" {
		prefix += "/"
	}
	seen := map[string]bool{}
	p := s3.NewListObjectsV2Paginator(c.api, &s3.ListObjectsV2Input{Bucket: aws.String(c.bucket), Prefix: aws.String(prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", c.Describe(), err)
		}
		for _, obj := range page.Contents {
			key := strings.TrimPrefix(aws.ToString(obj.Key), prefix)
			dir := path.Dir(key) // <db>/<level>
			level := path.Base(dir)
			kind := 0 // an LTX file of any level
			if level == "txlog" {
				kind = storage.TxLogLevel
			}
			if _, _, err := storage.ParseFilename(kind, path.Base(key)); err != nil {
				continue
			}
			if level != "txlog" && !(len(level) == 4 && strings.Trim(level, "0123456789abcdef") == "") {
				continue
			}
			db := path.Dir(dir)
			if db == "." {
				db = ""
			}
			seen[db] = true
		}
	}
	dbs := make([]string, 0, len(seen))
	for db := range seen {
		dbs = append(dbs, db)
	}
	sort.Strings(dbs)
	return dbs, nil
}

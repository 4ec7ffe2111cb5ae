package s3_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/superfly/ltx"
	"github.com/walsync/walsync/internal/s3test"
	"github.com/walsync/walsync/storage"
	_ "github.com/walsync/walsync/storage/s3"
)

// TestRoundTrip writes, lists, reads and deletes LTX files on a real S3
// server, at the Litestream 0.5 keys, with the timestamp metadata.
func TestRoundTrip(t *testing.T) {
	srv := s3test.Start(t)
	srv.SetEnv(t)
	srv.CreateBucket(t, "walsync-test")
	ctx := context.Background()
	c, err := storage.Open("s3://walsync-test/backups/prod")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.(interface{ Check(context.Context) error }).Check(ctx); err != nil {
		t.Fatal(err)
	}
	ts := time.Date(2026, 11, 23, 10, 0, 0, 123e6, time.UTC)
	body := []byte("not really an ltx file, but bytes all the same")
	for _, f := range []struct {
		level    int
		min, max ltx.TXID
	}{{0, 1, 3}, {0, 4, 4}, {9, 1, 1}, {storage.TxLogLevel, 1, 3}} {
		if err := c.WriteLTXFile(ctx, "a/b.db", f.level, f.min, f.max, bytes.NewReader(body), ts); err != nil {
			t.Fatal(err)
		}
	}
	infos, err := c.LTXFiles(ctx, "a/b.db", 0)
	if err != nil || len(infos) != 2 || infos[0].MaxTXID != 3 || infos[1].MinTXID != 4 {
		t.Fatalf("level 0 listing: %v %v", infos, err)
	}
	// One delimiter listing names the levels; the txlog directory is not one.
	if levels, err := c.(storage.LevelLister).Levels(ctx, "a/b.db"); err != nil || len(levels) != 2 || levels[0] != 0 || levels[1] != 9 {
		t.Fatalf("levels of a/b.db: %v %v", levels, err)
	}
	if levels, err := c.(storage.LevelLister).Levels(ctx, "a"); err != nil || len(levels) != 0 {
		t.Fatalf("levels of a (a directory, not a database): %v %v", levels, err)
	}
	if fi, err := storage.Latest(ctx, c, "a/b.db"); err != nil || fi == nil || fi.Level != 0 || fi.MaxTXID != 4 {
		t.Fatalf("latest of a/b.db: %v %v", fi, err)
	}
	if all, err := storage.AllLTXFiles(ctx, c, "a/b.db"); err != nil || len(all) != 3 {
		t.Fatalf("all files of a/b.db: %v %v", all, err)
	}
	api := srv.Client(t)
	head, err := api.HeadObject(ctx, &awss3.HeadObjectInput{Bucket: aws.String("walsync-test"), Key: aws.String("backups/prod/a/b.db/0000/0000000000000001-0000000000000003.ltx")})
	if err != nil {
		t.Fatalf("object not at the Litestream key: %v", err)
	}
	if got := head.Metadata["litestream-timestamp"]; got != "2026-11-23T10:00:00.123Z" {
		t.Fatalf("litestream-timestamp = %q", got)
	}
	if _, err := api.HeadObject(ctx, &awss3.HeadObjectInput{Bucket: aws.String("walsync-test"), Key: aws.String("backups/prod/a/b.db/0009/0000000000000001-0000000000000001.ltx")}); err != nil {
		t.Fatalf("snapshot not at level 0009: %v", err)
	}
	rc, err := c.OpenLTXFile(ctx, "a/b.db", 0, 4, 4)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if !bytes.Equal(got, body) {
		t.Fatalf("read back %q", got)
	}
	if err := c.DeleteLTXFiles(ctx, "a/b.db", infos[:1]); err != nil {
		t.Fatal(err)
	}
	if _, err := c.OpenLTXFile(ctx, "a/b.db", 0, 1, 3); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("deleted file: %v", err)
	}
}

// TestBadBucketOrCredentials checks that the startup check names the bucket
// and the endpoint.
func TestBadBucketOrCredentials(t *testing.T) {
	srv := s3test.Start(t)
	srv.SetEnv(t)
	srv.CreateBucket(t, "real-bucket")
	ctx := context.Background()
	c, err := storage.Open("s3://no-such-bucket/x")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.(interface{ Check(context.Context) error }).Check(ctx); err == nil || !strings.Contains(err.Error(), `"no-such-bucket"`) || !strings.Contains(err.Error(), srv.Endpoint) {
		t.Fatalf("unknown bucket: %v", err)
	}
	t.Setenv("AWS_SECRET_ACCESS_KEY", "wrong")
	c, err = storage.Open("s3://real-bucket/x")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.(interface{ Check(context.Context) error }).Check(ctx); err == nil || !strings.Contains(err.Error(), "credentials") {
		t.Fatalf("wrong credentials: %v", err)
	}
}

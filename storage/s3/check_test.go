package s3_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/walsync/walsync/internal/s3test"
	"github.com/walsync/walsync/storage"
	"github.com/walsync/walsync/storage/s3"
)

// TestCheckTellsDefiniteFromUnavailable: at startup only a definite answer
// (no such bucket, refused credentials) is fatal; a server that fails
// (5xx, throttling) or does not answer is "unavailable", so the mount starts
// anyway and retries. The failing server is injected in front of a real one.
func TestCheckTellsDefiniteFromUnavailable(t *testing.T) {
	srv := s3test.Start(t)
	srv.SetEnv(t)
	srv.CreateBucket(t, "walsync-check")
	ctx := context.Background()
	check := func(endpoint, bucket string) error {
		c, err := s3.New(ctx, bucket, "p", storage.Options{Endpoint: endpoint})
		if err != nil {
			t.Fatal(err)
		}
		return storage.Check(ctx, c)
	}
	if err := check(srv.Endpoint, "walsync-check"); err != nil {
		t.Fatalf("a good bucket: %v", err)
	}
	if err := check(srv.Endpoint, "no-such-bucket"); err == nil || errors.Is(err, storage.ErrUnavailable) || !strings.Contains(err.Error(), `"no-such-bucket"`) {
		t.Fatalf("a missing bucket must be a definite error naming it: %v", err)
	}
	t.Setenv("AWS_SECRET_ACCESS_KEY", "wrong")
	if err := check(srv.Endpoint, "walsync-check"); err == nil || errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("refused credentials must be a definite error: %v", err)
	}
	for _, status := range []int{500, 503, 429} {
		var n atomic.Int64
		failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n.Add(1)
			w.WriteHeader(status)
		}))
		err := check(failing.URL, "walsync-check")
		failing.Close()
		if !errors.Is(err, storage.ErrUnavailable) {
			t.Fatalf("HTTP %d at startup: %v, want unavailable", status, err)
		}
		if status != 429 && n.Load() < 2 {
			t.Fatalf("HTTP %d: %d attempts, want retries", status, n.Load())
		}
	}
	closed := httptest.NewServer(http.NotFoundHandler())
	url := closed.URL
	closed.Close()
	if err := check(url, "walsync-check"); !errors.Is(err, storage.ErrUnavailable) || !strings.Contains(err.Error(), strings.TrimPrefix(url, "http://")) {
		t.Fatalf("connection refused at startup: %v, want unavailable naming the endpoint", err)
	}
}

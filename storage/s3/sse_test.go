package s3_test

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/walsync/walsync/internal/s3test"
	"github.com/walsync/walsync/storage"
)

// headerLog is a reverse proxy in front of the S3 server that records the
// server-side encryption headers of every object request.
type headerLog struct {
	mu   sync.Mutex
	reqs []string // "METHOD path: header=value, ..."
}

func startHeaderLog(t *testing.T, backend string) (*headerLog, string) {
	t.Helper()
	u, err := url.Parse(backend)
	if err != nil {
		t.Fatal(err)
	}
	l := &headerLog{}
	proxy := httputil.NewSingleHostReverseProxy(u) // keeps the Host the request was signed for
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, ".ltx") || strings.HasSuffix(r.URL.Path, ".wtx") {
			var hs []string
			for name, v := range r.Header {
				if n := strings.ToLower(name); strings.HasPrefix(n, "x-amz-server-side-encryption") {
					hs = append(hs, n+"="+v[0])
				}
			}
			l.mu.Lock()
			l.reqs = append(l.reqs, r.Method+" "+r.URL.Path+": "+strings.Join(hs, ", "))
			l.mu.Unlock()
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return l, srv.URL
}

func (l *headerLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.reqs
	l.reqs = nil
	return r
}

// TestServerSideEncryptionHeaders: with SSE-S3, SSE-KMS or SSE-C, every
// upload asks the server to encrypt, and with SSE-C every download sends
// the key. The S3 server the tests run (versitygw v1.8.0) accepts these
// headers but does not encrypt, nor refuse a download without the SSE-C
// key (checked when this test was written), so the test checks the
// requests on the wire, and that the objects still round-trip.
func TestServerSideEncryptionHeaders(t *testing.T) {
	srv := s3test.Start(t)
	srv.SetEnv(t)
	srv.CreateBucket(t, "ssebucket")
	log, endpoint := startHeaderLog(t, srv.Endpoint)
	key := bytes.Repeat([]byte{0x5a}, 32)
	sum := md5.Sum(key)
	ctx := context.Background()
	for _, tc := range []struct {
		name     string
		o        storage.Options
		put, get []string // headers every PUT, every GET must carry
	}{
		{"none", storage.Options{}, nil, nil},
		{"SSE-S3", storage.Options{SSE: storage.SSES3},
			[]string{"x-amz-server-side-encryption=AES256"}, nil},
		{"SSE-KMS", storage.Options{SSE: storage.SSEKMS, SSEKMSKeyID: "alias/walsync"},
			[]string{"x-amz-server-side-encryption=aws:kms", "x-amz-server-side-encryption-aws-kms-key-id=alias/walsync"}, nil},
		{"SSE-C", storage.Options{SSECustomerKey: key},
			[]string{"x-amz-server-side-encryption-customer-algorithm=AES256",
				"x-amz-server-side-encryption-customer-key=" + base64.StdEncoding.EncodeToString(key),
				"x-amz-server-side-encryption-customer-key-md5=" + base64.StdEncoding.EncodeToString(sum[:])},
			[]string{"x-amz-server-side-encryption-customer-algorithm=AES256",
				"x-amz-server-side-encryption-customer-key=" + base64.StdEncoding.EncodeToString(key)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.o
			o.Endpoint = endpoint
			c, err := storage.OpenWith(ctx, "s3://ssebucket/"+strings.ToLower(tc.name), o)
			if err != nil {
				t.Fatal(err)
			}
			body := []byte("bytes of an LTX file " + tc.name)
			for _, level := range []int{0, storage.TxLogLevel} {
				if err := c.WriteLTXFile(ctx, "a.db", level, 1, 2, bytes.NewReader(body), time.Now()); err != nil {
					t.Fatal(err)
				}
				r, err := c.OpenLTXFile(ctx, "a.db", level, 1, 2)
				if err != nil {
					t.Fatal(err)
				}
				got, err := io.ReadAll(r)
				r.Close()
				if err != nil || !bytes.Equal(got, body) {
					t.Fatalf("level %d read back %q, %v", level, got, err)
				}
			}
			reqs := log.take()
			var puts, gets int
			for _, r := range reqs {
				want := tc.get
				if strings.HasPrefix(r, "PUT ") {
					want, puts = tc.put, puts+1
				} else if strings.HasPrefix(r, "GET ") {
					gets++
				}
				for _, h := range want {
					if !strings.Contains(r, h) {
						t.Errorf("%s: no %s", r, h)
					}
				}
				if tc.name == "none" && strings.Contains(r, "x-amz-server-side-encryption") {
					t.Errorf("%s: encryption asked for without an option", r)
				}
				if tc.name != "SSE-C" && strings.Contains(r, "customer-key=") {
					t.Errorf("%s: an SSE-C key sent without SSE-C", r)
				}
			}
			if puts != 2 || gets < 2 {
				t.Fatalf("saw %d uploads and %d downloads, want 2 and 2: %v", puts, gets, reqs)
			}
		})
	}
}

// TestServerSideEncryptionOptions: options that cannot work are refused
// before any request, naming what is wrong.
func TestServerSideEncryptionOptions(t *testing.T) {
	for _, tc := range []struct {
		url  string
		o    storage.Options
		want string
	}{
		{"s3://b/p", storage.Options{SSE: "aes256"}, `server-side encryption "aes256": use AES256 (SSE-S3) or aws:kms (SSE-KMS)`},
		{"s3://b/p", storage.Options{SSEKMSKeyID: "k"}, "a KMS key id is given without server-side encryption aws:kms"},
		{"s3://b/p", storage.Options{SSECustomerKey: []byte("short")}, "the SSE-C key is 5 bytes; it must be 32 (AES-256)"},
		{"s3://b/p", storage.Options{SSE: storage.SSES3, SSECustomerKey: make([]byte, 32)}, "SSE-C and server-side encryption AES256 exclude each other"},
		{"file:///tmp/x", storage.Options{SSE: storage.SSES3}, "server-side encryption applies to s3:// replicas only"},
	} {
		_, err := storage.OpenWith(context.Background(), tc.url, tc.o)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want an error saying %q", tc.o, err, tc.want)
		}
	}
}

// Package s3test runs a real S3 server for tests: versitygw, at a pinned
// version built from the Go module proxy (cached between runs), serving a
// temporary directory on 127.0.0.1.
package s3test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/walsync/walsync/internal/testtools"
)

// Module is the pinned S3 server.
const Module = "github.com/versity/versitygw/cmd/versitygw@v1.8.0"

// Binary returns the path of the versitygw binary, building it once.
func Binary() (string, error) { return testtools.Install(Module) }

// Server is a running versitygw.
type Server struct {
	Endpoint  string
	AccessKey string
	SecretKey string
	Dir       string
	cmd       *exec.Cmd
}

// Start starts a server on a free port of 127.0.0.1; it stops with the test.
func Start(t testing.TB) *Server {
	t.Helper()
	s, err := Launch(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

// Launch starts a server serving dir on a free port of 127.0.0.1.
func Launch(dir string) (*Server, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := l.Addr().String()
	l.Close()
	return LaunchAt(dir, addr)
}

// LaunchAt starts a server serving dir on addr (127.0.0.1:port).
func LaunchAt(dir, addr string) (*Server, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	s := &Server{Endpoint: "http://" + addr, AccessKey: "walsynctest", SecretKey: "walsynctestsecret", Dir: dir}
	s.cmd = exec.Command(bin, "--access", s.AccessKey, "--secret", s.SecretKey, "--port", addr, "--quiet", "posix", s.Dir)
	s.cmd.Stdout, s.cmd.Stderr = os.Stderr, os.Stderr
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return s, nil
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("versitygw did not listen on %s", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop kills the server.
func (s *Server) Stop() {
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
}

// Env returns the environment a walsync process needs to reach the server.
func (s *Server) Env() []string {
	return []string{
		"AWS_ACCESS_KEY_ID=" + s.AccessKey,
		"AWS_SECRET_ACCESS_KEY=" + s.SecretKey,
		"AWS_REGION=us-east-1",
		"AWS_ENDPOINT_URL_S3=" + s.Endpoint,
	}
}

// SetEnv sets Env in this process for the duration of the test.
func (s *Server) SetEnv(t *testing.T) {
	for _, kv := range s.Env() {
		for i := range kv {
			if kv[i] == '=' {
				t.Setenv(kv[:i], kv[i+1:])
				break
			}
		}
	}
}

// Client returns an S3 client for the server.
func (s *Server) Client(t testing.TB) *s3.Client {
	t.Helper()
	c, err := s.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// NewClient returns an S3 client for the server.
func (s *Server) NewClient() (*s3.Client, error) {
	cfg, err := config.LoadDefaultConfig(context.Background(),
		config.WithRegion("us-east-1"),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(s.AccessKey, s.SecretKey, "")))
	if err != nil {
		return nil, err
	}
	return s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.BaseEndpoint = aws.String(s.Endpoint)
		o.UsePathStyle = true
	}), nil
}

// CreateBucket creates a bucket.
func (s *Server) CreateBucket(t testing.TB, name string) {
	t.Helper()
	if err := s.MakeBucket(name); err != nil {
		t.Fatal(err)
	}
}

// MakeBucket creates a bucket.
func (s *Server) MakeBucket(name string) error {
	c, err := s.NewClient()
	if err != nil {
		return err
	}
	if _, err := c.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		return fmt.Errorf("create bucket %s: %w", name, err)
	}
	return nil
}

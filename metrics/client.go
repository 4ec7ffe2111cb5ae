package metrics

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/superfly/ltx"
	"github.com/walsync/walsync/storage"
)

// Client is a storage.Client whose requests are counted and timed, and
// which remembers whether the replica answered its last request.
type Client struct {
	storage.Client
	m       *Metrics
	replica string

	mu      sync.Mutex
	lastOK  time.Time
	lastErr error
	errAt   time.Time
}

// Instrument wraps a replica client.
func (m *Metrics) Instrument(c storage.Client) *Client {
	return &Client{Client: c, m: m, replica: c.URL()}
}

// Reachable reports whether the replica answered its last request (or
// has not been asked anything yet), with the last failure.
func (c *Client) Reachable() (ok bool, lastOK time.Time, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lastErr != nil && !c.errAt.Before(c.lastOK) {
		return false, c.lastOK, c.lastErr
	}
	return true, c.lastOK, nil
}

// lastAnswer is the replica's last answer: whether it was one, when, and
// the failure.
func (c *Client) lastAnswer() (ok bool, at time.Time, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lastErr != nil && !c.errAt.Before(c.lastOK) {
		return false, c.errAt, c.lastErr
	}
	return true, c.lastOK, nil
}

// Levels lists the levels a database has, in one request where the
// backend can (storage.LevelLister: S3), as the backend itself would.
func (c *Client) Levels(ctx context.Context, db string) ([]int, error) {
	ll, ok := c.Client.(storage.LevelLister)
	if !ok {
		levels := make([]int, 0, storage.MaxLevel+1)
		for level := 0; level <= storage.MaxLevel; level++ {
			levels = append(levels, level)
		}
		return levels, nil
	}
	start := time.Now()
	levels, err := ll.Levels(ctx, db)
	c.done("list", start, err)
	return levels, err
}

// done counts one request.
func (c *Client) done(op string, start time.Time, err error) {
	c.m.ops.WithLabelValues(c.replica, op).Inc()
	c.m.duration.WithLabelValues(c.replica, op).Observe(time.Since(start).Seconds())
	if errors.Is(err, context.Canceled) {
		return // given up by the caller: no answer either way
	}
	now := time.Now()
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		c.m.errs.WithLabelValues(c.replica, op).Inc()
		c.mu.Lock()
		c.lastErr, c.errAt = err, now
		c.mu.Unlock()
		return
	}
	c.mu.Lock()
	c.lastOK = now
	c.mu.Unlock()
}

// LTXFiles lists one level.
func (c *Client) LTXFiles(ctx context.Context, db string, level int) ([]*ltx.FileInfo, error) {
	start := time.Now()
	infos, err := c.Client.LTXFiles(ctx, db, level)
	c.done("list", start, err)
	return infos, err
}

// OpenLTXFile opens a file; its bytes are counted as they are read.
func (c *Client) OpenLTXFile(ctx context.Context, db string, level int, minTXID, maxTXID ltx.TXID) (io.ReadCloser, error) {
	start := time.Now()
	rc, err := c.Client.OpenLTXFile(ctx, db, level, minTXID, maxTXID)
	c.done("get", start, err)
	if err != nil {
		return nil, err
	}
	return &countingReader{ReadCloser: rc, n: c.m.bytes.WithLabelValues(c.replica, "down")}, nil
}

// WriteLTXFile uploads a file.
func (c *Client) WriteLTXFile(ctx context.Context, db string, level int, minTXID, maxTXID ltx.TXID, r io.ReadSeeker, ts time.Time) error {
	n := size(r)
	start := time.Now()
	err := c.Client.WriteLTXFile(ctx, db, level, minTXID, maxTXID, r, ts)
	c.done("put", start, err)
	if err == nil && n > 0 {
		c.m.bytes.WithLabelValues(c.replica, "up").Add(float64(n))
	}
	return err
}

// DeleteLTXFiles removes files.
func (c *Client) DeleteLTXFiles(ctx context.Context, db string, files []*ltx.FileInfo) error {
	start := time.Now()
	err := c.Client.DeleteLTXFiles(ctx, db, files)
	c.done("delete", start, err)
	return err
}

// Check passes the backend's own check through (storage.Check).
func (c *Client) Check(ctx context.Context) error {
	return storage.Check(ctx, c.Client)
}

// size is the size of what WriteLTXFile uploads: the whole of r (the
// backends write from offset 0), -1 when r cannot tell.
func size(r io.ReadSeeker) int64 {
	cur, err := r.Seek(0, io.SeekCurrent)
	if err != nil {
		return -1
	}
	end, err := r.Seek(0, io.SeekEnd)
	if _, serr := r.Seek(cur, io.SeekStart); err != nil || serr != nil {
		return -1
	}
	return end
}

type countingReader struct {
	io.ReadCloser
	n prometheus.Counter
}

func (r *countingReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	r.n.Add(float64(n))
	return n, err
}

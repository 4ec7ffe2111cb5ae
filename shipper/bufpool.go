package shipper

import (
	"bufio"
	"io"
	"sync"
)

var bufPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 64<<10) }}

// pooledWriter is a bufio.Writer returned to a pool on Flush, so staging a
// small transaction allocates no 64 KiB buffer.
type pooledWriter struct{ *bufio.Writer }

func newBufWriter(w io.Writer) *pooledWriter {
	bw := bufPool.Get().(*bufio.Writer)
	bw.Reset(w)
	return &pooledWriter{bw}
}

func (p *pooledWriter) Flush() error {
	err := p.Writer.Flush()
	p.Writer.Reset(nil)
	bufPool.Put(p.Writer)
	p.Writer = nil
	return err
}

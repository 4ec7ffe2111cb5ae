package shipper

import (
	"bufio"
	"io"
	"sync"
)

// Staging a transaction or building an LTX file borrows a 64 KiB buffer
// instead of allocating one: the commit path stays allocation-light.
var bufPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 64<<10) }}

func getBufWriter(w io.Writer) *bufio.Writer {
	bw := bufPool.Get().(*bufio.Writer)
	bw.Reset(w)
	return bw
}

func putBufWriter(bw *bufio.Writer) {
	bw.Reset(nil)
	bufPool.Put(bw)
}

package shipper

// Building the LTX file of a batch from its staged transaction log, on disk
// or, when staging is full, in memory.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"

	"github.com/superfly/ltx"
	"github.com/walsync/walsync/storage"
)

// buildLTX encodes consecutive staged transactions as one LTX file holding
// the last version of every page, in a temporary file that is removed on
// Close. A snapshot (of transactions that hold every page) starts at TXID 1.
//
// When staging's filesystem is full, a batch of up to maxInMemoryBuild
// staged bytes is built in memory instead: uploading is what frees staging,
// so it must not need space there.
func (st *stage) buildLTX(f *os.File, recs []storage.TxRecord, snapshot bool) (uploadFile, error) {
	first, last := recs[0], recs[len(recs)-1]
	out, err := st.encodeLTX(f, recs, snapshot, true)
	if errors.Is(err, syscall.ENOSPC) && last.End()-first.Offset <= maxInMemoryBuild {
		out, err = st.encodeLTX(f, recs, snapshot, false)
	}
	if err != nil {
		return nil, fmt.Errorf("build LTX %s of %s: %w", ltx.FormatFilename(first.TXID, last.TXID), st.db, err)
	}
	return out, nil
}

// maxInMemoryBuild bounds a batch built in memory when staging is full.
const maxInMemoryBuild = 64 << 20

func (st *stage) encodeLTX(f *os.File, recs []storage.TxRecord, snapshot, onDisk bool) (uploadFile, error) {
	first, last := recs[0], recs[len(recs)-1]
	pages := 0 // the index holds a word per page number
	for _, r := range recs {
		pages = max(pages, int(r.Commit))
	}
	indexPages, spillDir := pages, st.dir
	if !onDisk {
		indexPages, spillDir = 0, ""
	}
	latest, err := newPageIndex(st.dir, indexPages)
	if err != nil {
		return nil, err
	}
	defer latest.close()
	for _, r := range recs {
		for i := 0; i < int(r.PageCount); i++ {
			pgno, off, err := r.PageOffset(f, i)
			if err != nil {
				return nil, err
			}
			if err := latest.set(pgno, off); err != nil {
				return nil, err
			}
		}
	}

	var out uploadFile
	var w io.Writer
	if onDisk {
		tmp, err := os.CreateTemp(st.dir, ".ltx-*")
		if err != nil {
			return nil, err
		}
		out, w = &tempFile{File: tmp}, tmp
	} else {
		b := &memFile{}
		out, w = b, &b.buf
	}
	bw := getBufWriter(w)
	defer putBufWriter(bw)
	enc, err := storage.NewEncoder(bw, spillDir) // a big file's page index goes to disk
	if err != nil {
		out.Close()
		return nil, err
	}
	defer enc.Cleanup()
	hdr := ltx.Header{
		Version: ltx.Version, PageSize: first.PageSize, Commit: last.Commit,
		MinTXID: first.TXID, MaxTXID: last.TXID, Timestamp: last.Timestamp, PreApplyChecksum: first.Pre,
	}
	if first.TXID == 1 || snapshot {
		hdr.MinTXID, hdr.PreApplyChecksum = 1, 0
	}
	err = enc.EncodeHeader(hdr)
	buf := make([]byte, first.PageSize)
	if err == nil {
		err = latest.each(last.Commit, func(pgno uint32, off int64) error {
			if _, err := f.ReadAt(buf, off); err != nil {
				return err
			}
			return enc.EncodePage(ltx.PageHeader{Pgno: pgno}, buf)
		})
	}
	if err == nil {
		enc.SetPostApplyChecksum(last.Post)
		err = enc.Close()
	}
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		out.Close()
		return nil, err
	}
	return out, nil
}

// uploadFile is a built LTX file, read for its upload and released by Close.
type uploadFile interface {
	io.ReadSeeker
	io.Closer
}

// tempFile is removed when closed.
type tempFile struct{ *os.File }

func (t *tempFile) Close() error {
	t.File.Close()
	return os.Remove(t.Name())
}

// memFile is a file built in memory.
type memFile struct {
	buf bytes.Buffer
	r   *bytes.Reader
}

func (m *memFile) reader() *bytes.Reader {
	if m.r == nil {
		m.r = bytes.NewReader(m.buf.Bytes())
	}
	return m.r
}

func (m *memFile) Read(p []byte) (int, error)                { return m.reader().Read(p) }
func (m *memFile) Seek(off int64, whence int) (int64, error) { return m.reader().Seek(off, whence) }
func (m *memFile) Close() error                              { return nil }

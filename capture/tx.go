package capture

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/superfly/ltx"
)

// Tx is one committed transaction of one database, ready to be staged.
//
// Its page contents are not copied into memory: they are read back from the
// database's files by WriteLTX, which must therefore run before the file event
// that produced the Tx returns (the Sink contract).
type Tx struct {
	TXID         ltx.TXID
	PageSize     uint32
	Commit       uint32 // database size in pages after the transaction
	PreChecksum  ltx.Checksum
	PostChecksum ltx.Checksum
	Timestamp    time.Time
	// Full reports that the transaction carries every page of the database:
	// a snapshot when TXID is 1, otherwise a resynchronisation after walsync
	// could not prove that its last captured state is the state on disk.
	Full bool

	pages []pageRef // sorted by page number, lock page excluded
	files Files
}

// pageRef says where the committed content of one page can be read; data,
// when set, is that content in hand (valid only while the Sink runs).
type pageRef struct {
	pgno uint32
	kind Kind
	off  int64
	data []byte
	// verify: content read back must have checksum sum (Config.Outside).
	verify bool
	sum    ltx.Checksum
}

// ErrChangedUnderRead is returned when a page read back to be staged is not
// what the capture read (the files are read from outside, and the
// application checkpointed or restarted its WAL in between): the
// transaction is not staged, and the next capture reads it again.
var ErrChangedUnderRead = errors.New("a page changed while the transaction was read")

// PageCount is the number of pages the transaction carries.
func (tx *Tx) PageCount() int { return len(tx.pages) }

// Pgnos returns the page numbers the transaction carries, in order.
func (tx *Tx) Pgnos() []uint32 {
	a := make([]uint32, len(tx.pages))
	for i, p := range tx.pages {
		a[i] = p.pgno
	}
	return a
}

// ForEachPage calls fn with each page the transaction carries, in page
// number order. data is only valid during the call.
func (tx *Tx) ForEachPage(fn func(pgno uint32, data []byte) error) error {
	bp := getBuf(int(tx.PageSize))
	defer putBuf(bp)
	buf := *bp
	for _, p := range tx.pages {
		page := buf
		if len(p.data) == len(buf) {
			page = p.data
		} else if err := readFull(tx.files, p.kind, buf, p.off); err != nil {
			return fmt.Errorf("read page %d: %w", p.pgno, err)
		} else if p.verify && pageChecksum(p.pgno, page) != p.sum {
			return fmt.Errorf("page %d of transaction %d: %w", p.pgno, tx.TXID, ErrChangedUnderRead)
		}
		if err := fn(p.pgno, page); err != nil {
			return err
		}
	}
	return nil
}

// WriteLTX encodes the transaction as one LTX file.
func (tx *Tx) WriteLTX(w io.Writer) error {
	enc, err := ltx.NewEncoder(w)
	if err != nil {
		return err
	}
	hdr := ltx.Header{
		Version:          ltx.Version,
		PageSize:         tx.PageSize,
		Commit:           tx.Commit,
		MinTXID:          tx.TXID,
		MaxTXID:          tx.TXID,
		Timestamp:        tx.Timestamp.UnixMilli(),
		PreApplyChecksum: tx.PreChecksum,
	}
	if tx.TXID == 1 {
		hdr.PreApplyChecksum = 0
	}
	if err := enc.EncodeHeader(hdr); err != nil {
		return fmt.Errorf("encode ltx header: %w", err)
	}
	if err := tx.ForEachPage(func(pgno uint32, data []byte) error {
		if err := enc.EncodePage(ltx.PageHeader{Pgno: pgno}, data); err != nil {
			return fmt.Errorf("encode page %d: %w", pgno, err)
		}
		return nil
	}); err != nil {
		return err
	}
	enc.SetPostApplyChecksum(tx.PostChecksum)
	if err := enc.Close(); err != nil {
		return fmt.Errorf("close ltx encoder: %w", err)
	}
	return nil
}

// readFull reads len(buf) bytes at off; bytes past the end of the file read as
// zeros, as SQLite sees them.
func readFull(f Files, k Kind, buf []byte, off int64) error {
	n, err := f.ReadAt(k, buf, off)
	if n == len(buf) {
		return nil
	}
	if err != nil && err != io.EOF {
		return err
	}
	clear(buf[n:])
	return nil
}

package storage

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"hash/crc64"
	"io"
	"sync"

	"github.com/superfly/ltx"
)

// A transaction log is a sequence of records, one per transaction, each
// holding the pages the transaction wrote, uncompressed:
//
//	head  (48 bytes, big-endian)  "WTX3" | page size u32 | commit u32 | page count u32 |
//	                              TXID u64 | pre-apply checksum u64 | post-apply checksum u64 |
//	                              timestamp (ms since epoch) i64
//	pages                         page count × (page number u32 | page data)
//	tail  (8 bytes)               CRC-32C (Castagnoli) of head and pages, as a u64
//
// Records written before WTX3 ("WTX2") end in a CRC-64/ISO instead; both are
// read. CRC-32C is computed by the CPU (SSE 4.2, ARMv8 CRC), which matters
// on the commit path: every captured page is summed once when staged and
// once when shipped.
//
// Local staging appends one record per captured transaction before SQLite's
// commit returns (raw pages: no compression on the commit path); a replica's
// TxLogLevel object is a batch of consecutive records, byte for byte as
// staged.
const (
	txLogMagic   = "WTX3"
	txLogMagicV2 = "WTX2"
	// TxRecordHeadSize is the size of a record's head.
	TxRecordHeadSize = 48
	txRecordTailSize = 8
)

var (
	crcTable    = crc64.MakeTable(crc64.ISO)        // WTX2
	crc32cTable = crc32.MakeTable(crc32.Castagnoli) // WTX3
)

// sum64 adapts a CRC-32 to hash.Hash64.
type sum64 struct{ hash.Hash32 }

func (s sum64) Sum64() uint64 { return uint64(s.Sum32()) }

func newRecordHash(magic string) hash.Hash64 {
	if magic == txLogMagicV2 {
		return crc64.New(crcTable)
	}
	return sum64{crc32.New(crc32cTable)}
}

// TxRecord describes one record of a transaction log.
type TxRecord struct {
	Offset    int64 // of the record's head
	TXID      ltx.TXID
	PageSize  uint32
	Commit    uint32
	PageCount uint32
	Pre, Post ltx.Checksum
	Timestamp int64 // ms since the Unix epoch
}

// Size is the record's size in bytes.
func (r TxRecord) Size() int64 {
	return TxRecordHeadSize + int64(r.PageCount)*(4+int64(r.PageSize)) + txRecordTailSize
}

// End is the offset just past the record.
func (r TxRecord) End() int64 { return r.Offset + r.Size() }

// TxRecordWriter writes one record.
type TxRecordWriter struct {
	w    *bufio.Writer
	crc  hash.Hash64
	left uint32
	rec  TxRecord
}

// NewTxRecordWriter starts a record on w; the caller writes exactly
// rec.PageCount pages with WritePage, then calls Close (which flushes w).
func NewTxRecordWriter(w *bufio.Writer, rec TxRecord) (*TxRecordWriter, error) {
	tw := &TxRecordWriter{w: w, crc: newRecordHash(txLogMagic), left: rec.PageCount, rec: rec}
	var h [TxRecordHeadSize]byte
	copy(h[:], txLogMagic)
	binary.BigEndian.PutUint32(h[4:], rec.PageSize)
	binary.BigEndian.PutUint32(h[8:], rec.Commit)
	binary.BigEndian.PutUint32(h[12:], rec.PageCount)
	binary.BigEndian.PutUint64(h[16:], uint64(rec.TXID))
	binary.BigEndian.PutUint64(h[24:], uint64(rec.Pre))
	binary.BigEndian.PutUint64(h[32:], uint64(rec.Post))
	binary.BigEndian.PutUint64(h[40:], uint64(rec.Timestamp))
	return tw, tw.write(h[:])
}

func (tw *TxRecordWriter) write(b []byte) error {
	tw.crc.Write(b)
	_, err := tw.w.Write(b)
	return err
}

// WritePage appends one page.
func (tw *TxRecordWriter) WritePage(pgno uint32, data []byte) error {
	if tw.left == 0 || uint32(len(data)) != tw.rec.PageSize {
		return fmt.Errorf("transaction log record: unexpected page %d", pgno)
	}
	tw.left--
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], pgno)
	if err := tw.write(b[:]); err != nil {
		return err
	}
	return tw.write(data)
}

// Close writes the tail and flushes.
func (tw *TxRecordWriter) Close() error {
	if tw.left != 0 {
		return fmt.Errorf("transaction log record: %d pages missing", tw.left)
	}
	var b [txRecordTailSize]byte
	binary.BigEndian.PutUint64(b[:], tw.crc.Sum64())
	if _, err := tw.w.Write(b[:]); err != nil {
		return err
	}
	return tw.w.Flush()
}

// logReaders are the buffers of ReadTxLog, shared: the shipper reads a log per batch.
var logReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 64<<10) }}

// ReadTxLog reads and verifies the records of a log of the given size, in
// one sequential pass. It returns the valid records and the offset just past
// the last one; a torn or corrupt tail is an error only when strict is true.
func ReadTxLog(r io.ReaderAt, size int64, strict bool) (recs []TxRecord, end int64, err error) {
	br := logReaders.Get().(*bufio.Reader)
	br.Reset(io.NewSectionReader(r, 0, size))
	defer func() { br.Reset(nil); logReaders.Put(br) }()
	tr := &TxLogReader{br: br}
	for {
		rec, err := tr.Next()
		if err == nil {
			err = tr.finish()
		}
		if err == io.EOF {
			return recs, end, nil
		}
		if err != nil {
			if strict {
				return recs, end, errors.Join(ErrCorrupt, fmt.Errorf("transaction record at offset %d: %w", end, err))
			}
			return recs, end, nil
		}
		recs = append(recs, rec)
		end = rec.End()
	}
}

// TxLogReader reads the records of a transaction log as a stream, verifying
// each: a record's checksum is checked as soon as its last page is read.
type TxLogReader struct {
	br     *bufio.Reader
	off    int64 // of the next byte
	rec    TxRecord
	left   uint32 // pages of rec not read yet
	open   bool   // rec's tail is not read yet
	crc    hash.Hash64
	hashes map[string]hash.Hash64 // one record hash per format
}

// NewTxLogReader reads records from r.
func NewTxLogReader(r io.Reader) *TxLogReader {
	return &TxLogReader{br: bufio.NewReaderSize(r, 64<<10)}
}

// Next skips what is left of the current record (verifying it) and returns
// the head of the next one; io.EOF at the end of the log.
func (tr *TxLogReader) Next() (TxRecord, error) {
	if err := tr.finish(); err != nil {
		return TxRecord{}, err
	}
	var h [TxRecordHeadSize]byte
	n, err := io.ReadFull(tr.br, h[:])
	if err == io.EOF {
		return TxRecord{}, io.EOF
	} else if err != nil {
		return TxRecord{}, fmt.Errorf("%w: record head at offset %d: %w", ErrCorrupt, tr.off, err)
	}
	magic := string(h[:4])
	if magic != txLogMagic && magic != txLogMagicV2 {
		return TxRecord{}, fmt.Errorf("%w: record at offset %d: bad magic", ErrCorrupt, tr.off)
	}
	if tr.hashes == nil {
		tr.hashes = map[string]hash.Hash64{}
	}
	crc := tr.hashes[magic]
	if crc == nil {
		crc = newRecordHash(magic)
		tr.hashes[magic] = crc
	}
	rec := TxRecord{
		Offset:    tr.off,
		PageSize:  binary.BigEndian.Uint32(h[4:]),
		Commit:    binary.BigEndian.Uint32(h[8:]),
		PageCount: binary.BigEndian.Uint32(h[12:]),
		TXID:      ltx.TXID(binary.BigEndian.Uint64(h[16:])),
		Pre:       ltx.Checksum(binary.BigEndian.Uint64(h[24:])),
		Post:      ltx.Checksum(binary.BigEndian.Uint64(h[32:])),
		Timestamp: int64(binary.BigEndian.Uint64(h[40:])),
	}
	if !ltx.IsValidPageSize(rec.PageSize) || rec.TXID == 0 {
		return TxRecord{}, fmt.Errorf("%w: record at offset %d: bad head", ErrCorrupt, tr.off)
	}
	tr.off += int64(n)
	crc.Reset()
	crc.Write(h[:])
	tr.rec, tr.left, tr.open, tr.crc = rec, rec.PageCount, true, crc
	if tr.left == 0 {
		return rec, tr.readTail()
	}
	return rec, nil
}

// ReadPage reads the next page of the current record into buf (its page
// size) and returns its page number. Reading the last page verifies the
// record.
func (tr *TxLogReader) ReadPage(buf []byte) (uint32, error) {
	if tr.left == 0 || uint32(len(buf)) != tr.rec.PageSize {
		return 0, fmt.Errorf("transaction %d: no page to read", tr.rec.TXID)
	}
	var b [4]byte
	if _, err := io.ReadFull(tr.br, b[:]); err != nil {
		return 0, tr.truncated(err)
	}
	if _, err := io.ReadFull(tr.br, buf); err != nil {
		return 0, tr.truncated(err)
	}
	tr.crc.Write(b[:])
	tr.crc.Write(buf)
	tr.off += 4 + int64(len(buf))
	tr.left--
	if tr.left == 0 {
		return binary.BigEndian.Uint32(b[:]), tr.readTail()
	}
	return binary.BigEndian.Uint32(b[:]), nil
}

// finish reads and verifies what is left of the current record.
func (tr *TxLogReader) finish() error {
	if !tr.open {
		return nil
	}
	if tr.left > 0 {
		n := int64(tr.left) * (4 + int64(tr.rec.PageSize))
		// Hashed in place in the reader's buffer (io.CopyN would allocate
		// a buffer of up to 32 KiB per record).
		for left := n; left > 0; {
			b, err := tr.br.Peek(int(min(left, int64(tr.br.Size()))))
			tr.crc.Write(b)
			tr.br.Discard(len(b))
			left -= int64(len(b))
			if err != nil && left > 0 {
				return tr.truncated(err)
			}
		}
		tr.off += n
		tr.left = 0
	}
	return tr.readTail()
}

func (tr *TxLogReader) readTail() error {
	var tail [txRecordTailSize]byte
	if _, err := io.ReadFull(tr.br, tail[:]); err != nil {
		return tr.truncated(err)
	}
	tr.off += txRecordTailSize
	tr.open = false
	if binary.BigEndian.Uint64(tail[:]) != tr.crc.Sum64() {
		return fmt.Errorf("%w: transaction %d (record at offset %d): checksum mismatch", ErrCorrupt, tr.rec.TXID, tr.rec.Offset)
	}
	return nil
}

func (tr *TxLogReader) truncated(err error) error {
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("%w: transaction %d (record at offset %d) is truncated: %w", ErrCorrupt, tr.rec.TXID, tr.rec.Offset, err)
}

// PageOffset returns the offset of the data of the i-th page of the record
// and its page number.
func (r TxRecord) PageOffset(ra io.ReaderAt, i int) (pgno uint32, dataOff int64, err error) {
	off := r.Offset + TxRecordHeadSize + int64(i)*(4+int64(r.PageSize))
	var b [4]byte
	if _, err := ra.ReadAt(b[:], off); err != nil {
		return 0, 0, err
	}
	return binary.BigEndian.Uint32(b[:]), off + 4, nil
}

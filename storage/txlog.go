package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/superfly/ltx"
)

// A transaction log is a sequence of records, each one complete LTX file
// holding one transaction:
//
//	"WTX1" | length (8 bytes, big-endian) | LTX file
//
// The same format is used for walsync's local staging logs and for the
// TxLogLevel objects of a replica.
const (
	txLogMagic      = "WTX1"
	TxLogRecordHead = 12
)

// TxLogRecord locates one LTX file inside a transaction log.
type TxLogRecord struct {
	Offset  int64 // of the LTX file
	Size    int64
	Header  ltx.Header
	Trailer ltx.Trailer
}

// Pos is the position after the record.
func (r TxLogRecord) Pos() ltx.Pos { return ltx.NewPos(r.Header.MaxTXID, r.Trailer.PostApplyChecksum) }

// TxLogRecordHeader returns the head of a record holding an LTX file of n bytes.
func TxLogRecordHeader(n int64) []byte {
	b := make([]byte, TxLogRecordHead)
	copy(b, txLogMagic)
	binary.BigEndian.PutUint64(b[4:], uint64(n))
	return b
}

// ReadTxLog reads and verifies the records of a log of the given size. It
// returns the valid records and the offset just past the last one; a torn or
// corrupt tail is reported by err only when strict is true.
func ReadTxLog(r io.ReaderAt, size int64, strict bool) (recs []TxLogRecord, end int64, err error) {
	for end < size {
		var h [TxLogRecordHead]byte
		if _, err := r.ReadAt(h[:], end); err != nil {
			return recs, end, tailErr(strict, fmt.Errorf("record at offset %d: %w", end, err))
		}
		if string(h[:4]) != txLogMagic {
			return recs, end, tailErr(strict, fmt.Errorf("record at offset %d: bad magic", end))
		}
		n := int64(binary.BigEndian.Uint64(h[4:]))
		if n <= 0 || end+TxLogRecordHead+n > size {
			return recs, end, tailErr(strict, fmt.Errorf("record at offset %d: truncated", end))
		}
		dec := ltx.NewDecoder(io.NewSectionReader(r, end+TxLogRecordHead, n))
		if err := dec.Verify(); err != nil {
			return recs, end, tailErr(strict, fmt.Errorf("record at offset %d: %w", end, err))
		}
		recs = append(recs, TxLogRecord{Offset: end + TxLogRecordHead, Size: n, Header: dec.Header(), Trailer: dec.Trailer()})
		end += TxLogRecordHead + n
	}
	return recs, end, nil
}

func tailErr(strict bool, err error) error {
	if strict {
		return errors.Join(ErrCorrupt, err)
	}
	return nil
}

// ErrCorrupt reports an object whose content fails verification.
var ErrCorrupt = errors.New("corrupt object")

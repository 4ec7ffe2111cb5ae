package storage

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/klauspost/compress/zstd"
	"github.com/superfly/ltx"
)

// A transaction-log object on a replica is the records of consecutive
// transactions (TxRecordWriter's format, every page of every transaction)
// compressed as one zstd frame with its content checksum. It is named
// <minTXID>-<maxTXID>.wtx, not .ltx: it is not an LTX file, and tools that
// read every *.ltx of a replica must not take it for one.
//
// One stream over many transactions compresses like a delta: a page written
// by one transaction is mostly the page of the one before, and zstd finds
// the earlier version inside its window.
//
// Objects written before this format (raw records, named .ltx) are read too.
const (
	// TxLogExt is the extension of transaction-log objects.
	TxLogExt       = ".wtx"
	legacyTxLogExt = ".ltx"

	// txLogWindow is the compression window: the earlier versions of the
	// pages a transaction rewrites are found within it. 256 KiB at zstd's
	// fastest level: the encoder holds under 1 MB while it runs (the
	// mount's RSS target is 40 MB for 1,000 databases), and compresses
	// within 10% of the default level with a 1 MiB window on the versions
	// of a few hot pages.
	txLogWindow = 256 << 10
	// maxTxLogWindow bounds the window a reader accepts.
	maxTxLogWindow = 64 << 20
)

// FormatTxLogFilename names a transaction-log object.
func FormatTxLogFilename(min, max ltx.TXID) string {
	return strings.TrimSuffix(ltx.FormatFilename(min, max), legacyTxLogExt) + TxLogExt
}

// ParseTxLogFilename parses a transaction-log object's name, current
// (.wtx) or legacy (.ltx).
func ParseTxLogFilename(name string) (min, max ltx.TXID, legacy bool, err error) {
	if base, ok := strings.CutSuffix(name, TxLogExt); ok {
		min, max, err = ltx.ParseFilename(base + legacyTxLogExt)
		return min, max, false, err
	}
	min, max, err = ltx.ParseFilename(name)
	return min, max, true, err
}

// LegacyTxLogFilename is the name objects had before TxLogExt.
func LegacyTxLogFilename(min, max ltx.TXID) string { return ltx.FormatFilename(min, max) }

var txLogEncoders = sync.Pool{New: func() any {
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedFastest),
		zstd.WithEncoderConcurrency(1),
		zstd.WithWindowSize(txLogWindow),
		zstd.WithEncoderCRC(true),
		zstd.WithLowerEncoderMem(true))
	if err != nil {
		panic(err) // the options are constant
	}
	return enc
}}

// WriteTxLogObject compresses the records read from src (consecutive,
// verified by the caller) into w.
func WriteTxLogObject(w io.Writer, src io.Reader) error {
	enc := txLogEncoders.Get().(*zstd.Encoder)
	defer func() { enc.Reset(nil); txLogEncoders.Put(enc) }()
	enc.Reset(w)
	if _, err := io.Copy(enc, src); err != nil {
		return err
	}
	return enc.Close()
}

// zstdMagic starts every zstd frame.
var zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}

// OpenTxLogObject returns the records of a transaction-log object read from
// r, decompressed and checked against the object's content checksum as they
// are read (a corrupt object is an error from the returned reader, or from
// the records' own checksums). Close releases the decoder.
func OpenTxLogObject(r io.Reader) (*TxLogReader, io.Closer, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	head, err := br.Peek(4)
	if err != nil {
		return nil, nil, fmt.Errorf("transaction log: %w", errorsJoinCorrupt(err))
	}
	if !bytes.Equal(head, zstdMagic) {
		// A legacy object: raw records.
		return NewTxLogReader(br), io.NopCloser(nil), nil
	}
	dec, err := zstd.NewReader(br,
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxWindow(maxTxLogWindow))
	if err != nil {
		return nil, nil, err
	}
	return NewTxLogReader(&corruptOnError{dec}), closerFunc(dec.Close), nil
}

// corruptOnError marks decompression errors as corruption.
type corruptOnError struct{ r io.Reader }

func (c *corruptOnError) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if err != nil && err != io.EOF {
		err = errorsJoinCorrupt(err)
	}
	return n, err
}

func errorsJoinCorrupt(err error) error {
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("%w: %w", ErrCorrupt, err)
}

type closerFunc func()

func (f closerFunc) Close() error { f(); return nil }

// Filename names a file of a level (TxLogLevel included).
func Filename(level int, min, max ltx.TXID) string {
	if level == TxLogLevel {
		return FormatTxLogFilename(min, max)
	}
	return ltx.FormatFilename(min, max)
}

// ParseFilename parses the name of a file of a level (TxLogLevel included).
func ParseFilename(level int, name string) (min, max ltx.TXID, err error) {
	if level == TxLogLevel {
		min, max, _, err = ParseTxLogFilename(name)
		return min, max, err
	}
	return ltx.ParseFilename(name)
}

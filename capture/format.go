package capture

import (
	"encoding/binary"
	"hash/crc64"

	"github.com/superfly/ltx"
)

// SQLite file format constants used by the capture core.
const (
	// DBHeaderMagic starts every SQLite database file.
	DBHeaderMagic = "SQLite format 3\x00"

	walHeaderSize      = 32
	walFrameHeaderSize = 24
	walMagicLE         = 0x377f0682
	walMagicBE         = 0x377f0683
	walVersion         = 3007000
)

var crcTable = crc64.MakeTable(crc64.ISO)

// pageChecksum is ltx.ChecksumPage without the per-call allocations: CRC-64/ISO
// of the big-endian page number followed by the page data, with the flag bit set.
func pageChecksum(pgno uint32, data []byte) ltx.Checksum {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], pgno)
	c := crc64.Update(0, crcTable, b[:])
	c = crc64.Update(c, crcTable, data)
	return ltx.ChecksumFlag | ltx.Checksum(c)
}

// dbHeader is what the capture core needs from page 1 of a database.
type dbHeader struct {
	pageSize uint32
	// nPages is the in-header database size, or 0 when SQLite would not trust it
	// (the change counter and version-valid-for fields differ).
	nPages uint32
	// wal reports the file format read/write versions of WAL mode (2).
	wal bool
}

// parseDBHeader parses the first 100 bytes of a database file. ok is false if
// b does not start with a SQLite header or names an invalid page size.
func parseDBHeader(b []byte) (h dbHeader, ok bool) {
	if len(b) < 100 || string(b[:16]) != DBHeaderMagic {
		return h, false
	}
	ps := uint32(binary.BigEndian.Uint16(b[16:18]))
	if ps == 1 {
		ps = 65536
	}
	if !ltx.IsValidPageSize(ps) {
		return h, false
	}
	h.pageSize = ps
	if binary.BigEndian.Uint32(b[24:28]) == binary.BigEndian.Uint32(b[92:96]) {
		h.nPages = binary.BigEndian.Uint32(b[28:32])
	}
	h.wal = b[18] == 2 && b[19] == 2
	return h, true
}

// IsDatabaseHeader reports whether b begins with the SQLite database magic.
func IsDatabaseHeader(b []byte) bool {
	return len(b) >= 16 && string(b[:16]) == DBHeaderMagic
}

// walHeader is a parsed WAL file header.
type walHeader struct {
	bigEndian    bool
	pageSize     uint32
	salt1, salt2 uint32
	cksum        [2]uint32
}

// parseWALHeader validates and parses a 32-byte WAL header, including its checksum.
func parseWALHeader(b []byte) (h walHeader, ok bool) {
	if len(b) < walHeaderSize {
		return h, false
	}
	switch binary.BigEndian.Uint32(b[0:4]) {
	case walMagicLE:
	case walMagicBE:
		h.bigEndian = true
	default:
		return h, false
	}
	if binary.BigEndian.Uint32(b[4:8]) != walVersion {
		return h, false
	}
	h.pageSize = binary.BigEndian.Uint32(b[8:12])
	if h.pageSize == 1 {
		h.pageSize = 65536
	}
	if !ltx.IsValidPageSize(h.pageSize) {
		return h, false
	}
	h.salt1 = binary.BigEndian.Uint32(b[16:20])
	h.salt2 = binary.BigEndian.Uint32(b[20:24])
	s := walChecksum(h.bigEndian, [2]uint32{}, b[:24])
	if s[0] != binary.BigEndian.Uint32(b[24:28]) || s[1] != binary.BigEndian.Uint32(b[28:32]) {
		return h, false
	}
	h.cksum = s
	return h, true
}

// walChecksum continues SQLite's WAL checksum over b (a multiple of 8 bytes).
func walChecksum(bigEndian bool, s [2]uint32, b []byte) [2]uint32 {
	s0, s1 := s[0], s[1]
	if bigEndian {
		for i := 0; i+8 <= len(b); i += 8 {
			s0 += binary.BigEndian.Uint32(b[i:]) + s1
			s1 += binary.BigEndian.Uint32(b[i+4:]) + s0
		}
	} else {
		for i := 0; i+8 <= len(b); i += 8 {
			s0 += binary.LittleEndian.Uint32(b[i:]) + s1
			s1 += binary.LittleEndian.Uint32(b[i+4:]) + s0
		}
	}
	return [2]uint32{s0, s1}
}

// walFrame is a parsed WAL frame header.
type walFrame struct {
	pgno   uint32
	commit uint32 // database size in pages after commit; 0 for non-commit frames
	salt1  uint32
	salt2  uint32
	cksum  [2]uint32
}

func parseWALFrame(b []byte) walFrame {
	return walFrame{
		pgno:   binary.BigEndian.Uint32(b[0:4]),
		commit: binary.BigEndian.Uint32(b[4:8]),
		salt1:  binary.BigEndian.Uint32(b[8:12]),
		salt2:  binary.BigEndian.Uint32(b[12:16]),
		cksum:  [2]uint32{binary.BigEndian.Uint32(b[16:20]), binary.BigEndian.Uint32(b[20:24])},
	}
}

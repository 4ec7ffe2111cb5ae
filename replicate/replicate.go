// Package replicate keeps a local read replica of a database up to date from
// its replica root.
//
// Each update (every LTX file or transaction of the chain since the last one
// applied) is written to the local file as a real SQLite rollback-journal
// transaction: SQLite's byte-range locks up to EXCLUSIVE, a journal of the
// original pages that SQLite itself would roll back after a crash, the new
// pages, the journal deleted. Readers (any SQLite, any process) therefore
// only ever see whole transactions, and can read while the replica follows.
//
// The local file is kept in rollback-journal mode (file format bytes 1/1) and
// its change counter is bumped on every update so readers drop their page
// caches; apart from those header bytes its pages are the source's. The last
// applied position is kept in FILE-walsync.json.
package replicate

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/superfly/ltx"
	"github.com/walsync/walsync/internal/sqlitelock"
	"github.com/walsync/walsync/restore"
	"github.com/walsync/walsync/storage"
	"golang.org/x/sys/unix"
)

// Options configures Run.
type Options struct {
	Interval time.Duration // poll interval; default 5s
	Logger   *slog.Logger
}

type position struct {
	TXID      ltx.TXID     `json:"txid"`
	Checksum  ltx.Checksum `json:"checksum"`
	Timestamp time.Time    `json:"timestamp"`
}

// Run follows the replica until ctx is done.
func Run(ctx context.Context, c storage.Client, local string, opts Options) error {
	if opts.Interval <= 0 {
		opts.Interval = 5 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	r := &replica{c: c, path: local, log: opts.Logger}
	if err := r.loadPos(); err != nil {
		return err
	}
	waiting := false
	for {
		err := r.step(ctx)
		switch {
		case errors.Is(err, errNoBackup):
			if !waiting {
				r.log.Info("waiting for the first backup", "replica", c.URL())
				waiting = true
			}
		case err != nil:
			r.log.Error("replica update failed; retrying", "replica", c.URL(), "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(opts.Interval):
		}
	}
}

var errNoBackup = errors.New("no backup yet")

type replica struct {
	c    storage.Client
	path string
	log  *slog.Logger
	pos  position
}

func (r *replica) posPath() string { return r.path + "-walsync.json" }

func (r *replica) loadPos() error {
	b, err := os.ReadFile(r.posPath())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	return json.Unmarshal(b, &r.pos)
}

func (r *replica) savePos() error {
	b, _ := json.Marshal(r.pos)
	tmp := r.posPath() + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	if err := os.Chmod(tmp, 0o600); err != nil { // one left by an earlier version
		return err
	}
	return os.Rename(tmp, r.posPath())
}

// step applies what the replica holds beyond the local position.
func (r *replica) step(ctx context.Context) error {
	all, err := storage.AllLTXFiles(ctx, r.c, "")
	if err != nil {
		return err
	}
	if len(all) == 0 {
		return errNoBackup
	}
	latest, err := storage.Latest(ctx, r.c, "")
	if err != nil {
		return err
	}
	if _, err := os.Stat(r.path); errors.Is(err, os.ErrNotExist) || r.pos.TXID == 0 {
		return r.resync(ctx, latest.MaxTXID)
	}
	if latest.MaxTXID <= r.pos.TXID {
		return nil
	}
	chain := storage.Chain(all, r.pos.TXID, latest.MaxTXID)
	if len(chain) == 0 || chain[len(chain)-1].MaxTXID != latest.MaxTXID {
		r.log.Warn("the files after the local position were compacted away; resyncing from a snapshot", "local_txid", r.pos.TXID)
		return r.resync(ctx, latest.MaxTXID)
	}
	for _, fi := range chain {
		if err := r.applyFile(ctx, fi); err != nil {
			return err
		}
	}
	return nil
}

// resync rebuilds the whole database at txid and installs it.
func (r *replica) resync(ctx context.Context, txid ltx.TXID) error {
	tmp := r.path + ".walsync-resync"
	os.Remove(tmp)
	defer os.Remove(tmp)
	if _, err := restore.Restore(ctx, r.c, "", tmp, restore.Options{TXID: txid, Mode: 0o600}); err != nil {
		return err
	}
	f, err := os.Open(tmp)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	var page1 [100]byte
	if _, err := f.ReadAt(page1[:], 0); err != nil {
		return err
	}
	ps := pageSizeOf(page1[:])
	hdr, trl, err := lastHeader(ctx, r.c, txid)
	if err != nil {
		return err
	}
	n := uint32(fi.Size() / int64(ps))
	return r.commit(fileSet(f, ps, n), n, position{TXID: txid, Checksum: trl.PostApplyChecksum, Timestamp: time.UnixMilli(hdr.Timestamp).UTC()})
}

func lastHeader(ctx context.Context, c storage.Client, txid ltx.TXID) (ltx.Header, ltx.Trailer, error) {
	all, err := storage.AllLTXFiles(ctx, c, "")
	if err != nil {
		return ltx.Header{}, ltx.Trailer{}, err
	}
	for _, fi := range all {
		if fi.MaxTXID == txid {
			return storage.ReadHeader(ctx, c, "", fi)
		}
	}
	return ltx.Header{}, ltx.Trailer{}, fmt.Errorf("no file ends at TXID %d", txid)
}

func pageSizeOf(page1 []byte) uint32 {
	ps := uint32(binary.BigEndian.Uint16(page1[16:18]))
	if ps == 1 {
		ps = 65536
	}
	return ps
}

// applyFile applies one LTX file of the chain as one local transaction.
func (r *replica) applyFile(ctx context.Context, fi *ltx.FileInfo) error {
	rc, err := r.c.OpenLTXFile(ctx, "", fi.Level, fi.MinTXID, fi.MaxTXID)
	if err != nil {
		return err
	}
	defer rc.Close()
	dec := storage.NewDecoder(bufio.NewReaderSize(rc, 256<<10))
	if err := dec.DecodeHeader(); err != nil {
		return err
	}
	hdr := dec.Header()
	name := r.c.ObjectURL("", fi.Level, fi.MinTXID, fi.MaxTXID)
	if hdr.MinTXID != r.pos.TXID+1 {
		return fmt.Errorf("%s does not follow TXID %d", name, r.pos.TXID)
	}
	if !hdr.NoChecksum() && r.pos.Checksum != 0 && hdr.PreApplyChecksum != r.pos.Checksum {
		return fmt.Errorf("%s: pre-apply checksum %s does not follow %s", name, hdr.PreApplyChecksum, r.pos.Checksum)
	}
	pages, err := decodeSet(dec, filepath.Dir(r.path), name)
	if err != nil {
		return err
	}
	defer pages.close()
	if err := dec.Close(); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return r.commit(pages, hdr.Commit, position{TXID: hdr.MaxTXID, Checksum: dec.Trailer().PostApplyChecksum, Timestamp: time.UnixMilli(hdr.Timestamp).UTC()})
}

// sectorSize is the journal sector size walsync writes.
const sectorSize = 512

var journalMagic = []byte{0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7}

// commit writes pages (and the database size) to the local file as one
// SQLite transaction.
func (r *replica) commit(pages *pageSet, nPages uint32, pos position) error {
	pageSize := pages.pageSize
	f, err := os.OpenFile(r.path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	fd := int(f.Fd())
	if err := lockExclusive(fd); err != nil {
		return err
	}
	defer sqlitelock.Set(fd, unix.F_UNLCK, sqlitelock.PendingByte, 2+sqlitelock.SharedSize)
	jpath := r.path + "-journal"
	if err := rollback(jpath, f); err != nil {
		return fmt.Errorf("roll back the journal left by an interrupted update: %w", err)
	}

	st, err := f.Stat()
	if err != nil {
		return err
	}
	oldSize := st.Size()
	var oldPage1 [100]byte
	oldPS := pageSize
	if oldSize >= 100 {
		if _, err := f.ReadAt(oldPage1[:], 0); err != nil {
			return err
		}
		oldPS = pageSizeOf(oldPage1[:])
	}
	// The journal: original content of every page this transaction changes,
	// in the file's page size.
	var pgnos []uint32
	oldPages := uint32(oldSize / int64(oldPS))
	if oldSize > 0 && oldPS != pageSize {
		// A new page size (VACUUM at the source): the transaction must hold
		// every page; the whole old file is journaled, as SQLite does.
		if !pages.complete(nPages) {
			return fmt.Errorf("the page size changed (%d -> %d) in a transaction that does not hold every page", oldPS, pageSize)
		}
		for pgno := uint32(1); pgno <= oldPages; pgno++ {
			pgnos = append(pgnos, pgno)
		}
	} else {
		pgnos = append(pgnos, pages.pgnos...)
		for pgno := nPages + 1; pgno <= oldPages; pgno++ {
			if pages.index(pgno) < 0 {
				pgnos = append(pgnos, pgno) // pages cut off
			}
		}
		if pages.index(1) < 0 && oldSize > 0 {
			pgnos = append(pgnos, 1) // page 1 always changes (change counter)
		}
		sort.Slice(pgnos, func(i, j int) bool { return pgnos[i] < pgnos[j] })
	}
	if oldSize > 0 {
		if err := writeJournal(jpath, f, pgnos, oldPS, oldPages); err != nil {
			return err
		}
	}

	// Page 1: the source's, kept in rollback mode, change counter bumped.
	page1 := make([]byte, pageSize)
	if i := pages.index(1); i >= 0 {
		if err := pages.read(i, page1); err != nil {
			return err
		}
	} else if _, err := f.ReadAt(page1, 0); err != nil {
		return err
	}
	counter := binary.BigEndian.Uint32(oldPage1[24:28]) + 1
	page1[18], page1[19] = 1, 1
	binary.BigEndian.PutUint32(page1[24:28], counter)
	binary.BigEndian.PutUint32(page1[28:32], nPages)
	binary.BigEndian.PutUint32(page1[92:96], counter)
	if _, err := f.WriteAt(page1, 0); err != nil {
		return err
	}
	buf := make([]byte, pageSize)
	for i, pgno := range pages.pgnos {
		if pgno == 1 || pgno > nPages {
			continue
		}
		if err := pages.read(i, buf); err != nil {
			return err
		}
		if _, err := f.WriteAt(buf, int64(pgno-1)*int64(pageSize)); err != nil {
			return err
		}
	}
	if err := f.Truncate(int64(nPages) * int64(pageSize)); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if oldSize > 0 {
		if err := os.Remove(jpath); err != nil {
			return err
		}
		syncDir(filepath.Dir(r.path))
	}
	r.pos = pos
	if err := r.savePos(); err != nil {
		return err
	}
	r.log.Info("replica updated", "txid", uint64(pos.TXID), "timestamp", pos.Timestamp.Format(time.RFC3339Nano),
		"lag", time.Since(pos.Timestamp).Round(time.Millisecond))
	return nil
}

// writeJournal writes a hot rollback journal in SQLite's format holding the
// original content of pgnos, and fsyncs it.
func writeJournal(path string, db *os.File, pgnos []uint32, pageSize, oldPages uint32) error {
	var init [4]byte
	rand.Read(init[:])
	cksumInit := binary.BigEndian.Uint32(init[:])
	// The journal holds the database's pages: it gets the database's mode,
	// as SQLite gives it.
	fi, err := db.Stat()
	if err != nil {
		return err
	}
	j, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, fi.Mode().Perm())
	if err != nil {
		return err
	}
	defer j.Close()
	if err := j.Chmod(fi.Mode().Perm()); err != nil {
		return err
	}
	buf := bufio.NewWriterSize(j, 256<<10)
	hdr := make([]byte, sectorSize)
	copy(hdr, journalMagic)
	n := 0
	for _, pgno := range pgnos {
		if pgno <= oldPages {
			n++
		}
	}
	binary.BigEndian.PutUint32(hdr[8:], uint32(n))
	binary.BigEndian.PutUint32(hdr[12:], cksumInit)
	binary.BigEndian.PutUint32(hdr[16:], oldPages)
	binary.BigEndian.PutUint32(hdr[20:], sectorSize)
	binary.BigEndian.PutUint32(hdr[24:], pageSize)
	buf.Write(hdr)
	page := make([]byte, pageSize)
	for _, pgno := range pgnos {
		if pgno > oldPages {
			continue
		}
		if _, err := db.ReadAt(page, int64(pgno-1)*int64(pageSize)); err != nil {
			return err
		}
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], pgno)
		buf.Write(b[:])
		buf.Write(page)
		sum := cksumInit
		for i := int(pageSize) - 200; i > 0; i -= 200 {
			sum += uint32(page[i])
		}
		binary.BigEndian.PutUint32(b[:], sum)
		buf.Write(b[:])
	}
	if err := buf.Flush(); err != nil {
		return err
	}
	if err := j.Sync(); err != nil {
		return err
	}
	syncDir(filepath.Dir(path))
	return nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}

// lockExclusive takes SQLite's locks up to EXCLUSIVE, waiting for readers
// to finish; while it waits, PENDING keeps new readers out.
func lockExclusive(fd int) error {
	deadline := time.Now().Add(30 * time.Second)
	for sqlitelock.Set(fd, unix.F_WRLCK, sqlitelock.ReservedByte, 1) != nil {
		if time.Now().After(deadline) {
			return errors.New("another writer holds the replica's RESERVED lock: only walsync replicate may write it")
		}
		time.Sleep(time.Millisecond)
	}
	for sqlitelock.Set(fd, unix.F_WRLCK, sqlitelock.PendingByte, 1) != nil {
		if time.Now().After(deadline) {
			return errors.New("timed out waiting for the PENDING lock")
		}
		time.Sleep(time.Millisecond)
	}
	for sqlitelock.Set(fd, unix.F_WRLCK, sqlitelock.SharedFirst, sqlitelock.SharedSize) != nil {
		if time.Now().After(deadline) {
			sqlitelock.Set(fd, unix.F_UNLCK, sqlitelock.PendingByte, 2)
			return errors.New("timed out waiting for readers to finish")
		}
		time.Sleep(200 * time.Microsecond)
	}
	return nil
}

// rollback plays back a journal left by an interrupted update (the caller
// holds the EXCLUSIVE lock), as SQLite would, one record at a time.
func rollback(jpath string, db *os.File) error {
	j, err := os.Open(jpath)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	defer j.Close()
	r := bufio.NewReaderSize(j, 256<<10)
	hdr := make([]byte, sectorSize)
	if _, err := io.ReadFull(r, hdr); err == nil && string(hdr[:8]) == string(journalMagic) {
		n := binary.BigEndian.Uint32(hdr[8:])
		cksumInit := binary.BigEndian.Uint32(hdr[12:])
		oldPages := binary.BigEndian.Uint32(hdr[16:])
		pageSize := binary.BigEndian.Uint32(hdr[24:])
		rec := make([]byte, 8+int(pageSize))
		for i := uint32(0); i < n; i++ {
			if _, err := io.ReadFull(r, rec); err != nil {
				break // a short journal: the database was not written past it
			}
			pgno := binary.BigEndian.Uint32(rec)
			page := rec[4 : 4+pageSize]
			sum := cksumInit
			for j := int(pageSize) - 200; j > 0; j -= 200 {
				sum += uint32(page[j])
			}
			if sum != binary.BigEndian.Uint32(rec[4+pageSize:]) {
				break // torn record: the database was not written past it
			}
			if _, err := db.WriteAt(page, int64(pgno-1)*int64(pageSize)); err != nil {
				return err
			}
		}
		if err := db.Truncate(int64(oldPages) * int64(pageSize)); err != nil {
			return err
		}
		if err := db.Sync(); err != nil {
			return err
		}
	}
	j.Close()
	return os.Remove(jpath)
}

package shipper

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/superfly/ltx"
	"github.com/walsync/walsync/capture"
	"github.com/walsync/walsync/storage"
)

// Staged work belongs to the replica it was staged for, and is trusted only
// while it agrees with that replica:
//
//   - the staging root records its replica's URL; started with another
//     replica, the whole staging is set aside and every database starts
//     again from the new replica's position (a snapshot where it is empty);
//   - once per run, before a database's staging is used (its first capture,
//     its first upload), it is compared with the replica's latest TXID. A
//     replica behind what was uploaded from here lost files (a prefix
//     emptied); one ahead of everything staged here holds newer history (a
//     staging copied from an old machine). Either way the staged work is set
//     aside and the database is resynced from the replica's position: old
//     TXIDs are never uploaded on top of other history.

const replicaFile = "replica"

// bindReplica ties the staging root to the replica URL.
func (s *Shipper) bindReplica() error {
	url := s.opts.Client.URL()
	p := filepath.Join(s.opts.Dir, replicaFile)
	b, err := os.ReadFile(p)
	if err == nil && strings.TrimSpace(string(b)) != url {
		old := strings.TrimSpace(string(b))
		aside, err := s.setAside(s.opts.Dir)
		if err != nil {
			return fmt.Errorf("staging %s belongs to the replica %s, not %s, and cannot be set aside: %w", s.opts.Dir, old, url, err)
		}
		s.log.Warn("the staging was for another replica: set aside, every database starts again from this replica's position",
			"staging_replica", old, "replica", url, "set_aside", aside)
		if err := PrivateDir(s.opts.Dir); err != nil {
			return err
		}
	} else if err == nil {
		return nil
	}
	return writeFileAtomic(p, []byte(url+"\n"))
}

// reconcile compares a database's staging with the replica (once per run)
// and sets the staged work aside when they disagree. It returns the
// replica's latest file, nil when it has none.
func (s *Shipper) reconcile(ctx context.Context, st *stage) (*ltx.FileInfo, error) {
	fi, err := storage.Latest(ctx, s.opts.Client, st.db)
	if err != nil {
		return nil, fmt.Errorf("read the replica position of %s from %s: %w", st.db, s.opts.Client.URL(), err)
	}
	st.mu.Lock()
	verified := st.verified
	st.mu.Unlock()
	if verified {
		return fi, nil
	}
	if err := st.lockShip(ctx); err != nil {
		return nil, err
	}
	defer st.shipMu.Unlock()
	why, err := st.disagreement(fi)
	if err != nil || why == "" {
		if err == nil {
			st.markVerified()
		}
		return fi, err
	}
	if st.shared {
		// Another process may have shipped between the listing and now:
		// decide again with every process's uploads stopped.
		if err := st.shipLock.lock(); err != nil {
			return nil, err
		}
		defer st.shipLock.unlock()
		if fi, err = storage.Latest(ctx, s.opts.Client, st.db); err != nil {
			return nil, err
		}
		if why, err = st.disagreement(fi); err != nil || why == "" {
			if err == nil {
				st.markVerified()
			}
			return fi, err
		}
	}
	var remotePos capture.Pos
	if fi != nil {
		hdr, trl, err := storage.ReadHeader(ctx, s.opts.Client, st.db, fi)
		if err != nil {
			return nil, err
		}
		remotePos = posOf(hdr, trl)
	}
	if st.shared {
		if err := st.sealLock.lock(); err != nil {
			return nil, err
		}
		defer st.sealLock.unlock()
	}
	aside, err := st.reset(remotePos)
	if err != nil {
		return nil, fmt.Errorf("staging of %s disagrees with the replica (%s) and cannot be set aside: %w", st.db, why, err)
	}
	st.markVerified()
	s.stats.resyncs.Add(1)
	s.log.Warn("staging disagrees with the replica: staged work set aside, the database is resynced from the replica's position",
		"db", st.db, "replica", s.opts.Client.URL(), "reason", why, "set_aside", aside)
	return fi, nil
}

func (st *stage) markVerified() {
	st.mu.Lock()
	st.verified = true
	st.mu.Unlock()
}

// disagreement says why the staging cannot continue the replica whose
// latest file is fi ("" when it can). With shared staging it first reads
// what every process staged and shipped.
func (st *stage) disagreement(fi *ltx.FileInfo) (string, error) {
	var remote ltx.TXID
	if fi != nil {
		remote = fi.MaxTXID
	}
	if st.shared {
		if err := st.sealLock.lock(); err != nil {
			return "", err
		}
		err := st.loadShipped()
		sp, ok, rerr := st.readStagedPos()
		st.sealLock.unlock()
		if err == nil {
			err = rerr
		}
		if err != nil {
			return "", err
		}
		st.mu.Lock()
		if ok && (!st.known || sp.pos.TXID > st.pos.TXID) {
			st.pos, st.known = sp.pos, true
		}
		st.mu.Unlock()
	}
	st.mu.Lock()
	shipped, pos, known := st.shipped.TXID, st.pos.TXID, st.known
	st.mu.Unlock()
	switch {
	case !known:
		return "", nil
	case remote > pos:
		return fmt.Sprintf("the replica holds TXID %d, newer than anything staged here (up to %d): this staging is older than the replica's history", remote, pos), nil
	case remote < shipped:
		return fmt.Sprintf("the replica holds TXID %d but %d was uploaded from here: the replica lost files (emptied, or another location)", remote, shipped), nil
	}
	return "", nil
}

// reset moves the staged transactions and the shipped position out of the
// way (into set-aside/ inside the database's staging) and forgets the
// staged position: the next capture starts from the replica's. A capture
// that goes on from the old position is told to resync (capture.ErrResync).
// With shared staging the replica's position (remote) becomes the staged
// one, which every process's next transaction must follow. st.shipMu (and,
// shared, the capture lock) is held.
func (st *stage) reset(remote capture.Pos) (string, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.pending != nil {
		st.pending.Close()
		st.pending, st.size = nil, 0
	}
	ents, err := os.ReadDir(st.dir)
	if err != nil {
		return "", err
	}
	dst := filepath.Join(st.dir, "set-aside", time.Now().UTC().Format("20060102T150405.000000000Z"))
	if err := os.MkdirAll(dst, dirMode); err != nil {
		return "", err
	}
	for _, e := range ents {
		n := e.Name()
		if n == "pending" || n == "shipped.json" || n == keptDir || strings.HasPrefix(n, "batch-") {
			if fi, err := e.Info(); err == nil && n != "shipped.json" && n != keptDir {
				st.stagedBytes.Add(-fi.Size())
			}
			if err := os.Rename(filepath.Join(st.dir, n), filepath.Join(dst, n)); err != nil {
				return "", err
			}
		}
	}
	if err := syncDir(st.dir); err != nil {
		return "", err
	}
	st.pos, st.known, st.shipped = capture.Pos{}, false, capture.Pos{}
	st.resync = true
	st.behind = nil
	if st.shared {
		// Every process's next capture ships the database whole from here.
		st.pos, st.known = remote, true
		if err := st.writeStagedPos(stagedPos{pos: remote, resync: true}); err != nil {
			return "", err
		}
	}
	return dst, nil
}

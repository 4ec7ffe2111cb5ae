package shipper

import (
	"time"

	"github.com/superfly/ltx"
)

// Level 0 is the replica's newest detail for a short while only: once a
// level-1 file covers a level-0 file and the transaction log of its
// transactions is uploaded, the level-0 file holds nothing a restore needs
// (level 1 has its end state, the transaction log every state inside it).
// It is deleted at the first tick of the compaction loop (a quarter of the
// level-1 interval) at least L0Retention after it was found covered, which
// gives a reader that listed it (a restore, a replica following the
// database, Litestream) the time to read it.

// DefaultL0Retention is how long a covered level-0 file stays.
const DefaultL0Retention = 15 * time.Second

// expiringL0 is a level-0 file covered by level 1 since at.
type expiringL0 struct {
	fi *ltx.FileInfo
	at time.Time
}

// coveredL0 records which level-0 files are inside a level-1 file.
func (st *stage) coveredL0(l0, l1 []*ltx.FileInfo) {
	now := time.Now()
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, fi := range l0 {
		if fi.Level != 0 {
			continue
		}
		key := [2]ltx.TXID{fi.MinTXID, fi.MaxTXID}
		if _, ok := st.expiring[key]; ok {
			continue
		}
		for _, c := range l1 {
			if c.MinTXID <= fi.MinTXID && fi.MaxTXID <= c.MaxTXID {
				if st.expiring == nil {
					st.expiring = map[[2]ltx.TXID]expiringL0{}
				}
				st.expiring[key] = expiringL0{fi, now}
				break
			}
		}
	}
}

// expireDue runs expireL0 on every database with level-0 files covered.
func (s *Shipper) expireDue() {
	for _, st := range s.allStages() {
		st.mu.Lock()
		none := len(st.expiring) == 0
		st.mu.Unlock()
		if none {
			continue
		}
		if err := s.compactOne(st, func(st *stage) error { s.expireL0(st); return nil }); err != nil {
			s.log.Warn("level-0 expiry skipped", "db", st.db, "err", err)
		}
	}
}

// expireL0 deletes the covered level-0 files that are due and whose
// transactions' detail is no longer waiting in staging.
func (s *Shipper) expireL0(st *stage) {
	if st.o.L0Retention < 0 {
		return
	}
	now := time.Now()
	var due []*ltx.FileInfo
	st.mu.Lock()
	for _, e := range st.expiring {
		if now.Sub(e.at) >= st.o.L0Retention {
			due = append(due, e.fi)
		}
	}
	st.mu.Unlock()
	if len(due) == 0 {
		return
	}
	logs, err := st.keptLogs()
	if err != nil {
		return
	}
	var del []*ltx.FileInfo
	for _, fi := range due {
		if !detailPending(logs, fi.MinTXID, fi.MaxTXID) {
			del = append(del, fi)
		}
	}
	if len(del) == 0 {
		return
	}
	if err := s.opts.Client.DeleteLTXFiles(s.ctx, st.db, del); err != nil {
		s.log.Warn("level-0 files covered by level 1 could not be deleted; retried at the next pass", "db", st.db, "err", err)
		return
	}
	st.mu.Lock()
	for _, fi := range del {
		delete(st.expiring, [2]ltx.TXID{fi.MinTXID, fi.MaxTXID})
	}
	st.mu.Unlock()
	st.dropKept(del)
	s.log.Debug("level 0 expired", "db", st.db, "files", len(del))
}

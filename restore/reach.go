package restore

import (
	"sort"

	"github.com/superfly/ltx"
	"github.com/walsync/walsync/storage"
)

// reach is where a restore can stop, given a replica's files: the end of
// every LTX file a chain from TXID 0 reaches, and every TXID of a
// transaction log that starts at such a point.
type reach struct {
	ends  map[ltx.TXID]bool
	spans [][2]ltx.TXID // from transaction logs, inclusive
}

func newReach(files []*ltx.FileInfo) *reach {
	sorted := append([]*ltx.FileInfo(nil), files...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].MinTXID < sorted[j].MinTXID })
	r := &reach{ends: map[ltx.TXID]bool{}}
	for _, fi := range sorted {
		if fi.MinTXID == 0 || !r.has(fi.MinTXID-1) {
			continue
		}
		if fi.Level == storage.TxLogLevel {
			r.spans = append(r.spans, [2]ltx.TXID{fi.MinTXID, fi.MaxTXID})
		} else {
			r.ends[fi.MaxTXID] = true
		}
	}
	return r
}

func (r *reach) has(txid ltx.TXID) bool {
	if txid == 0 || r.ends[txid] {
		return true
	}
	for _, s := range r.spans {
		if s[0] <= txid && txid <= s[1] {
			return true
		}
	}
	return false
}

// around returns the restorable TXIDs nearest to target below and above it
// (0 when there is none).
func (r *reach) around(target ltx.TXID) (below, above ltx.TXID) {
	consider := func(x ltx.TXID) {
		if x < target && x > below {
			below = x
		}
		if x > target && (above == 0 || x < above) {
			above = x
		}
	}
	for x := range r.ends {
		consider(x)
	}
	for _, s := range r.spans {
		if s[0] < target {
			consider(min(s[1], target-1))
		}
		if s[1] > target {
			consider(max(s[0], target+1))
		}
	}
	return below, above
}

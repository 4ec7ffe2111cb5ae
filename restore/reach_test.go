package restore

import (
	"testing"

	"github.com/superfly/ltx"
	"github.com/walsync/walsync/storage"
)

func fi(level int, min, max ltx.TXID) *ltx.FileInfo {
	return &ltx.FileInfo{Level: level, MinTXID: min, MaxTXID: max}
}

// TestReach: a restore stops where a chain from TXID 0 ends, or anywhere
// inside a transaction log that starts at such a point; not inside a file
// whose transactions one by one are not there, nor after a gap.
func TestReach(t *testing.T) {
	files := []*ltx.FileInfo{
		fi(storage.SnapshotLevel, 1, 1),
		fi(1, 2, 10),
		fi(storage.TxLogLevel, 2, 10),
		fi(0, 11, 14),
		fi(0, 15, 20),
		fi(0, 25, 30), // after a gap
		fi(storage.TxLogLevel, 25, 30),
	}
	r := newReach(files)
	for txid, want := range map[ltx.TXID]bool{0: true, 1: true, 2: true, 7: true, 10: true, 11: false, 13: false, 14: true, 17: false, 20: true, 21: false, 26: false, 30: false} {
		if got := r.has(txid); got != want {
			t.Errorf("TXID %d restorable: %v, want %v", txid, got, want)
		}
	}
	for _, c := range []struct{ target, below, above ltx.TXID }{{12, 10, 14}, {17, 14, 20}, {5, 4, 6}, {22, 20, 0}} {
		if b, a := r.around(c.target); b != c.below || a != c.above {
			t.Errorf("around %d: %d and %d, want %d and %d", c.target, b, a, c.below, c.above)
		}
	}
}

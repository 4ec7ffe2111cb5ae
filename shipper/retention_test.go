package shipper_test

import (
	"strings"
	"testing"
	"time"

	"github.com/superfly/ltx"
	"github.com/walsync/walsync/shipper"
	"github.com/walsync/walsync/storage"
)

// TestPlanRetention: 60 simulated days of a database with a snapshot every
// 6 hours and a level-0 file every hour. With a 24-hour window and 24
// hourly, 7 daily, 4 weekly and 3 monthly slots: every file a TXID inside
// the window needs stays (its chain from the base snapshot is whole); the
// snapshots kept older than the window are exactly the newest of each slot;
// every other snapshot and every file before the base goes, each with its
// reason; nothing is both kept and deleted.
func TestPlanRetention(t *testing.T) {
	start := time.Date(2026, 9, 1, 0, 0, 0, 0, time.UTC)
	var files []*ltx.FileInfo
	txid := ltx.TXID(0)
	for h := 0; h < 60*24; h++ {
		at := start.Add(time.Duration(h) * time.Hour)
		txid++
		files = append(files, &ltx.FileInfo{Level: 0, MinTXID: txid, MaxTXID: txid, CreatedAt: at})
		if h%6 == 5 {
			files = append(files, &ltx.FileInfo{Level: storage.SnapshotLevel, MinTXID: 1, MaxTXID: txid, CreatedAt: at.Add(time.Minute)})
		}
	}
	now := start.Add(60 * 24 * time.Hour)
	window := 24 * time.Hour
	keep := shipper.GFS{Hourly: 24, Daily: 7, Weekly: 4, Monthly: 3}
	del, kept := shipper.PlanRetention(files, now, window, keep)
	deleted := map[*ltx.FileInfo]bool{}
	for _, d := range del {
		if d.Reason == "" {
			t.Fatalf("%+v deleted without a reason", d.File)
		}
		deleted[d.File] = true
	}
	// The base: the newest snapshot older than the window.
	var base *ltx.FileInfo
	for _, fi := range files {
		if fi.Level == storage.SnapshotLevel && !fi.CreatedAt.After(now.Add(-window)) && (base == nil || fi.MaxTXID > base.MaxTXID) {
			base = fi
		}
	}
	for _, fi := range files {
		inWindow := fi.MaxTXID > base.MaxTXID || fi == base
		if inWindow && deleted[fi] {
			t.Fatalf("%d-%d (level %d) is needed inside the window and deleted", fi.MinTXID, fi.MaxTXID, fi.Level)
		}
		if fi.Level == 0 && fi.MaxTXID <= base.MaxTXID && !deleted[fi] {
			t.Fatalf("level-0 file %d before the base %d kept", fi.MaxTXID, base.MaxTXID)
		}
	}
	// The snapshots kept past the window: the newest of each slot, counted
	// over all snapshots, newest first.
	want := map[*ltx.FileInfo]bool{base: true}
	var snaps []*ltx.FileInfo
	for i := len(files) - 1; i >= 0; i-- {
		if files[i].Level == storage.SnapshotLevel {
			snaps = append(snaps, files[i])
		}
	}
	for _, c := range []struct {
		n   int
		key func(time.Time) string
	}{
		{24, func(t time.Time) string { return t.Format("2006-01-02T15") }},
		{7, func(t time.Time) string { return t.Format("2006-01-02") }},
		{4, func(t time.Time) string { y, w := t.ISOWeek(); return string(rune(y)) + string(rune(w)) }},
		{3, func(t time.Time) string { return t.Format("2006-01") }},
	} {
		seen := map[string]bool{}
		for _, s := range snaps {
			if k := c.key(s.CreatedAt); !seen[k] && len(seen) < c.n {
				seen[k] = true
				if s.MaxTXID < base.MaxTXID {
					want[s] = true
				}
			}
		}
	}
	got := map[*ltx.FileInfo]bool{}
	for _, k := range kept {
		if deleted[k.File] {
			t.Fatalf("snapshot %d both kept and deleted", k.File.MaxTXID)
		}
		if k.Reason == "" {
			t.Fatalf("snapshot %d kept without a reason", k.File.MaxTXID)
		}
		got[k.File] = true
	}
	for s := range want {
		if !got[s] {
			t.Errorf("snapshot %d (%s) not kept", s.MaxTXID, s.CreatedAt)
		}
	}
	for s := range got {
		if !want[s] {
			t.Errorf("snapshot %d (%s) kept, no slot holds it", s.MaxTXID, s.CreatedAt)
		}
	}
	for _, s := range snaps {
		if s.MaxTXID < base.MaxTXID && !want[s] && !deleted[s] {
			t.Errorf("snapshot %d neither kept nor deleted", s.MaxTXID)
		}
	}
	// 7 days + weekly + monthly beyond the window: the count is small.
	if len(kept) < 8 || len(kept) > 24+7+4+3+1 {
		t.Fatalf("%d snapshots kept", len(kept))
	}
	for _, k := range kept {
		if k.File == base && !strings.Contains(k.Reason, "the restore point of the window's start") {
			t.Fatalf("the base is kept for %q", k.Reason)
		}
	}
	// Without GFS only the base stays of the old snapshots.
	_, kept = shipper.PlanRetention(files, now, window, shipper.GFS{})
	if len(kept) != 1 || kept[0].File != base {
		t.Fatalf("without GFS kept %+v, want the base alone", kept)
	}
	// Nothing older than the window: nothing deleted.
	if del, kept := shipper.PlanRetention(files[:3], now, 1000*24*time.Hour, keep); len(del)+len(kept) != 0 {
		t.Fatalf("a window longer than the history deleted %v", del)
	}
}

package shipper_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/superfly/ltx"
	"github.com/walsync/walsync/capture"
	"github.com/walsync/walsync/restore"
	"github.com/walsync/walsync/shipper"
	"github.com/walsync/walsync/storage"
	"github.com/walsync/walsync/storage/file"
)

// replicaSet is a Fanout over file replicas, each with its own staging.
type replicaSet struct {
	roots, stages []string
	clients       []*countingClient
	shippers      []*shipper.Shipper
	f             *shipper.Fanout
}

func openReplicaSet(t *testing.T, roots, stages []string, o shipper.Options) *replicaSet {
	t.Helper()
	rs := &replicaSet{roots: roots, stages: stages}
	for i := range roots {
		c := &countingClient{Client: file.New(roots[i])}
		o := o
		o.Dir, o.Client = stages[i], c
		s, err := shipper.New(o)
		if err != nil {
			t.Fatal(err)
		}
		rs.clients, rs.shippers = append(rs.clients, c), append(rs.shippers, s)
	}
	f, err := shipper.NewFanout(rs.shippers, nil)
	if err != nil {
		t.Fatal(err)
	}
	rs.f = f
	return rs
}

// core opens a capture of db over the fan-out, as the front ends do.
func (rs *replicaSet) core(t *testing.T, name string, m *memDB) *capture.DB {
	t.Helper()
	pos, err := rs.f.Position(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	core, err := capture.Open(capture.Config{Name: name, Files: m, Pos: pos, Full: rs.f.FullNeeded(name),
		Sink: func(tx *capture.Tx) error {
			err := rs.f.Stage(name, tx)
			if errors.Is(err, capture.ErrResync) {
				return nil // the front end starts the capture again (below: reopened by the test)
			}
			return err
		}})
	if err != nil {
		t.Fatal(err)
	}
	return core
}

func (rs *replicaSet) close(t *testing.T) {
	t.Helper()
	if err := rs.f.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// checkReplica restores db from a replica and verifies it.
func checkReplica(t *testing.T, root, db string, want []byte) {
	t.Helper()
	if got := restoreBytes(t, root, db, 0); !bytes.Equal(got, want) {
		t.Fatalf("replica %s: %s restores another state", root, db)
	}
	_, problems, err := restore.Verify(context.Background(), file.New(filepath.Join(root, db)), "", t.TempDir())
	if err != nil || len(problems) > 0 {
		t.Fatalf("replica %s: verify %s: %v %v", root, db, err, problems)
	}
}

// TestFanoutReplicas: every transaction reaches each replica; one replica
// down does not hold the other back; a replica added later, and one whose
// history stopped behind the others, catch up with the whole database
// (a snapshot where its history starts again) and restore identical, with
// compaction going on past the restart.
func TestFanoutReplicas(t *testing.T) {
	dir := t.TempDir()
	roots := []string{filepath.Join(dir, "r1"), filepath.Join(dir, "r2"), filepath.Join(dir, "r3")}
	stages := []string{filepath.Join(dir, "s1"), filepath.Join(dir, "s2"), filepath.Join(dir, "s3")}
	o := shipper.Options{SyncInterval: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, Levels: []time.Duration{20 * time.Millisecond}}

	// Two replicas; the second one goes down for a while.
	rs := openReplicaSet(t, roots[:2], stages[:2], o)
	m := newMemDB(4)
	core := rs.core(t, "a.db", m)
	m.change(t, core, 2, 1)
	rs.clients[1].fail.Store(true)
	for j := 0; j < 10; j++ {
		m.change(t, core, 3, byte(j+1))
		if err := rs.shippers[0].FlushDB(context.Background(), "a.db"); err != nil {
			t.Fatalf("the first replica is held back while the second is down: %v", err)
		}
	}
	if st := rs.shippers[0].Status(); st[0].Shipped != 12 {
		t.Fatalf("first replica shipped TXID %d during the second's outage, want 12", st[0].Shipped)
	}
	if st := rs.shippers[1].Status(); st[0].Shipped >= 12 || st[0].Captured != 12 {
		t.Fatalf("second replica during its outage: %+v", st[0])
	}
	rs.clients[1].fail.Store(false)
	rs.close(t)
	checkReplica(t, roots[0], "a.db", m.bytes())
	checkReplica(t, roots[1], "a.db", m.bytes())

	// Only the first replica for a while: the second's staging and replica
	// stop at TXID 12.
	rs = openReplicaSet(t, roots[:1], stages[:1], o)
	core = rs.core(t, "a.db", m)
	for j := 0; j < 5; j++ {
		m.change(t, core, 2, byte(20+j))
	}
	rs.close(t)

	// All three: the second is behind, the third has nothing.
	rs = openReplicaSet(t, roots, stages, o)
	core = rs.core(t, "a.db", m)
	if !rs.f.FullNeeded("a.db") {
		// (cleared once the whole database is staged everywhere)
		for i, s := range rs.shippers {
			if st := s.Status(); st[0].Captured != 18 {
				t.Fatalf("replica %d after the capture started again: %+v", i+1, st[0])
			}
		}
	} else {
		t.Fatal("the replicas behind are still behind after the capture started with the whole database")
	}
	for j := 0; j < 5; j++ {
		m.change(t, core, 4, byte(40+j))
		for _, s := range rs.shippers { // a level-0 file each
			if err := s.FlushDB(context.Background(), "a.db"); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Level 1 of the second replica goes on past its restart.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if l1, _ := file.New(roots[1]).LTXFiles(context.Background(), "a.db", 1); len(l1) > 0 && l1[len(l1)-1].MinTXID >= 18 {
			break
		}
	}
	rs.close(t)
	for _, root := range roots {
		checkReplica(t, root, "a.db", m.bytes())
	}
	// The second replica's history started again at TXID 18 (a snapshot)
	// and level 1 goes on after it (a last level-0 file alone waits for the
	// next one).
	snaps, _ := file.New(roots[1]).LTXFiles(context.Background(), "a.db", storage.SnapshotLevel)
	if !hasFile(snaps, 1, 18) {
		t.Fatalf("second replica: no snapshot where its history starts again: %v", snaps)
	}
	l1, _ := file.New(roots[1]).LTXFiles(context.Background(), "a.db", 1)
	if len(l1) == 0 || l1[len(l1)-1].MinTXID < 18 {
		var got []string
		for _, fi := range l1 {
			got = append(got, ltx.FormatFilename(fi.MinTXID, fi.MaxTXID))
		}
		for _, level := range []int{0, storage.SnapshotLevel} {
			files, _ := file.New(roots[1]).LTXFiles(context.Background(), "a.db", level)
			for _, fi := range files {
				got = append(got, fmt.Sprintf("L%d:%s", level, ltx.FormatFilename(fi.MinTXID, fi.MaxTXID)))
			}
		}
		t.Fatalf("second replica: level 1 did not go on after the restart: %v", got)
	}
	// Restores before the restart on the second replica stop at its
	// history's end; after it, every TXID is reachable.
	if got := restoreBytes(t, roots[1], "a.db", 20); !bytes.Equal(got, restoreBytes(t, roots[0], "a.db", 20)) {
		t.Fatal("TXID 20 restores differently from the two replicas")
	}
	_ = os.RemoveAll(dir)
}

func hasFile(files []*ltx.FileInfo, min, max ltx.TXID) bool {
	for _, fi := range files {
		if fi.MinTXID == min && fi.MaxTXID == max {
			return true
		}
	}
	return false
}

// TestFanoutFailures: a transaction no replica could stage is an error and
// leaves no replica behind: the capture retries it everywhere, and one
// failed write (a full staging) must not turn into a resync of the whole
// database.
func TestFanoutFailures(t *testing.T) {
	dir := t.TempDir()
	rs := openReplicaSet(t, []string{filepath.Join(dir, "r1")}, []string{filepath.Join(dir, "s1")}, shipper.Options{SyncInterval: time.Hour})
	defer rs.close(t)
	m := newMemDB(3)
	core := rs.core(t, "a.db", m)
	// Another capture stages TXID 2 behind the fan-out's back: the
	// replica's staging refuses the fan-out's TXID 2.
	other := &memDB{data: m.bytes()}
	other.change(t, openCore(t, rs.shippers[0], "a.db", other), 2, 7)
	off := int64(pageSize + 200)
	err := core.WriteDB(off, 1, func() error {
		m.mu.Lock()
		m.data[off] = 9
		m.mu.Unlock()
		return nil
	})
	if err == nil {
		err = core.Closed()
	}
	if err == nil || errors.Is(err, capture.ErrResync) {
		t.Fatalf("a transaction no replica took: %v, want the staging's error", err)
	}
	if rs.f.FullNeeded("a.db") {
		t.Fatal("a transaction no replica took left the replica behind: the next capture would ship the whole database")
	}
}

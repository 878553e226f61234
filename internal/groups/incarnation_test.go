package groups

import (
	"errors"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

func joinInc(tb testing.TB, c *Coordinator, member, inc string, shards int) *Session {
	tb.Helper()
	s, err := c.Join(JoinRequest{Group: "g1", Stream: "events", Shards: shards, Incarnation: inc, Member: member, SessionTimeout: testTimeout})
	if err != nil {
		tb.Fatalf("join %s: %v", member, err)
	}
	return s
}

// The regression of issue 8: group g1 kept its offsets (22/22/22/58) on a
// stream deleted and created again and read nothing of the new stream. A
// join with the stream's new incarnation drops the offsets (the shards
// start at the member's start position), ends the sessions bound to the old
// one, and refuses their late commits; the binding survives a restart.
func TestRecreatedStreamStartsOver(t *testing.T) {
	path := filepath.Join(t.TempDir(), "groups.db")
	c := openTest(t, path)
	const incA, incB = "aaaa", "bbbb"
	old := joinInc(t, c, "m1", incA, 4)
	a := old.Assignment()
	for i, off := range []uint64{22, 22, 22, 58} {
		if err := commit(t, old, i, leaseOf(t, a, i).Epoch, off); err != nil {
			t.Fatal(err)
		}
	}
	// The same incarnation keeps the offsets.
	same := joinInc(t, c, "m2", incA, 4)
	keepAlive(t, same)
	gi, _ := c.Group("g1")
	if gi.Offsets[3].Offset != 58 || gi.Incarnation != incA {
		t.Fatalf("same incarnation: %+v", gi)
	}
	// The stream is recreated, with another shard count even.
	fresh := joinInc(t, c, "m3", incB, 2)
	for _, s := range []*Session{old, same} {
		<-s.Done()
		if !errors.Is(s.Err(), ErrStreamRecreated) {
			t.Fatalf("session on the old incarnation ended with %v", s.Err())
		}
	}
	if err := commit(t, old, 3, leaseOf(t, a, 3).Epoch, 99); err == nil {
		t.Fatal("a commit of the old incarnation was accepted")
	}
	fa := fresh.Assignment()
	if len(fa.Leases) != 2 {
		t.Fatalf("fresh assignment %+v", fa)
	}
	for _, l := range fa.Leases {
		if l.Offset != 1 || l.Epoch <= leaseOf(t, a, 3).Epoch {
			t.Fatalf("shard %d starts at %d epoch %d: want the start position (1) and a newer epoch", l.Shard, l.Offset, l.Epoch)
		}
	}
	if err := commit(t, fresh, 1, leaseOf(t, fa, 1).Epoch, 7); err != nil {
		t.Fatal(err)
	}
	fresh.Leave()
	c.Close()

	c = openTest(t, path)
	gi, err := c.Group("g1")
	if err != nil || gi.Incarnation != incB || gi.Shards != 2 || gi.Offsets[1].Offset != 7 {
		t.Fatalf("after restart: %+v, %v", gi, err)
	}
}

// A group from before incarnations (none recorded) adopts the stream's
// current one and keeps its offsets.
func TestGroupAdoptsIncarnation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "groups.db")
	c := openTest(t, path)
	s := join(t, c, "g1", "m1") // no incarnation
	if err := commit(t, s, 0, leaseOf(t, s.Assignment(), 0).Epoch, 5); err != nil {
		t.Fatal(err)
	}
	s.Leave()
	c.Close()
	// Files from before incarnations have no key at all.
	db, err := bolt.Open(path, 0o644, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketGroups).Bucket([]byte("g1")).Delete(keyInc)
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	c = openTest(t, path)
	s = joinInc(t, c, "m1", "cccc", 4)
	defer s.Leave()
	if off := leaseOf(t, s.Assignment(), 0).Offset; off != 5 {
		t.Fatalf("adopting lost the offset: %d", off)
	}
	if err := commit(t, s, 0, leaseOf(t, s.Assignment(), 0).Epoch, 6); err != nil {
		t.Fatalf("commit after adopting: %v", err)
	}
	if gi, _ := c.Group("g1"); gi.Incarnation != "cccc" {
		t.Fatalf("incarnation %q", gi.Incarnation)
	}
}

package groups

import (
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// Hand-built layouts in the shapes the store makes (docs/resharding.md
// section 1): ids are never reused, children get the next ids.

func uniform(n int) []Shard {
	l := make([]Shard, n)
	for i := range l {
		l[i] = Shard{ID: uint32(i), First: 1}
	}
	return l
}

// closeInto closes the shards ps at their ends and opens one child per
// parents list, each child's parents given by the list.
func closeInto(l []Shard, at time.Time, ends map[uint32]uint64, children ...[]uint32) []Shard {
	l = slices.Clone(l)
	for p, end := range ends {
		l[p].Closed, l[p].End, l[p].ClosedAt = true, end, at
	}
	for _, parents := range children {
		l = append(l, Shard{ID: uint32(len(l)), Parents: parents, First: 1})
	}
	return l
}

func setLayout(tb testing.TB, c *Coordinator, version uint64, l []Shard) {
	tb.Helper()
	if err := c.SetLayout("events", version, l); err != nil {
		tb.Fatal(err)
	}
}

func joinN(tb testing.TB, c *Coordinator, member string, shards int, start Start) *Session {
	tb.Helper()
	s, err := c.Join(JoinRequest{Group: "g", Stream: "events", Shards: shards, Member: member, SessionTimeout: testTimeout, Start: start})
	if err != nil {
		tb.Fatalf("join %s: %v", member, err)
	}
	return s
}

func shardInfo(tb testing.TB, c *Coordinator, shard int) ShardInfo {
	tb.Helper()
	gi, err := c.Group("g")
	if err != nil {
		tb.Fatal(err)
	}
	if shard >= len(gi.Offsets) {
		tb.Fatalf("shard %d not described: %+v", shard, gi.Offsets)
	}
	return gi.Offsets[shard]
}

// TestSplitChildrenAfterParent: a split's children are leased only once the
// parent is committed past its end; the lease of the closed parent carries
// closed_next = end+1; the parent's lease is then handed back; children
// start at their first record although the member asked for latest (the
// group existed before them).
func TestSplitChildrenAfterParent(t *testing.T) {
	c := openTest(t, filepath.Join(t.TempDir(), "groups.db"))
	a := joinN(t, c, "a", 4, Start{Kind: StartLatest})
	keepAlive(t, a)
	waitFor(t, a, "all four", holds(0, 1, 2, 3))
	setLayout(t, c, 0, uniform(4))
	ep1 := leaseOf(t, a.Assignment(), 1).Epoch

	gen := a.Assignment().Generation
	setLayout(t, c, 1, closeInto(uniform(4), time.Now(), map[uint32]uint64{1: 150}, []uint32{1}, []uint32{1}))
	as := a.Assignment()
	if as.Generation == gen {
		t.Fatal("the holder of the shard that closed got no new assignment: it cannot learn closed_next")
	}
	if !slices.Equal(shards(as), []int{0, 1, 2, 3}) || as.Shards != 6 {
		t.Fatalf("after the split: %+v, want 0..3 of 6 ids", as)
	}
	if l := leaseOf(t, as, 1); l.ClosedNext != 151 || l.Epoch != ep1 {
		t.Fatalf("lease of the closed parent: %+v, want closed_next 151, epoch %d kept", l, ep1)
	}
	if l := leaseOf(t, as, 0); l.ClosedNext != 0 {
		t.Fatalf("lease of an open shard: %+v, want closed_next 0", l)
	}
	if si := shardInfo(t, c, 4); !slices.Equal(si.WaitingFor, []int{1}) || si.State != StateUnassigned {
		t.Fatalf("child before the parent is done: %+v", si)
	}
	if si := shardInfo(t, c, 1); si.ShardState != ShardStateClosed || si.End != 150 {
		t.Fatalf("parent: %+v", si)
	}
	// Not yet at the end: the children wait.
	if err := commit(t, a, 1, ep1, 150); err != nil {
		t.Fatal(err)
	}
	if got := shards(a.Assignment()); !slices.Equal(got, []int{0, 1, 2, 3}) {
		t.Fatalf("children leased before the parent's end was committed: %v", got)
	}
	if err := commit(t, a, 1, ep1, 151); err != nil {
		t.Fatal(err)
	}
	as = waitFor(t, a, "the children instead of the parent", holds(0, 2, 3, 4, 5))
	for _, ch := range []int{4, 5} {
		if l := leaseOf(t, as, ch); l.Offset != 1 || l.ClosedNext != 0 {
			t.Fatalf("child %d: %+v, want offset 1 (its first record, not latest), open", ch, l)
		}
	}
	// The parent is handed back through the usual hand-over: its final
	// commit with the old epoch is still accepted until the member syncs.
	if si := shardInfo(t, c, 1); si.State != StateRevoking || si.ShardState != ShardStateFinished || si.Offset != 151 {
		t.Fatalf("parent after its end: %+v", si)
	}
	if err := commit(t, a, 1, ep1, 151); err != nil {
		t.Fatalf("final commit of the parent while handing over: %v", err)
	}
	if err := a.Sync(as.Generation); err != nil {
		t.Fatal(err)
	}
	if si := shardInfo(t, c, 1); si.State != StateUnassigned || si.Offset != 151 {
		t.Fatalf("finished parent after the sync: %+v (its offset is kept until it is retired)", si)
	}
	if n := c.WaitingShards()["events"]; n != 0 {
		t.Fatalf("waiting shards %d, want 0", n)
	}
}

// mergeRun merges shards 2 and 3 of 4 into child 4, has both members
// finish parent 2 only, and reports whether the child was leased while
// parent 3 was unfinished. skip turns the parent check off.
func mergeRun(t *testing.T, skip bool) (early bool) {
	c := openTest(t, filepath.Join(t.TempDir(), "groups.db"))
	c.testSkipParents = skip
	a := joinN(t, c, "a", 4, Start{})
	keepAlive(t, a)
	b := joinN(t, c, "b", 4, Start{})
	stopB := behave(b, true)
	defer stopB()
	stopA := behave(a, true)
	defer stopA()
	waitFor(t, a, "two shards", func(x Assignment) bool { return len(x.Leases) == 2 })
	waitFor(t, b, "two shards", func(x Assignment) bool { return len(x.Leases) == 2 })
	setLayout(t, c, 1, closeInto(uniform(4), time.Now(), map[uint32]uint64{2: 10, 3: 20}, []uint32{2, 3}))
	for _, s := range []*Session{a, b} {
		for _, l := range s.Assignment().Leases {
			if l.Shard == 2 {
				if err := commit(t, s, 2, l.Epoch, 11); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	waitFor(t, a, "parent 2 handed back", func(x Assignment) bool { return !slices.Contains(shards(x), 2) })
	waitFor(t, b, "parent 2 handed back", func(x Assignment) bool { return !slices.Contains(shards(x), 2) })
	si := shardInfo(t, c, 4)
	if !skip && !slices.Equal(si.WaitingFor, []int{3}) {
		t.Fatalf("child of the merge: %+v, want waiting for 3", si)
	}
	return si.State != StateUnassigned
}

// TestMergeWaitsForBothParents, with its negative control: without the
// parent check the same run leases the child early, so the test can see
// the failure it guards against.
func TestMergeWaitsForBothParents(t *testing.T) {
	if mergeRun(t, false) {
		t.Fatal("the merge's child was leased while one parent was unfinished")
	}
	if !mergeRun(t, true) {
		t.Fatal("negative control: with the parent check skipped the child should be leased early; the test cannot see the failure")
	}
}

// TestReshard3To8: reshard 3 → 8 gives children with one or two parents
// (a child straddling two parents' ranges); each is leased exactly when
// its last parent is finished.
func TestReshard3To8(t *testing.T) {
	c := openTest(t, filepath.Join(t.TempDir(), "groups.db"))
	a := joinN(t, c, "a", 3, Start{})
	keepAlive(t, a)
	stop := behave(a, true)
	defer stop()
	waitFor(t, a, "all three", holds(0, 1, 2))
	// Targets i/8: 0, 1 inside 0; 2 straddles 0|1; 3, 4 inside 1; 5
	// straddles 1|2; 6, 7 inside 2. Child ids 3..10.
	l := closeInto(uniform(3), time.Now(), map[uint32]uint64{0: 5, 1: 6, 2: 7},
		[]uint32{0}, []uint32{0}, []uint32{0, 1}, []uint32{1}, []uint32{1}, []uint32{1, 2}, []uint32{2}, []uint32{2})
	setLayout(t, c, 1, l)
	if n := c.WaitingShards()["events"]; n != 8 {
		t.Fatalf("waiting shards %d, want 8", n)
	}
	finish := func(p int, end uint64) {
		t.Helper()
		if err := commit(t, a, p, leaseOf(t, a.Assignment(), p).Epoch, end+1); err != nil {
			t.Fatal(err)
		}
	}
	finish(0, 5)
	waitFor(t, a, "children of 0 alone", holds(1, 2, 3, 4))
	if si := shardInfo(t, c, 5); !slices.Equal(si.WaitingFor, []int{1}) {
		t.Fatalf("straddling child: %+v, want waiting for 1", si)
	}
	finish(1, 6)
	waitFor(t, a, "children of 0 and 1", holds(2, 3, 4, 5, 6, 7))
	if si := shardInfo(t, c, 8); !slices.Equal(si.WaitingFor, []int{2}) {
		t.Fatalf("straddling child: %+v, want waiting for 2", si)
	}
	finish(2, 7)
	waitFor(t, a, "all eight children", holds(3, 4, 5, 6, 7, 8, 9, 10))
	if n := c.WaitingShards()["events"]; n != 0 {
		t.Fatalf("waiting shards %d, want 0", n)
	}
}

// TestHandOverOfFinishedParent: the parent's holder and the children's new
// owners differ; the parent leaves its holder through the hand-over, the
// balance counts only assignable shards.
func TestHandOverOfFinishedParent(t *testing.T) {
	c := openTest(t, filepath.Join(t.TempDir(), "groups.db"))
	a := joinN(t, c, "a", 2, Start{})
	keepAlive(t, a)
	b := joinN(t, c, "b", 2, Start{})
	keepAlive(t, b)
	waitFor(t, a, "one shard", func(x Assignment) bool { return len(x.Leases) == 1 })
	a.Sync(a.Assignment().Generation)
	bs := waitFor(t, b, "one shard", func(x Assignment) bool { return len(x.Leases) == 1 })
	parent := bs.Leases[0].Shard
	setLayout(t, c, 1, closeInto(uniform(2), time.Now(), map[uint32]uint64{uint32(parent): 3}, []uint32{uint32(parent)}, []uint32{uint32(parent)}))
	if err := commit(t, b, parent, bs.Leases[0].Epoch, 4); err != nil {
		t.Fatal(err)
	}
	bs = waitFor(t, b, "the parent handed back", func(x Assignment) bool { return !slices.Contains(shards(x), parent) })
	if err := b.Sync(bs.Generation); err != nil {
		t.Fatal(err)
	}
	// Three assignable shards (the open one and two children) over two
	// members: counts differ by at most one, the parent counts for nobody.
	want := func(x Assignment) bool { return len(x.Leases) >= 1 && !slices.Contains(shards(x), parent) }
	aa := waitFor(t, a, "its share", want)
	bs = waitFor(t, b, "its share", want)
	a.Sync(aa.Generation)
	b.Sync(bs.Generation)
	deadline := time.Now().Add(waitBound)
	for len(a.Assignment().Leases)+len(b.Assignment().Leases) != 3 {
		if time.Now().After(deadline) {
			t.Fatalf("assignments %+v / %+v, want the 3 assignable shards leased", a.Assignment(), b.Assignment())
		}
		a.Sync(a.Assignment().Generation)
		b.Sync(b.Assignment().Generation)
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRetirementDeletesOffsets: a finished parent's offset is kept (across
// restarts) until the parent is retired, then deleted from the file; the
// children stay leasable since a retired parent is finished.
func TestRetirementDeletesOffsets(t *testing.T) {
	path := filepath.Join(t.TempDir(), "groups.db")
	c := openTest(t, path)
	a := joinN(t, c, "a", 2, Start{})
	keepAlive(t, a)
	waitFor(t, a, "both", holds(0, 1))
	split := closeInto(uniform(2), time.Now(), map[uint32]uint64{1: 9}, []uint32{1}, []uint32{1})
	setLayout(t, c, 1, split)
	if err := commit(t, a, 1, leaseOf(t, a.Assignment(), 1).Epoch, 10); err != nil {
		t.Fatal(err)
	}
	as := waitFor(t, a, "children", holds(0, 2, 3))
	if err := commit(t, a, 3, leaseOf(t, as, 3).Epoch, 7); err != nil {
		t.Fatal(err)
	}
	a.Leave()
	c.Close()

	// Restart: the child's offset (id past the creation count) loads, and
	// before the layout is set nothing past the creation is leased.
	c = openTest(t, path)
	if si := shardInfo(t, c, 3); si.Offset != 7 {
		t.Fatalf("child offset after restart: %+v", si)
	}
	setLayout(t, c, 1, split)
	if si := shardInfo(t, c, 1); si.Offset != 10 || si.ShardState != ShardStateFinished {
		t.Fatalf("finished parent after restart: %+v, want its offset kept", si)
	}
	retired := slices.Clone(split)
	retired[1].Retired = true
	setLayout(t, c, 1, retired)
	if si := shardInfo(t, c, 1); si.Offset != 0 || si.ShardState != ShardStateRetired {
		t.Fatalf("retired parent: %+v, want its offset deleted", si)
	}
	c.Close()
	c = openTest(t, path)
	if si := shardInfo(t, c, 1); si.Offset != 0 {
		t.Fatalf("retired parent's offset came back from the file: %+v", si)
	}
	setLayout(t, c, 1, retired)
	b := joinN(t, c, "b", 2, Start{})
	keepAlive(t, b)
	if as := waitFor(t, b, "open shard and children", holds(0, 2, 3)); leaseOf(t, as, 3).Offset != 7 {
		t.Fatalf("child offset lost: %+v", as)
	}
}

// TestNothingLiveIsFinished: a closed parent whose first live sequence is
// past its end (retention took it all, or it never held a record) is
// finished without a commit.
func TestNothingLiveIsFinished(t *testing.T) {
	c := openTest(t, filepath.Join(t.TempDir(), "groups.db"))
	a := joinN(t, c, "a", 1, Start{})
	keepAlive(t, a)
	stop := behave(a, true)
	defer stop()
	waitFor(t, a, "shard 0", holds(0))
	l := closeInto(uniform(1), time.Now(), map[uint32]uint64{0: 40}, []uint32{0}, []uint32{0})
	l[0].First = 41
	setLayout(t, c, 1, l)
	waitFor(t, a, "the children", holds(1, 2))
}

// TestUnreshardedUnchanged: the layout of a stream never resharded changes
// nothing (closed_next 0, the same shards, the same count).
func TestUnreshardedUnchanged(t *testing.T) {
	c := openTest(t, filepath.Join(t.TempDir(), "groups.db"))
	a := join(t, c, "g", "a")
	keepAlive(t, a)
	before := waitFor(t, a, "all", holds(0, 1, 2, 3))
	setLayout(t, c, 0, uniform(4))
	after := a.Assignment()
	if after.Generation != before.Generation || after.Shards != 4 || !slices.Equal(after.Leases, before.Leases) {
		t.Fatalf("layout version 0 changed the assignment: %+v → %+v", before, after)
	}
	if err := c.SetLayout("events", 0, []Shard{{ID: 1}}); err == nil {
		t.Fatal("a layout not indexed by id was accepted")
	}
}

// TestGroupAfterReshard: a group created after the reshard with a latest
// start positions the closed parent past its end (finished by its grant)
// and its children by the member's start, as any shard.
func TestGroupAfterReshard(t *testing.T) {
	c := openTest(t, filepath.Join(t.TempDir(), "groups.db"))
	setLayout(t, c, 1, closeInto(uniform(1), time.Now().Add(-time.Minute), map[uint32]uint64{0: 99}, []uint32{0}, []uint32{0}))
	a := joinN(t, c, "a", 1, Start{Kind: StartLatest})
	keepAlive(t, a)
	stop := behave(a, true)
	defer stop()
	as := waitFor(t, a, "the children", holds(1, 2))
	for _, ch := range []int{1, 2} {
		if l := leaseOf(t, as, ch); l.Offset != 100 {
			t.Fatalf("child %d of a reshard before the group: %+v, want the member's start (latest, 100)", ch, l)
		}
	}
	if si := shardInfo(t, c, 0); si.ShardState != ShardStateFinished || si.Offset != 100 {
		t.Fatalf("parent: %+v", si)
	}
}

// TestResetBoundsByLayout: a reset may set offsets of children (ids past
// the creation count) once the layout names them; a shard no layout names
// is refused before any group is created.
func TestResetBoundsByLayout(t *testing.T) {
	c := openTest(t, filepath.Join(t.TempDir(), "groups.db"))
	if err := c.Reset(ResetRequest{Group: "g", Stream: "events", Shards: 2, Offsets: map[int]uint64{3: 5}}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("reset of an unknown id: %v, want ErrInvalid", err)
	}
	if _, err := c.Group("g"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a refused reset created the group: %v", err)
	}
	setLayout(t, c, 1, closeInto(uniform(2), time.Now(), map[uint32]uint64{1: 9}, []uint32{1}, []uint32{1}))
	if err := c.Reset(ResetRequest{Group: "g", Stream: "events", Shards: 2, Offsets: map[int]uint64{1: 10, 3: 5}}); err != nil {
		t.Fatal(err)
	}
	if si := shardInfo(t, c, 3); si.Offset != 5 {
		t.Fatalf("child after reset: %+v", si)
	}
	if si := shardInfo(t, c, 1); si.ShardState != ShardStateFinished {
		t.Fatalf("parent reset past its end: %+v, want finished", si)
	}
}

// TestEmptyShardWaitsForItsParents: a shard with nothing to read (left
// empty between a merge and an immediate split, or retired as such) is
// finished only once its parents are: its children inherit its range, so
// they wait for the grandparent, and are leased after its end is
// committed. Without the rule the grandchildren were leased at once.
func TestEmptyShardWaitsForItsParents(t *testing.T) {
	for _, retired := range []bool{false, true} {
		t.Run(map[bool]string{false: "empty", true: "retired"}[retired], func(t *testing.T) {
			c := openTest(t, filepath.Join(t.TempDir(), "groups.db"))
			a := joinN(t, c, "a", 1, Start{})
			stop := behave(a, true)
			defer stop()
			waitFor(t, a, "shard 0", holds(0))
			ep := leaseOf(t, a.Assignment(), 0).Epoch
			now := time.Now()
			l := closeInto(uniform(1), now, map[uint32]uint64{0: 40}, []uint32{0}, []uint32{0}) // 1, 2
			l = closeInto(l, now, map[uint32]uint64{1: 0, 2: 0}, []uint32{1, 2})                // 3
			l = closeInto(l, now, map[uint32]uint64{3: 0}, []uint32{3}, []uint32{3})            // 4, 5
			l[3].Retired = retired
			setLayout(t, c, 3, l)
			if si := shardInfo(t, c, 4); !slices.Equal(si.WaitingFor, []int{3}) || si.State != StateUnassigned {
				t.Fatalf("grandchild before the grandparent is read: %+v", si)
			}
			if got := shards(a.Assignment()); !slices.Equal(got, []int{0}) {
				t.Fatalf("leased %v before shard 0 was finished, want [0]", got)
			}
			if n := c.WaitingShards()["events"]; n != 5 {
				t.Fatalf("waiting shards %d, want 5 (1 to 5)", n)
			}
			if err := commit(t, a, 0, ep, 41); err != nil {
				t.Fatal(err)
			}
			waitFor(t, a, "the grandchildren", holds(4, 5))
		})
	}
}

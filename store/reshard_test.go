package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgehub/edgehub/internal/record"
)

func keyed(keys ...string) []record.Record {
	recs := make([]record.Record, len(keys))
	for i, k := range keys {
		recs[i] = record.Record{Key: []byte(k), Value: []byte("v-" + k)}
	}
	return recs
}

// checkLineage asserts the layout's own invariants from outside.
func checkLineage(t *testing.T, l Layout) {
	t.Helper()
	if err := l.check(); err != nil {
		t.Fatalf("layout %+v: %v", l, err)
	}
	for i, sh := range l.Shards {
		if sh.ID != uint32(i) {
			t.Fatalf("entry %d has id %d", i, sh.ID)
		}
	}
}

func TestReshardPlans(t *testing.T) {
	half := uint64(1) << 63
	third1, _ := record.HashRange(1, 3)
	third2, _ := record.HashRange(2, 3)
	type want struct {
		version uint64
		open    [][2]uint64 // open ranges in hash order
		parents map[uint32][]uint32
	}
	for _, tc := range []struct {
		name   string
		shards int
		run    func(ctx context.Context, st *Stream) (Layout, error)
		err    error
		want   want
	}{
		{"split midpoint", 2, func(ctx context.Context, st *Stream) (Layout, error) { return st.Split(ctx, 0, 0) }, nil,
			want{1, [][2]uint64{{0, half/2 - 1}, {half / 2, half - 1}, {half, ^uint64(0)}}, map[uint32][]uint32{2: {0}, 3: {0}}}},
		{"split at", 1, func(ctx context.Context, st *Stream) (Layout, error) { return st.Split(ctx, 0, 10) }, nil,
			want{1, [][2]uint64{{0, 9}, {10, ^uint64(0)}}, map[uint32][]uint32{1: {0}, 2: {0}}}},
		{"split at top", 1, func(ctx context.Context, st *Stream) (Layout, error) { return st.Split(ctx, 0, ^uint64(0)) }, nil,
			want{1, [][2]uint64{{0, ^uint64(0) - 1}, {^uint64(0), ^uint64(0)}}, map[uint32][]uint32{1: {0}, 2: {0}}}},
		{"split at lo", 2, func(ctx context.Context, st *Stream) (Layout, error) { return st.Split(ctx, 1, half) }, ErrInvalidShard, want{}},
		{"split unknown", 2, func(ctx context.Context, st *Stream) (Layout, error) { return st.Split(ctx, 2, 0) }, ErrInvalidShard, want{}},
		{"split closed", 1, func(ctx context.Context, st *Stream) (Layout, error) {
			if _, err := st.Split(ctx, 0, 0); err != nil {
				return Layout{}, err
			}
			return st.Split(ctx, 0, 0)
		}, ErrShardClosed, want{}},
		{"split one hash", 1, func(ctx context.Context, st *Stream) (Layout, error) {
			if _, err := st.Split(ctx, 0, ^uint64(0)); err != nil {
				return Layout{}, err
			}
			return st.Split(ctx, 2, 0)
		}, ErrInvalidShard, want{}},
		{"merge", 2, func(ctx context.Context, st *Stream) (Layout, error) { return st.Merge(ctx, 1, 0) }, nil,
			want{1, [][2]uint64{{0, ^uint64(0)}}, map[uint32][]uint32{2: {0, 1}}}},
		{"merge not adjacent", 3, func(ctx context.Context, st *Stream) (Layout, error) { return st.Merge(ctx, 0, 2) }, ErrNotAdjacent, want{}},
		{"merge itself", 3, func(ctx context.Context, st *Stream) (Layout, error) { return st.Merge(ctx, 1, 1) }, ErrNotAdjacent, want{}},
		{"merge closed", 2, func(ctx context.Context, st *Stream) (Layout, error) {
			if _, err := st.Split(ctx, 0, 0); err != nil {
				return Layout{}, err
			}
			return st.Merge(ctx, 0, 1)
		}, ErrShardClosed, want{}},
		{"reshard 2 to 3", 2, func(ctx context.Context, st *Stream) (Layout, error) { return st.Reshard(ctx, 3) }, nil,
			// The middle third straddles both halves: two parents.
			want{1, [][2]uint64{{0, third1 - 1}, {third1, third2 - 1}, {third2, ^uint64(0)}}, map[uint32][]uint32{2: {0}, 3: {0, 1}, 4: {1}}}},
		{"reshard 2 to 4", 2, func(ctx context.Context, st *Stream) (Layout, error) { return st.Reshard(ctx, 4) }, nil,
			want{1, [][2]uint64{{0, half/2 - 1}, {half / 2, half - 1}, {half, half + half/2 - 1}, {half + half/2, ^uint64(0)}},
				map[uint32][]uint32{2: {0}, 3: {0}, 4: {1}, 5: {1}}}},
		{"reshard keeps exact ranges", 4, func(ctx context.Context, st *Stream) (Layout, error) {
			if _, err := st.Merge(ctx, 0, 1); err != nil {
				return Layout{}, err
			}
			return st.Reshard(ctx, 4) // shards 2 and 3 are already quarters
		}, nil, want{2, [][2]uint64{{0, half/2 - 1}, {half / 2, half - 1}, {half, half + half/2 - 1}, {half + half/2, ^uint64(0)}},
			map[uint32][]uint32{4: {0, 1}, 5: {4}, 6: {4}}}},
		{"reshard same", 3, func(ctx context.Context, st *Stream) (Layout, error) { return st.Reshard(ctx, 3) }, nil,
			want{0, [][2]uint64{{0, third1 - 1}, {third1, third2 - 1}, {third2, ^uint64(0)}}, map[uint32][]uint32{}}},
		{"reshard 0", 2, func(ctx context.Context, st *Stream) (Layout, error) { return st.Reshard(ctx, 0) }, ErrTooManyShards, want{}},
		{"reshard above cap", 2, func(ctx context.Context, st *Stream) (Layout, error) { return st.Reshard(ctx, maxOpenShards+1) }, ErrTooManyShards, want{}},
		{"reshard to cap", 2, func(ctx context.Context, st *Stream) (Layout, error) { return st.Reshard(ctx, maxOpenShards) }, nil, want{version: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			s := openStore(t, testConfig(t, dir))
			st := newStream(t, s, StreamConfig{Name: "r", Shards: tc.shards})
			before := st.Layout()
			l, err := tc.run(ctx, st)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("err %v, want %v", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			checkLineage(t, l)
			if l.Version != tc.want.version {
				t.Fatalf("version %d, want %d", l.Version, tc.want.version)
			}
			if tc.want.open != nil {
				var got [][2]uint64
				for _, sh := range l.Open() {
					got = append(got, [2]uint64{sh.HashStart, sh.HashEnd})
				}
				if !slices.Equal(got, tc.want.open) {
					t.Fatalf("open ranges %x, want %x", got, tc.want.open)
				}
			}
			for id, ps := range tc.want.parents {
				if got := l.Shards[id].Parents; !slices.Equal(got, ps) {
					t.Fatalf("shard %d parents %v, want %v", id, got, ps)
				}
			}
			if l.Version > 0 && (before.Version != 0 || st.Shards() != len(l.Shards)) {
				t.Fatalf("Shards() %d for %d ids", st.Shards(), len(l.Shards))
			}
			// Durable and identical after reopen; the file is format 3
			// from its first reshard on, and still 2 without one.
			s.Close()
			s2 := openStore(t, testConfig(t, dir))
			st2, err := s2.Stream("r")
			if err != nil {
				t.Fatal(err)
			}
			if l2 := st2.Layout(); fmt.Sprint(l2) != fmt.Sprint(l) {
				t.Fatalf("reopened layout %+v, was %+v", l2, l)
			}
			wantFormat := uint64(formatVersion)
			if l.Version > 0 {
				wantFormat = formatResharded
			}
			st2.view(func(tx *bolt.Tx) error {
				if f := tx.Bucket(bucketMeta).Get(keyFormat); f[7] != byte(wantFormat) {
					t.Errorf("format %x, want %d", f, wantFormat)
				}
				return nil
			})
			if st2.Config().Shards != tc.shards {
				t.Fatalf("config shards %d, want the creation count %d", st2.Config().Shards, tc.shards)
			}
		})
	}
}

// TestReshardRoutingAtCommit: keyed appends queued before, during and after
// a split land in the parent or in a child according to the layout at
// their commit: in the parent up to its end, in the child owning their
// hash after it, never elsewhere.
func TestReshardRoutingAtCommit(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, testConfig(t, t.TempDir()))
	st := newStream(t, s, StreamConfig{Name: "route", Shards: 1})
	var pend []*Pending
	var keys [][]byte
	queue := func(n int) {
		for i := 0; i < n; i++ {
			k := fmt.Appendf(nil, "k%d", len(keys))
			p, err := st.AppendAsync(ctx, Batch{Shard: -1, Records: keyed(string(k))})
			if err != nil {
				t.Fatal(err)
			}
			pend, keys = append(pend, p), append(keys, k)
		}
	}
	queue(200)
	before := len(pend)
	var l Layout
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var err error
		if l, err = st.Split(ctx, 0, 0); err != nil {
			t.Error(err)
		}
	}()
	queue(500) // some before the split's commit, some after
	wg.Wait()
	after := len(pend)
	queue(200)
	inParent, inChild := 0, 0
	for i, p := range pend {
		res, err := p.Wait()
		if err != nil {
			t.Fatal(err)
		}
		pos := res.Positions[0]
		sh := l.Shards[pos.Shard]
		h := record.KeyHash(keys[i])
		if h < sh.HashStart || h > sh.HashEnd {
			t.Fatalf("key %s (hash %016x) in shard %d [%016x, %016x]", keys[i], h, pos.Shard, sh.HashStart, sh.HashEnd)
		}
		switch {
		case pos.Shard == 0:
			inParent++
			if pos.Seq > l.Shards[0].End {
				t.Fatalf("record at 0:%d above the parent's end %d", pos.Seq, l.Shards[0].End)
			}
			if i >= after {
				t.Fatalf("append %d, queued after Split returned, went to the parent", i)
			}
		default:
			inChild++
			if i < before {
				t.Fatalf("append %d, queued before the split, went to child %d", i, pos.Shard)
			}
		}
	}
	if first, last, _ := st.Bounds(0); first != 1 || last != l.Shards[0].End || uint64(inParent) != last {
		t.Fatalf("parent bounds %d..%d, end %d, %d records routed to it", first, last, l.Shards[0].End, inParent)
	}
	t.Logf("%d records in the parent, %d in the children", inParent, inChild)
}

// TestClosedShardDuplicate: a resend of a batch stored in a shard before it
// closed is still a duplicate with its positions; a new batch to the closed
// shard, in sequence or past a gap, is refused with ErrShardClosed and
// stores nothing.
func TestClosedShardDuplicate(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, testConfig(t, t.TempDir()))
	st := newStream(t, s, StreamConfig{Name: "dup", Shards: 1})
	b := Batch{Shard: 0, ProducerID: 9, ProducerSeq: 0, Records: keyed("a", "b")}
	first, err := st.Append(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Split(ctx, 0, 0); err != nil {
		t.Fatal(err)
	}
	again, err := st.Append(ctx, b)
	if err != nil || !again.Duplicate || !slices.Equal(again.Positions, first.Positions) {
		t.Fatalf("resend: %+v, %v; want duplicate %+v", again, err, first.Positions)
	}
	for _, nb := range []Batch{
		{Shard: 0, ProducerID: 9, ProducerSeq: 2, Records: keyed("c")},
		// A batch pipelined after one refused there skips its sequence:
		// it is refused as closed too, not as a gap the producer would
		// resend from forever.
		{Shard: 0, ProducerID: 9, ProducerSeq: 3, Records: keyed("d")},
		{Shard: 0, ProducerID: 10, ProducerSeq: 0, Records: keyed("c")},
		{Shard: 0, Records: keyed("c")},
	} {
		if _, err := st.Append(ctx, nb); !errors.Is(err, ErrShardClosed) {
			t.Fatalf("new batch %+v to the closed shard: %v", nb, err)
		}
	}
	if _, last, _ := st.Bounds(0); last != 2 {
		t.Fatalf("closed shard holds %d records", last)
	}
	// The refused producer batch left no trace: the producer may start
	// over in a child, and its next batch to shard 0 is still refused,
	// not a gap.
	if _, err := st.Append(ctx, Batch{Shard: 0, ProducerID: 9, ProducerSeq: 2, Records: keyed("c")}); !errors.Is(err, ErrShardClosed) {
		t.Fatalf("second new batch: %v", err)
	}
	if _, err := st.Append(ctx, Batch{Shard: 1, ProducerID: 9, ProducerSeq: 2, Records: keyed("c")}); err != nil {
		t.Fatal(err)
	}
}

// TestStrictRange: once resharded, an explicit-shard batch with
// StrictRange holding a key outside its shard is refused unless it is a
// resend; without StrictRange placement stays the caller's.
func TestStrictRange(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, testConfig(t, t.TempDir()))
	st := newStream(t, s, StreamConfig{Name: "strict", Shards: 2})
	// A key of shard 0 under the old layout, sent by a legacy client.
	var key string
	for i := 0; ; i++ {
		if key = fmt.Sprint("key", i); record.ShardForKey([]byte(key), 2) == 1 {
			break
		}
	}
	stored := Batch{Shard: 1, ProducerID: 5, ProducerSeq: 0, StrictRange: true, Records: keyed(key)}
	first, err := st.Append(ctx, stored) // version 0: accepted, as today
	if err != nil {
		t.Fatal(err)
	}
	l, err := st.Reshard(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	if res, err := st.Append(ctx, stored); err != nil || !res.Duplicate || res.Positions[0] != first.Positions[0] {
		t.Fatalf("resend: %+v, %v", res, err)
	}
	// Open shards are 2, 3, 4; find one that does not own key.
	owner := l.ShardFor(record.KeyHash([]byte(key)))
	wrong := uint32(2)
	if owner == 2 {
		wrong = 4
	}
	if _, err := st.Append(ctx, Batch{Shard: int(wrong), StrictRange: true, Records: keyed(key)}); !errors.Is(err, ErrShardClosed) {
		t.Fatalf("misrouted strict batch: %v", err)
	}
	if _, err := st.Append(ctx, Batch{Shard: int(owner), StrictRange: true, Records: keyed(key)}); err != nil {
		t.Fatalf("routed strict batch: %v", err)
	}
	if _, err := st.Append(ctx, Batch{Shard: int(wrong), Records: keyed(key)}); err != nil {
		t.Fatalf("explicit placement without StrictRange: %v", err)
	}
}

// TestWaitEndsOnClose: Wait on an open shard that gets closed returns
// ErrShardClosed instead of waiting forever; at or below the end it
// returns as before.
func TestWaitEndsOnClose(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s := openStore(t, testConfig(t, t.TempDir()))
	st := newStream(t, s, StreamConfig{Name: "wait", Shards: 1})
	appendValues(t, st, 0, "a", "b")
	waited := make(chan error, 1)
	go func() { waited <- st.Wait(ctx, 0, 3) }()
	changed := st.LayoutChanged()
	if _, err := st.Split(ctx, 0, 0); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	default:
		t.Fatal("LayoutChanged not closed by the split")
	}
	if err := <-waited; !errors.Is(err, ErrShardClosed) {
		t.Fatalf("Wait past the end: %v", err)
	}
	if err := st.Wait(ctx, 0, 2); err != nil {
		t.Fatalf("Wait at the end: %v", err)
	}
	if err := st.Wait(ctx, 0, 3); !errors.Is(err, ErrShardClosed) {
		t.Fatalf("Wait after the close: %v", err)
	}
}

// TestRetirement: when retention removes a closed shard's last record the
// shard is retired in the same pass: its chunks, state and producer
// entries go, its layout entry stays, LayoutChanged fires, Bounds is
// end+1, end; a closed shard that never held a record retires too; and
// the stream reopens so.
func TestRetirement(t *testing.T) {
	ctx := context.Background()
	c, s := newSteppedStore(t)
	dir := s.Config().Dir
	st := newStream(t, s, StreamConfig{Name: "ret", Shards: 2, Retention: time.Hour})
	if _, err := st.Append(ctx, Batch{Shard: 0, ProducerID: 3, Records: keyed("a", "b", "c")}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Reshard(ctx, 1); err != nil { // closes 0 (3 records) and 1 (empty)
		t.Fatal(err)
	}
	// Shard 1 never held a record: the next pass retires it.
	changed := st.LayoutChanged()
	if err := st.Enforce(ctx, false); err != nil {
		t.Fatal(err)
	}
	<-changed
	if l := st.Layout(); l.Shards[1].State != ShardRetired || l.Shards[0].State != ShardClosed || l.Version != 1 {
		t.Fatalf("after the first pass: %+v", l)
	}
	appendValues(t, st, 2, "child")
	c.elapse(2 * time.Hour)
	appendValues(t, st, 2, "fresh")
	changed = st.LayoutChanged()
	if err := st.Enforce(ctx, false); err != nil {
		t.Fatal(err)
	}
	<-changed
	l := st.Layout()
	if l.Shards[0].State != ShardRetired || l.Version != 1 || len(l.Shards) != 3 {
		t.Fatalf("after retention: %+v", l)
	}
	if first, last, err := st.Bounds(0); err != nil || first != 4 || last != 3 {
		t.Fatalf("retired bounds %d, %d, %v; want 4, 3", first, last, err)
	}
	if recs, err := st.Read(0, 0, ReadOptions{}); err != nil || len(recs) != 0 {
		t.Fatalf("read of a retired shard: %v, %v", recs, err)
	}
	st.view(func(tx *bolt.Tx) error {
		if tx.Bucket(chunkBucket(0)) != nil || tx.Bucket(bucketMeta).Get(shardKey(0)) != nil || tx.Bucket(bucketProducers).Get(producerKey(3, 0)) != nil {
			t.Error("retired shard's chunks, state or producer entry remain")
		}
		return nil
	})
	if err := st.Wait(ctx, 0, 4); !errors.Is(err, ErrShardClosed) {
		t.Fatalf("Wait on a retired shard: %v", err)
	}
	s.Close()
	s2 := openStore(t, testConfig(t, dir))
	st2, err := s2.Stream("ret")
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(st2.Layout()) != fmt.Sprint(l) {
		t.Fatalf("reopened %+v, was %+v", st2.Layout(), l)
	}
	if first, last, _ := st2.Bounds(0); first != 4 || last != 3 {
		t.Fatalf("reopened retired bounds %d, %d", first, last)
	}
	if recs := readAll(t, st2, 2); len(recs) != 1 || string(recs[0].Value) != "fresh" {
		t.Fatalf("child holds %v", recs)
	}
}

// TestTombstoneRule1: a key written in a parent and deleted in its child
// after a split. Compaction of the child must keep the tombstone while the
// parent is not retired, or a reader of the lineage (parent, then child)
// sees the deleted value again. With the rule disabled the value
// resurfaces: the rule is what prevents it.
func TestTombstoneRule1(t *testing.T) {
	for _, rule := range []bool{true, false} {
		t.Run(fmt.Sprint("rule=", rule), func(t *testing.T) {
			old := tombstoneRule1
			tombstoneRule1 = rule
			defer func() { tombstoneRule1 = old }()
			ctx := context.Background()
			c, s := newSteppedStore(t)
			st := newStream(t, s, StreamConfig{Name: "tomb", Shards: 1, Compact: true, TombstoneRetention: time.Hour})
			if _, err := st.Append(ctx, Batch{Shard: -1, Records: keyed("k")}); err != nil {
				t.Fatal(err)
			}
			l, err := st.Split(ctx, 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			res, err := st.Append(ctx, Batch{Shard: -1, Records: []record.Record{{Key: []byte("k")}}})
			if err != nil {
				t.Fatal(err)
			}
			child := int(res.Positions[0].Shard)
			if child == 0 || !slices.Contains(l.Shards[0].Children, uint32(child)) {
				t.Fatalf("tombstone went to shard %d", child)
			}
			c.elapse(2 * time.Hour)
			if err := st.Enforce(ctx, true); err != nil {
				t.Fatal(err)
			}
			// The lineage reader's view of k: the parent's records, then
			// the child's; the last one wins.
			var last *record.Record
			for _, sh := range []int{0, child} {
				for _, r := range readAll(t, st, sh) {
					if string(r.Key) == "k" {
						last = &r
					}
				}
			}
			resurfaced := last != nil && last.Value != nil
			if resurfaced == rule {
				t.Fatalf("rule %v: deleted value resurfaced = %v (last %+v)", rule, resurfaced, last)
			}
		})
	}
}

// TestUpdateAfterReshard: UpdateStream compares the shard count with the
// creation count, which a reshard leaves as it was.
func TestUpdateAfterReshard(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, testConfig(t, t.TempDir()))
	st := newStream(t, s, StreamConfig{Name: "upd", Shards: 2})
	if _, err := st.Reshard(ctx, 5); err != nil {
		t.Fatal(err)
	}
	cfg := st.Config()
	cfg.Retention = time.Hour
	if err := s.UpdateStream(ctx, cfg); err != nil {
		t.Fatalf("update keeping the creation count: %v", err)
	}
	cfg.Shards = 5
	if err := s.UpdateStream(ctx, cfg); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("update to the open count: %v", err)
	}
}

// TestReshardIDCap: ids are never reused, and the cap on ids ever assigned
// refuses a reshard that would pass it.
func TestReshardIDCap(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, testConfig(t, t.TempDir()))
	st := newStream(t, s, StreamConfig{Name: "cap", Shards: 1})
	var err error
	for i := 0; err == nil && i < maxShardIDs; i++ {
		_, err = st.Reshard(ctx, 2+i%2) // 2, 3, 2, ...: every shard closes each time
	}
	if !errors.Is(err, ErrTooManyShards) || st.Shards() > maxShardIDs {
		t.Fatalf("stopped at %d ids: %v", st.Shards(), err)
	}
	checkLineage(t, st.Layout())
}

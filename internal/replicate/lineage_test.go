package replicate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/internal/testutil"
	"github.com/edgehub/edgehub/quic"
	"github.com/edgehub/edgehub/store"
)

const xInc = "0192f3a4b5c6d7e8f901122334455667"

// splitOf1 is origin x's layout after a split of its shard 1 of 2 (closed
// at end) into 2 and 3.
func splitOf1(version, end uint64) store.Layout {
	return store.Layout{Version: version, Shards: []store.ShardLayout{
		{ID: 0, HashStart: 0, HashEnd: 1<<63 - 1},
		{ID: 1, State: store.ShardClosed, HashStart: 1 << 63, HashEnd: 1<<64 - 1, End: end, ClosedAt: 1e18, Children: []uint32{2, 3}},
		{ID: 2, HashStart: 1 << 63, HashEnd: 3<<62 - 1, Parents: []uint32{1}},
		{ID: 3, HashStart: 3 << 62, HashEnd: 1<<64 - 1, Parents: []uint32{1}},
	}}
}

func TestLayoutGossipRoundTrip(t *testing.T) {
	for _, ol := range []OriginLayout{{Incarnation: xInc, Layout: splitOf1(4, 17)}, {Layout: splitOf1(1, 0)}} {
		got, err := DecodeLayout(EncodeLayout(ol))
		if err != nil || !reflect.DeepEqual(got, ol) {
			t.Fatalf("round trip: %+v, %v; want %+v", got, err, ol)
		}
	}
	for _, b := range [][]byte{nil, {2}, {1, 200}, append(EncodeLayout(OriginLayout{Layout: splitOf1(1, 1)}), 0)} {
		if _, err := DecodeLayout(b); err == nil {
			t.Fatalf("%x accepted", b)
		}
	}
}

func FuzzDecodeLayout(f *testing.F) {
	f.Add(EncodeLayout(OriginLayout{Incarnation: xInc, Layout: splitOf1(4, 17)}))
	f.Add(EncodeLayout(OriginLayout{}))
	f.Fuzz(func(t *testing.T, b []byte) {
		ol, err := DecodeLayout(b)
		if err != nil {
			return
		}
		again, err := DecodeLayout(EncodeLayout(ol))
		if err != nil || !reflect.DeepEqual(again, ol) {
			t.Fatalf("re-decode: %+v %v, want %+v", again, err, ol)
		}
	})
}

// The gate of a pull task follows the origin's lineage: children wait for
// their parents' ends (or gaps), unknown shards wait for the layout, a
// closed shard held to its end is complete, and shards of an origin never
// resharded (or a plugin origin) pull at once.
func TestLineageGate(t *testing.T) {
	net := newMemNet()
	h := net.addHub(t, "b")
	st := createStream(t, h, "s", 2, "all")
	ctx := context.Background()
	r := h.rep
	gate := func(hub string, shard uint32) (int, string, bool) {
		return r.lineageGate(st, &task{key: taskKey{"s", store.OriginKey{Hub: hub, Shard: shard}}})
	}
	expect := func(what string, hub string, shard uint32, want int, wantParents bool, why string) {
		t.Helper()
		g, w, parents := gate(hub, shard)
		if g != want || parents != wantParents || !strings.Contains(w, why) {
			t.Fatalf("%s: gate %d %q parents %t, want %d %q %t", what, g, w, parents, want, why, wantParents)
		}
	}
	expect("never resharded", "x", 1, gateOpen, false, "")
	expect("unknown shard", "x", 2, gateWaiting, false, "not known yet")
	expect("plugin origin", "x/plugin/p/in", 9, gateOpen, false, "")

	learnLayout(t, h, st, "x", splitOf1(1, 40))
	expect("child of an unfinished parent", "x", 2, gateWaiting, true, "parent shards [1]")
	expect("the parent itself", "x", 1, gateOpen, false, "")
	expect("shard the layout does not name", "x", 4, gateWaiting, false, "does not name shard 4")
	if err := st.AdvanceWatermark(ctx, store.OriginKey{Hub: "x", Shard: 1}, 30); err != nil {
		t.Fatal(err)
	}
	expect("parent part applied", "x", 3, gateWaiting, true, "parent shards [1]")
	// The rest of the parent is lost (a gap): the children may go on.
	if _, err := r.gaps.add("s", store.OriginKey{Hub: "x", Shard: 1}, 31, 40, "test"); err != nil {
		t.Fatal(err)
	}
	expect("parent completed by a gap", "x", 3, gateOpen, false, "")
	expect("closed parent held to its end", "x", 1, gateComplete, false, "")
	if got := r.lineageWaiting(); len(got) != 0 {
		t.Fatalf("waiting %v with no task", got)
	}
}

// TestLineageGateThroughEmptyShards: origin shard 1 (records to 40) is
// split into 2 and 3, which close empty when they are merged into 4. The
// empty shards are at their end at once, but 4 must still wait for 1: a
// key's records in 4 come after its records in 1 (the per-key order
// TestFederationReshardUnderProducer saw broken about once in 60 runs).
func TestLineageGateThroughEmptyShards(t *testing.T) {
	net := newMemNet()
	h := net.addHub(t, "b")
	st := createStream(t, h, "s", 2, "all")
	r := h.rep
	l := store.Layout{Version: 2, Shards: []store.ShardLayout{
		{ID: 0, HashStart: 0, HashEnd: 1<<63 - 1},
		{ID: 1, State: store.ShardClosed, HashStart: 1 << 63, HashEnd: 1<<64 - 1, End: 40, ClosedAt: 1e18, Children: []uint32{2, 3}},
		{ID: 2, State: store.ShardClosed, HashStart: 1 << 63, HashEnd: 3<<62 - 1, Parents: []uint32{1}, ClosedAt: 1e18, Children: []uint32{4}},
		{ID: 3, State: store.ShardClosed, HashStart: 3 << 62, HashEnd: 1<<64 - 1, Parents: []uint32{1}, ClosedAt: 1e18, Children: []uint32{4}},
		{ID: 4, HashStart: 1 << 63, HashEnd: 1<<64 - 1, Parents: []uint32{2, 3}},
	}}
	learnLayout(t, h, st, "x", l)
	gate := func(shard uint32) int {
		g, _, _ := r.lineageGate(st, &task{key: taskKey{"s", store.OriginKey{Hub: "x", Shard: shard}}})
		return g
	}
	if g := gate(4); g != gateWaiting {
		t.Fatalf("shard 4 with shard 1 not applied: gate %d, want waiting", g)
	}
	if err := st.AdvanceWatermark(context.Background(), store.OriginKey{Hub: "x", Shard: 1}, 40); err != nil {
		t.Fatal(err)
	}
	if g := gate(4); g != gateOpen {
		t.Fatalf("shard 4 with shard 1 applied to its end: gate %d, want open", g)
	}
}

// learnLayout records l as origin hub's layout in st's file and waits for
// h's replicator to know it (as if gossip brought it).
func learnLayout(t *testing.T, h *memHub, st *store.Stream, hub string, l store.Layout) {
	t.Helper()
	if err := st.SetOriginLayout(context.Background(), hub, l); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "the layout is known", func() bool {
		got, ok := h.rep.knownLayout(st, hub)
		return ok && got.Version == l.Version
	})
}

// targetShard keeps today's placement only while neither hub resharded.
func TestTargetShardAcrossReshard(t *testing.T) {
	net := newMemNet()
	h := net.addHub(t, "b")
	st := createStream(t, h, "s", 2, "all")
	k := store.OriginKey{Hub: "x", Shard: 1}
	if got := h.rep.targetShard(st, k); got != 1 {
		t.Fatalf("never resharded: shard %d, want 1", got)
	}
	learnLayout(t, h, st, "x", splitOf1(1, 4))
	if got := h.rep.targetShard(st, k); got != -1 {
		t.Fatalf("origin resharded: shard %d, want -1 (by key)", got)
	}
}

// relayOfSplit makes hub r a relay of origin x (not a member: gone, say)
// whose shard 1 was split into 2 and 3 after origin sequence end: r holds
// every record of x's shards 1, 2 and 3 (shard 1's numbering has holes,
// as an origin shard holding others' replicated records has), its
// watermark of x/1 completed at end, and x's layout. It returns the
// records' keys by origin shard, in origin order.
func relayOfSplit(t *testing.T, r *memHub, shards int) (end uint64) {
	t.Helper()
	ctx := context.Background()
	st := createStream(t, r, "s", shards, "all")
	if _, err := st.SetOriginIncarnation(ctx, "x", xInc, false); err != nil {
		t.Fatal(err)
	}
	var keys [][]byte
	for i := 0; len(keys) < 12; i++ {
		if k := fmt.Appendf(nil, "k%d", i); record.KeyHash(k) >= 1<<63 {
			keys = append(keys, k)
		}
	}
	var parent []record.Record
	for i := 0; i < 2000; i++ {
		k := keys[i%len(keys)]
		parent = append(parent, record.Record{Key: k, Value: fmt.Appendf(nil, "x/1/%d", 2*i+1), Origin: record.Origin{Hub: "x", Shard: 1, Seq: uint64(2*i + 1)}})
	}
	end = uint64(2*2000 + 3) // the shard's last sequences numbered others' records
	seq := map[uint32]uint64{}
	var children []record.Record
	for i := 0; i < 600; i++ {
		k := keys[i%len(keys)]
		c := uint32(2)
		if record.KeyHash(k) >= 3<<62 {
			c = 3
		}
		seq[c]++
		children = append(children, record.Record{Key: k, Value: fmt.Appendf(nil, "x/%d/%d", c, seq[c]), Origin: record.Origin{Hub: "x", Shard: c, Seq: seq[c]}})
	}
	for len(parent) > 0 { // many chunks: the parent takes many batches to pull
		n := min(len(parent), 100)
		if _, err := st.Append(ctx, store.Batch{Shard: 0, Records: parent[:n]}); err != nil {
			t.Fatal(err)
		}
		parent = parent[n:]
	}
	if err := st.AdvanceWatermark(ctx, store.OriginKey{Hub: "x", Shard: 1}, end); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Append(ctx, store.Batch{Shard: -1, Records: children}); err != nil {
		t.Fatal(err)
	}
	if err := st.SetOriginLayout(ctx, "x", splitOf1(1, end)); err != nil {
		t.Fatal(err)
	}
	return end
}

// keyLineage returns, per key, the origin shards of its records at h in
// stored order (the local shard a key routes to holds all of them).
func keyLineage(t *testing.T, h *memHub, name string) map[string][]uint32 {
	t.Helper()
	st := stream(t, h, name)
	out := map[string][]uint32{}
	for s := 0; s < st.Shards(); s++ {
		recs, err := st.Read(s, 1, store.ReadOptions{MaxRecords: 100000})
		if err != nil {
			t.Fatal(err)
		}
		for _, rec := range recs {
			out[string(rec.Key)] = append(out[string(rec.Key)], rec.Origin.Shard)
		}
	}
	return out
}

// A hub learns a split origin's layout from a relay (the origin itself is
// gone), pulls the closed parent to its end (PULL_END closed_end raises its
// watermark over the parent's trailing holes), and only then the children:
// every key's records from the parent are stored before its records from a
// child, each record once. The layout is recorded, and relayed on.
func TestSplitOriginPulledParentFirst(t *testing.T) {
	net := newMemNet()
	r := net.addHub(t, "r")
	end := relayOfSplit(t, r, 2)
	b := net.addHub(t, "b")
	testutil.Eventually(t, "b holds what r holds", func() bool { return sameContent(content(t, r, "s"), content(t, b, "s")) })
	bst := stream(t, b, "s")
	testutil.Eventually(t, "b completed x/1", func() bool { return bst.Watermark(store.OriginKey{Hub: "x", Shard: 1}) == end })
	for key, shards := range keyLineage(t, b, "s") {
		child := false
		for _, s := range shards {
			if s != 1 {
				child = true
			} else if child {
				t.Fatalf("key %s: a record of parent x/1 stored after one of a child: %v", key, shards)
			}
		}
	}
	if got, err := bst.OriginLayouts(); err != nil || !reflect.DeepEqual(got["x"], splitOf1(1, end)) {
		t.Fatalf("b's recorded layout of x: %+v, %v", got, err)
	}
	// b relays the lineage: a third hub learns it from b alone.
	net.setCut("r", "c", true)
	c := net.addHub(t, "c")
	testutil.Eventually(t, "c holds it all through b", func() bool { return sameContent(content(t, b, "s"), content(t, c, "s")) })
	if got, _ := stream(t, c, "s").OriginLayouts(); got["x"].Version != 1 {
		t.Fatalf("c's layout of x: %+v", got["x"])
	}
}

// A child's follow is refused to a puller that does not wait for parents
// (a hub from before lineage), naming the upgrade; a lineage pull of it,
// and any pull of the parent, is served, and the parent's ends with its
// closed end.
func TestServeLineage(t *testing.T) {
	net := newMemNet()
	r := net.addHub(t, "r")
	end := relayOfSplit(t, r, 1)
	testutil.Eventually(t, "r knows x's layout", func() bool {
		_, ok := r.rep.knownLayout(stream(t, r, "s"), "x")
		return ok
	})
	ctx := context.Background()
	child := PullRequest{Requester: "old", Stream: "s", Origin: store.OriginKey{Hub: "x", Shard: 2}}
	var msgs []Msg
	err := r.rep.Serve(ctx, child, collectSender{&msgs})
	if quic.CodeOf(err) != quic.CodeUnavailable || !strings.Contains(err.Error(), "upgrade hub \"old\"") {
		t.Fatalf("old puller of a child: %v", err)
	}
	child.Lineage = true
	if err := r.rep.Serve(ctx, child, collectSender{&msgs}); err != nil || len(msgs) == 0 {
		t.Fatalf("lineage puller of a child: %v, %d messages", err, len(msgs))
	}
	msgs = nil
	parent := PullRequest{Requester: "old", Stream: "s", Origin: store.OriginKey{Hub: "x", Shard: 1}, Follow: true}
	err = r.rep.Serve(ctx, parent, collectSender{&msgs})
	var ce *closedEndError
	if !errors.As(err, &ce) || ce.end != end {
		t.Fatalf("parent follow ended with %v, want its closed end %d", err, end)
	}
	n := 0
	for _, m := range msgs {
		if m.Type == FramePullRecords {
			recs, err := record.DecodeBatch(m.Records.Batch, nil)
			if err != nil {
				t.Fatal(err)
			}
			n += len(recs)
		}
	}
	if n != 2000 {
		t.Fatalf("parent served %d records before its end, want 2000", n)
	}
}

// Over a real QUIC session: a follow of a closed origin shard ends, after
// its records, with PULL_END closed_end (the puller sees a FramePullEnd
// message, then io.EOF); a follow of its child without the lineage flag
// ends refused, unavailable.
func TestSessionClosedEnd(t *testing.T) {
	ps := startPullServer(t, 100, nil)
	ps.srv.layout = func(st *store.Stream, hub string) (store.Layout, bool) {
		if hub == "x" {
			return splitOf1(1, 50), true
		}
		return store.Layout{}, false
	}
	st := createServed(t, ps.store, "s", 1)
	ctx := context.Background()
	k := store.OriginKey{Hub: "x", Shard: 1}
	var recs []record.Record
	for i := uint64(1); i <= 40; i++ {
		recs = append(recs, record.Record{Value: []byte("v"), Origin: record.Origin{Hub: "x", Shard: 1, Seq: i}})
	}
	if _, err := st.Append(ctx, store.Batch{Shard: 0, Records: recs}); err != nil {
		t.Fatal(err)
	}
	if err := st.AdvanceWatermark(ctx, k, 50); err != nil {
		t.Fatal(err)
	}
	tr := newTestTransport(t)
	p, err := tr.Pull(ctx, ps.peer, PullRequest{Requester: "edge", Stream: "s", Origin: k, Follow: true, Lineage: true})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	drain(t, p, k, 40)
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var end *Msg
	for {
		m, err := p.Recv(rctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("after the records: %v", err)
		}
		if m.Type == FramePullEnd {
			end = &m
		}
	}
	if end == nil || end.ClosedEnd != 50 {
		t.Fatalf("end of the closed shard's follow: %+v, want closed_end 50", end)
	}
	old, err := tr.Pull(ctx, ps.peer, PullRequest{Requester: "edge", Stream: "s", Origin: store.OriginKey{Hub: "x", Shard: 2}, Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	for {
		_, err := old.Recv(rctx)
		if err == nil {
			continue
		}
		if quic.CodeOf(err) != quic.CodeUnavailable || !strings.Contains(err.Error(), "lineage") {
			t.Fatalf("old puller of a child: %v, want unavailable naming lineage", err)
		}
		break
	}
}

// A closed origin shard's vector entry is dropped once every live peer
// holds it to its end, and readers restore it from the child records the
// publisher holds: so dropping never makes a complete source look empty,
// and a hub that has not completed the parent keeps everyone publishing it.
func TestPruneClosedVectorEntries(t *testing.T) {
	l := map[string]OriginLayout{"x": {Layout: splitOf1(1, 40)}}
	p1, c2 := store.OriginKey{Hub: "x", Shard: 1}, store.OriginKey{Hub: "x", Shard: 2}
	x0 := store.OriginKey{Hub: "x", Shard: 0}
	peer := func(name string, alive bool, v map[store.OriginKey]uint64) Peer {
		return Peer{Name: name, Alive: alive, Streams: map[string]PeerStream{"s": {Vector: v, Layouts: l}}}
	}
	ours := map[store.OriginKey]uint64{x0: 5, p1: 40, c2: 3}
	pruned := map[store.OriginKey]uint64{x0: 5, c2: 3}
	tests := []struct {
		name  string
		ours  map[store.OriginKey]uint64
		peers []Peer
		want  map[store.OriginKey]uint64
	}{
		{name: "every peer at the end", ours: ours, want: pruned, peers: []Peer{peer("a", true, map[store.OriginKey]uint64{p1: 40})}},
		{name: "a peer dropped it too", ours: ours, want: pruned, peers: []Peer{peer("a", true, map[store.OriginKey]uint64{c2: 1})}},
		{name: "a peer behind", ours: ours, want: ours, peers: []Peer{
			peer("a", true, map[store.OriginKey]uint64{p1: 40}), peer("b", true, map[store.OriginKey]uint64{p1: 39})}},
		{name: "a dead peer behind", ours: ours, want: pruned, peers: []Peer{peer("b", false, map[store.OriginKey]uint64{p1: 2})}},
		{name: "a new peer with nothing", ours: ours, want: ours, peers: []Peer{peer("b", true, map[store.OriginKey]uint64{})}},
		{name: "we hold no child record", ours: map[store.OriginKey]uint64{p1: 40}, want: map[store.OriginKey]uint64{p1: 40}, peers: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := pruneClosed("s", tt.ours, l, withImpliedVectors(tt.peers))
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("published %v, want %v", got, tt.want)
			}
			// What we publish reads back as what we hold.
			back, _ := impliedVector(PeerStream{Vector: got, Layouts: l})
			if back[p1] != tt.ours[p1] {
				t.Fatalf("read back %v, want %d for %v", back, tt.ours[p1], p1)
			}
		})
	}
}

// While a parent cannot be completed (its only holder has not got all of
// it, and its origin is gone), its children wait: none of their records is
// stored, hub peers says why, and the lineage gauge counts them.
func TestChildrenWaitForAnIncompleteParent(t *testing.T) {
	net := newMemNet()
	r := net.addHub(t, "r")
	end := relayOfSplit(t, r, 1)
	// r's layout says x/1 ends further than r holds: r is not complete.
	rst := stream(t, r, "s")
	if err := rst.SetOriginLayout(context.Background(), "x", splitOf1(2, end+50)); err != nil {
		t.Fatal(err)
	}
	b := net.addHub(t, "b")
	testutil.Eventually(t, "b's children wait for x/1", func() bool {
		waiting := 0
		for _, s := range b.rep.Status() {
			if s.Origin == "x" && s.Shard > 1 && s.State == "waiting" && strings.Contains(s.LastError, "parent shards [1]") {
				waiting++
			}
		}
		return waiting == 2
	})
	mfs, err := b.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var gauge float64
	for _, mf := range mfs {
		if mf.GetName() != "edgehub_lineage_waiting_shards" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			if labels["stream"] == "s" && labels["reader"] == "replica" {
				gauge = m.GetGauge().GetValue()
			}
		}
	}
	if gauge != 2 {
		t.Fatalf("edgehub_lineage_waiting_shards{stream=s,reader=replica} = %v, want 2", gauge)
	}
	for k, recs := range content(t, b, "s") {
		if k.Hub == "x" && k.Shard != 1 && len(recs) > 0 {
			t.Fatalf("b stored %d records of child %v before its parent", len(recs), k)
		}
	}
}

package hub

import (
	"context"
	"reflect"
	"testing"

	"github.com/edgehub/edgehub/internal/testutil"
	"github.com/edgehub/edgehub/store"
)

// xSplit is a layout of hub x's stream after a split of its shard 1 of 2.
func xSplit(end uint64) store.Layout {
	return store.Layout{Version: 1, Shards: []store.ShardLayout{
		{ID: 0, HashStart: 0, HashEnd: 1<<63 - 1},
		{ID: 1, State: store.ShardClosed, HashStart: 1 << 63, HashEnd: 1<<64 - 1, End: end, ClosedAt: 1e18, Children: []uint32{2, 3}},
		{ID: 2, HashStart: 1 << 63, HashEnd: 3<<62 - 1, Parents: []uint32{1}},
		{ID: 3, HashStart: 3 << 62, HashEnd: 1<<64 - 1, Parents: []uint32{1}},
	}}
}

// An origin's layout known at one hub reaches the others through real
// gossip (the hub's membership adapter, the gossip carrier), is recorded in
// their stream files, and travels on through a hub that never talked to
// the first.
func TestFederationLayoutGossiped(t *testing.T) {
	n := newFedNet(t)
	a, b, c := n.start("a"), n.start("b"), n.start("c")
	createReplicated(t, a, "lin", 2, "all")
	produceAt(t, a, "lin", 50, 8)
	converged(t, "lin", 50, a, b, c)
	// Streams never resharded publish no layout: gossip is as before.
	for _, h := range []*Hub{a, b, c} {
		if ls := h.federation.gossip.Streams()["lin"].Layouts; len(ls) != 0 {
			t.Fatalf("%s: layouts %v gossiped for a stream never resharded", h.cfg.Hub.Name, ls)
		}
	}
	n.setCut("a", "c", true)
	st := mustStreamEventually(t, a, "lin")
	if err := st.SetOriginLayout(context.Background(), "x", xSplit(9)); err != nil {
		t.Fatal(err)
	}
	for _, h := range []*Hub{b, c} {
		hst := mustStreamEventually(t, h, "lin")
		testutil.Eventually(t, h.cfg.Hub.Name+" records x's layout", func() bool {
			got, err := hst.OriginLayouts()
			return err == nil && reflect.DeepEqual(got["x"], xSplit(9))
		})
	}
	// Layouts are no definitions: nothing else changed.
	produceAt(t, a, "lin", 50, 8)
	n.setCut("a", "c", false)
	converged(t, "lin", 100, a, b, c)
}

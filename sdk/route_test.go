package sdk

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/quic"
)

// routeProducer is a Producer without a session: the tests drive its
// routing state (pick, setLayout, refused) as the session loop and the ACK
// reader would.
func routeProducer(t *testing.T, shards int) *Producer {
	t.Helper()
	p := &Producer{stream: "s", opts: ProducerOptions{}.withDefaults(), id: 1, route: uniformRouter(shards), wake: make(chan struct{}, 1)}
	p.space = sync.NewCond(&p.mu)
	p.grow(shards)
	return p
}

// keyIn returns a key whose hash is in [lo, hi].
func keyIn(t *testing.T, tag string, lo, hi uint64) []byte {
	t.Helper()
	for i := 0; i < 1e6; i++ {
		k := fmt.Appendf(nil, "%s-%d", tag, i)
		if h := record.KeyHash(k); h >= lo && h <= hi {
			return k
		}
	}
	t.Fatal("no key found")
	return nil
}

// splitLayout is shard 0 of a one-shard stream split at mid.
func splitLayout(mid uint64) *quic.Layout {
	return &quic.Layout{Version: 1, NextID: 3, Shards: []quic.LayoutShard{
		{ID: 0, State: quic.ShardClosed, HashStart: 0, HashEnd: ^uint64(0), End: 5},
		{ID: 1, HashStart: 0, HashEnd: mid - 1, Parents: []uint32{0}},
		{ID: 2, HashStart: mid, HashEnd: ^uint64(0), Parents: []uint32{0}},
	}}
}

type sent struct {
	shard int
	seq   uint64
	vals  []string
}

// ackOldest answers the oldest unacknowledged batch as stored at pos, as
// readAcks does with a successful ACK.
func (p *Producer) ackOldest(pos ...Position) {
	p.mu.Lock()
	b := p.unacked[0]
	p.removeSent(b)
	p.complete(b, pos, nil)
	p.unlock()
}

func (p *Producer) pickAll(t *testing.T) []sent {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	out, _ := p.pick(time.Now())
	var s []sent
	for _, b := range out {
		x := sent{shard: b.shard, seq: b.seq}
		for _, r := range b.recs {
			x.vals = append(x.vals, string(r.Value))
		}
		s = append(s, x)
	}
	return s
}

// TestRerouteKeepsKeyOrder: records in flight to a shard when a LAYOUT
// closes it are re-routed, once refused, ahead of the records sent to its
// children since: the children send nothing until the parent has drained.
func TestRerouteKeepsKeyOrder(t *testing.T) {
	ctx := context.Background()
	const mid = uint64(1) << 63
	p := routeProducer(t, 1)
	low, high := keyIn(t, "low", 0, mid-1), keyIn(t, "high", mid, ^uint64(0))
	results := map[string]error{}
	var mu sync.Mutex
	cb := func(v string) func(Position, error) {
		return func(_ Position, err error) { mu.Lock(); results[v] = err; mu.Unlock() }
	}
	for _, r := range []struct {
		key []byte
		v   string
	}{{low, "low/0"}, {high, "high/0"}, {nil, "keyless/0"}} {
		if err := p.SendAsync(ctx, Record{Key: r.key, Value: []byte(r.v)}, cb(r.v)); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.SendAsyncTo(ctx, 0, Record{Key: low, Value: []byte("pinned/0")}, cb("pinned/0")); err != nil {
		t.Fatal(err)
	}
	first := p.pickAll(t)
	if len(first) != 1 || first[0].shard != 0 || len(first[0].vals) != 4 {
		t.Fatalf("first pick %+v", first)
	}

	// The LAYOUT comes before the batch's refusal.
	p.mu.Lock()
	if err := p.setLayout(splitLayout(mid)); err != nil {
		t.Fatal(err)
	}
	p.mu.Unlock()
	if err := p.SendAsync(ctx, Record{Key: low, Value: []byte("low/1")}, cb("low/1")); err != nil {
		t.Fatal(err)
	}
	if _, err := p.SendTo(ctx, 0, Record{Value: []byte("x")}); CodeOf(err) != CodeShardClosed {
		t.Fatalf("SendTo a closed shard: %v", err)
	}
	if got := p.pickAll(t); len(got) != 0 {
		t.Fatalf("sent %+v while the closed parent has a batch in flight", got)
	}

	p.mu.Lock()
	p.refused(p.unacked[0], 1)
	p.unlock()
	got := p.pickAll(t)
	// Shard 1 (low): the re-routed low/0 first, then low/1, numbered on;
	// shard 2: high/0; keyless/0 in some open shard; pinned/0 failed.
	var order []string
	next := map[int]uint64{}
	for _, b := range got {
		if b.shard == 0 {
			t.Fatalf("batch %+v sent to the closed shard", b)
		}
		if b.seq != next[b.shard] {
			t.Fatalf("shard %d: batch at producer sequence %d, want %d (%+v)", b.shard, b.seq, next[b.shard], got)
		}
		next[b.shard] += uint64(len(b.vals))
		if b.shard == 1 {
			order = append(order, b.vals...)
		}
	}
	if fmt.Sprint(order) != "[low/0 low/1]" && fmt.Sprint(order) != "[low/0 keyless/0 low/1]" {
		t.Fatalf("shard 1 gets %v, want low/0 before low/1", order)
	}
	if next[1]+next[2] != 4 {
		t.Fatalf("%d records sent to the children, want 4 (%+v)", next[1]+next[2], got)
	}
	mu.Lock()
	defer mu.Unlock()
	if err := results["pinned/0"]; CodeOf(err) != CodeShardClosed {
		t.Fatalf("a record sent to the closed shard by SendTo: %v, want shard_closed", err)
	}
	if len(results) != 1 {
		t.Fatalf("results before any ACK: %v", results)
	}
}

// TestRerouteResendsSentBatches: after a session break, a batch sent to a
// shard now closed may have been stored, so it is resent there (its ACK
// says duplicate or shard_closed); one never sent is re-routed at once.
func TestRerouteResendsSentBatches(t *testing.T) {
	ctx := context.Background()
	const mid = uint64(1) << 63
	p := routeProducer(t, 1)
	low := keyIn(t, "low", 0, mid-1)
	nop := func(Position, error) {}
	if err := p.SendAsync(ctx, Record{Key: low, Value: []byte("low/0")}, nop); err != nil {
		t.Fatal(err)
	}
	if got := p.pickAll(t); len(got) != 1 {
		t.Fatalf("first pick %+v", got)
	}
	if err := p.SendAsync(ctx, Record{Key: low, Value: []byte("low/1")}, nop); err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.seal(0) // sealed for shard 0, never sent
	// The session breaks (openSession clears these), and the new one's
	// LAYOUT closes shard 0.
	for _, b := range p.unacked {
		b.wire = false
	}
	clear(p.inflight)
	if err := p.setLayout(splitLayout(mid)); err != nil {
		t.Fatal(err)
	}
	p.mu.Unlock()
	got := p.pickAll(t)
	if len(got) != 1 || got[0].shard != 0 || fmt.Sprint(got[0].vals) != "[low/0]" {
		t.Fatalf("after the break: %+v, want low/0 resent to shard 0 alone", got)
	}
	// Its ACK: stored before the close.
	p.ackOldest(Position{Shard: 0, Seq: 1})
	got = p.pickAll(t)
	if len(got) != 1 || got[0].shard != 1 || fmt.Sprint(got[0].vals) != "[low/1]" {
		t.Fatalf("after the duplicate: %+v, want low/1 re-routed to shard 1", got)
	}
}

// TestStoredAckReleasesHeldShards: a LAYOUT closes shard 0 while a batch
// to it is on the wire, so the children are held behind it; that batch's
// ACK says stored (it landed before the close). Nothing is left to
// re-route and no refusal or layout will come: the ACK itself must release
// the children, or the producer waits forever (the stall seen once in
// TestSDKProducerAcrossReshard: Flush never returned).
func TestStoredAckReleasesHeldShards(t *testing.T) {
	ctx := context.Background()
	const mid = uint64(1) << 63
	p := routeProducer(t, 1)
	low := keyIn(t, "low", 0, mid-1)
	high := keyIn(t, "high", mid, ^uint64(0))
	nop := func(Position, error) {}
	if err := p.SendAsync(ctx, Record{Key: low, Value: []byte("low/0")}, nop); err != nil {
		t.Fatal(err)
	}
	if got := p.pickAll(t); len(got) != 1 || got[0].shard != 0 {
		t.Fatalf("first pick %+v", got)
	}
	p.mu.Lock()
	if err := p.setLayout(splitLayout(mid)); err != nil {
		t.Fatal(err)
	}
	p.mu.Unlock()
	for _, k := range [][]byte{low, high} {
		if err := p.SendAsync(ctx, Record{Key: k, Value: append(k[:len(k):len(k)], "/1"...)}, nop); err != nil {
			t.Fatal(err)
		}
	}
	p.mu.Lock()
	p.seal(1)
	p.seal(2)
	p.mu.Unlock()
	if got := p.pickAll(t); len(got) != 0 {
		t.Fatalf("while shard 0 has a batch on the wire: %+v, want the children held", got)
	}
	p.ackOldest(Position{Shard: 0, Seq: 1})
	got := p.pickAll(t)
	if len(got) != 2 || got[0].shard != 1 || got[1].shard != 2 {
		t.Fatalf("after the stored ACK: %+v, want the batches of shards 1 and 2", got)
	}
}

// TestNewRouterRefusesBadLayouts: a LAYOUT whose open ranges leave a hole
// or overlap is refused rather than routed by.
func TestNewRouterRefusesBadLayouts(t *testing.T) {
	const mid = uint64(1) << 63
	for name, l := range map[string]*quic.Layout{
		"hole":    {Version: 1, Shards: []quic.LayoutShard{{ID: 0, HashEnd: mid - 2}, {ID: 1, HashStart: mid, HashEnd: ^uint64(0)}}},
		"overlap": {Version: 1, Shards: []quic.LayoutShard{{ID: 0, HashEnd: mid}, {ID: 1, HashStart: mid, HashEnd: ^uint64(0)}}},
		"short":   {Version: 1, Shards: []quic.LayoutShard{{ID: 0, HashEnd: mid}}},
		"none":    {Version: 1, Shards: []quic.LayoutShard{{ID: 0, State: quic.ShardClosed, HashEnd: ^uint64(0)}}},
	} {
		if _, err := newRouter(l); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	r, err := newRouter(splitLayout(mid))
	if err != nil {
		t.Fatal(err)
	}
	if r.shardFor(mid-1) != 1 || r.shardFor(mid) != 2 || r.shardFor(0) != 1 || r.shardFor(^uint64(0)) != 2 {
		t.Fatal("split layout routes wrong")
	}
	// The search over uniform ranges (as a version > 0 layout would have
	// them) agrees with the arithmetic of version 0.
	u, err := newRouter(&quic.Layout{Version: 1, Shards: func() []quic.LayoutShard {
		var s []quic.LayoutShard
		for i := range 7 {
			lo, hi := record.HashRange(i, 7)
			s = append(s, quic.LayoutShard{ID: uint32(i), HashStart: lo, HashEnd: hi})
		}
		return s
	}()})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1000 {
		h := record.KeyHash(fmt.Appendf(nil, "k%d", i))
		if got, want := u.shardFor(h), record.ShardForHash(h, 7); got != want {
			t.Fatalf("hash %016x: shard %d, want %d", h, got, want)
		}
	}
}

package hub

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgehub/edgehub/internal/testutil"
	"github.com/edgehub/edgehub/quic"
	"github.com/edgehub/edgehub/sdk"
	"github.com/edgehub/edgehub/store"
)

// createWithCopies creates a replicated stream at h with copies copies
// and, if not 0, that timeout (the other settings at their defaults).
func createWithCopies(tb testing.TB, h *Hub, name string, copies int, timeout time.Duration) {
	tb.Helper()
	p := defaultCopies()
	p.Copies = copies
	if timeout != 0 {
		p.Timeout = Duration(timeout)
	}
	c := store.StreamConfig{Name: name, Shards: 2, Meta: map[string]string{MetaReplicate: "all"}}
	setCopies(&c, p)
	if err := validateCopies(c); err != nil {
		tb.Fatal(err)
	}
	if _, err := h.Store().CreateStream(context.Background(), c); err != nil {
		tb.Fatal(err)
	}
}

func fedProducer(tb testing.TB, h *Hub, stream string, opts sdk.ProducerOptions) *sdk.Producer {
	tb.Helper()
	ctx := testCtx(tb)
	cl, err := sdk.Dial(ctx, h.QUICAddr().String(), sdk.Options{Insecure: true, Logger: quietTestLogger()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cl.Close() })
	p, err := cl.Producer(ctx, stream, opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.Close(cctx)
	})
	return p
}

// holders returns how many of hubs hold origin's record at pos.
func holders(tb testing.TB, origin string, stream string, pos sdk.Position, hubs ...*Hub) int {
	n := 0
	for _, h := range hubs {
		st, err := h.Store().Stream(stream)
		if err != nil {
			continue
		}
		if st.Watermark(store.OriginKey{Hub: origin, Shard: uint32(pos.Shard)}) >= pos.Seq {
			n++
		}
	}
	return n
}

// TestCopiesAckWaitsForPeers: with copies = 2, every ACK comes after
// another hub reported the batch applied, so at the moment the callback
// runs a peer's store already holds the record; cut replication links make acks fail
// with copies_short (the records stay stored at the origin and reach the
// peers after the heal), or, under copies_shortfall = "ack", acknowledge
// with the one copy there is. A copies = 1 stream under the same partition
// acknowledges at once: the negative control for the first check, whose
// holder count is what a copies = 1 ack can leave at zero.
func TestCopiesAckWaitsForPeers(t *testing.T) {
	n := newFedNet(t)
	a := n.start("hub-a")
	b := n.start("hub-b")
	c := n.start("hub-c")
	createWithCopies(t, a, "orders", 2, 2*time.Second)
	createWithCopies(t, a, "plain", 1, 0)
	for _, h := range []*Hub{b, c} {
		mustStreamEventually(t, h, "orders")
		mustStreamEventually(t, h, "plain")
	}
	ctx := testCtx(t)

	p := fedProducer(t, a, "orders", sdk.ProducerOptions{})
	var mu sync.Mutex
	var errs []error
	short := 0
	acked := 0
	for i := range 300 {
		err := p.SendAsync(ctx, sdk.Record{Key: fmt.Appendf(nil, "k%d", i), Value: []byte("v")}, func(pos sdk.Position, err error) {
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			acked++
			if pos.Copies < 2 {
				short++
			}
			// Checked in the callback, before anything else happens: the
			// ACK must never run ahead of the copy.
			if holders(t, "hub-a", "orders", pos, b, c) < 1 {
				errs = append(errs, fmt.Errorf("record %d/%d acknowledged with %d copies, held by no peer", pos.Shard, pos.Seq, pos.Copies))
			}
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if len(errs) > 0 || acked != 300 || short > 0 {
		t.Fatalf("copies = 2, all up: %d acked, %d short, %d errors, first %v", acked, short, len(errs), errs[:min(len(errs), 3)])
	}

	// Cut the origin's replication links to both peers (gossip stays up:
	// the peers know they are behind, and membership is not what is tested
	// here).
	n.setPullsCut("hub-a", "hub-b", true)
	n.setPullsCut("hub-a", "hub-c", true)
	pos, err := p.Send(ctx, sdk.Record{Key: []byte("cut"), Value: []byte("during")})
	if quic.CodeOf(err) != quic.CodeCopiesShort {
		t.Fatalf("copies = 2 during a partition: %+v, %v; want copies_short", pos, err)
	}
	orders := mustStream(t, a, "orders")
	if got := liveRecords(orders); got != 301 {
		t.Fatalf("origin holds %d records after the refused ack, want 301 (the batch is stored)", got)
	}
	// The negative control: one copy acknowledges at once, held by no peer.
	pp := fedProducer(t, a, "plain", sdk.ProducerOptions{})
	ppos, err := pp.Send(ctx, sdk.Record{Key: []byte("cut"), Value: []byte("plain")})
	if err != nil || ppos.Copies != 0 {
		t.Fatalf("copies = 1 during a partition: %+v, %v", ppos, err)
	}
	if h := holders(t, "hub-a", "plain", ppos, b, c); h != 0 {
		t.Fatalf("a record acknowledged during the partition is held by %d peers", h)
	}

	// Shortfall "ack": acknowledged with the one copy there is, counted.
	cfg := orders.Config()
	pol := copiesOf(cfg)
	pol.Shortfall = ShortfallAck
	setCopies(&cfg, pol)
	if err := a.Store().UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	pos, err = p.Send(ctx, sdk.Record{Key: []byte("cut"), Value: []byte("acked short")})
	if err != nil || pos.Copies != 1 {
		t.Fatalf("shortfall ack during a partition: %+v, %v; want an ack with 1 copy", pos, err)
	}
	var info StreamInfo
	getJSON(t, "http://"+a.AdminAddr().String()+"/v1/streams/orders", &info)
	if info.CopiesShort != 2 || info.Config.Copies != 2 || info.Config.Shortfall != ShortfallAck {
		t.Fatalf("describe after two short batches: copies_short %d, config %+v", info.CopiesShort, info.Config.CopiesPolicy)
	}

	// Heal: everything reaches the peers, once.
	n.setPullsCut("hub-a", "hub-b", false)
	n.setPullsCut("hub-a", "hub-c", false)
	converged(t, "orders", 302, a, b, c)
	testutil.Eventually(t, "describe lists both peers as holding every shard", func() bool {
		var info StreamInfo
		getJSON(t, "http://"+a.AdminAddr().String()+"/v1/streams/orders", &info)
		for _, s := range info.Shards {
			if s.LastSeq > 0 && len(s.CopiesHeld) != 2 {
				return false
			}
		}
		return true
	})
}

// TestCopiesAskedByProducer: a producer may ask for more copies than its
// stream's (every hub here); its ACKs then wait for all three, and a hub
// that cannot meet the ask refuses the session rather than acknowledge
// fewer.
func TestCopiesAskedByProducer(t *testing.T) {
	n := newFedNet(t)
	a := n.start("hub-a")
	b := n.start("hub-b")
	c := n.start("hub-c")
	createWithCopies(t, a, "s", 1, 0)
	for _, h := range []*Hub{b, c} {
		mustStreamEventually(t, h, "s")
	}
	ctx := testCtx(t)
	p := fedProducer(t, a, "s", sdk.ProducerOptions{Copies: 3})
	for i := range 20 {
		pos, err := p.Send(ctx, sdk.Record{Key: fmt.Appendf(nil, "k%d", i), Value: []byte("v")})
		if err != nil || pos.Copies != 3 {
			t.Fatalf("send %d: %+v, %v", i, pos, err)
		}
		if h := holders(t, "hub-a", "s", pos, b, c); h != 2 {
			t.Fatalf("record %d acknowledged with 3 copies, held by %d peers", i, h)
		}
	}
	cl, err := sdk.Dial(ctx, a.QUICAddr().String(), sdk.Options{Insecure: true, Logger: quietTestLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := cl.Producer(ctx, "s", sdk.ProducerOptions{Copies: MaxCopies + 1}); quic.CodeOf(err) != quic.CodeInvalidArgument {
		t.Fatalf("%d copies asked: %v, want invalid_argument", MaxCopies+1, err)
	}
}

// TestCopiesConfig: the policy's checks, with the keys they name, on the
// stored value the admin API writes (keys absent take their defaults;
// values given, zeros included, are checked as given) and in hub.toml.
func TestCopiesConfig(t *testing.T) {
	for _, tc := range []struct {
		stored string // Meta[MetaCopies]
		repl   Replicate
		want   string // "" valid
	}{
		{`{"copies":2}`, ReplicateAll, ""},
		{``, ReplicateLocal, ""},
		{`{"copies":2}`, ReplicateLocal, "copies: 2 copies of a stream that never leaves this hub"},
		{`{"copies":16}`, ReplicateAll, ""},
		{`{"copies":17}`, ReplicateAll, "copies: 17 outside 1..16"},
		{`{"copies":0}`, ReplicateAll, "copies: 0 outside 1..16"},
		{`{"copies":2,"copies_shortfall":"maybe"}`, ReplicateAll, `copies_shortfall: "maybe"`},
		{`{"copies":2,"copies_shortfall":""}`, ReplicateAll, `copies_shortfall: ""`},
		{`{"copies":2,"copies_at":"local"}`, ReplicateAll, "copies_at:"},
		{`{"copies":2,"copies_timeout":"-1s"}`, ReplicateAll, "copies_timeout:"},
		{`{"copies":2,"copies_timeout":"0s"}`, ReplicateAll, "copies_timeout: 0s is not positive"},
		{`{"copies":`, ReplicateAll, "copies: unexpected end"},
	} {
		c := store.StreamConfig{Meta: map[string]string{MetaReplicate: string(tc.repl)}}
		if tc.stored != "" {
			c.Meta[MetaCopies] = tc.stored
		}
		err := validateCopies(c)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.stored, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want %q", tc.stored, err, tc.want)
		}
	}
	// In hub.toml (and a Config built in Go) a zero is unset, as everywhere
	// in Config: it takes the default; the checks apply to what is given.
	cfg, err := ParseConfig("hub.toml", []byte("[[stream]]\nname = \"s\"\nreplicate = \"all\"\ncopies = 0\n"))
	if err != nil || cfg.Streams[0].copies() != defaultCopies() {
		t.Errorf("hub.toml with copies = 0: %+v, %v; want the default policy", cfg.Streams, err)
	}
	_, err = ParseConfig("hub.toml", []byte("[[stream]]\nname = \"s\"\nreplicate = \"all\"\ncopies = 17\ncopies_timeout = \"-1s\"\n"))
	for _, want := range []string{"stream[0].copies: 17 outside 1..16", "stream[0].copies_timeout: -1s is not positive"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("hub.toml with copies = 17: %v, want %q", err, want)
		}
	}
	// One copy with the defaults stores nothing: streams without copies
	// carry no new metadata.
	if v := defaultCopies().encode(); v != "" {
		t.Fatalf("default policy encodes as %q", v)
	}
	c := store.StreamConfig{}
	setCopies(&c, CopiesPolicy{Copies: 3, At: "tag:core", Timeout: Duration(time.Second), Shortfall: ShortfallAck})
	if got := copiesOf(c); got.Copies != 3 || got.At != "tag:core" || got.Timeout != Duration(time.Second) || got.Shortfall != ShortfallAck {
		t.Fatalf("round trip: %+v", got)
	}
}

func liveRecords(st *store.Stream) int64 {
	var n int64
	for _, s := range st.Stats() {
		n += s.Records
	}
	return n
}

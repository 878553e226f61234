package replicate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/internal/testutil"
	"github.com/edgehub/edgehub/quic"
	"github.com/edgehub/edgehub/store"
)

// memNet connects replicators in one process: pulls run the real server
// code through the real frame codecs, over channels instead of QUIC, and
// membership is "perfect gossip" read straight from each hub's store. Links
// can be cut. Only the logic tests use it; the hub tests run real QUIC.
type memNet struct {
	mu   sync.Mutex
	hubs map[string]*memHub
	cut  map[[2]string]bool
}

type memHub struct {
	name  string
	tags  []string
	tune  func(*Config) // adjusts the replicator's config at each start
	store *store.Store
	rep   *Replicator
	live  atomic.Pointer[Replicator] // rep while running; read by peers
	reg   *prometheus.Registry
	stop  context.CancelFunc
	done  chan struct{}
}

func newMemNet() *memNet { return &memNet{hubs: map[string]*memHub{}, cut: map[[2]string]bool{}} }

func (n *memNet) linked(a, b string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if a > b {
		a, b = b, a
	}
	return !n.cut[[2]string{a, b}]
}

func (n *memNet) setCut(a, b string, cut bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if a > b {
		a, b = b, a
	}
	if cut {
		n.cut[[2]string{a, b}] = true
	} else {
		delete(n.cut, [2]string{a, b})
	}
}

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
}

// addHub opens a store in a temp dir and starts a replicator on it.
func (n *memNet) addHub(t testing.TB, name string, tags ...string) *memHub {
	t.Helper()
	return n.addHubWith(t, name, nil, tags...)
}

// addHubWith is addHub with tune applied to the replicator's config.
func (n *memNet) addHubWith(t testing.TB, name string, tune func(*Config), tags ...string) *memHub {
	t.Helper()
	cfg := store.DefaultConfig(t.TempDir())
	cfg.Logger = quietLogger()
	st, err := store.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h := &memHub{name: name, tags: tags, tune: tune, store: st}
	n.mu.Lock()
	n.hubs[name] = h
	n.mu.Unlock()
	n.start(t, h)
	t.Cleanup(func() {
		h.halt()
		st.Close()
	})
	return h
}

func (n *memNet) start(t testing.TB, h *memHub) {
	t.Helper()
	rc := DefaultConfig(h.name)
	rc.Tags = h.tags
	rc.Store = h.store
	rc.Transport = &memTransport{net: n, from: h.name}
	rc.Membership = &memMembership{net: n, self: h.name}
	rc.Interval = 20 * time.Millisecond
	rc.Heartbeat = 50 * time.Millisecond
	rc.RetryMin = 10 * time.Millisecond
	rc.RetryMax = 100 * time.Millisecond
	rc.Logger = quietLogger()
	if h.tune != nil {
		h.tune(&rc)
	}
	h.reg = prometheus.NewRegistry()
	rc.Registerer = h.reg
	rep, err := New(rc)
	if err != nil {
		t.Fatal(err)
	}
	h.rep = rep
	h.live.Store(rep)
	ctx, cancel := context.WithCancel(context.Background())
	h.stop = cancel
	h.done = make(chan struct{})
	go func() {
		defer close(h.done)
		rep.Run(ctx)
	}()
}

func (h *memHub) halt() {
	if h.stop != nil {
		h.live.Store(nil)
		h.stop()
		<-h.done
		h.rep.Close()
		h.stop = nil
	}
}

type memMembership struct {
	net  *memNet
	self string
}

func (m *memMembership) Peers() []Peer {
	m.net.mu.Lock()
	hubs := make([]*memHub, 0, len(m.net.hubs))
	stores := make([]*store.Store, 0, len(m.net.hubs)) // reopen swaps a hub's store under mu
	for _, h := range m.net.hubs {
		hubs = append(hubs, h)
		stores = append(stores, h.store)
	}
	m.net.mu.Unlock()
	var out []Peer
	for i, h := range hubs {
		if h.name == m.self {
			continue
		}
		rep := h.live.Load()
		p := Peer{Name: h.name, Addr: h.name, Alive: m.net.linked(m.self, h.name) && rep != nil, Tags: h.tags, Streams: map[string]PeerStream{}}
		for _, st := range stores[i].Streams() {
			c := st.Config()
			if policyOf(c).Local() {
				continue
			}
			ps := PeerStream{}
			if v, _ := defVersion(c); c.Meta[MetaDef] != "" {
				ps.Def = &Def{Config: publishable(c), Version: v}
			}
			if rep != nil {
				vec, err := localVector(h.name, st, rep.high)
				if err == nil {
					ps.Vector = vec
				}
				ps.Incarnations = localIncarnations(h.name, st)
				rep.mu.Lock()
				known := rep.layouts[st.Name()]
				rep.mu.Unlock()
				ps.Layouts = publishedLayouts(h.name, st, known)
			}
			p.Streams[st.Name()] = ps
		}
		out = append(out, p)
	}
	return out
}

func (m *memMembership) Changed() <-chan struct{} { return nil }

type memTransport struct {
	net  *memNet
	from string
}

func (t *memTransport) Pull(ctx context.Context, peer Peer, req PullRequest) (PullStream, error) {
	t.net.mu.Lock()
	h := t.net.hubs[peer.Name]
	t.net.mu.Unlock()
	var rep *Replicator
	if h != nil {
		rep = h.live.Load()
	}
	if rep == nil || !t.net.linked(t.from, peer.Name) {
		return nil, fmt.Errorf("dial %s: unreachable", peer.Name)
	}
	// The request crosses the codec, as it would on the wire.
	var wire PullRequest
	if err := wire.Decode(req.Append(nil)); err != nil {
		return nil, err
	}
	pctx, cancel := context.WithCancel(ctx)
	p := &memPull{ch: make(chan recvd, 4), ctx: pctx, cancel: cancel}
	go func() {
		err := rep.Serve(pctx, wire, memSender{p: p, net: t.net, a: t.from, b: peer.Name})
		var ce *closedEndError
		if errors.As(err, &ce) {
			// As a session's PULL_END with closed_end arrives.
			select {
			case p.ch <- recvd{m: Msg{Type: FramePullEnd, ClosedEnd: ce.end}}:
			case <-pctx.Done():
			}
			err = nil
		}
		if err == nil {
			err = io.EOF
		}
		select {
		case p.ch <- recvd{err: err}:
		case <-pctx.Done():
		}
	}()
	return p, nil
}

type recvd struct {
	m   Msg
	err error
}

type memPull struct {
	ch     chan recvd
	ctx    context.Context
	cancel context.CancelFunc

	mu  sync.Mutex
	err error // the end, once Recv saw it
}

func (p *memPull) Recv(ctx context.Context) (Msg, error) {
	p.mu.Lock()
	err := p.err
	p.mu.Unlock()
	if err != nil {
		return Msg{}, err
	}
	select {
	case r := <-p.ch:
		if r.err != nil {
			p.mu.Lock()
			p.err = r.err
			p.mu.Unlock()
		}
		return r.m, r.err
	case <-p.ctx.Done():
		return Msg{}, p.ctx.Err()
	case <-ctx.Done():
		return Msg{}, ctx.Err()
	}
}

func (p *memPull) Applied(uint64) {}

func (p *memPull) TryRecv() (Msg, bool) {
	select {
	case r := <-p.ch:
		if r.err != nil {
			p.mu.Lock()
			p.err = r.err
			p.mu.Unlock()
			return Msg{}, false
		}
		return r.m, true
	default:
		return Msg{}, false
	}
}

func (p *memPull) Close() error { p.cancel(); return nil }

type memSender struct {
	p    *memPull
	net  *memNet
	a, b string
}

func (s memSender) Send(t quic.FrameType, f quic.Appender) error {
	if !s.net.linked(s.a, s.b) {
		return errors.New("link cut")
	}
	m, err := decodeMsg(t, f.Append(nil))
	if err != nil {
		return err
	}
	select {
	case s.p.ch <- recvd{m: m}:
		return nil
	case <-s.p.ctx.Done():
		return s.p.ctx.Err()
	}
}

func createStream(t testing.TB, h *memHub, name string, shards int, policy string) *store.Stream {
	t.Helper()
	st, err := h.store.CreateStream(context.Background(), store.StreamConfig{Name: name, Shards: shards, Meta: map[string]string{MetaPolicy: policy}})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func stream(t testing.TB, h *memHub, name string) *store.Stream {
	t.Helper()
	st, err := h.store.Stream(name)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// produce appends n keyed records at h, in batches.
func produce(t testing.TB, h *memHub, name string, n int) {
	t.Helper()
	st := stream(t, h, name)
	for i := 0; i < n; {
		var recs []record.Record
		for j := 0; j < 100 && i < n; j, i = j+1, i+1 {
			recs = append(recs, record.Record{Key: fmt.Appendf(nil, "%s-k%d", h.name, i%37), Value: fmt.Appendf(nil, "%s-%d", h.name, i)})
		}
		if _, err := st.Append(context.Background(), store.Batch{Shard: -1, Records: recs}); err != nil {
			t.Fatal(err)
		}
	}
}

// content returns, per origin shard, the values in stored order: origin
// hub "" is replaced by the hub's own name. It fails the test on a
// duplicate origin or an out-of-order origin sequence.
func content(t testing.TB, h *memHub, name string) map[store.OriginKey][]string {
	t.Helper()
	st, err := h.store.Stream(name)
	if err != nil {
		return nil
	}
	out := map[store.OriginKey][]string{}
	last := map[store.OriginKey]uint64{}
	for s := 0; s < st.Shards(); s++ {
		for from := uint64(1); ; {
			recs, err := st.Read(s, from, store.ReadOptions{MaxRecords: 10000})
			if err != nil {
				t.Fatal(err)
			}
			if len(recs) == 0 {
				break
			}
			for _, r := range recs {
				o := r.Origin
				if o.IsLocal() {
					o = record.Origin{Hub: h.name, Shard: uint32(s), Seq: r.Seq}
				}
				k := store.OriginKey{Hub: o.Hub, Shard: o.Shard}
				if o.Seq <= last[k] {
					t.Fatalf("%s: origin %s/%d: sequence %d after %d (duplicate or out of order)", h.name, k.Hub, k.Shard, o.Seq, last[k])
				}
				last[k] = o.Seq
				out[k] = append(out[k], string(r.Value))
			}
			from = recs[len(recs)-1].Seq + 1
		}
	}
	return out
}

func total(c map[store.OriginKey][]string) int {
	n := 0
	for _, v := range c {
		n += len(v)
	}
	return n
}

func sameContent(a, b map[store.OriginKey][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		w := b[k]
		if len(v) != len(w) {
			return false
		}
		for i := range v {
			if v[i] != w[i] {
				return false
			}
		}
	}
	return true
}

func TestThreeHubsConverge(t *testing.T) {
	net := newMemNet()
	hubs := []*memHub{net.addHub(t, "a"), net.addHub(t, "b"), net.addHub(t, "c")}
	for _, h := range hubs {
		createStream(t, h, "events", 3, "all")
	}
	for i, h := range hubs {
		produce(t, h, "events", 1000*(i+1))
	}
	want := 1000 + 2000 + 3000
	testutil.Eventually(t, "convergence", func() bool {
		ref := content(t, hubs[0], "events")
		if total(ref) != want {
			return false
		}
		for _, h := range hubs[1:] {
			if !sameContent(ref, content(t, h, "events")) {
				return false
			}
		}
		return true
	})
	// Keep producing while replicating: still converges.
	for _, h := range hubs {
		produce(t, h, "events", 500)
	}
	testutil.Eventually(t, "convergence after more writes", func() bool {
		ref := content(t, hubs[0], "events")
		return total(ref) == want+1500 && sameContent(ref, content(t, hubs[1], "events")) && sameContent(ref, content(t, hubs[2], "events"))
	})
	testutil.Eventually(t, "lag drains", func() bool {
		for _, h := range hubs {
			for _, l := range h.rep.Lag() {
				if l.Records != 0 {
					return false
				}
			}
		}
		return true
	})
	got := counterValue(hubs[0].rep.metrics.applied.WithLabelValues("events", "b", "b"))
	if got != 2500 {
		t.Fatalf("records pulled by a from b = %v, want 2500", got)
	}
}

// TestChainRelays cuts a from c: c gets a's records through b, and when
// the link returns c keeps everything exactly once.
func TestChainRelays(t *testing.T) {
	net := newMemNet()
	a, b, c := net.addHub(t, "a"), net.addHub(t, "b"), net.addHub(t, "c")
	net.setCut("a", "c", true)
	createStream(t, a, "s", 2, "all")
	produce(t, a, "s", 3000)
	// b and c get the stream from the definitions (c only through b's).
	testutil.Eventually(t, "c holds a's records via b", func() bool { return total(content(t, c, "s")) == 3000 })
	if ts := c.rep.Status(); len(ts) == 0 || ts[0].Peer != "b" {
		t.Fatalf("c pulls from %+v, want b", ts)
	}
	net.setCut("a", "c", false)
	produce(t, a, "s", 1000)
	testutil.Eventually(t, "all converge", func() bool {
		ref := content(t, a, "s")
		return total(ref) == 4000 && sameContent(ref, content(t, b, "s")) && sameContent(ref, content(t, c, "s"))
	})
	testutil.Eventually(t, "c pulls from the origin again", func() bool {
		for _, s := range c.rep.Status() {
			if s.Origin == "a" && s.Peer != "a" {
				return false
			}
		}
		return true
	})
}

func TestPartitionWithWritesHeals(t *testing.T) {
	net := newMemNet()
	a, b, c := net.addHub(t, "a"), net.addHub(t, "b"), net.addHub(t, "c")
	for _, h := range []*memHub{a, b, c} {
		createStream(t, h, "p", 2, "all")
	}
	produce(t, a, "p", 200)
	testutil.Eventually(t, "initial sync", func() bool { return total(content(t, c, "p")) == 200 })
	// {a, b} | {c}
	net.setCut("a", "c", true)
	net.setCut("b", "c", true)
	produce(t, a, "p", 500)
	produce(t, b, "p", 400)
	produce(t, c, "p", 300)
	testutil.Eventually(t, "majority side converges", func() bool { return total(content(t, b, "p")) == 1100 })
	if n := total(content(t, c, "p")); n != 500 {
		t.Fatalf("c holds %d records during the partition, want 500", n)
	}
	net.setCut("a", "c", false)
	net.setCut("b", "c", false)
	testutil.Eventually(t, "healed", func() bool {
		ref := content(t, a, "p")
		return total(ref) == 1400 && sameContent(ref, content(t, b, "p")) && sameContent(ref, content(t, c, "p"))
	})
}

func TestRestartResumesFromWatermark(t *testing.T) {
	net := newMemNet()
	a, b := net.addHub(t, "a"), net.addHub(t, "b")
	createStream(t, a, "r", 1, "all")
	produce(t, a, "r", 1000)
	testutil.Eventually(t, "b synced", func() bool { return total(content(t, b, "r")) == 1000 })
	b.halt()
	produce(t, a, "r", 1000)
	net.start(t, b)
	testutil.Eventually(t, "b caught up", func() bool { return total(content(t, b, "r")) == 2000 })
	// The counter moves just after the commit is visible: wait for it, then
	// check that nothing beyond the missing records was pulled.
	pulled := func() float64 { return counterValue(b.rep.metrics.applied.WithLabelValues("r", "a", "a")) }
	testutil.Eventually(t, "the pull counted", func() bool { return pulled() >= 1000 })
	time.Sleep(100 * time.Millisecond)
	if pulled := pulled(); pulled != 1000 {
		t.Fatalf("after restart b pulled %v records, want 1000 (resume from the watermark)", pulled)
	}
}

func TestPolicy(t *testing.T) {
	net := newMemNet()
	edge := net.addHub(t, "edge", "edge")
	region := net.addHub(t, "region", "region")
	core := net.addHub(t, "core", "core")
	createStream(t, edge, "raw", 1, "local")
	createStream(t, edge, "agg", 1, "tag:region")
	createStream(t, edge, "all", 1, "all")
	for _, s := range []string{"raw", "agg", "all"} {
		produce(t, edge, s, 100)
	}
	testutil.Eventually(t, "all everywhere", func() bool {
		return total(content(t, region, "all")) == 100 && total(content(t, core, "all")) == 100
	})
	testutil.Eventually(t, "agg at the region", func() bool { return total(content(t, region, "agg")) == 100 })
	// Give replication time to do something wrong, then look.
	time.Sleep(200 * time.Millisecond)
	tests := []struct {
		name   string
		hub    *memHub
		stream string
		want   bool
	}{
		{name: "local stays at the edge", hub: region, stream: "raw"},
		{name: "local stays at the edge (core)", hub: core, stream: "raw"},
		{name: "tag-scoped reaches the tagged hub", hub: region, stream: "agg", want: true},
		{name: "tag-scoped skips untagged hubs", hub: core, stream: "agg"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.hub.store.Stream(tt.stream)
			if got := err == nil; got != tt.want {
				t.Fatalf("%s has %s: %v, want %v", tt.hub.name, tt.stream, got, tt.want)
			}
		})
	}
	// The server refuses pulls the policy forbids, whoever asks.
	denied := []struct {
		name string
		req  PullRequest
		code quic.Code
	}{
		{name: "local stream", req: PullRequest{Requester: "region", Stream: "raw", Origin: store.OriginKey{Hub: "edge"}}, code: quic.CodeNotFound},
		{name: "untagged requester", req: PullRequest{Requester: "core", Stream: "agg", Origin: store.OriginKey{Hub: "edge"}}, code: quic.CodePermissionDenied},
		{name: "unknown requester", req: PullRequest{Requester: "stranger", Stream: "agg", Origin: store.OriginKey{Hub: "edge"}}, code: quic.CodeUnavailable},
		{name: "missing stream", req: PullRequest{Requester: "core", Stream: "nope", Origin: store.OriginKey{Hub: "edge"}}, code: quic.CodeNotFound},
	}
	for _, tt := range denied {
		t.Run(tt.name, func(t *testing.T) {
			err := edge.rep.Serve(context.Background(), tt.req, failSender{t})
			if quic.CodeOf(err) != tt.code {
				t.Fatalf("serve = %v, want code %s", err, tt.code)
			}
		})
	}
}

type failSender struct{ t testing.TB }

func (s failSender) Send(quic.FrameType, quic.Appender) error {
	s.t.Error("a refused pull sent data")
	return errors.New("refused")
}

func TestDefinitionUpdatePropagates(t *testing.T) {
	net := newMemNet()
	a, b := net.addHub(t, "a"), net.addHub(t, "b")
	createStream(t, a, "d", 4, "all")
	testutil.Eventually(t, "b creates d", func() bool {
		st, err := b.store.Stream("d")
		return err == nil && st.Shards() == 4
	})
	// A local change at b (the admin API) wins over the older definition.
	st := stream(t, b, "d")
	c := st.Config()
	c.Compact = true
	if err := b.store.UpdateStream(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "a adopts compact", func() bool { return stream(t, a, "d").Config().Compact })
	// Retention is each hub's own.
	c = stream(t, a, "d").Config()
	c.Retention = time.Hour
	if err := a.store.UpdateStream(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if r := stream(t, b, "d").Config().Retention; r != 0 {
		t.Fatalf("retention travelled to b: %s", r)
	}
}

// TestGapIsReported deletes records at the origin before the peer pulls
// them: the peer reports the gap and continues with what is left.
func TestGapIsReported(t *testing.T) {
	net := newMemNet()
	a := net.addHub(t, "a")
	st, err := a.store.CreateStream(context.Background(), store.StreamConfig{Name: "g", Shards: 1, MaxBytes: 20 << 10, Meta: map[string]string{MetaPolicy: "all"}})
	if err != nil {
		t.Fatal(err)
	}
	produce(t, a, "g", 3000)
	if err := st.Enforce(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	first, last, _ := st.Bounds(0)
	if first <= 1 {
		t.Fatalf("retention removed nothing (first %d)", first)
	}
	b := net.addHub(t, "b")
	testutil.Eventually(t, "b holds what is left", func() bool { return total(content(t, b, "g")) == int(last-first+1) })
	testutil.Eventually(t, "gap reported", func() bool {
		for _, s := range b.rep.Status() {
			if s.Gaps == 1 && s.GapSeqs == first-1 {
				return true
			}
		}
		return false
	})
	if g := counterValue(b.rep.metrics.gaps.WithLabelValues("g", "a")); g != 1 {
		t.Fatalf("gap metric %v, want 1", g)
	}
}

// TestTrimmedRelayRefuses: a relay whose retention trimmed the stream
// does not serve an origin from a point it may have lost.
func TestTrimmedRelayRefuses(t *testing.T) {
	net := newMemNet()
	a, b := net.addHub(t, "a"), net.addHub(t, "b")
	createStream(t, a, "t", 1, "all")
	produce(t, a, "t", 2000)
	testutil.Eventually(t, "b synced", func() bool { return total(content(t, b, "t")) == 2000 })
	b.halt()
	bst := stream(t, b, "t")
	c := bst.Config()
	c.MaxBytes = 10 << 10
	if err := b.store.UpdateStream(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	if err := bst.Enforce(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	var msgs []Msg
	err := b.rep.Serve(context.Background(), PullRequest{Requester: "a", Stream: "t", Origin: store.OriginKey{Hub: "a"}, After: 0}, collectSender{&msgs})
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 1 || msgs[0].Type != FramePullTrimmed || msgs[0].Trimmed <= 1 {
		t.Fatalf("trimmed relay answered %+v", msgs)
	}
}

type collectSender struct{ msgs *[]Msg }

func (s collectSender) Send(t quic.FrameType, f quic.Appender) error {
	m, err := decodeMsg(t, f.Append(nil))
	if err != nil {
		return err
	}
	*s.msgs = append(*s.msgs, m)
	return nil
}

func TestHighCacheSkipsReplicatedTail(t *testing.T) {
	cfg := store.DefaultConfig(t.TempDir())
	cfg.Logger = quietLogger()
	s, err := store.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	st, err := s.CreateStream(context.Background(), store.StreamConfig{Name: "h", Shards: 1})
	if err != nil {
		t.Fatal(err)
	}
	hc := newHighCache()
	appendRecs := func(n int, foreign bool) {
		t.Helper()
		recs := make([]record.Record, n)
		for i := range recs {
			recs[i].Value = []byte("v")
			if foreign {
				recs[i].Origin = record.Origin{Hub: "x", Seq: uint64(st.Watermark(store.OriginKey{Hub: "x"})) + uint64(i) + 1}
			}
		}
		if _, err := st.Append(context.Background(), store.Batch{Shard: 0, Records: recs}); err != nil {
			t.Fatal(err)
		}
	}
	steps := []struct {
		name    string
		n       int
		foreign bool
		want    uint64
	}{
		{name: "empty", want: 0},
		{name: "local", n: 10, want: 10},
		{name: "foreign tail", n: 2000, foreign: true, want: 10},
		{name: "local again", n: 5, want: 2015},
		{name: "long foreign tail", n: 5000, foreign: true, want: 2015},
	}
	for _, step := range steps {
		t.Run(step.name, func(t *testing.T) {
			if step.n > 0 {
				appendRecs(step.n, step.foreign)
			}
			got, err := hc.own(st, 0)
			if err != nil || got != step.want {
				t.Fatalf("own high = %d, %v; want %d", got, err, step.want)
			}
			// A fresh cache (a restart) finds the same answer by searching
			// backwards.
			if got, _ := newHighCache().own(st, 0); got != step.want {
				t.Fatalf("fresh cache: own high = %d, want %d", got, step.want)
			}
		})
	}
}

func TestPolicyParse(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		admits  []string
		ok      bool
		wantErr bool
	}{
		{in: "", want: "local"},
		{in: "local", want: "local"},
		{in: "all", want: "all", admits: []string{}, ok: true},
		{in: "tag:b,tag:a", want: "tag:a,tag:b", admits: []string{"b"}, ok: true},
		{in: "tag:a", want: "tag:a", admits: []string{"c"}, ok: false},
		{in: "a", wantErr: true},
		{in: "tag:", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			p, err := ParsePolicy(tt.in)
			if tt.wantErr {
				if !errors.Is(err, ErrBadPolicy) {
					t.Fatalf("err = %v", err)
				}
				return
			}
			if err != nil || p.String() != tt.want {
				t.Fatalf("ParsePolicy(%q) = %v, %v", tt.in, p, err)
			}
			if tt.admits != nil && p.Admits(tt.admits) != tt.ok {
				t.Fatalf("Admits(%v) = %v", tt.admits, !tt.ok)
			}
		})
	}
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

// TestServeOwnSendsEachRecordOnce serves a one-shot pull of a shard that
// interleaves local and replicated records: every local record is sent
// once, in order, with its origin, and nothing else.
func TestServeOwnSendsEachRecordOnce(t *testing.T) {
	net := newMemNet()
	a := net.addHub(t, "a")
	a.halt() // serve directly, no background pulls
	st := createStream(t, a, "o", 1, "all")
	for i := 0; i < 20; i++ {
		produce(t, a, "o", 400)
		foreign := make([]record.Record, 50)
		for j := range foreign {
			foreign[j] = record.Record{Value: []byte("f"), Origin: record.Origin{Hub: "x", Seq: uint64(i*50 + j + 1)}}
		}
		if _, err := st.Append(context.Background(), store.Batch{Shard: 0, Records: foreign}); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name  string
		after uint64
		want  int
	}{
		{name: "from the start", after: 0, want: 8000},
		{name: "from the middle", after: 4500, want: 8000 - 4000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var msgs []Msg
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			err := a.rep.Serve(ctx, PullRequest{Requester: "b", Stream: "o", Origin: store.OriginKey{Hub: "a"}, After: tt.after}, &limitSender{msgs: &msgs, max: 100})
			if err != nil {
				t.Fatal(err)
			}
			prev, n := tt.after, 0
			for _, m := range msgs {
				if m.Type != FramePullRecords {
					continue
				}
				recs, err := record.DecodeBatch(m.Records.Batch, nil)
				if err != nil {
					t.Fatal(err)
				}
				for _, r := range recs {
					if r.Origin.Hub != "a" || r.Origin.Seq <= prev {
						t.Fatalf("record origin %+v after %d", r.Origin, prev)
					}
					prev = r.Origin.Seq
					n++
				}
			}
			if n != tt.want || msgs[len(msgs)-1].Type != FramePullProgress {
				t.Fatalf("sent %d records (want %d), last frame %s", n, tt.want, msgs[len(msgs)-1].Type)
			}
		})
	}
}

// limitSender collects frames and fails after max of them (a server that
// loops would otherwise never end).
type limitSender struct {
	msgs *[]Msg
	max  int
}

func (s *limitSender) Send(t quic.FrameType, f quic.Appender) error {
	if len(*s.msgs) >= s.max {
		return errors.New("too many frames")
	}
	m, err := decodeMsg(t, append([]byte(nil), f.Append(nil)...))
	if err != nil {
		return err
	}
	*s.msgs = append(*s.msgs, m)
	return nil
}

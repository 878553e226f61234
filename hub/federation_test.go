package hub

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/edgehub/edgehub/gossip"
	"github.com/edgehub/edgehub/internal/gossipopt"
	"github.com/edgehub/edgehub/internal/gossiptest"
	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/internal/replicate"
	"github.com/edgehub/edgehub/internal/testutil"
	"github.com/edgehub/edgehub/store"
)

// fedNet is a test federation on loopback: real memberlist over UDP/TCP
// through a gossiptest.FaultNet, real QUIC pulls through a transport wrapper
// that can cut links between chosen hubs.
type fedNet struct {
	tb     testing.TB
	gossip *gossiptest.FaultNet

	mu    sync.Mutex
	cut   map[[2]string]bool
	pulls map[[2]string][]replicate.PullStream // open pulls per link, closed on cut
	addrs map[string]string                    // hub → gossip address
	first string                               // gossip address to join
}

func newFedNet(tb testing.TB) *fedNet {
	return &fedNet{tb: tb, gossip: gossiptest.NewFaultNet(), cut: map[[2]string]bool{},
		pulls: map[[2]string][]replicate.PullStream{}, addrs: map[string]string{}}
}

func link(a, b string) [2]string {
	if a > b {
		a, b = b, a
	}
	return [2]string{a, b}
}

// config returns a hub config joined to the federation, with fast timings.
func (n *fedNet) config(name string, dir string, tags ...string) Config {
	n.tb.Helper()
	c := testConfig(n.tb)
	c.Logger = quietTestLogger()
	c.Hub.Name = name
	c.Hub.Tags = tags
	if dir != "" {
		c.Hub.DataDir = dir
	}
	c.Gossip = GossipConfig{Bind: "127.0.0.1:0", Profile: gossip.ProfileLocal, Label: "test-fed", PeerInsecure: true}
	n.mu.Lock()
	if n.first != "" {
		c.Gossip.Join = []string{n.first}
	}
	n.mu.Unlock()
	c.Gossip.tune = func(g *gossip.Config) {
		tr, err := n.gossip.Transport(g.Bind)
		if err != nil {
			n.tb.Fatal(err)
		}
		g.RejoinInterval = 200 * time.Millisecond
		gossipopt.Set(g, gossipopt.Options{Transport: tr, Tune: func(mc *memberlist.Config) {
			mc.GossipInterval = 20 * time.Millisecond
			mc.ProbeInterval = 200 * time.Millisecond
			mc.PushPullInterval = time.Second
		}})
		n.mu.Lock()
		n.addrs[name] = tr.Addr()
		if n.first == "" {
			n.first = tr.Addr()
		}
		n.mu.Unlock()
	}
	c.Gossip.tuneReplication = func(r *replicate.Config) {
		r.Interval = 50 * time.Millisecond
		r.Heartbeat = 100 * time.Millisecond
		r.RetryMin = 20 * time.Millisecond
		r.RetryMax = 300 * time.Millisecond
		r.Transport = &cuttable{Transport: r.Transport, net: n, self: name}
	}
	return c
}

// setCut cuts or heals the link between hubs a and b: gossip and pulls.
func (n *fedNet) setCut(a, b string, cut bool) {
	n.mu.Lock()
	ga, gb := n.addrs[a], n.addrs[b]
	n.mu.Unlock()
	n.setPullsCut(a, b, cut)
	if cut {
		n.gossip.Cut(ga, gb)
	} else {
		n.gossip.Heal(ga, gb)
	}
}

// setPullsCut cuts or heals pulls between hubs a and b and leaves their
// gossip up: the puller then knows from gossiped vectors that it is behind.
func (n *fedNet) setPullsCut(a, b string, cut bool) {
	n.mu.Lock()
	var open []replicate.PullStream
	if cut {
		n.cut[link(a, b)] = true
		open = n.pulls[link(a, b)]
		delete(n.pulls, link(a, b))
	} else {
		delete(n.cut, link(a, b))
	}
	n.mu.Unlock()
	for _, p := range open {
		p.Close()
	}
}

type cuttable struct {
	replicate.Transport
	net  *fedNet
	self string
}

func (c *cuttable) Pull(ctx context.Context, peer replicate.Peer, req replicate.PullRequest) (replicate.PullStream, error) {
	l := link(c.self, peer.Name)
	c.net.mu.Lock()
	cut := c.net.cut[l]
	c.net.mu.Unlock()
	if cut {
		return nil, fmt.Errorf("dial %s: network unreachable (test partition)", peer.Name)
	}
	p, err := c.Transport.Pull(ctx, peer, req)
	if err != nil {
		return nil, err
	}
	c.net.mu.Lock()
	cut = c.net.cut[l] // cut while dialling: the pull dies with the link
	if !cut {
		c.net.pulls[l] = append(c.net.pulls[l], p)
	}
	c.net.mu.Unlock()
	if cut {
		p.Close()
		return nil, fmt.Errorf("pull from %s: network unreachable (test partition)", peer.Name)
	}
	return p, nil
}

// quietTestLogger keeps federation tests readable: errors only.
func quietTestLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
}

// startFed starts a federated hub.
func (n *fedNet) start(name string, tags ...string) *Hub {
	n.tb.Helper()
	h, _ := startHub(n.tb, n.config(name, "", tags...))
	return h
}

func createReplicated(tb testing.TB, h *Hub, name string, shards int, policy string) {
	tb.Helper()
	_, err := h.Store().CreateStream(context.Background(), store.StreamConfig{Name: name, Shards: shards,
		Meta: map[string]string{MetaReplicate: policy}})
	if err != nil {
		tb.Fatal(err)
	}
}

// produceAt appends n records at h, keyed so they spread over shards.
func produceAt(tb testing.TB, h *Hub, stream string, n int, size int) {
	tb.Helper()
	st := mustStreamEventually(tb, h, stream)
	val := make([]byte, size)
	for i := 0; i < n; {
		batch := make([]record.Record, 0, 500)
		for ; len(batch) < cap(batch) && i < n; i++ {
			batch = append(batch, record.Record{Key: fmt.Appendf(nil, "k%d", i%101), Value: append(fmt.Appendf(nil, "%s-%d-", h.cfg.Hub.Name, i), val...)})
		}
		if _, err := st.Append(context.Background(), store.Batch{Shard: -1, Records: batch}); err != nil {
			tb.Fatal(err)
		}
	}
}

func mustStreamEventually(tb testing.TB, h *Hub, name string) *store.Stream {
	tb.Helper()
	var st *store.Stream
	testutil.Eventually(tb, h.cfg.Hub.Name+" has stream "+name, func() bool {
		var err error
		st, err = h.Store().Stream(name)
		return err == nil
	})
	return st
}

// originContent reads a stream and returns its records per origin shard in
// origin order; a duplicate or an origin out of order within a local shard
// fails the test. (Once either hub resharded, one origin shard's records
// are spread over several local shards by key: only each local shard keeps
// their order.)
func originContent(tb testing.TB, s *store.Store, self, name string) map[store.OriginKey][]string {
	tb.Helper()
	st, err := s.Stream(name)
	if err != nil {
		return nil
	}
	type rec struct {
		seq uint64
		val string
	}
	by := map[store.OriginKey][]rec{}
	seen := map[record.Origin]bool{}
	for sh := 0; sh < st.Shards(); sh++ {
		last := map[store.OriginKey]uint64{}
		for from := uint64(1); ; {
			recs, err := st.Read(sh, from, store.ReadOptions{MaxRecords: 20000, MaxBytes: 8 << 20})
			if err != nil {
				tb.Fatal(err)
			}
			if len(recs) == 0 {
				break
			}
			for _, r := range recs {
				o := r.Origin
				if o.IsLocal() {
					o = record.Origin{Hub: self, Shard: uint32(sh), Seq: r.Seq}
				}
				k := store.OriginKey{Hub: o.Hub, Shard: o.Shard}
				if o.Seq <= last[k] || seen[o] {
					tb.Fatalf("%s: origin %s/%d: sequence %d after %d in shard %d (duplicate or reordered)", self, k.Hub, k.Shard, o.Seq, last[k], sh)
				}
				last[k], seen[o] = o.Seq, true
				by[k] = append(by[k], rec{o.Seq, string(r.Value[:min(len(r.Value), 24)])})
			}
			from = recs[len(recs)-1].Seq + 1
		}
	}
	out := make(map[store.OriginKey][]string, len(by))
	for k, recs := range by {
		slices.SortFunc(recs, func(a, b rec) int { return cmp.Compare(a.seq, b.seq) })
		for _, r := range recs {
			out[k] = append(out[k], r.val)
		}
	}
	return out
}

func count(c map[store.OriginKey][]string) int {
	n := 0
	for _, v := range c {
		n += len(v)
	}
	return n
}

func equalContent(a, b map[store.OriginKey][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		w, ok := b[k]
		if !ok || len(v) != len(w) {
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

// converged waits until every hub holds the same records of stream, want
// in all, each origin in order, none twice.
func converged(tb testing.TB, stream string, want int, hubs ...*Hub) {
	tb.Helper()
	defer func() {
		if tb.Failed() {
			for _, h := range hubs {
				tb.Logf("%s holds %d; pulls: %+v", h.cfg.Hub.Name, count(originContent(tb, h.Store(), h.cfg.Hub.Name, stream)), getPeers(tb, h).Pulls)
			}
		}
	}()
	testutil.Eventually(tb, fmt.Sprintf("%d records of %s everywhere", want, stream), func() bool {
		ref := originContent(tb, hubs[0].Store(), hubs[0].cfg.Hub.Name, stream)
		if count(ref) != want {
			return false
		}
		for _, h := range hubs[1:] {
			if !equalContent(ref, originContent(tb, h.Store(), h.cfg.Hub.Name, stream)) {
				return false
			}
		}
		return true
	})
}

func getPeers(tb testing.TB, h *Hub) Peers {
	tb.Helper()
	resp, err := http.Get("http://" + h.AdminAddr().String() + "/v1/peers")
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	var p Peers
	if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
		tb.Fatal(err)
	}
	return p
}

func TestFederationThreeHubsConverge(t *testing.T) {
	n := newFedNet(t)
	a := n.start("hub-a", "edge")
	b := n.start("hub-b", "edge")
	c := n.start("hub-c", "core")
	// The stream is created at one hub; the others get its definition.
	createReplicated(t, a, "events", 3, "all")
	for i, h := range []*Hub{a, b, c} {
		produceAt(t, h, "events", 2000*(i+1), 16)
	}
	converged(t, "events", 2000+4000+6000, a, b, c)

	p := getPeers(t, c)
	if !p.Federated || len(p.Members) != 3 {
		t.Fatalf("peers of c: %+v", p)
	}
	for _, m := range p.Members {
		if m.State != "alive" || m.QUIC == "" {
			t.Fatalf("member %+v", m)
		}
	}
	testutil.Eventually(t, "lag drains and pulls follow", func() bool {
		p := getPeers(t, c)
		for _, l := range p.Lag {
			if l.Records != 0 {
				return false
			}
		}
		for _, pull := range p.Pulls {
			if pull.State != "following" {
				return false
			}
		}
		return len(p.Pulls) == 6 // 2 other origins × 3 shards
	})
}

func TestFederationPolicyAndLateJoiner(t *testing.T) {
	n := newFedNet(t)
	edge := n.start("edge-1", "edge")
	region := n.start("region-1", "region")
	createReplicated(t, edge, "raw", 2, "local")
	createReplicated(t, edge, "agg", 1, "tag:region")
	createReplicated(t, edge, "shared", 2, "all")
	for _, s := range []string{"raw", "agg", "shared"} {
		produceAt(t, edge, s, 1500, 32)
	}
	converged(t, "shared", 1500, edge, region)
	converged(t, "agg", 1500, edge, region)
	// A hub that joins late gets the history its policy admits.
	core := n.start("core-1", "core")
	converged(t, "shared", 1500, edge, region, core)
	produceAt(t, core, "shared", 500, 32)
	converged(t, "shared", 2000, edge, region, core)
	tests := []struct {
		name   string
		h      *Hub
		stream string
		want   bool
	}{
		{name: "local stays at its hub (region)", h: region, stream: "raw"},
		{name: "local stays at its hub (core)", h: core, stream: "raw"},
		{name: "tag-scoped reaches the tagged hub", h: region, stream: "agg", want: true},
		{name: "tag-scoped skips the untagged hub", h: core, stream: "agg"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.h.Store().Stream(tt.stream)
			if got := err == nil; got != tt.want {
				t.Fatalf("%s holds %s = %v, want %v", tt.h.cfg.Hub.Name, tt.stream, got, tt.want)
			}
		})
	}
}

// TestFederationPartitionHeals cuts one hub off (gossip and data plane)
// while both sides keep writing, then heals: nothing lost, nothing twice.
func TestFederationPartitionHeals(t *testing.T) {
	n := newFedNet(t)
	a, b, c := n.start("a"), n.start("b"), n.start("c")
	createReplicated(t, a, "p", 2, "all")
	produceAt(t, a, "p", 300, 16)
	converged(t, "p", 300, a, b, c)
	n.setCut("a", "c", true)
	n.setCut("b", "c", true)
	for i := 0; i < 5; i++ {
		produceAt(t, a, "p", 200, 16)
		produceAt(t, b, "p", 100, 16)
		produceAt(t, c, "p", 150, 16)
	}
	converged(t, "p", 300+5*300, a, b)
	if got := count(originContent(t, c.Store(), "c", "p")); got != 300+5*150 {
		t.Fatalf("c holds %d records while cut off, want %d", got, 300+5*150)
	}
	n.setCut("a", "c", false)
	n.setCut("b", "c", false)
	converged(t, "p", 300+5*450, a, b, c)
}

// metaWithQUIC is h's gossip metadata with another QUIC address.
func metaWithQUIC(h *Hub, quicAddr string) gossip.NodeMeta {
	m, _ := h.federation.gossip.Member(h.cfg.Hub.Name)
	meta := m.Meta
	meta.QUIC = quicAddr
	return meta
}

func signalNotify(c chan os.Signal) { signal.Notify(c, syscall.SIGTERM, syscall.SIGINT) }

// TestFederationExamples runs the three hubs of examples/federation (ports
// and data directories moved to free ones and temporary ones): each
// produces, all hold the union of "events", and "summaries" reaches only
// the hub tagged region.
func TestFederationExamples(t *testing.T) {
	t.Chdir("..") // the examples name their key file from the repository root
	var hubs []*Hub
	join := ""
	for _, name := range []string{"hub-a", "hub-b", "hub-c"} {
		cfg, err := LoadConfig("examples/federation/" + name + ".toml")
		if err != nil {
			t.Fatal(err)
		}
		cfg.Hub.DataDir = t.TempDir()
		cfg.Listen.QUIC, cfg.Listen.Admin = "127.0.0.1:0", "127.0.0.1:0"
		cfg.Gossip.Bind = "127.0.0.1:0"
		cfg.Gossip.Join = nil
		if join != "" {
			cfg.Gossip.Join = []string{join}
		}
		cfg.Logger = quietTestLogger()
		h, _ := startHub(t, cfg)
		if join == "" {
			join = h.federation.gossip.Addr()
		}
		hubs = append(hubs, h)
	}
	for _, h := range hubs {
		produceAt(t, h, "events", 1000, 16)
	}
	produceAt(t, hubs[1], "summaries", 100, 16)
	converged(t, "events", 3000, hubs...)
	converged(t, "summaries", 100, hubs[1], hubs[2])
	for _, h := range []*Hub{hubs[1], hubs[2]} {
		if _, err := h.Store().Stream("raw"); err == nil {
			t.Fatalf("%s holds hub-a's local stream", h.cfg.Hub.Name)
		}
	}
	if _, err := hubs[0].Store().Stream("summaries"); err == nil {
		t.Fatal("hub-a (not tagged region) holds summaries")
	}
}

// TestFederationFollowsBeyondStreamLimit replicates more (stream, origin
// shard) follows from each peer than the peer's per-connection QUIC stream
// limit allows streams: 3 hubs × 2 streams × 8 shards with
// max_streams_per_connection = 4. Every follow from one peer shares one
// replication session, so the limit does not bound them.
func TestFederationFollowsBeyondStreamLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("three federated hubs")
	}
	n := newFedNet(t)
	var hubs []*Hub
	for _, name := range []string{"lim-a", "lim-b", "lim-c"} {
		c := n.config(name, "")
		c.Limits.MaxStreamsPerConnection = 4
		h, _ := startHub(t, c)
		hubs = append(hubs, h)
	}
	streams := []string{"s1", "s2"}
	for _, s := range streams {
		createReplicated(t, hubs[0], s, 8, "all")
	}
	for i, h := range hubs {
		for _, s := range streams {
			produceAt(t, h, s, 400*(i+1), 16)
		}
	}
	for _, s := range streams {
		converged(t, s, 400+800+1200, hubs...)
	}
	// Every hub follows 2 streams × 8 shards of each of its 2 peers: 16
	// follows per peer, four times the stream limit.
	for _, h := range hubs {
		testutil.Eventually(t, h.cfg.Hub.Name+" follows every origin shard", func() bool {
			pulls := getPeers(t, h).Pulls
			if len(pulls) != 2*2*8 {
				return false
			}
			for _, p := range pulls {
				if p.State != "following" {
					return false
				}
			}
			return true
		})
	}
	// New records still flow on the established sessions.
	produceAt(t, hubs[2], "s2", 300, 16)
	converged(t, "s2", 400+800+1200+300, hubs...)
}

// startStoppable starts a hub that the test can stop before its end.
func startStoppable(tb testing.TB, cfg Config) (*Hub, func()) {
	tb.Helper()
	h, err := New(cfg)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				tb.Errorf("Run: %v", err)
			}
			if err := h.Close(); err != nil {
				tb.Errorf("Close: %v", err)
			}
		})
	}
	tb.Cleanup(stop)
	waitHealthy(tb, "http://"+h.AdminAddr().String())
	return h, stop
}

// TestFederationGapWhenOriginGone: the origin leaves for good after the
// only other holder of its records trimmed the oldest. A hub that joins
// later cannot get them from anyone: after gap_after it reports the gap
// (/v1/peers, metrics, the gap file) and takes the rest from the relay,
// instead of stalling.
func TestFederationGapWhenOriginGone(t *testing.T) {
	if testing.Short() {
		t.Skip("three federated hubs")
	}
	n := newFedNet(t)
	origin, stopOrigin := startStoppable(t, n.config("gone", ""))
	relay := n.start("relay")
	createReplicated(t, origin, "hist", 1, "all")
	for i := 1; i <= 4; i++ { // separate appends at the relay: chunks retention can drop one by one
		produceAt(t, origin, "hist", 500, 64)
		converged(t, "hist", 500*i, origin, relay)
	}
	st := mustStreamEventually(t, relay, "hist")
	c := st.Config()
	c.MaxBytes = st.Stats()[0].Bytes / 2 // drops the oldest chunks
	if err := relay.Store().UpdateStream(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	if err := st.Enforce(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	k := store.OriginKey{Hub: "gone"}
	held, err := st.ReadOrigin(k, 0, 1)
	if err != nil || len(held) == 0 || held[0].Origin.Seq <= 1 {
		t.Fatalf("relay retention kept %+v, %v", held, err)
	}
	first := held[0].Origin.Seq
	stopOrigin()

	lc := n.config("late", "")
	lc.Gossip.GapAfter = Duration(300 * time.Millisecond)
	n.mu.Lock()
	lc.Gossip.Join = []string{n.addrs["relay"]} // the first member is gone
	n.mu.Unlock()
	late, admin := startHub(t, lc)
	defer func() {
		if t.Failed() {
			p := getPeers(t, late)
			t.Logf("late: pulls %+v; gaps %+v; members %+v", p.Pulls, p.Gaps, p.Members)
		}
	}()
	testutil.Eventually(t, "late reports the gap", func() bool {
		for _, g := range getPeers(t, late).Gaps {
			if g.Stream == "hist" && g.Origin == "gone" && g.Gaps == 1 && g.Sequences == first-1 &&
				strings.Contains(g.Last, "unreachable") {
				return true
			}
		}
		return false
	})
	testutil.Eventually(t, "late holds what the relay holds of the origin", func() bool {
		return equalContent(
			map[store.OriginKey][]string{k: originContent(t, relay.Store(), "relay", "hist")[k]},
			map[store.OriginKey][]string{k: originContent(t, late.Store(), "late", "hist")[k]})
	})
	resp, err := http.Get(admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`edgehub_replication_gaps_total{origin="gone",stream="hist"} 1`,
		fmt.Sprintf(`edgehub_replication_gap_sequences_total{origin="gone",stream="hist"} %d`, first-1),
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if _, err := os.Stat(filepath.Join(lc.Hub.DataDir, GapsFile)); err != nil {
		t.Errorf("gap file: %v", err)
	}
}

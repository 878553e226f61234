package hub

import (
	"os"
	"testing"
	"time"

	"github.com/edgehub/edgehub/internal/testutil"
	"github.com/edgehub/edgehub/plugins"
)

// pullOf returns the pull of stream's origin shard in p, if listed.
func pullOf(p Peers, stream, origin string, shard uint32) (PullStatus, bool) {
	for _, t := range p.Pulls {
		if t.Stream == stream && t.Origin == origin && t.Shard == shard {
			return t, true
		}
	}
	return PullStatus{}, false
}

// TestFederationPluginOriginPulls: a plugin's output stream, replicated to
// another hub, is pulled from the plugin's hub under the plugin's origin by
// one lasting task, and /v1/peers there reports that pull: what it pulled,
// a lag while the receiver is behind (pulls cut, gossip up) and none once
// caught up, counted in input records. Before, that task existed only
// while gossip showed the receiver behind, so the pull came and went and
// its count restarted, and its lag was 2^16 per input record.
func TestFederationPluginOriginPulls(t *testing.T) {
	wasm, err := os.ReadFile(watPassThroughModule)
	if err != nil {
		t.Fatal(err)
	}
	n := newFedNet(t)
	a := n.start("edge-a")
	b := n.start("region-b", "region")
	createReplicated(t, a, "in", 1, string(ReplicateLocal))
	createReplicated(t, a, "out", 1, "tag:region")
	def := PluginConfig{Name: "copy", Inputs: []string{"in"}, Outputs: []string{"out"}, Start: "earliest",
		Config: PluginParams{"output": "out"}, CallTimeout: Duration(time.Second)}
	if status, body := deployHTTP(t, "http://"+a.AdminAddr().String(), def, wasm); status != 201 {
		t.Fatalf("deploy: %d %s", status, body)
	}
	origin := plugins.OriginHub("edge-a", "copy", "in")
	held := func(h *Hub) int { return count(originContent(t, h.Store(), h.cfg.Hub.Name, "out")) }
	pulled := func(what string, want func(PullStatus) bool) PullStatus {
		t.Helper()
		var last PullStatus
		testutil.Eventually(t, what, func() bool {
			p, ok := pullOf(getPeers(t, b), "out", origin, 0)
			last = p
			return ok && want(p)
		})
		return last
	}

	produceAt(t, a, "in", 5, 10)
	testutil.Eventually(t, "region-b holds the plugin's 5 outputs", func() bool { return held(b) == 5 })
	pulled("a following pull of the plugin origin that pulled 5, no lag", func(p PullStatus) bool {
		return p.Peer == "edge-a" && p.State == "following" && p.Records == 5 && p.LagRecords == 0
	})

	// Behind: the plugin writes while region-b cannot pull (gossip still
	// tells it what edge-a holds).
	n.setPullsCut("edge-a", "region-b", true)
	produceAt(t, a, "in", 7, 10)
	testutil.Eventually(t, "edge-a's plugin wrote 12 outputs", func() bool { return held(a) == 12 })
	// Lag counts input records (the origin numbers outputs input<<16 |
	// index), not 2^16 per input.
	behind := pulled("the pull shows lag while cut", func(p PullStatus) bool { return p.LagRecords > 0 })
	if behind.Records != 5 || held(b) != 5 || behind.LagRecords != 7 {
		t.Fatalf("cut pull %+v, region-b holds %d: want 5 pulled and held, 7 behind", behind, held(b))
	}
	lagged := false
	for _, l := range getPeers(t, b).Lag {
		lagged = lagged || (l.Stream == "out" && l.Origin == origin && l.Peer == "edge-a" && l.Records == 7)
	}
	if !lagged {
		t.Fatalf("no lag of %s in %+v", origin, getPeers(t, b).Lag)
	}
	testutil.Eventually(t, "edge-a shown 7 input records ahead of region-b", func() bool {
		for _, m := range getPeers(t, b).Members {
			if m.Name == "edge-a" {
				return m.Behind["out"][origin] == 7
			}
		}
		return false
	})

	n.setPullsCut("edge-a", "region-b", false)
	testutil.Eventually(t, "region-b holds all 12 outputs", func() bool { return held(b) == 12 })
	p := pulled("the same pull caught up: 12 pulled, no lag", func(p PullStatus) bool {
		return p.State == "following" && p.LagRecords == 0 && p.Watermark == p.High
	})
	if p.Records != 12 {
		t.Fatalf("pull %+v: want the 12 records replicated counted by one task", p)
	}
}

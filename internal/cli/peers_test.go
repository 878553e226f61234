package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgehub/edgehub/hub"
	"github.com/edgehub/edgehub/internal/testutil"
)

func peersOf(tb testing.TB, admin string) hub.Peers {
	tb.Helper()
	resp, err := http.Get(admin + "/v1/peers")
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	var p hub.Peers
	if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
		tb.Fatal(err)
	}
	return p
}

// TestEndToEndFederation runs two `hub serve` processes federated by their
// hub.toml files, produces at each with `hub produce`, consumes the union
// at each with `hub consume`, and reads `hub peers`.
func TestEndToEndFederation(t *testing.T) {
	gossipA := testutil.FreePort(t)
	var servers []*server
	var dirs []string
	for i, name := range []string{"fed-a", "fed-b"} {
		dir := t.TempDir()
		cfg := fmt.Sprintf(`[gossip]
bind = "127.0.0.1:%d"
label = "e2e-fed"
profile = "local"
peer_insecure_skip_verify = true
`, testutil.FreePort(t))
		if i == 0 {
			cfg = fmt.Sprintf(`[gossip]
bind = "127.0.0.1:%d"
label = "e2e-fed"
profile = "local"
peer_insecure_skip_verify = true

[[stream]]
name = "events"
shards = 2
replicate = "all"
`, gossipA)
		} else {
			cfg += fmt.Sprintf("join = [\"127.0.0.1:%d\"]\n", gossipA)
		}
		file := filepath.Join(dir, "hub.toml")
		writeFile(t, file, cfg)
		servers = append(servers, startServer(t, filepath.Join(dir, "data"), "--config", file, "--name", name))
		dirs = append(dirs, dir)
	}
	quicOf := func(s *server) string {
		for _, m := range peersOf(t, s.admin).Members {
			if m.Self {
				return m.QUIC
			}
		}
		t.Fatal("no self in peers")
		return ""
	}
	retry := func(what string, f func() bool) {
		t.Helper()
		for end := time.Now().Add(60 * time.Second); !f(); time.Sleep(100 * time.Millisecond) {
			if time.Now().After(end) {
				t.Fatalf("timed out: %s", what)
			}
		}
	}
	retry("membership", func() bool { return len(peersOf(t, servers[1].admin).Members) == 2 })
	var want []string
	for i, s := range servers {
		ca := filepath.Join(dirs[i], "data", hub.SelfSignedCertFile)
		lines := fmt.Sprintf("from-%d-a\nfrom-%d-b\n", i, i)
		want = append(want, fmt.Sprintf("from-%d-a", i), fmt.Sprintf("from-%d-b", i))
		// fed-b creates "events" from fed-a's gossiped definition: retry
		// until it has.
		retry("produce at "+s.admin, func() bool {
			code, _, _ := runHubStdin(t, t.TempDir(), lines, nil, "produce", "events", "--addr", quicOf(s), "--ca", ca)
			return code == 0
		})
	}
	slices.Sort(want)
	for i, s := range servers {
		ca := filepath.Join(dirs[i], "data", hub.SelfSignedCertFile)
		retry("the union at "+s.admin, func() bool {
			code, out, _ := runHubStdin(t, t.TempDir(), "", nil, "consume", "events", "--addr", quicOf(s), "--ca", ca)
			got := strings.Fields(out)
			slices.Sort(got)
			return code == 0 && slices.Equal(got, want)
		})
	}
	code, out, errOut := runHubStdin(t, t.TempDir(), "", nil, "peers", "--admin", servers[0].admin)
	if code != 0 || !strings.Contains(out, "fed-a (self)") || !strings.Contains(out, "fed-b") || !strings.Contains(out, "events") {
		t.Fatalf("hub peers: code %d\n%s\n%s", code, out, errOut)
	}
}

// TestPrintPeersGaps renders a hub's peers document: gaps are listed per
// origin shard, with what they cover and how the last one happened.
func TestPrintPeersGaps(t *testing.T) {
	tests := []struct {
		name    string
		p       hub.Peers
		want    []string
		notWant []string
	}{
		{
			name: "gaps listed",
			p: hub.Peers{Self: "late", Federated: true, Members: []hub.PeerInfo{{Name: "late", Self: true, State: "alive"}},
				Gaps: []hub.GapStatus{{Stream: "hist", Origin: "gone", Shard: 3, Gaps: 2, Sequences: 1500,
					Last: "1..1000 at 2026-01-02T03:04:05Z from relay: origin gone unreachable"}}},
			want: []string{"Gaps (records this hub will never hold", "hist origin gone/3: 2 gaps, 1500 sequences; last 1..1000 at 2026-01-02T03:04:05Z from relay: origin gone unreachable"},
		},
		{
			name:    "no gaps, no section",
			p:       hub.Peers{Self: "a", Federated: true, Members: []hub.PeerInfo{{Name: "a", Self: true, State: "alive"}}},
			notWant: []string{"Gaps"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			if err := printPeers(&out, tt.p, false); err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(out.String(), w) {
					t.Errorf("output has %q:\n%s", w, out.String())
				}
			}
		})
	}
}

// TestPeersNotJoinedYet: a hub started before the hub it joins says, in
// `hub peers`, that it is still retrying the join, not only that nothing
// replicates.
func TestPeersNotJoinedYet(t *testing.T) {
	dir := t.TempDir()
	nobody := testutil.FreePort(t) // no hub gossips there
	file := filepath.Join(dir, "hub.toml")
	writeFile(t, file, fmt.Sprintf(`[gossip]
bind = "127.0.0.1:%d"
label = "e2e-early"
profile = "local"
peer_insecure_skip_verify = true
join = ["127.0.0.1:%d"]
`, testutil.FreePort(t), nobody))
	s := startServer(t, filepath.Join(dir, "data"), "--config", file, "--name", "early")
	code, out, errOut := runHubStdin(t, t.TempDir(), "", nil, "peers", "--admin", s.admin)
	want := fmt.Sprintf("not joined yet: retrying join to 127.0.0.1:%d every 10s", nobody)
	if code != 0 || !strings.Contains(out, want) || strings.Contains(out, "no replication") {
		t.Fatalf("hub peers: code %d, want %q\n%s\n%s", code, want, out, errOut)
	}
}

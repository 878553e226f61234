package demo

import (
	"context"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgehub/edgehub/hub"
	"github.com/edgehub/edgehub/internal/testutil"
)

// TestConfigsLoad writes the three hub.toml files and loads them as hub
// serve does (strictly: a key the hub does not know fails), then checks
// what the demo relies on: the region joins nobody and the edges join it,
// readings stay local, the plugin outputs go to the region's tag, and no
// certificate setting stands in for the pinning.
func TestConfigsLoad(t *testing.T) {
	dir := t.TempDir()
	hubs := topology()
	if err := pickPorts(hubs); err != nil {
		t.Fatal(err)
	}
	region := hubs[0]
	key := filepath.Join(dir, "gossip.keys")
	if err := ensureGossipKey(key); err != nil {
		t.Fatal(err)
	}
	ps := pluginSettings{aggregate: filepath.Join(dir, "a.wasm"), alert: filepath.Join(dir, "b.wasm"), window: 5 * time.Second}
	for _, h := range hubs {
		file, err := h.writeConfig(filepath.Join(dir, h.name), key, region, ps)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := hub.LoadConfig(file)
		if err != nil {
			t.Fatalf("%s: %v", h.name, err)
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("%s: %v", h.name, err)
		}
		raw, _ := os.ReadFile(file)
		for _, bad := range []string{"peer_insecure_skip_verify", "peer_ca_file", "cert_file"} {
			if strings.Contains(string(raw), bad) {
				t.Errorf("%s sets %s", h.name, bad)
			}
		}
		if cfg.Gossip.SecretKeyFile != key || cfg.Listen.QUIC != h.quic || cfg.Listen.Admin != h.admin || cfg.Gossip.Bind != h.gossip {
			t.Errorf("%s: gossip %+v listen %+v", h.name, cfg.Gossip, cfg.Listen)
		}
		if h == region {
			if len(cfg.Gossip.Join) != 0 || len(cfg.Streams) != 0 || len(cfg.Plugins) != 0 || !slices.Equal(cfg.Hub.Tags, []string{"region"}) {
				t.Errorf("region: join %v, %d streams, %d plugins, tags %v", cfg.Gossip.Join, len(cfg.Streams), len(cfg.Plugins), cfg.Hub.Tags)
			}
			continue
		}
		if !slices.Equal(cfg.Gossip.Join, []string{region.gossip}) || len(cfg.Plugins) != 2 {
			t.Errorf("%s: join %v, %d plugins", h.name, cfg.Gossip.Join, len(cfg.Plugins))
		}
		policy := map[string]string{}
		for _, s := range cfg.Streams {
			policy[s.Name] = string(s.Replicate)
		}
		want := map[string]string{"readings": "local", "aggregates": "tag:region", "alerts": "tag:region"}
		for s, p := range want {
			if policy[s] != p {
				t.Errorf("%s: stream %s replicates %q, want %q", h.name, s, policy[s], p)
			}
		}
	}
}

// TestSensorsAlertEarly: every sensor crosses the alert threshold within
// its first few seconds, so a newcomer sees alerts at once (and TestDemo
// does not wait long), and stays below it otherwise.
func TestSensorsAlertEarly(t *testing.T) {
	f := newFleet([]*hubSpec{{site: "a"}, {site: "b"}}, 3, 10, t.TempDir())
	for _, s := range f {
		rng := rand.New(rand.NewPCG(1, 2))
		first := time.Duration(-1)
		for el := time.Duration(0); el < spikeEvery; el += 100 * time.Millisecond {
			v := s.value(el, rng)
			if v > alertThreshold && first < 0 {
				first = el
			}
			if v > alertThreshold && el > first+spikeLength {
				t.Errorf("%s: %.2f above the threshold at %s, after its spike at %s", s.id, v, el, first)
			}
		}
		if first < 0 || first > 10*time.Second {
			t.Errorf("%s: first above the threshold at %s, want within 10s", s.id, first)
		}
	}
	if n := f.overHTTP(); n != 2 {
		t.Errorf("%d sensors over HTTP, want one per edge", n)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Config)
		want string // "" = valid
	}{
		{name: "defaults", edit: func(*Config) {}},
		{name: "negative duration", edit: func(c *Config) { c.Duration = -time.Second }, want: "duration"},
		{name: "tiny interval", edit: func(c *Config) { c.Interval = time.Millisecond }, want: "interval"},
		{name: "tiny window", edit: func(c *Config) { c.Window = 10 * time.Millisecond }, want: "window"},
		{name: "no sensors", edit: func(c *Config) { c.Sensors = 0 }, want: "sensors"},
		{name: "rate too high", edit: func(c *Config) { c.Rate = 5000 }, want: "rate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.edit(&c)
			err := c.Validate()
			if (err == nil) != (tt.want == "") || (err != nil && !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("Validate() = %v, want %q", err, tt.want)
			}
		})
	}
}

// TestStartHubRetriesTakenPort: a port taken between pickPorts and the
// hub's start (here the admin port, held by the test) makes the hub fail;
// startHub gives it other ports and the hub comes up.
func TestStartHubRetriesTakenPort(t *testing.T) {
	exe := testutil.Build(t, "github.com/edgehub/edgehub/cmd/hub", nil)
	dir := t.TempDir()
	hubs := topology()[:1]
	if err := pickPorts(hubs); err != nil {
		t.Fatal(err)
	}
	h := hubs[0]
	l, err := net.Listen("tcp", h.admin)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	taken := h.admin
	key := filepath.Join(dir, "gossip.keys")
	if err := ensureGossipKey(key); err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 3 * time.Second}
	p, err := startHub(context.Background(), exe, h, hubs, filepath.Join(dir, h.name), key, pluginSettings{}, client)
	if err != nil {
		t.Fatal(err)
	}
	defer p.stop(stopGrace)
	if h.admin == taken {
		t.Fatalf("the hub kept the taken port %s", taken)
	}
	log, _ := os.ReadFile(p.logFile)
	if !strings.Contains(string(log), "address already in use") {
		t.Fatalf("the first start did not fail on the taken port; log:\n%s", log)
	}
	if err := p.stop(stopGrace); err != nil {
		t.Fatalf("stop: %v", err)
	}
}

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.RemoveBinaries()
	os.Exit(code)
}

package hub

import (
	"errors"
	"strings"
	"testing"

	"github.com/edgehub/edgehub/gossip"
)

// TestGossipRefusesUnencryptedNonLoopback: a hub whose gossip binds a
// non-loopback address without a key does not start unless
// gossip.allow_unencrypted says so, and the error names the keys.
func TestGossipRefusesUnencryptedNonLoopback(t *testing.T) {
	tests := []struct {
		name    string
		toml    string
		wantErr bool
	}{
		{name: "wildcard, no key", toml: "[gossip]\nbind = \"0.0.0.0:0\"\n", wantErr: true},
		{name: "empty host, no key", toml: "[gossip]\nbind = \":0\"\n", wantErr: true},
		{name: "host name, no key", toml: "[gossip]\nbind = \"hub-a.example:7946\"\n", wantErr: true},
		{name: "wildcard, explicitly unencrypted", toml: "[gossip]\nbind = \"0.0.0.0:0\"\nallow_unencrypted = true\n"},
		{name: "loopback, no key", toml: "[gossip]\nbind = \"127.0.0.1:0\"\n"},
		{name: "localhost, no key", toml: "[gossip]\nbind = \"localhost:0\"\n"},
		{name: "ipv6 loopback, no key", toml: "[gossip]\nbind = \"[::1]:0\"\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig("hub.toml", []byte(tt.toml))
			if !tt.wantErr {
				if err != nil {
					t.Fatalf("ParseConfig: %v", err)
				}
				return
			}
			if !errors.Is(err, gossip.ErrUnencrypted) {
				t.Fatalf("ParseConfig = %v, want gossip.ErrUnencrypted", err)
			}
			for _, want := range []string{"hub.toml:2: gossip.bind:", "gossip.secret_key_file", "gossip.allow_unencrypted = true"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
		})
	}

	t.Run("allow_unencrypted without bind", func(t *testing.T) {
		_, err := ParseConfig("hub.toml", []byte("[gossip]\nallow_unencrypted = true\n"))
		if err == nil || !strings.Contains(err.Error(), "gossip.allow_unencrypted: needs bind") {
			t.Fatalf("ParseConfig = %v, want gossip.allow_unencrypted: needs bind", err)
		}
	})

	// hub.New validates too (a Config built in Go, not loaded from a file):
	// nothing may be bound or created before the refusal.
	t.Run("hub.New", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.Gossip = GossipConfig{Bind: "0.0.0.0:0", Profile: gossip.ProfileLocal}
		h, err := New(cfg)
		if err == nil {
			h.Close()
			t.Fatal("New started a hub gossiping unencrypted on 0.0.0.0")
		}
		if !errors.Is(err, gossip.ErrUnencrypted) || !strings.Contains(err.Error(), "gossip.allow_unencrypted") {
			t.Fatalf("New = %v, want gossip.ErrUnencrypted naming gossip.allow_unencrypted", err)
		}

		cfg.Gossip.AllowUnencrypted = true
		h, _ = startHub(t, cfg)
		if h.federation == nil {
			t.Fatal("explicitly unencrypted gossip did not start federation")
		}
	})
}

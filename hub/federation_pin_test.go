package hub

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgehub/edgehub/gossip"
	"github.com/edgehub/edgehub/internal/testutil"
	"github.com/edgehub/edgehub/quic"
)

// writeGossipKey writes a fresh gossip key file.
func writeGossipKey(tb testing.TB) string {
	tb.Helper()
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		tb.Fatal(err)
	}
	path := filepath.Join(tb.TempDir(), "fed.keys")
	if err := os.WriteFile(path, []byte(base64.StdEncoding.EncodeToString(k)+"\n"), 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}

// pinnedConfig is a fedNet hub that verifies its peers with no CA and no
// peer_insecure_skip_verify: only the shared gossip key.
func (n *fedNet) pinnedConfig(name, dir, keyFile string) Config {
	c := n.config(name, dir)
	c.Gossip.PeerInsecure = false
	c.Gossip.SecretKeyFile = keyFile
	return c
}

// memberPins returns the pins h's gossip holds for peer.
func memberPins(h *Hub, peer string) [][32]byte {
	m, ok := h.federation.gossip.Member(peer)
	if !ok {
		return nil
	}
	return m.Meta.CertPins
}

// TestFederationPinnedCertificates is issue 10's done-when: three hubs
// configured with only a shared key and a join address (each with its own
// self-signed certificate, no CA, no insecure skip) replicate, each
// verifying its peers' certificates against the pins their gossip carries.
func TestFederationPinnedCertificates(t *testing.T) {
	if testing.Short() {
		t.Skip("three federated hubs")
	}
	key := writeGossipKey(t)
	n := newFedNet(t)
	var hubs []*Hub
	for _, name := range []string{"hub-a", "hub-b", "hub-c"} {
		h, _ := startHub(t, n.pinnedConfig(name, "", key))
		hubs = append(hubs, h)
	}
	createReplicated(t, hubs[0], "events", 2, "all")
	for _, h := range hubs {
		produceAt(t, h, "events", 300, 16)
	}
	converged(t, "events", 900, hubs...)
	for _, h := range hubs {
		if !h.federation.members.g.Encrypted() {
			t.Fatalf("%s: gossip not encrypted", h.cfg.Hub.Name)
		}
		for _, p := range hubs {
			if p == h {
				continue
			}
			want := hubPin(t, p)
			if got := memberPins(h, p.cfg.Hub.Name); len(got) != 1 || got[0] != want {
				t.Fatalf("%s holds pins %x for %s, want [%x]", h.cfg.Hub.Name, got, p.cfg.Hub.Name, want)
			}
			if e := peerTLSError(t, h, p.cfg.Hub.Name); e != "" {
				t.Fatalf("%s shows a TLS problem with %s: %s", h.cfg.Hub.Name, p.cfg.Hub.Name, e)
			}
		}
		if got := tlsErrors(t, h, tlsPeerUntrusted); got != 0 {
			t.Fatalf("%s counted %v untrusted certificates", h.cfg.Hub.Name, got)
		}
	}
}

// TestFederationPinRefusals: a hub with another gossip key never joins, and
// a member serving a certificate other than the one its gossip announces is
// not pulled from; a hub without a gossip key pins nothing and publishes no
// pin (unauthenticated gossip could be forged), so it verifies as before.
func TestFederationPinRefusals(t *testing.T) {
	if testing.Short() {
		t.Skip("federated hubs")
	}
	key := writeGossipKey(t)
	n := newFedNet(t)
	a, _ := startHub(t, n.pinnedConfig("hub-a", "", key))

	// An impostor that holds the key but announces a pin that is not its
	// certificate's: pulls from it fail, and say why.
	ce := n.pinnedConfig("hub-e", "", key)
	tune := ce.Gossip.tune
	ce.Gossip.tune = func(g *gossip.Config) {
		tune(g)
		g.Meta.CertPins = [][32]byte{{0xde, 0xad}}
	}
	e, _ := startHub(t, ce)
	createReplicated(t, e, "eevents", 1, "all")
	produceAt(t, e, "eevents", 10, 16)
	testutil.Eventually(t, "hub-a to refuse hub-e's certificate", func() bool {
		return strings.Contains(peerTLSError(t, a, "hub-e"), "other than the one its gossip metadata announces") &&
			tlsErrors(t, a, tlsPeerUntrusted) > 0
	})
	if got := count(originContent(t, a.Store(), "hub-a", "eevents")); got != 0 {
		t.Fatalf("hub-a holds %d records pulled from a certificate that does not match its pin", got)
	}

	// Another key: memberlist cannot decrypt it, so it never becomes a
	// member and nobody pulls from or pins it.
	cd := n.pinnedConfig("hub-d", "", writeGossipKey(t))
	cd.Gossip.Join = nil
	d, _ := startHub(t, cd)
	n.mu.Lock()
	addrA := n.addrs["hub-a"]
	n.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := d.federation.gossip.Join(ctx, addrA); err == nil {
		t.Fatal("a hub with another gossip key joined")
	}
	if _, ok := a.federation.gossip.Member("hub-d"); ok {
		t.Fatal("hub-a lists hub-d, whose gossip key differs")
	}

	// No key: nothing published, nothing pinned.
	nk := newFedNet(t)
	x, _ := startHub(t, nk.pinnedConfig("hub-x", "", ""))
	y, _ := startHub(t, nk.pinnedConfig("hub-y", "", ""))
	createReplicated(t, x, "xevents", 1, "all")
	produceAt(t, x, "xevents", 10, 16)
	testutil.Eventually(t, "hub-y to find hub-x's certificate untrusted", func() bool {
		return strings.Contains(peerTLSError(t, y, "hub-x"), "gossip.secret_key_file")
	})
	if p := memberPins(y, "hub-x"); len(p) != 0 {
		t.Fatalf("hub-x published pins %x over unencrypted gossip", p)
	}
	if got := count(originContent(t, y.Store(), "hub-y", "xevents")); got != 0 {
		t.Fatalf("hub-y holds %d records from an unverified peer", got)
	}
}

// TestFederationPinRotation: a hub that restarts with a new certificate
// (new key, so a new pin) gossips the new pin, and its peers pull from it
// again, verified; peers hold the new pin only.
func TestFederationPinRotation(t *testing.T) {
	if testing.Short() {
		t.Skip("federated hubs")
	}
	key := writeGossipKey(t)
	n := newFedNet(t)
	a, _ := startHub(t, n.pinnedConfig("hub-a", "", key))
	dirB := t.TempDir()
	cb := n.pinnedConfig("hub-b", dirB, key)
	b, stopB := startStoppable(t, cb)
	createReplicated(t, b, "events", 1, "all")
	produceAt(t, b, "events", 100, 16)
	converged(t, "events", 100, b, a)
	old := hubPin(t, b)
	n.mu.Lock()
	gossipB := n.addrs["hub-b"]
	n.mu.Unlock()
	stopB()

	// Renew: a new self-signed certificate with a new key.
	for _, f := range []string{SelfSignedCertFile, "tls/key.pem"} {
		if err := os.Remove(filepath.Join(dirB, f)); err != nil {
			t.Fatal(err)
		}
	}
	cb = n.pinnedConfig("hub-b", dirB, key)
	cb.Gossip.Bind = gossipB // the same member, back at its address
	b2, _ := startHub(t, cb)
	renewed := hubPin(t, b2)
	if renewed == old {
		t.Fatal("the renewed certificate has the old pin")
	}
	testutil.Eventually(t, "hub-a to learn hub-b's new pin", func() bool {
		p := memberPins(a, "hub-b")
		return len(p) == 1 && p[0] == renewed
	})
	produceAt(t, b2, "events", 100, 16)
	converged(t, "events", 200, b2, a)

}

// hubPin returns the pin of h's data plane certificate.
func hubPin(tb testing.TB, h *Hub) [32]byte {
	tb.Helper()
	c, err := h.serverTLS()
	if err != nil {
		tb.Fatal(err)
	}
	return certPin(c.Certificates[0].Leaf)
}

// TestFederationPinnedClientCerts: a hub that requires client certificates
// (client_ca_file of a CA none of its peers has a certificate from) accepts
// a federation member's self-signed certificate by its gossiped pin and
// names it by its hub name in [[auth.client]]: hub-a, granted, replicates;
// hub-c, whose certificate is as valid but not granted, is refused.
func TestFederationPinnedClientCerts(t *testing.T) {
	if testing.Short() {
		t.Skip("federated hubs")
	}
	key := writeGossipKey(t)
	n := newFedNet(t)
	cb := n.pinnedConfig("hub-b", "", key)
	cb.TLS.ClientCAFile, cb.TLS.RequireClientCert = newTestCA(t).file, true
	cb.Auth.Clients = []Grant{{Name: "hub-a", Consume: []string{"*"}}}
	b, _ := startHub(t, cb)
	createReplicated(t, b, "events", 2, "all")
	produceAt(t, b, "events", 200, 16)
	a, _ := startHub(t, n.pinnedConfig("hub-a", "", key))
	converged(t, "events", 200, b, a)

	c, _ := startHub(t, n.pinnedConfig("hub-c", "", key))
	testutil.Eventually(t, "hub-b to refuse hub-c by name", func() bool {
		for _, p := range getPeers(t, c).Pulls {
			if p.Peer == "hub-b" && strings.Contains(p.LastError, `"hub-c" may not consume`) {
				return true
			}
		}
		return false
	})
	if got := count(originContent(t, c.Store(), "hub-c", "events")); got != 0 {
		t.Fatalf("hub-c holds %d records hub-b did not grant it", got)
	}
}

// TestFederationPrunesGoneMembers: /v1/peers shows how long a member has
// been gone, and gossip.prune_after forgets it (and what it published).
func TestFederationPrunesGoneMembers(t *testing.T) {
	if testing.Short() {
		t.Skip("federated hubs")
	}
	n := newFedNet(t)
	ca := n.config("hub-a", "")
	prune := Duration(2 * time.Second)
	ca.Gossip.PruneAfter = &prune
	a, _ := startHub(t, ca)
	b, stopB := startStoppable(t, n.config("hub-b", ""))
	createReplicated(t, b, "events", 1, "all")
	converged(t, "events", 0, b, a)
	testutil.Eventually(t, "hub-a to see hub-b's vector", func() bool {
		_, ok := a.federation.gossip.Streams()["events"].Vectors["hub-b"]
		return ok
	})
	stopB()
	var down PeerInfo
	testutil.Eventually(t, "hub-a to show how long hub-b is gone", func() bool {
		for _, m := range getPeers(t, a).Members {
			if m.Name == "hub-b" && m.State != "alive" && m.DownSeconds > 0 && m.Since != "" {
				down = m
				return true
			}
		}
		return false
	})
	if _, err := time.Parse(time.RFC3339, down.Since); err != nil {
		t.Fatalf("since %q: %v", down.Since, err)
	}
	testutil.Eventually(t, "hub-a to prune hub-b", func() bool {
		for _, m := range getPeers(t, a).Members {
			if m.Name == "hub-b" {
				return false
			}
		}
		_, ok := a.federation.gossip.Streams()["events"].Vectors["hub-b"]
		return !ok
	})
}

// TestPeerVerifier covers the verifier's rules one by one: a pin match
// within the certificate's dates, the CA fallback, a mismatch, no pins
// without encrypted gossip, and the insecure skip.
func TestPeerVerifier(t *testing.T) {
	load := func(certPEM, keyPEM []byte) *x509.Certificate {
		c, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		return c.Leaf
	}
	selfSigned := func(valid time.Duration) *x509.Certificate {
		c, k, err := quic.SelfSigned([]string{"127.0.0.1"}, valid)
		if err != nil {
			t.Fatal(err)
		}
		return load(c, k)
	}
	self, expired := selfSigned(time.Hour), selfSigned(-30*time.Minute)
	ca := newTestCA(t)
	certFile, keyFile := ca.issue(t, "hub-x")
	cp, _ := os.ReadFile(certFile)
	kp, _ := os.ReadFile(keyFile)
	issued := load(cp, kp)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.cert)

	pins := map[string][][32]byte{"hub-x": {certPin(self), certPin(expired)}}
	tests := []struct {
		name     string
		pinning  bool
		insecure bool
		roots    *x509.CertPool
		cert     *x509.Certificate
		host     string
		want     string // "" accepted; else a substring of the error
	}{
		{name: "pinned", pinning: true, cert: self, host: "example.invalid"},
		{name: "pinned but expired", pinning: true, cert: expired, want: "expired"},
		{name: "not pinned, CA-issued", pinning: true, roots: pool, cert: issued, host: "127.0.0.1"},
		{name: "CA-issued, wrong host", pinning: true, roots: pool, cert: issued, host: "203.0.113.9", want: "not the"},
		{name: "pin mismatch, no CA", pinning: true, cert: selfSigned(time.Hour), want: "not the"},
		{name: "unencrypted gossip: pins ignored", pinning: false, cert: self, host: "127.0.0.1", want: "unknown authority"},
		{name: "insecure", insecure: true, cert: selfSigned(time.Hour)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := &peerVerifier{memberPins: func(p string) [][32]byte { return pins[p] }, pinning: tt.pinning,
				insecure: tt.insecure, roots: tt.roots, now: time.Now}
			err := v.verify("hub-x", tt.host, []*x509.Certificate{tt.cert})
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("got %v, want an error with %q", err, tt.want)
			}
		})
	}
}

package hub

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	crand "crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgehub/edgehub/internal/testutil"
)

// testCA is a certificate authority for tests: hub certificates it issues
// serve and authenticate as clients, as a real federation's would.
type testCA struct {
	file      string // PEM of the CA certificate
	cert, key []byte
}

func newTestCA(tb testing.TB) testCA {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	// A subject of its own: a client's choice of certificate matches the
	// CA names a server sends, and every hub's self-signed certificate is
	// named "edgehub self-signed".
	serial := big.NewInt(time.Now().UnixNano())
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "test CA " + serial.String()},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(crand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	cert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	file := filepath.Join(tb.TempDir(), "ca.pem")
	if err := os.WriteFile(file, cert, 0o644); err != nil {
		tb.Fatal(err)
	}
	return testCA{file: file, cert: cert, key: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})}
}

// issue writes a certificate for cn, valid for loopback and localhost, with
// both server and client authentication usages; it returns the file paths.
func (ca testCA) issue(tb testing.TB, cn string) (certFile, keyFile string) {
	tb.Helper()
	pair, err := tls.X509KeyPair(ca.cert, ca.key)
	if err != nil {
		tb.Fatal(err)
	}
	caX, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		tb.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(crand.Reader, tmpl, caX, &key.PublicKey, pair.PrivateKey)
	if err != nil {
		tb.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	dir := tb.TempDir()
	certFile, keyFile = filepath.Join(dir, cn+".pem"), filepath.Join(dir, cn+".key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		tb.Fatal(err)
	}
	return certFile, keyFile
}

// TestFederationPullFromPeerRequiringClientCert: hub-b requires client
// certificates and grants consume only to the identity "hub-a"; hub-a must
// present its own certificate when it pulls, or it replicates nothing.
// Before peerTLS set a client certificate, hub-a's pulls failed the
// handshake and the stream never arrived.
func TestFederationPullFromPeerRequiringClientCert(t *testing.T) {
	if testing.Short() {
		t.Skip("federation test")
	}
	ca := newTestCA(t)
	n := newFedNet(t)

	cb := n.config("hub-b", "")
	cb.TLS.CertFile, cb.TLS.KeyFile = ca.issue(t, "hub-b")
	cb.TLS.ClientCAFile, cb.TLS.RequireClientCert = ca.file, true
	cb.Auth.Clients = []Grant{{Name: "hub-a", Consume: []string{"*"}}}
	cb.Gossip.PeerInsecure, cb.Gossip.PeerCAFile = false, ca.file
	b, _ := startHub(t, cb)
	createReplicated(t, b, "events", 2, "all")
	produceAt(t, b, "events", 300, 32)

	ca2 := n.config("hub-a", "")
	ca2.TLS.CertFile, ca2.TLS.KeyFile = ca.issue(t, "hub-a")
	ca2.Gossip.PeerInsecure, ca2.Gossip.PeerCAFile = false, ca.file
	a, _ := startHub(t, ca2)

	converged(t, "events", 300, b, a)
}

// TestFederationPeerWithOptionalClientCerts: a peer that verifies client
// certificates if given (client_ca_file of another CA, not required) and
// grants pulls by token must still be pullable by a hub whose own
// certificate that CA did not issue: the hub offers no certificate rather
// than one the peer would reject in the handshake.
func TestFederationPeerWithOptionalClientCerts(t *testing.T) {
	if testing.Short() {
		t.Skip("federation test")
	}
	const token = "peer-token-0123456789"
	n := newFedNet(t)
	cc := n.config("hub-c", "")
	cc.TLS.ClientCAFile = newTestCA(t).file
	cc.Auth.Tokens = []TokenGrant{{Name: "peers", Token: token, Consume: []string{"*"}}}
	c, _ := startHub(t, cc)
	createReplicated(t, c, "events", 1, "all")
	produceAt(t, c, "events", 200, 16)

	cd := n.config("hub-d", "") // self-signed certificate, token for pulls
	cd.Gossip.PeerToken = token
	d, _ := startHub(t, cd)
	converged(t, "events", 200, c, d)
}

// tlsErrors sums edgehub_federation_tls_errors_total{reason} at h.
func tlsErrors(tb testing.TB, h *Hub, reason string) float64 {
	tb.Helper()
	mfs, err := h.metrics.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	var n float64
	for _, mf := range mfs {
		if mf.GetName() != "edgehub_federation_tls_errors_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					n += m.GetCounter().GetValue()
				}
			}
		}
	}
	return n
}

// peerTLSError returns the tls_error /v1/peers at h shows for peer.
func peerTLSError(tb testing.TB, h *Hub, peer string) string {
	tb.Helper()
	for _, m := range getPeers(tb, h).Members {
		if m.Name == peer {
			return m.TLSError
		}
	}
	return ""
}

// TestFederationTLSFailureIsVisible: hubs started from fresh configs each
// have their own self-signed certificate, which their peers do not trust
// (issue 10). Replication cannot work, but it must not fail silently: the
// pulling hub shows the problem with its fix in /v1/peers and counts it.
// And a peer that refuses our certificate is named as such.
func TestFederationTLSFailureIsVisible(t *testing.T) {
	if testing.Short() {
		t.Skip("federation test")
	}
	n := newFedNet(t)
	cx := n.config("hub-x", "")
	cx.Gossip.PeerInsecure = false
	x, _ := startHub(t, cx)
	createReplicated(t, x, "events", 1, "all")
	produceAt(t, x, "events", 10, 16)
	cy := n.config("hub-y", "")
	cy.Gossip.PeerInsecure = false // verify against the system roots: x's self-signed cert fails
	y, _ := startHub(t, cy)
	testutil.Eventually(t, "hub-y to show hub-x's certificate problem", func() bool {
		return strings.Contains(peerTLSError(t, y, "hub-x"), "gossip.peer_ca_file") && tlsErrors(t, y, tlsPeerUntrusted) > 0
	})
	if got := count(originContent(t, y.Store(), "hub-y", "events")); got != 0 {
		t.Fatalf("hub-y holds %d records pulled through an untrusted certificate", got)
	}

	// A peer requiring client certificates from a CA that did not issue
	// ours: a puller that trusts the peer says the peer refused its
	// certificate.
	cz := n.config("hub-z", "")
	cz.TLS.ClientCAFile, cz.TLS.RequireClientCert = newTestCA(t).file, true
	cz.Auth.Clients = []Grant{{Name: "someone-else", Consume: []string{"*"}}}
	z, _ := startHub(t, cz)
	createReplicated(t, z, "zevents", 1, "all")
	produceAt(t, z, "zevents", 10, 16)
	w, _ := startHub(t, n.config("hub-w", "")) // trusts its peers (peer_insecure_skip_verify)
	testutil.Eventually(t, "hub-w to show that hub-z refused its certificate", func() bool {
		return strings.Contains(peerTLSError(t, w, "hub-z"), "refused this hub's client certificate") && tlsErrors(t, w, tlsOursRefused) > 0
	})
	if got := count(originContent(t, w.Store(), "hub-w", "zevents")); got != 0 {
		t.Fatalf("hub-w holds %d records from a hub that refused it", got)
	}
	// hub-w pulls from hub-x fine, and shows no TLS problem with it.
	converged(t, "events", 10, x, w)
	if p := peerTLSError(t, w, "hub-x"); p != "" {
		t.Fatalf("hub-w shows a TLS problem with hub-x after pulling from it: %s", p)
	}
}

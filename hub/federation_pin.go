package hub

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync/atomic"
	"time"

	"github.com/edgehub/edgehub/gossip"
	"github.com/edgehub/edgehub/internal/replicate"
)

// Certificate pinning through gossip (docs/federation.md, "Security").
//
// Each hub publishes in its gossip metadata the SHA-256 of its data plane
// certificate's SubjectPublicKeyInfo. With an encrypted federation only a
// holder of the gossip key can say what a member's pin is, so a peer whose
// certificate matches the pin its name gossips is that member, with no CA
// and no copy of its certificate. The public key (not the whole
// certificate) is pinned, as HPKP and DANE's SPKI selector do: a
// certificate renewed with the same key (certbot --reuse-key, a CA
// re-issuing with new dates) keeps its pin, so only a new key needs the
// new pin to reach the peers.

// certPin returns the pin of c: the SHA-256 of its SubjectPublicKeyInfo.
func certPin(c *x509.Certificate) [32]byte { return sha256.Sum256(c.RawSubjectPublicKeyInfo) }

// pinString formats a pin as it appears in logs and errors: "sha256/" and
// the first 16 hex digits, enough to tell certificates apart.
func pinString(p [32]byte) string { return "sha256/" + hex.EncodeToString(p[:8]) }

// pinMismatchError is a peer's certificate whose pin is not one its name
// gossips.
type pinMismatchError struct {
	peer  string
	got   [32]byte
	want  [][32]byte
	caErr error // why the certificate failed verification by CA too
}

func (e *pinMismatchError) Error() string {
	want := make([]string, len(e.want))
	for i, p := range e.want {
		want[i] = pinString(p)
	}
	return fmt.Sprintf("hub %s's certificate has public key pin %s, not the %v it announces in gossip (and its "+
		"chain does not verify: %v)", e.peer, pinString(e.got), want, e.caErr)
}

func (e *pinMismatchError) Unwrap() error { return e.caErr }

// peerVerifier checks peers' data plane certificates for pulls: a
// certificate is trusted if its pin is one the peer's gossip metadata
// carries (only with encrypted gossip), or if it chains to peer_ca_file (the
// system roots without one) and names the dialled host, or always with
// peer_insecure_skip_verify.
type peerVerifier struct {
	// memberPins returns the pins a member's gossip metadata carries.
	memberPins func(peer string) [][32]byte
	pinning    bool           // gossip is encrypted: pins are authenticated
	insecure   bool           // peer_insecure_skip_verify
	roots      *x509.CertPool // peer_ca_file; nil: the system roots
	own        *tls.Certificate
	now        func() time.Time
}

// pins returns the pins peer publishes, none without encrypted gossip.
func (v *peerVerifier) pins(peer string) [][32]byte {
	if !v.pinning {
		return nil
	}
	return v.memberPins(peer)
}

// gossipPins returns g's view of a member's pins.
func gossipPins(g *gossip.Gossip) func(string) [][32]byte {
	return func(peer string) [][32]byte {
		m, ok := g.Member(peer)
		if !ok {
			return nil
		}
		return m.Meta.CertPins
	}
}

// tlsFor returns base for dialling peer, with verification bound to the
// peer's name: crypto/tls's own verification is replaced (it cannot know
// the pins) by verify, which does the same chain check when no pin
// matches.
func (v *peerVerifier) tlsFor(base *tls.Config, peer replicate.Peer) *tls.Config {
	c := base.Clone()
	host, _, err := net.SplitHostPort(peer.Addr)
	if err != nil {
		host = peer.Addr
	}
	if c.ServerName == "" {
		c.ServerName = host
	}
	c.InsecureSkipVerify = true
	if len(v.pins(peer.Name)) > 0 && v.own != nil {
		// A peer we pin pins us too (it holds the key): it accepts our
		// certificate whatever CAs it lists (clientPins).
		own := v.own
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return own, nil }
	}
	name := c.ServerName
	c.VerifyConnection = func(cs tls.ConnectionState) error { return v.verify(peer.Name, name, cs.PeerCertificates) }
	return c
}

// verify checks the chain a peer presented (leaf first).
func (v *peerVerifier) verify(peer, serverName string, certs []*x509.Certificate) error {
	if v.insecure {
		return nil
	}
	if len(certs) == 0 {
		return errors.New("tls: peer presented no certificate")
	}
	leaf := certs[0]
	now := v.now()
	pins := v.pins(peer)
	got := certPin(leaf)
	if slices.Contains(pins, got) {
		// The pin vouches for the key; the dates still bound the
		// certificate's life, as a CA-checked one's would.
		if now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
			return &tls.CertificateVerificationError{UnverifiedCertificates: certs,
				Err: x509.CertificateInvalidError{Cert: leaf, Reason: x509.Expired}}
		}
		return nil
	}
	opts := x509.VerifyOptions{Roots: v.roots, CurrentTime: now, DNSName: serverName, Intermediates: x509.NewCertPool()}
	for _, c := range certs[1:] {
		opts.Intermediates.AddCert(c)
	}
	if _, err := leaf.Verify(opts); err != nil {
		if len(pins) > 0 {
			return &pinMismatchError{peer: peer, got: got, want: pins, caErr: err}
		}
		return &tls.CertificateVerificationError{UnverifiedCertificates: certs, Err: err}
	}
	return nil
}

// clientPins lets the data plane accept, where it asks for client
// certificates (client_ca_file), the certificates of federation members
// whose pins their encrypted gossip announces, as well as those issued by
// the client CAs. crypto/tls cannot know the pins, so it only requests the
// certificate and verify does both checks; a member's certificate names
// the principal by the member's hub name (see authorizer.authenticate).
type clientPins struct {
	roots *x509.CertPool
	now   func() time.Time
	g     atomic.Pointer[gossip.Gossip] // set when the federation is built
}

// pinClientCerts switches conf to verifying client certificates with
// pins as well, if the hub federates with encrypted gossip and asks for
// client certificates; it returns nil otherwise.
func (h *Hub) pinClientCerts(conf *tls.Config) *clientPins {
	gc := h.cfg.Gossip
	if !gc.Enabled() || gc.SecretKeyFile == "" || conf.ClientCAs == nil {
		return nil
	}
	cp := &clientPins{roots: conf.ClientCAs, now: time.Now}
	// ClientCAs stays set: its names are still sent as the acceptable
	// CAs, and pinned peers offer their certificate regardless.
	if conf.ClientAuth == tls.RequireAndVerifyClientCert {
		conf.ClientAuth = tls.RequireAnyClientCert
	} else {
		conf.ClientAuth = tls.RequestClientCert
	}
	conf.VerifyConnection = cp.verify
	return cp
}

// member returns the alive member whose gossiped pins include leaf's (the
// first by name if several hubs share a key pair).
func (c *clientPins) member(leaf *x509.Certificate) (string, bool) {
	if c == nil {
		return "", false
	}
	g := c.g.Load()
	if g == nil {
		return "", false
	}
	pin := certPin(leaf)
	for _, m := range g.Members() {
		if !m.Self && m.State == gossip.StateAlive && slices.Contains(m.Meta.CertPins, pin) {
			return m.Name, true
		}
	}
	return "", false
}

// chainVerifies reports whether certs chain to the client CAs, as
// crypto/tls would have checked them.
func (c *clientPins) chainVerifies(certs []*x509.Certificate) error {
	opts := x509.VerifyOptions{Roots: c.roots, CurrentTime: c.now(), Intermediates: x509.NewCertPool(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	for _, x := range certs[1:] {
		opts.Intermediates.AddCert(x)
	}
	_, err := certs[0].Verify(opts)
	return err
}

// verify is the data plane's VerifyConnection: a client certificate, if
// any, must be a member's pinned one (within its dates) or chain to the
// client CAs. Whether one is required crypto/tls enforced already.
func (c *clientPins) verify(cs tls.ConnectionState) error {
	certs := cs.PeerCertificates
	if len(certs) == 0 {
		return nil
	}
	if _, ok := c.member(certs[0]); ok {
		if now := c.now(); now.Before(certs[0].NotBefore) || now.After(certs[0].NotAfter) {
			return &tls.CertificateVerificationError{UnverifiedCertificates: certs,
				Err: x509.CertificateInvalidError{Cert: certs[0], Reason: x509.Expired}}
		}
		return nil
	}
	if err := c.chainVerifies(certs); err != nil {
		return &tls.CertificateVerificationError{UnverifiedCertificates: certs, Err: err}
	}
	return nil
}

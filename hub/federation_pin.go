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
	g        *gossip.Gossip
	pinning  bool           // gossip is encrypted: pins are authenticated
	insecure bool           // peer_insecure_skip_verify
	roots    *x509.CertPool // peer_ca_file; nil: the system roots
	now      func() time.Time
}

// pins returns the pins peer publishes, none without encrypted gossip.
func (v *peerVerifier) pins(peer string) [][32]byte {
	if !v.pinning {
		return nil
	}
	m, ok := v.g.Member(peer)
	if !ok {
		return nil
	}
	return m.Meta.CertPins
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

package hub

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgehub/edgehub/internal/replicate"
)

// tlsWatchLogEvery rate-limits the TLS hint logged per peer: pull tasks
// retry every few seconds each, and one line a minute is enough to act on.
const tlsWatchLogEvery = time.Minute

// TLS failure reasons (label "reason" of edgehub_federation_tls_errors_total).
const (
	tlsPeerUntrusted = "peer_certificate_untrusted" // we do not trust the peer's certificate
	tlsOursRefused   = "certificate_refused"        // the peer refused ours (or wanted one)
)

// tlsWatch notices pulls failing on TLS, the usual state of a federation
// started from fresh configs (every hub has its own self-signed
// certificate, which its peers do not trust): without it, the only trace
// is a generic "pull failed; retrying" per pull task. It logs an error
// with the fix, at most once a minute per peer, counts the failures, and
// keeps the last one per peer for /v1/peers until a pull succeeds.
type tlsWatch struct {
	logger *slog.Logger
	errs   *prometheus.CounterVec

	mu    sync.Mutex
	peers map[string]*tlsProblem
}

type tlsProblem struct {
	msg    string
	logged time.Time
}

func newTLSWatch(logger *slog.Logger, reg prometheus.Registerer) *tlsWatch {
	w := &tlsWatch{logger: logger, peers: map[string]*tlsProblem{},
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgehub_federation_tls_errors_total",
			Help: "Pulls from a peer that failed on TLS, by peer and reason (peer_certificate_untrusted, certificate_refused).",
		}, []string{"peer", "reason"})}
	reg.MustRegister(w.errs)
	return w
}

// classifyTLS returns the reason and a hint if err is a TLS failure of a
// pull from peer, else "".
func (w *tlsWatch) classifyTLS(peer string, err error) (reason, hint string) {
	var (
		verr *tls.CertificateVerificationError
		uerr x509.UnknownAuthorityError
		herr x509.HostnameError
		perr *pinMismatchError
	)
	msg := err.Error()
	switch {
	case errors.As(err, &perr):
		return tlsPeerUntrusted, fmt.Sprintf("hub %s serves a certificate other than the one its gossip metadata announces: "+
			"another process answers at its address, or it restarted with a new certificate whose pin has not reached "+
			"this hub yet (docs/federation.md, \"Security\")", peer)
	case errors.As(err, &herr):
		return tlsPeerUntrusted, fmt.Sprintf("hub %s's data plane certificate does not name the address this hub dials (%s): "+
			"add the address to [tls] hosts on %s (or its certificate), or set gossip.quic_advertise there", peer, herr.Host, peer)
	case errors.As(err, &verr), errors.As(err, &uerr), strings.Contains(msg, "tls: failed to verify certificate"):
		return tlsPeerUntrusted, fmt.Sprintf("hub %s's data plane certificate is not trusted here: give both hubs the same "+
			"gossip.secret_key_file, so each pins the other's certificate from gossip, or put its CA (for a self-signed "+
			"hub, a copy of its <data_dir>/tls/cert.pem) in gossip.peer_ca_file (docs/federation.md, \"Security\")", peer)
	// quic-go reports an alert the peer sent as "CRYPTO_ERROR 0x1xx
	// (remote): tls: ..."; the quic package does not export its type, and
	// hub does not import quic-go.
	case strings.Contains(msg, "CRYPTO_ERROR") && strings.Contains(msg, "(remote)") &&
		(strings.Contains(msg, "certificate") || strings.Contains(msg, "unknown ca")):
		return tlsOursRefused, fmt.Sprintf("hub %s refused this hub's client certificate: its [tls] client_ca_file must hold "+
			"this hub's CA (or a copy of this hub's <data_dir>/tls/cert.pem), and its [[auth.client]] must grant the "+
			"certificate's name consume on the replicated streams (docs/federation.md, \"Security\")", peer)
	}
	return "", ""
}

// observe records the outcome of a pull step from peer: err nil means the
// peer served us, which clears its problem.
func (w *tlsWatch) observe(peer string, err error) {
	if err == nil {
		w.mu.Lock()
		delete(w.peers, peer)
		w.mu.Unlock()
		return
	}
	reason, hint := w.classifyTLS(peer, err)
	if reason == "" {
		return
	}
	w.errs.WithLabelValues(peer, reason).Inc()
	now := time.Now()
	w.mu.Lock()
	p := w.peers[peer]
	if p == nil {
		p = &tlsProblem{}
		w.peers[peer] = p
	}
	p.msg = hint + ": " + err.Error()
	log := now.Sub(p.logged) >= tlsWatchLogEvery
	if log {
		p.logged = now
	}
	w.mu.Unlock()
	if log {
		w.logger.Error("federation: cannot replicate from a peer: TLS failed (logged once a minute per peer)",
			"peer", peer, "reason", reason, "hint", hint, "err", err)
	}
}

// problem returns the last TLS problem with peer, "" if none.
func (w *tlsWatch) problem(peer string) string {
	if w == nil {
		return ""
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if p := w.peers[peer]; p != nil {
		return p.msg
	}
	return ""
}

// tlsWatchTransport reports pull outcomes to a tlsWatch.
type tlsWatchTransport struct {
	replicate.Transport
	w *tlsWatch
}

func (t *tlsWatchTransport) Pull(ctx context.Context, peer replicate.Peer, req replicate.PullRequest) (replicate.PullStream, error) {
	ps, err := t.Transport.Pull(ctx, peer, req)
	if err != nil {
		if ctx.Err() == nil {
			t.w.observe(peer.Name, err)
		}
		return nil, err
	}
	return &tlsWatchStream{PullStream: ps, w: t.w, peer: peer.Name}, nil
}

type tlsWatchStream struct {
	replicate.PullStream
	w    *tlsWatch
	peer string
	ok   atomic.Bool // a message arrived: the peer's problem is cleared
}

func (s *tlsWatchStream) Recv(ctx context.Context) (replicate.Msg, error) {
	m, err := s.PullStream.Recv(ctx)
	switch {
	case err == nil && !s.ok.Load():
		s.ok.Store(true)
		s.w.observe(s.peer, nil)
	case err != nil && ctx.Err() == nil:
		s.w.observe(s.peer, err)
	}
	return m, err
}

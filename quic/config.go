package quic

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"
)

// Principal is the authenticated identity behind a stream.
type Principal struct {
	// Name is the token's or certificate's identity; "" for anonymous.
	Name string
	// Method is "token", "mtls" or "anonymous".
	Method string
}

// AuthInfo is what a client presented on a stream.
type AuthInfo struct {
	// Token is the bearer token of the stream's OPEN frame ("" if none).
	Token string
	// Certificates is the client's verified certificate chain, leaf first
	// (nil without mTLS): verified by crypto/tls against ClientCAs, or, if
	// the server's TLS config verifies client certificates itself
	// (ClientAuth RequestClientCert or RequireAnyClientCert with
	// VerifyConnection set, which must then refuse what it does not
	// trust), the chain the client presented and VerifyConnection
	// accepted.
	Certificates []*x509.Certificate
	RemoteAddr   net.Addr
}

// Authenticator decides who a stream's client is. It must be safe for
// concurrent use and must not block for long: it runs before every stream's
// operation. Returning an error refuses the stream; an *Error keeps its code,
// anything else becomes CodeUnauthenticated.
type Authenticator func(ctx context.Context, info AuthInfo) (Principal, error)

// Budget is a pool of bytes. TryAcquire takes n if it is free and reports
// whether it did; Release returns n. It must be safe for concurrent use.
type Budget interface {
	TryAcquire(n int64) bool
	Release(n int64)
}

// Config configures a Server. Fill defaults with DefaultConfig; Validate
// checks it.
type Config struct {
	// Addr is the UDP address to listen on; port 0 picks one.
	Addr string
	// TLS holds the certificate (and ClientCAs for mTLS). The server forces
	// TLS 1.3 and the edgehub ALPN on a copy.
	TLS *tls.Config
	// Authenticate runs for every stream; nil admits everyone as anonymous.
	Authenticate Authenticator
	// MaxConnections refuses handshakes beyond this many open connections.
	MaxConnections int
	// MaxStreamsPerConn bounds concurrent operations per connection (QUIC
	// stream credit).
	MaxStreamsPerConn int
	// MaxFrameBytes bounds a frame's payload; larger frames fail the stream.
	MaxFrameBytes int
	// HandshakeTimeout bounds the QUIC+TLS handshake and the wait for a
	// stream's OPEN frame.
	HandshakeTimeout time.Duration
	// IdleTimeout closes connections without traffic for this long.
	IdleTimeout time.Duration
	// FrameTimeout bounds a frame once begun: a stream whose peer sends
	// part of a frame and not the rest within it, or whose peer's flow
	// control takes no frame the server writes within it, fails with
	// CodeLimit. Between frames a stream may idle. 0: no bound.
	FrameTimeout time.Duration
	// Budget, when set, is charged for OPEN frames above 1 KiB while they
	// are read (before authentication); a stream it cannot cover is
	// refused with CodeLimit. Handlers charge it for what they hold.
	Budget Budget
	// RefusalLogInterval: a refusal reason is logged at most once per
	// interval, with a count of the others (default 10s).
	RefusalLogInterval time.Duration
	// ValidateAddressAbove makes clients prove their address with a Retry
	// round trip when at least this many other handshakes are in progress
	// (amplification and spoofing defence under load). 0 always validates.
	ValidateAddressAbove int
	// Allow0RTT accepts early data on resumed connections. Replays are
	// harmless for idempotent produce sessions; handlers that are not
	// replay-safe wait for Conn.HandshakeComplete.
	Allow0RTT bool
	// EnableDatagrams allows fire-and-forget QUIC datagrams.
	EnableDatagrams bool
	// StreamReceiveWindow and ConnReceiveWindow cap QUIC flow-control
	// windows: the most a client can have in flight towards the hub.
	StreamReceiveWindow uint64
	ConnReceiveWindow   uint64
	// StatelessResetKey, when set, lets the server reset connections it no
	// longer knows (after a restart): clients learn at once that their
	// connection is gone instead of waiting for the idle timeout. Keep it
	// stable across restarts.
	StatelessResetKey *[32]byte
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// DefaultConfig returns a server configuration for addr.
func DefaultConfig(addr string) Config {
	return Config{
		Addr:                 addr,
		MaxConnections:       10000,
		MaxStreamsPerConn:    100,
		MaxFrameBytes:        8 << 20,
		HandshakeTimeout:     10 * time.Second,
		IdleTimeout:          60 * time.Second,
		FrameTimeout:         30 * time.Second,
		ValidateAddressAbove: 64,
		Allow0RTT:            true,
		EnableDatagrams:      true,
		StreamReceiveWindow:  8 << 20,
		ConnReceiveWindow:    32 << 20,
	}
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.TLS == nil || (len(c.TLS.Certificates) == 0 && c.TLS.GetCertificate == nil && c.TLS.GetConfigForClient == nil) {
		errs = append(errs, errors.New("quic: config: TLS certificate missing"))
	}
	if c.MaxConnections <= 0 {
		errs = append(errs, fmt.Errorf("quic: config: max connections %d must be positive", c.MaxConnections))
	}
	if c.MaxStreamsPerConn <= 0 {
		errs = append(errs, fmt.Errorf("quic: config: max streams per connection %d must be positive", c.MaxStreamsPerConn))
	}
	if c.MaxFrameBytes < 64<<10 || c.MaxFrameBytes > 256<<20 {
		errs = append(errs, fmt.Errorf("quic: config: max frame bytes %d outside 64KiB..256MiB", c.MaxFrameBytes))
	}
	if c.HandshakeTimeout <= 0 || c.IdleTimeout <= 0 {
		errs = append(errs, fmt.Errorf("quic: config: timeouts must be positive (handshake %s, idle %s)", c.HandshakeTimeout, c.IdleTimeout))
	}
	if c.FrameTimeout < 0 {
		errs = append(errs, fmt.Errorf("quic: config: frame timeout %s is negative", c.FrameTimeout))
	}
	if c.ValidateAddressAbove < 0 {
		errs = append(errs, fmt.Errorf("quic: config: validate address above %d is negative", c.ValidateAddressAbove))
	}
	return errors.Join(errs...)
}

// ClientConfig configures a client connection.
type ClientConfig struct {
	// TLS carries RootCAs, ServerName, client certificates, or
	// InsecureSkipVerify. TLS 1.3 and the ALPN are forced on a copy.
	TLS *tls.Config
	// Token is sent in every OPEN frame.
	Token string
	// MaxFrameBytes bounds frames the client accepts (default
	// DefaultClientMaxFrameBytes).
	MaxFrameBytes int
	// HandshakeTimeout and IdleTimeout as in Config; defaults 10s and 60s.
	HandshakeTimeout time.Duration
	IdleTimeout      time.Duration
	// KeepAlive sends keep-alives this often (default IdleTimeout/3).
	KeepAlive time.Duration
	// Use0RTT resumes with early data when the TLS config has a session
	// cache and a ticket for this server. Caveat: opening streams before
	// the handshake completes races inside quic-go (issue 4303); callers
	// that cannot tolerate that wait for HandshakeComplete.
	Use0RTT bool
	// EnableDatagrams negotiates QUIC datagrams.
	EnableDatagrams bool
	// StreamReceiveWindow and ConnReceiveWindow cap flow-control windows;
	// a slow consumer's hub can have at most this much in flight to it.
	StreamReceiveWindow uint64
	ConnReceiveWindow   uint64
}

// DefaultClientMaxFrameBytes is the largest frame a client accepts by
// default. A hub sends stored chunks as they are: up to 256 KiB of records
// plus one more, which may be as large as the largest record limit a hub
// can be given (64 MiB) with its encoding, so the client must accept a
// little more than that.
const DefaultClientMaxFrameBytes = 80 << 20

func (c ClientConfig) withDefaults() ClientConfig {
	if c.MaxFrameBytes == 0 {
		c.MaxFrameBytes = DefaultClientMaxFrameBytes
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = 60 * time.Second
	}
	if c.KeepAlive == 0 {
		c.KeepAlive = c.IdleTimeout / 3
	}
	if c.StreamReceiveWindow == 0 {
		c.StreamReceiveWindow = 8 << 20
	}
	if c.ConnReceiveWindow == 0 {
		c.ConnReceiveWindow = 32 << 20
	}
	return c
}

package quic

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"

	quicgo "github.com/quic-go/quic-go"
)

// Client is one QUIC connection to a hub. It is safe for concurrent use: each
// operation opens its own stream.
type Client struct {
	cfg ClientConfig
	qc  *quicgo.Conn
	tr  *quicgo.Transport
}

// Dial connects to addr (host:port). The handshake is bounded by ctx and
// cfg.HandshakeTimeout.
func Dial(ctx context.Context, addr string, cfg ClientConfig) (*Client, error) {
	cfg = cfg.withDefaults()
	udpAddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("quic: dial %s: %w", addr, err)
	}
	var tlsConf *tls.Config
	if cfg.TLS != nil {
		tlsConf = cfg.TLS.Clone()
	} else {
		tlsConf = &tls.Config{}
	}
	tlsConf.MinVersion = tls.VersionTLS13
	tlsConf.NextProtos = []string{ALPN}
	if tlsConf.ServerName == "" {
		host, _, _ := net.SplitHostPort(addr)
		tlsConf.ServerName = host
	}
	qconf := &quicgo.Config{
		HandshakeIdleTimeout:           cfg.HandshakeTimeout,
		MaxIdleTimeout:                 cfg.IdleTimeout,
		KeepAlivePeriod:                cfg.KeepAlive,
		MaxIncomingStreams:             -1,
		MaxIncomingUniStreams:          -1,
		EnableDatagrams:                cfg.EnableDatagrams,
		InitialStreamReceiveWindow:     min(cfg.StreamReceiveWindow, 1<<20),
		MaxStreamReceiveWindow:         cfg.StreamReceiveWindow,
		InitialConnectionReceiveWindow: min(cfg.ConnReceiveWindow, 2<<20),
		MaxConnectionReceiveWindow:     cfg.ConnReceiveWindow,
	}
	udp, err := net.ListenUDP("udp", nil)
	if err != nil {
		return nil, fmt.Errorf("quic: dial %s: %w", addr, err)
	}
	tr := &quicgo.Transport{Conn: udp}
	var qc *quicgo.Conn
	if cfg.Use0RTT && tlsConf.ClientSessionCache != nil {
		qc, err = tr.DialEarly(ctx, udpAddr, tlsConf, qconf)
	} else {
		qc, err = tr.Dial(ctx, udpAddr, tlsConf, qconf)
	}
	if err != nil {
		tr.Close()
		udp.Close()
		return nil, fmt.Errorf("quic: dial %s: %w", addr, mapQUICErr(err))
	}
	return &Client{cfg: cfg, qc: qc, tr: tr}, nil
}

// Open starts an operation: it opens a stream and sends the OPEN frame with
// the client's token and body. Opening waits for stream credit (the hub's
// per-connection stream limit) until ctx ends.
func (c *Client) Open(ctx context.Context, op Op, body Appender) (*Stream, error) {
	qs, err := c.qc.OpenStreamSync(ctx)
	if errors.Is(err, quicgo.Err0RTTRejected) {
		// The hub did not accept early data (it restarted and lost its
		// ticket keys, say): continue on the completed handshake.
		// Streams opened in early data fail with the same error and
		// their operations are retried by the caller.
		if _, err = c.qc.NextConnection(ctx); err == nil {
			qs, err = c.qc.OpenStreamSync(ctx)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("quic: open %s: %w", op, mapQUICErr(err))
	}
	st := newStream(qs, c.cfg.MaxFrameBytes, 0)
	var b []byte
	if body != nil {
		b = body.Append(nil)
	}
	if err := st.Send(FrameOpen, &Open{Op: op, Token: c.cfg.Token, Body: b}); err != nil {
		st.Cancel(CodeCanceled)
		return nil, fmt.Errorf("quic: open %s: %w", op, err)
	}
	return st, nil
}

// SendDatagram sends an unreliable datagram; it fails if the payload does
// not fit in one QUIC packet or the hub did not enable datagrams.
func (c *Client) SendDatagram(b []byte) error { return c.qc.SendDatagram(b) }

// Used0RTT reports whether the connection resumed with early data.
func (c *Client) Used0RTT() bool { return c.qc.ConnectionState().Used0RTT }

// HandshakeComplete is closed once the handshake has finished.
func (c *Client) HandshakeComplete() <-chan struct{} { return c.qc.HandshakeComplete() }

// Done is closed when the connection ends.
func (c *Client) Done() <-chan struct{} { return c.qc.Context().Done() }

// Err returns why the connection ended (nil while open).
func (c *Client) Err() error {
	if c.qc.Context().Err() == nil {
		return nil
	}
	return mapQUICErr(context.Cause(c.qc.Context()))
}

// RemoteAddr is the hub's address.
func (c *Client) RemoteAddr() net.Addr { return c.qc.RemoteAddr() }

// ConnectionState exposes TLS details (negotiated version, peer certificates).
func (c *Client) ConnectionState() tls.ConnectionState { return c.qc.ConnectionState().TLS }

// Close closes the connection with CodeCanceled and releases the socket.
// Close is idempotent.
func (c *Client) Close() error {
	c.qc.CloseWithError(quicgo.ApplicationErrorCode(CodeCanceled), "client closed")
	return c.tr.Close()
}

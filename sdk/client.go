package sdk

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/edgehub/edgehub"
	"github.com/edgehub/edgehub/internal/backoff"
	"github.com/edgehub/edgehub/quic"
)

// Record is one event: key, value, headers and the producer's timestamp.
// Records read from a hub also carry their sequence, ingest time and origin.
type Record = edgehub.Record

// Header is a record header.
type Header = edgehub.Header

// Error is a refusal from the hub: a Code and a message.
type Error = quic.Error

// Code is a wire error code; see docs/protocol.md.
type Code = quic.Code

// Codes callers commonly test for with CodeOf.
const (
	CodeUnauthenticated  = quic.CodeUnauthenticated
	CodePermissionDenied = quic.CodePermissionDenied
	CodeNotFound         = quic.CodeNotFound
	CodeInvalidArgument  = quic.CodeInvalidArgument
	CodeRecordTooLarge   = quic.CodeRecordTooLarge
	CodeUnavailable      = quic.CodeUnavailable
	CodeSequenceConflict = quic.CodeSequenceConflict
	CodeShardClosed      = quic.CodeShardClosed // SendTo a shard a reshard closed
	CodeStorageFull      = quic.CodeStorageFull
	CodeCorrupt          = quic.CodeCorrupt
)

// Sentinel errors.
var (
	// ErrClosed: the client, producer or subscription was closed.
	ErrClosed = errors.New("sdk: closed")
	// ErrDeliveryTimeout: a record could not be acknowledged within
	// ProducerOptions.DeliveryTimeout, across retries and reconnects.
	ErrDeliveryTimeout = errors.New("sdk: delivery timeout")
)

// CodeOf returns the hub's code in err (quic.CodeInternal for other errors,
// 0 for nil).
func CodeOf(err error) Code { return quic.CodeOf(err) }

// Options configure a Client.
type Options struct {
	// TLS overrides everything below when set (RootCAs, client
	// certificates, ServerName).
	TLS *tls.Config
	// CAFile is a PEM file of certificates to trust, such as a hub's
	// self-signed hub-data/tls/cert.pem. Empty: the system roots.
	CAFile string
	// Insecure skips certificate verification (tests, throwaway setups).
	Insecure bool
	// CertFile and KeyFile are a client certificate for mTLS.
	CertFile, KeyFile string
	// Token is a bearer token sent when opening each operation.
	Token string
	// Use0RTT resumes reconnections with early data, saving a round trip.
	// Off by default: quic-go has a data race when streams are opened
	// while the handshake is still being processed (quic-go issue 4303).
	// The hub accepts 0-RTT either way, and idempotent producers make
	// replayed early data harmless.
	Use0RTT bool
	// DialTimeout bounds one connection attempt. Default 10s.
	DialTimeout time.Duration
	// IdleTimeout is how long the connection may hear nothing from the hub
	// before it counts as dead and is redialled; KeepAlive is how often an
	// otherwise idle connection pings the hub. Defaults 10s and 2s: a hub
	// that died or was restarted is noticed within about 10s even by a
	// subscriber or group member that sends nothing, while four keep-alives
	// in a row (and their retransmissions) must be lost to drop a healthy
	// connection. On a metered link, longer values cost fewer packets (a
	// keep-alive and its acknowledgement are about 100 bytes) and notice
	// later. KeepAlive is capped at half of IdleTimeout.
	IdleTimeout, KeepAlive time.Duration
	// ReconnectMin and ReconnectMax bound the exponential backoff between
	// reconnection attempts: attempt n waits a random time between
	// ReconnectMin·2^(n-1) and ReconnectMin·2^n, never outside
	// ReconnectMin..ReconnectMax, so clients cut off together do not all
	// come back in the same instant. Defaults 50ms and 5s.
	ReconnectMin, ReconnectMax time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// DefaultOptions returns the defaults.
func DefaultOptions() Options {
	return Options{DialTimeout: 10 * time.Second, IdleTimeout: 10 * time.Second, KeepAlive: 2 * time.Second, ReconnectMin: 50 * time.Millisecond, ReconnectMax: 5 * time.Second}
}

func (o Options) withDefaults() Options {
	d := DefaultOptions()
	if o.DialTimeout <= 0 {
		o.DialTimeout = d.DialTimeout
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = d.IdleTimeout
	}
	if o.KeepAlive <= 0 {
		o.KeepAlive = d.KeepAlive
	}
	// quic-go caps it the same way; capped here so Options says what runs.
	o.KeepAlive = min(o.KeepAlive, o.IdleTimeout/2)
	if o.ReconnectMin <= 0 {
		o.ReconnectMin = d.ReconnectMin
	}
	if o.ReconnectMax < o.ReconnectMin {
		o.ReconnectMax = max(d.ReconnectMax, o.ReconnectMin)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// Client is a connection to a hub that reconnects when it breaks. It is safe
// for concurrent use; producers and subscriptions opened from it share its
// QUIC connection, each on its own stream.
type Client struct {
	addr   string
	opts   Options
	qcfg   quic.ClientConfig
	logger *slog.Logger

	mu     sync.Mutex // guards conn and closed
	conn   *quic.Client
	closed bool
	done   chan struct{}
}

// Dial connects to the hub at addr (host:port). It fails if the first
// connection cannot be made; later breaks are repaired by reconnecting.
func Dial(ctx context.Context, addr string, opts Options) (*Client, error) {
	opts = opts.withDefaults()
	tlsConf, err := clientTLS(opts)
	if err != nil {
		return nil, err
	}
	c := &Client{
		addr:   addr,
		opts:   opts,
		logger: opts.Logger,
		done:   make(chan struct{}),
		qcfg: quic.ClientConfig{
			TLS:             tlsConf,
			Token:           opts.Token,
			Use0RTT:         opts.Use0RTT,
			EnableDatagrams: true,
			IdleTimeout:     opts.IdleTimeout,
			KeepAlive:       opts.KeepAlive,
		},
	}
	if _, err := c.connect(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

func clientTLS(o Options) (*tls.Config, error) {
	if o.TLS != nil {
		c := o.TLS.Clone()
		if c.ClientSessionCache == nil {
			c.ClientSessionCache = tls.NewLRUClientSessionCache(8)
		}
		return c, nil
	}
	// A session cache lets reconnects resume with 0-RTT.
	c := &tls.Config{InsecureSkipVerify: o.Insecure, ClientSessionCache: tls.NewLRUClientSessionCache(8)}
	if o.CAFile != "" {
		pool, err := quic.CertPool(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("sdk: %w", err)
		}
		c.RootCAs = pool
	}
	if o.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("sdk: client certificate: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// Addr is the hub's address as given to Dial.
func (c *Client) Addr() string { return c.addr }

// connect returns the live connection, dialling a new one if there is none
// or the last one ended.
func (c *Client) connect(ctx context.Context) (*quic.Client, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	if c.conn != nil {
		select {
		case <-c.conn.Done():
			c.conn.Close()
			c.conn = nil
		default:
			return c.conn, nil
		}
	}
	dctx, cancel := context.WithTimeout(ctx, c.opts.DialTimeout)
	defer cancel()
	conn, err := quic.Dial(dctx, c.addr, c.qcfg)
	if err != nil {
		if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
			// This attempt ran out of time, the caller's context did not:
			// the hub may be restarting, so the failure is retryable.
			return nil, fmt.Errorf("sdk: dial %s: no answer within %s", c.addr, c.opts.DialTimeout)
		}
		return nil, fmt.Errorf("sdk: dial %s: %w", c.addr, err)
	}
	c.conn = conn
	return conn, nil
}

// open starts an operation on the live connection.
func (c *Client) open(ctx context.Context, op quic.Op, body quic.Appender) (*quic.Stream, *quic.Client, error) {
	conn, err := c.connect(ctx)
	if err != nil {
		return nil, nil, err
	}
	st, err := conn.Open(ctx, op, body)
	if err != nil {
		return nil, nil, fmt.Errorf("sdk: %w", err)
	}
	return st, conn, nil
}

// backoff waits before reconnection attempt n (0-based), with jitter.
func (c *Client) backoff(ctx context.Context, n int) error {
	t := time.NewTimer(backoff.Delay(c.opts.ReconnectMin, c.opts.ReconnectMax, n+1))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-c.done:
		return ErrClosed
	}
}

// retryable reports whether an operation that failed with err may succeed
// on a new stream or connection.
func retryable(err error) bool {
	if err == nil || errors.Is(err, ErrClosed) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	if quic.IsHandshakeFailure(err) {
		return false
	}
	var e *quic.Error
	if errors.As(err, &e) && !errors.Is(err, quic.ErrClosed) {
		return e.Code.Retryable()
	}
	// Transport failures: connection lost, idle timeout, dial refused.
	return true
}

// ShardInfo is a shard's first live and last sequence (First > Last when
// empty).
type ShardInfo struct {
	First, Last uint64
}

// StreamInfo describes a stream.
type StreamInfo struct {
	Name   string
	Shards []ShardInfo // by shard id: every id ever assigned (docs/protocol.md 5.1)

	layout *quic.Layout // nil from a hub before resharding
}

// Info returns a stream's shards and their bounds.
func (c *Client) Info(ctx context.Context, stream string) (StreamInfo, error) {
	for attempt := 0; ; attempt++ {
		info, err := c.info(ctx, stream)
		if err == nil || !retryable(err) {
			return info, err
		}
		if berr := c.backoff(ctx, attempt); berr != nil {
			return StreamInfo{}, err
		}
	}
}

func (c *Client) info(ctx context.Context, stream string) (StreamInfo, error) {
	st, _, err := c.open(ctx, quic.OpInfo, &quic.InfoRequest{Stream: stream})
	if err != nil {
		return StreamInfo{}, err
	}
	defer st.Close()
	stop := context.AfterFunc(ctx, func() { st.Cancel(quic.CodeCanceled) })
	defer stop()
	var in quic.Info
	if err := st.Expect(quic.FrameInfo, &in); err != nil {
		return StreamInfo{}, fmt.Errorf("sdk: info %q: %w", stream, err)
	}
	out := StreamInfo{Name: in.Stream, Shards: make([]ShardInfo, len(in.Shards)), layout: in.Layout}
	for i, s := range in.Shards {
		out.Shards[i] = ShardInfo{First: s.First, Last: s.Last}
	}
	return out, nil
}

// Close closes the connection; producers and subscriptions fail with
// ErrClosed. Close is idempotent.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	close(c.done)
	if c.conn != nil {
		return c.conn.Close()
	}
	return nil
}

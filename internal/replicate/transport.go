package replicate

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/edgehub/edgehub/quic"
)

// Transport opens pulls to peers. It must be safe for concurrent use.
type Transport interface {
	// Pull asks peer for req's records. The stream yields the server's
	// messages until the server ends it (io.EOF), it fails, ctx ends, or
	// Close is called.
	Pull(ctx context.Context, peer Peer, req PullRequest) (PullStream, error)
}

// PullStream is the client end of one pull.
type PullStream interface {
	// Recv returns the next message; it blocks until one arrives.
	Recv() (Msg, error)
	// Close abandons the pull; it is idempotent.
	Close() error
}

// Msg is one server message of a pull; Type says which field is set.
type Msg struct {
	Type     quic.FrameType
	Records  Records
	Progress Progress
	Gap      Gap
	// Trimmed is the first origin sequence a relay still holds
	// (FramePullTrimmed).
	Trimmed uint64
}

// decodeMsg parses one frame of a pull.
func decodeMsg(t quic.FrameType, p []byte) (Msg, error) {
	m := Msg{Type: t}
	var err error
	switch t {
	case FramePullRecords:
		err = m.Records.Decode(p)
	case FramePullProgress:
		err = m.Progress.Decode(p)
	case FramePullGap:
		err = m.Gap.Decode(p)
	case FramePullTrimmed:
		d := reader{buf: p, what: "PULL_TRIMMED"}
		m.Trimmed = d.uvarint()
		err = d.done()
	case quic.FrameError:
		e, derr := quic.DecodeError(p)
		if derr != nil {
			return m, derr
		}
		return m, e
	default:
		err = fmt.Errorf("%w: %s in a replication pull", quic.ErrUnexpectedFrame, t)
	}
	return m, err
}

func appendUvarint(dst []byte, v uint64) []byte { return binary.AppendUvarint(dst, v) }

// QUICTransport pulls over the hub data plane: one QUIC connection per
// peer address, one QUIC stream per pull, authenticated like any client of
// the data plane (TLS, and the token in cfg).
type QUICTransport struct {
	cfg quic.ClientConfig

	mu      sync.Mutex
	clients map[string]*quic.Client
	closed  bool
}

// NewQUICTransport returns a transport dialling peers with cfg.
func NewQUICTransport(cfg quic.ClientConfig) *QUICTransport {
	return &QUICTransport{cfg: cfg, clients: map[string]*quic.Client{}}
}

// Pull implements Transport.
func (t *QUICTransport) Pull(ctx context.Context, peer Peer, req PullRequest) (PullStream, error) {
	c, err := t.client(ctx, peer.Addr)
	if err != nil {
		return nil, err
	}
	st, err := c.Open(ctx, quic.OpReplicate, &req)
	if err != nil {
		// A broken connection is dropped so the next pull redials.
		t.drop(peer.Addr, c)
		return nil, fmt.Errorf("replicate: pull from %s: %w", peer.Name, err)
	}
	p := &quicPull{st: st}
	p.stop = context.AfterFunc(ctx, func() { st.Cancel(quic.CodeCanceled) })
	return p, nil
}

func (t *QUICTransport) client(ctx context.Context, addr string) (*quic.Client, error) {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil, ErrClosed
	}
	c := t.clients[addr]
	t.mu.Unlock()
	if c != nil && c.Err() == nil {
		return c, nil
	}
	if c != nil {
		t.drop(addr, c)
	}
	nc, err := quic.Dial(ctx, addr, t.cfg)
	if err != nil {
		return nil, fmt.Errorf("replicate: dial %s: %w", addr, err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		nc.Close()
		return nil, ErrClosed
	}
	if old := t.clients[addr]; old != nil && old.Err() == nil {
		nc.Close() // another pull dialled first
		return old, nil
	}
	t.clients[addr] = nc
	return nc, nil
}

func (t *QUICTransport) drop(addr string, c *quic.Client) {
	t.mu.Lock()
	if t.clients[addr] == c {
		delete(t.clients, addr)
	}
	t.mu.Unlock()
	c.Close()
}

// Close closes every connection; it is idempotent.
func (t *QUICTransport) Close() error {
	t.mu.Lock()
	t.closed = true
	cs := t.clients
	t.clients = map[string]*quic.Client{}
	t.mu.Unlock()
	for _, c := range cs {
		c.Close()
	}
	return nil
}

type quicPull struct {
	st   *quic.Stream
	stop func() bool
}

func (p *quicPull) Recv() (Msg, error) {
	t, b, err := p.st.ReadFrame()
	if err != nil {
		return Msg{}, err
	}
	return decodeMsg(t, b)
}

func (p *quicPull) Close() error {
	p.stop()
	p.st.Cancel(quic.CodeCanceled)
	return nil
}

package replicate

import (
	"context"
	"crypto/tls"
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
	// Recv returns the next message; it blocks until one arrives, the pull
	// ends (io.EOF when the server completed it) or fails, or ctx ends.
	Recv(ctx context.Context) (Msg, error)
	// TryRecv returns the next message if one has already arrived, so the
	// puller can apply everything received in one append.
	TryRecv() (Msg, bool)
	// Applied tells the server that every record of the pull up to origin
	// sequence seq is appended here (copies, issue 16). It never blocks;
	// a server that did not ask for reports is not told.
	Applied(seq uint64)
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
	// ClosedEnd is the last sequence of a closed origin shard
	// (FramePullEnd with closed_end: the last message of the pull, every
	// record up to it was sent).
	ClosedEnd uint64
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
		d := newReader(p, "PULL_TRIMMED")
		m.Trimmed = d.Uvarint()
		err = d.Err
	case quic.FrameError:
		e, derr := quic.DecodeError(p)
		if derr != nil {
			return m, derr
		}
		return m, e
	default:
		err = fmt.Errorf("%w: %s in a replication pull", quic.ErrUnexpectedFrame, frameName(t))
	}
	return m, err
}

func appendUvarint(dst []byte, v uint64) []byte { return binary.AppendUvarint(dst, v) }

// Flow control of sessions (client side).
const (
	// sessionWindow bounds the record bytes all follows of one session
	// (one peer) may have in flight or buffered here, shared equally.
	sessionWindow = 64 << 20
	// minFollowWindow is the least a follow gets however many share the
	// session, so each keeps moving.
	minFollowWindow = 256 << 10
)

// QUICTransport pulls over the hub data plane. It keeps one QUIC
// connection per peer address and on it one replication session: a single
// QUIC stream carrying every pull from that peer (each a "follow" with its
// own credit), so the peer's per-connection stream limit bounds nothing
// here. Connections are authenticated like any client of the data plane
// (TLS, and the token in cfg).
type QUICTransport struct {
	cfg quic.ClientConfig
	// PeerTLS, if set, gives the TLS config to dial peer with instead of
	// cfg.TLS, so each peer's certificate can be checked against what is
	// known of that peer (its pinned fingerprints). Set it before the
	// first Pull.
	PeerTLS func(peer Peer) *tls.Config

	mu     sync.Mutex
	peers  map[string]*peerConn
	closed bool
}

// peerConn is the connection and session to one peer address. Its mutex
// serialises dialling, so concurrent pulls share one session.
type peerConn struct {
	mu      sync.Mutex
	client  *quic.Client
	session *clientSession
}

// NewQUICTransport returns a transport dialling peers with cfg. A session
// is one QUIC stream, so unless cfg says otherwise its receive window is
// the connection's (32 MiB): the stream is drained continuously into the
// follows' credit-bounded buffers, so the window only bounds throughput
// per round trip.
func NewQUICTransport(cfg quic.ClientConfig) *QUICTransport {
	if cfg.StreamReceiveWindow == 0 {
		cfg.StreamReceiveWindow = 32 << 20
	}
	return &QUICTransport{cfg: cfg, peers: map[string]*peerConn{}}
}

// Pull implements Transport: it adds a follow to the peer's session,
// opening the session (and dialling) first if needed.
func (t *QUICTransport) Pull(ctx context.Context, peer Peer, req PullRequest) (PullStream, error) {
	for range 2 {
		s, err := t.session(ctx, peer, req.Requester)
		if err != nil {
			return nil, err
		}
		if p := s.follow(req); p != nil {
			return p, nil
		}
		// The session ended meanwhile: open another.
	}
	return nil, fmt.Errorf("replicate: pull from %s: session keeps ending", peer.Name)
}

func (t *QUICTransport) session(ctx context.Context, peer Peer, requester string) (*clientSession, error) {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil, ErrClosed
	}
	pc := t.peers[peer.Addr]
	if pc == nil {
		pc = &peerConn{}
		t.peers[peer.Addr] = pc
	}
	t.mu.Unlock()

	pc.mu.Lock()
	defer pc.mu.Unlock()
	if s := pc.session; s != nil && s.alive() {
		return s, nil
	}
	pc.session = nil
	if pc.client != nil && pc.client.Err() != nil {
		pc.client.Close()
		pc.client = nil
	}
	if pc.client == nil {
		cfg := t.cfg
		if t.PeerTLS != nil {
			cfg.TLS = t.PeerTLS(peer)
		}
		c, err := quic.Dial(ctx, peer.Addr, cfg)
		if err != nil {
			return nil, fmt.Errorf("replicate: dial %s (%s): %w", peer.Name, peer.Addr, err)
		}
		pc.client = c
	}
	st, err := pc.client.Open(ctx, quic.OpReplicate, &SessionOpen{Requester: requester})
	if err != nil {
		// A broken connection is dropped so the next pull redials.
		pc.client.Close()
		pc.client = nil
		return nil, fmt.Errorf("replicate: open session with %s: %w", peer.Name, err)
	}
	s := newClientSession(peer.Name, st)
	t.mu.Lock()
	closed := t.closed
	t.mu.Unlock()
	if closed { // Close ran while we dialled
		s.fail(ErrClosed)
		pc.client.Close()
		return nil, ErrClosed
	}
	pc.session = s
	return s, nil
}

// Close ends every session and connection; it is idempotent.
func (t *QUICTransport) Close() error {
	t.mu.Lock()
	t.closed = true
	pcs := t.peers
	t.peers = map[string]*peerConn{}
	t.mu.Unlock()
	for _, pc := range pcs {
		pc.mu.Lock()
		if pc.session != nil {
			pc.session.fail(ErrClosed)
		}
		if pc.client != nil {
			pc.client.Close()
		}
		pc.mu.Unlock()
	}
	return nil
}

// clientSession is the client end of a replication session. One goroutine
// reads the stream and files each frame under its follow (never blocking on
// a follow: credit bounds what each can receive); one writes the client's
// frames (follows, cancels, coalesced credit grants), so neither Recv nor
// Close ever waits on the network.
//
// All follow state is guarded by the session's mutex.
type clientSession struct {
	peer string
	st   *quic.Stream

	mu      sync.Mutex
	follows map[uint64]*muxPull
	lastID  uint64
	err     error           // why the session ended; nil while open
	ctrl    []quic.Appender // PULL_FOLLOW and PULL_CANCEL frames, in order
	ctrlT   []quic.FrameType
	credits map[uint64]uint64 // grants not yet sent
	applied map[uint64]uint64 // PULL_APPLIED reports not yet sent
	kick    chan struct{}
	done    chan struct{}
}

func newClientSession(peer string, st *quic.Stream) *clientSession {
	s := &clientSession{peer: peer, st: st, follows: map[uint64]*muxPull{}, credits: map[uint64]uint64{},
		applied: map[uint64]uint64{}, kick: make(chan struct{}, 1), done: make(chan struct{})}
	go s.read()
	go s.write()
	return s
}

func (s *clientSession) alive() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err == nil
}

// window is each follow's share of the session window; s.mu held.
func (s *clientSession) window(maxBatch int64) int64 {
	w := int64(sessionWindow) / int64(max(len(s.follows), 1))
	return min(max(w, minFollowWindow), max(2*maxBatch, minFollowWindow))
}

// follow starts a pull in the session; nil if the session has ended.
func (s *clientSession) follow(req PullRequest) *muxPull {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return nil
	}
	s.lastID++
	p := &muxPull{s: s, id: s.lastID, maxBatch: int64(req.MaxBatchBytes), notify: make(chan struct{}, 1)}
	s.follows[p.id] = p
	p.credit = s.window(p.maxBatch)
	s.queueLocked(FramePullFollow, &Follow{ID: p.id, Stream: req.Stream, Origin: req.Origin, After: req.After,
		Follow: req.Follow, MaxBatchBytes: req.MaxBatchBytes, Credit: uint64(p.credit), Incarnation: req.Incarnation, Until: req.Until, Lineage: req.Lineage,
		Report: true})
	return p
}

func (s *clientSession) queueLocked(t quic.FrameType, f quic.Appender) {
	s.ctrl = append(s.ctrl, f)
	s.ctrlT = append(s.ctrlT, t)
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// fail ends the session: every follow's Recv returns err once its queue
// is drained.
func (s *clientSession) fail(err error) {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return
	}
	s.err = fmt.Errorf("replicate: session with %s: %w", s.peer, err)
	for _, p := range s.follows {
		p.end(s.err)
	}
	s.follows = nil
	s.ctrl, s.ctrlT, s.credits, s.applied = nil, nil, nil, nil
	close(s.done)
	s.mu.Unlock()
	s.st.Cancel(quic.CodeCanceled)
}

func (s *clientSession) read() {
	for {
		t, b, err := s.st.ReadFrame()
		if err != nil {
			s.fail(err)
			return
		}
		if t == quic.FrameError {
			e, derr := quic.DecodeError(b)
			if derr != nil {
				s.fail(derr)
			} else {
				s.fail(e)
			}
			return
		}
		m, err := decodeSessionMsg(t, b)
		if err == nil {
			err = s.deliver(m)
		}
		if err != nil {
			s.fail(err)
			return
		}
	}
}

// deliver files one server frame under its follow.
func (s *clientSession) deliver(m sessionMsg) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return nil
	}
	p := s.follows[m.ID]
	if p == nil {
		if m.ID > s.lastID {
			return fmt.Errorf("%w: frame for follow %d, never opened", quic.ErrUnexpectedFrame, m.ID)
		}
		return nil // a follow we cancelled: its last frames were in flight
	}
	if m.End != nil {
		delete(s.follows, m.ID)
		if m.End.Closed {
			p.q = append(p.q, Msg{Type: FramePullEnd, ClosedEnd: m.End.ClosedEnd})
		}
		p.end(m.End.Err())
		return nil
	}
	if m.Msg.Type == FramePullReport {
		p.report = true // not a message for the task: Applied now sends
		return nil
	}
	if m.Msg.Type == FramePullRecords {
		if p.credit <= 0 {
			return fmt.Errorf("%w: records for follow %d beyond its credit", quic.ErrUnexpectedFrame, m.ID)
		}
		n := int64(len(m.Msg.Records.Batch))
		p.credit -= n
		p.buffered += n
	}
	p.q = append(p.q, m.Msg)
	p.signal()
	return nil
}

func (s *clientSession) write() {
	for {
		select {
		case <-s.kick:
		case <-s.done:
			return
		}
		s.mu.Lock()
		ctrl, ctrlT := s.ctrl, s.ctrlT
		s.ctrl, s.ctrlT = nil, nil
		var credits, applied map[uint64]uint64
		if len(s.credits) > 0 {
			credits, s.credits = s.credits, map[uint64]uint64{}
		}
		if len(s.applied) > 0 {
			applied, s.applied = s.applied, map[uint64]uint64{}
		}
		s.mu.Unlock()
		// Follows and cancels first: a grant is only ever queued after
		// its follow.
		for i, f := range ctrl {
			if err := s.st.Send(ctrlT[i], f); err != nil {
				s.fail(err)
				return
			}
		}
		for id, n := range credits {
			if err := s.st.Send(FramePullCredit, &FollowCredit{ID: id, Bytes: n}); err != nil {
				s.fail(err)
				return
			}
		}
		for id, a := range applied {
			if err := s.st.Send(FramePullApplied, &FollowApplied{ID: id, Applied: a}); err != nil {
				s.fail(err)
				return
			}
		}
	}
}

// muxPull is one follow of a session: a PullStream.
type muxPull struct {
	s        *clientSession
	id       uint64
	maxBatch int64
	notify   chan struct{} // signalled when q or err changes

	// guarded by s.mu
	q        []Msg
	err      error // set when the follow ended; returned after q drains
	credit   int64 // the server's credit as we know it (may be overdrawn)
	buffered int64 // record bytes received and not yet taken by Recv
	closed   bool
	report   bool   // the server asked for PULL_APPLIED
	reported uint64 // the last position reported
}

// Applied reports that every record of the follow up to origin sequence
// seq is appended here: a PULL_APPLIED, coalesced with later reports, if
// the server asked for them (PULL_REPORT); nothing otherwise.
func (p *muxPull) Applied(seq uint64) {
	s := p.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if !p.report || p.closed || s.err != nil || seq <= p.reported {
		return
	}
	p.reported = seq
	s.applied[p.id] = seq
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func (p *muxPull) signal() {
	select {
	case p.notify <- struct{}{}:
	default:
	}
}

// end records the follow's outcome; s.mu held.
func (p *muxPull) end(err error) {
	if p.err == nil {
		p.err = err
	}
	p.signal()
}

// take pops the next message and grants credit back if the follow's
// bytes in flight and buffered fell to half its window; s.mu held.
func (p *muxPull) take() Msg {
	m := p.q[0]
	p.q[0] = Msg{}
	p.q = p.q[1:]
	if m.Type != FramePullRecords {
		return m
	}
	p.buffered -= int64(len(m.Records.Batch))
	s := p.s
	if s.err != nil || p.err != nil || p.closed {
		return m
	}
	w := s.window(p.maxBatch)
	if used := p.credit + p.buffered; used <= w/2 {
		grant := w - used
		p.credit += grant
		s.credits[p.id] += uint64(grant)
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
	return m
}

func (p *muxPull) Recv(ctx context.Context) (Msg, error) {
	for {
		p.s.mu.Lock()
		switch {
		case p.closed:
			p.s.mu.Unlock()
			return Msg{}, ErrClosed
		case len(p.q) > 0:
			m := p.take()
			p.s.mu.Unlock()
			return m, nil
		case p.err != nil:
			err := p.err
			p.s.mu.Unlock()
			return Msg{}, err
		}
		p.s.mu.Unlock()
		select {
		case <-p.notify:
		case <-ctx.Done():
			return Msg{}, ctx.Err()
		}
	}
}

func (p *muxPull) TryRecv() (Msg, bool) {
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	if p.closed || len(p.q) == 0 {
		return Msg{}, false
	}
	return p.take(), true
}

// Close cancels the follow at the server (unless it already ended) and
// drops what it buffered.
func (p *muxPull) Close() error {
	s := p.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	p.q = nil
	p.signal() // a Recv waiting returns ErrClosed
	if s.err == nil && s.follows[p.id] == p {
		delete(s.follows, p.id)
		delete(s.credits, p.id)
		delete(s.applied, p.id)
		s.queueLocked(FramePullCancel, &FollowCancel{ID: p.id})
	}
	return nil
}

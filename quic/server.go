package quic

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	quicgo "github.com/quic-go/quic-go"
)

// Handler serves one operation on one stream. It owns req.Stream until it
// returns: returning nil ends the stream cleanly, an error fails it with the
// error's code (an *Error) or CodeInternal. ctx ends when the server shuts
// down or the connection closes.
type Handler interface {
	ServeQUIC(ctx context.Context, req *Request) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, req *Request) error

func (f HandlerFunc) ServeQUIC(ctx context.Context, req *Request) error { return f(ctx, req) }

// DatagramHandler receives the connection's QUIC datagrams. Returning an
// error closes the connection with the error's code.
type DatagramHandler func(c *Conn, payload []byte) error

// Request is one incoming operation.
type Request struct {
	Op        Op
	Body      []byte // the OPEN frame's body
	Principal Principal
	Conn      *Conn
	Stream    *Stream

	srv *Server
	log *slog.Logger
}

// Go runs fn in a new goroutine that belongs to the request: a panic in it
// is recovered like one in the handler (logged with its stack, counted, and
// the stream failed with CodeInternal) instead of ending the process.
func (r *Request) Go(fn func()) {
	go func() {
		defer r.srv.recoverStream(r.Stream, r.log)
		fn()
	}()
}

// Conn is a client connection as handlers see it.
type Conn struct {
	qc *quicgo.Conn
	id uint64
}

// ID is unique among the server's connections.
func (c *Conn) ID() uint64 { return c.id }

// RemoteAddr is the client's address.
func (c *Conn) RemoteAddr() net.Addr { return c.qc.RemoteAddr() }

// Context ends when the connection closes.
func (c *Conn) Context() context.Context { return c.qc.Context() }

// Used0RTT reports whether the client sent early data.
func (c *Conn) Used0RTT() bool { return c.qc.ConnectionState().Used0RTT }

// HandshakeComplete waits until the TLS handshake has completed, after which
// no data on the connection can be a 0-RTT replay.
func (c *Conn) HandshakeComplete(ctx context.Context) error {
	select {
	case <-c.qc.HandshakeComplete():
		return nil
	case <-c.qc.Context().Done():
		return fmt.Errorf("%w: connection closed during handshake", ErrClosed)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// SendDatagram sends an unreliable datagram to the client.
func (c *Conn) SendDatagram(b []byte) error { return c.qc.SendDatagram(b) }

// Stats are the server's counters since it started.
type Stats struct {
	ConnsActive        int64
	ConnsAccepted      uint64
	ConnsRefused       uint64 // over MaxConnections
	HandshakesActive   int64
	StreamsActive      int64
	StreamsTotal       uint64
	StreamsFailed      uint64 // closed with an error code
	AuthRefused        uint64 // unauthenticated
	ProtocolErrors     uint64 // malformed or oversized frames
	DatagramsReceived  uint64
	DatagramsMalformed uint64
	AddressValidations uint64 // handshakes answered with a Retry
	Panics             uint64 // handler panics recovered
	// OpenBytes is the payload buffer allocated for OPEN frames, which are
	// read before authentication: what unauthenticated clients made the
	// server allocate, beyond QUIC's own state.
	OpenBytes   uint64
	BudgetLimit uint64 // streams refused because Config.Budget was exhausted
}

// Server accepts QUIC connections and dispatches each stream to the handler
// registered for the operation its OPEN frame names.
type Server struct {
	cfg    Config
	logger *slog.Logger
	udp    net.PacketConn
	tr     *quicgo.Transport
	ln     *quicgo.EarlyListener

	mu       sync.RWMutex
	handlers map[Op]Handler
	dgram    DatagramHandler
	conns    map[*quicgo.Conn]struct{}

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
	nextID atomic.Uint64

	connsActive, handshakes, streamsActive       atomic.Int64
	accepted, refused, streams, failed, authFail atomic.Uint64
	protoErr, dgrams, dgramBad, retries          atomic.Uint64
	panics, openBytes, budgetRefused             atomic.Uint64

	refusals *rateLog

	stopAccepting atomic.Bool // StopAccepting was called
	closeOnce     sync.Once
	closeErr      error
}

// Listen binds cfg.Addr and returns a server ready for Handle and Run.
func Listen(cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	udpAddr, err := net.ResolveUDPAddr("udp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("quic: listen %s: %w", cfg.Addr, err)
	}
	udp, err := net.ListenUDP("udp", udpAddr)
	if err != nil {
		return nil, fmt.Errorf("quic: listen %s: %w", cfg.Addr, err)
	}
	s := &Server{
		cfg:      cfg,
		logger:   cfg.Logger,
		udp:      udp,
		handlers: map[Op]Handler{},
		conns:    map[*quicgo.Conn]struct{}{},
		refusals: newRateLog(cfg.Logger, cfg.RefusalLogInterval),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.tr = &quicgo.Transport{
		Conn:                udp,
		StatelessResetKey:   (*quicgo.StatelessResetKey)(cfg.StatelessResetKey),
		VerifySourceAddress: s.verifySourceAddress,
		ConnContext:         s.connContext,
	}
	tlsConf := cfg.TLS.Clone()
	tlsConf.MinVersion = tls.VersionTLS13
	tlsConf.NextProtos = []string{ALPN}
	qconf := &quicgo.Config{
		HandshakeIdleTimeout:           cfg.HandshakeTimeout,
		MaxIdleTimeout:                 cfg.IdleTimeout,
		MaxIncomingStreams:             int64(cfg.MaxStreamsPerConn),
		MaxIncomingUniStreams:          -1,
		Allow0RTT:                      cfg.Allow0RTT,
		EnableDatagrams:                cfg.EnableDatagrams,
		InitialStreamReceiveWindow:     min(cfg.StreamReceiveWindow, 1<<20),
		MaxStreamReceiveWindow:         cfg.StreamReceiveWindow,
		InitialConnectionReceiveWindow: min(cfg.ConnReceiveWindow, 2<<20),
		MaxConnectionReceiveWindow:     cfg.ConnReceiveWindow,
	}
	ln, err := s.tr.ListenEarly(tlsConf, qconf)
	if err != nil {
		udp.Close()
		return nil, fmt.Errorf("quic: listen %s: %w", cfg.Addr, err)
	}
	s.ln = ln
	return s, nil
}

// connContext admits or refuses a connection before its handshake and
// counts it; the counts drop when the connection's context ends.
func (s *Server) connContext(ctx context.Context, _ *quicgo.ClientInfo) (context.Context, error) {
	if s.connsActive.Add(1) > int64(s.cfg.MaxConnections) {
		s.connsActive.Add(-1)
		s.refused.Add(1)
		return nil, fmt.Errorf("quic: %d connections open (max %d)", s.cfg.MaxConnections, s.cfg.MaxConnections)
	}
	s.handshakes.Add(1)
	hs := new(atomic.Bool)
	hs.Store(true)
	ctx = context.WithValue(ctx, handshakeKey{}, hs)
	context.AfterFunc(ctx, func() {
		s.connsActive.Add(-1)
		if hs.Swap(false) {
			s.handshakes.Add(-1)
		}
	})
	return ctx, nil
}

type handshakeKey struct{}

// verifySourceAddress asks quic-go to send a Retry (the client must echo a
// token, proving it receives at its source address) when the server is
// under handshake load: spoofed Initials then cost the server nothing.
func (s *Server) verifySourceAddress(net.Addr) bool {
	if s.handshakes.Load() >= int64(s.cfg.ValidateAddressAbove) {
		s.retries.Add(1)
		return true
	}
	return false
}

// Addr is the bound UDP address.
func (s *Server) Addr() net.Addr { return s.udp.LocalAddr() }

// Handle registers h for op. Registering twice for one op panics, as
// net/http's ServeMux does: two owners of one op is a wiring bug.
func (s *Server) Handle(op Op, h Handler) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.handlers[op]; ok {
		panic(fmt.Sprintf("quic: handler for %s registered twice", op))
	}
	s.handlers[op] = h
}

// HandleDatagrams registers the datagram handler.
func (s *Server) HandleDatagrams(h DatagramHandler) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dgram = h
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	return Stats{
		ConnsActive: s.connsActive.Load(), ConnsAccepted: s.accepted.Load(), ConnsRefused: s.refused.Load(),
		HandshakesActive: s.handshakes.Load(), StreamsActive: s.streamsActive.Load(),
		StreamsTotal: s.streams.Load(), StreamsFailed: s.failed.Load(), AuthRefused: s.authFail.Load(),
		ProtocolErrors: s.protoErr.Load(), DatagramsReceived: s.dgrams.Load(), DatagramsMalformed: s.dgramBad.Load(),
		AddressValidations: s.retries.Load(), Panics: s.panics.Load(), OpenBytes: s.openBytes.Load(),
		BudgetLimit: s.budgetRefused.Load(),
	}
}

// Run accepts connections until ctx ends or Close is called; it then closes
// the server and waits for every handler to return.
func (s *Server) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	go s.refusals.run(s.ctx)
	s.logger.Info("quic: listening", "addr", s.Addr().String(), "alpn", ALPN)
	for {
		qc, err := s.ln.Accept(s.ctx)
		if err != nil {
			if s.stopAccepting.Load() {
				// Established connections go on until Close.
				<-s.ctx.Done()
			}
			s.Close()
			s.wg.Wait()
			if s.ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("quic: accept: %w", err)
		}
		s.accepted.Add(1)
		s.mu.Lock()
		s.conns[qc] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go s.serveConn(qc)
	}
}

// StopAccepting refuses new connections (handshakes in progress are refused
// too) while established ones are served on: the first step of a graceful
// shutdown, which Close (or the end of Run's context) completes.
func (s *Server) StopAccepting() {
	s.stopAccepting.Store(true)
	s.ln.Close()
}

// Close stops accepting, closes every connection with CodeUnavailable, and
// releases the socket. Handlers see their contexts end. Close is idempotent.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.cancel()
		s.mu.Lock()
		for qc := range s.conns {
			qc.CloseWithError(quicgo.ApplicationErrorCode(CodeUnavailable), "hub shutting down")
		}
		s.mu.Unlock()
		s.ln.Close()
		s.closeErr = s.tr.Close()
		s.udp.Close()
	})
	return s.closeErr
}

func (s *Server) serveConn(qc *quicgo.Conn) {
	defer s.wg.Done()
	c := &Conn{qc: qc, id: s.nextID.Add(1)}
	log := s.logger.With("conn", c.id, "remote", qc.RemoteAddr().String())
	defer func() {
		s.mu.Lock()
		delete(s.conns, qc)
		s.mu.Unlock()
	}()
	go func() {
		select {
		case <-qc.HandshakeComplete():
			if hs, ok := qc.Context().Value(handshakeKey{}).(*atomic.Bool); ok && hs.Swap(false) {
				s.handshakes.Add(-1)
			}
		case <-qc.Context().Done():
		}
	}()
	// ctx ends with the server or the connection.
	ctx, cancel := context.WithCancel(qc.Context())
	defer cancel()
	stop := context.AfterFunc(s.ctx, cancel)
	defer stop()

	s.mu.RLock()
	dg := s.dgram
	s.mu.RUnlock()
	if dg != nil && s.cfg.EnableDatagrams {
		go s.readDatagrams(ctx, c, dg, log)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		qs, err := qc.AcceptStream(ctx)
		if err != nil {
			return
		}
		s.streams.Add(1)
		s.streamsActive.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer s.streamsActive.Add(-1)
			s.serveStream(ctx, c, newStream(qs, s.cfg.MaxFrameBytes, s.cfg.FrameTimeout), log)
		}()
	}
}

func (s *Server) readDatagrams(ctx context.Context, c *Conn, h DatagramHandler, log *slog.Logger) {
	for {
		b, err := c.qc.ReceiveDatagram(ctx)
		if err != nil {
			return
		}
		s.dgrams.Add(1)
		if err := s.serveDatagram(h, c, b, log); err != nil {
			s.dgramBad.Add(1)
			code := CodeOf(err)
			s.refusals.log(ctx, slog.LevelWarn, "datagram/"+code.String(), "quic: closing connection after bad datagram", log, "code", code.String(), "err", err)
			c.qc.CloseWithError(quicgo.ApplicationErrorCode(code), truncate(err.Error(), 256))
			return
		}
	}
}

// serveDatagram runs the datagram handler; a panic in it closes only the
// connection.
func (s *Server) serveDatagram(h DatagramHandler, c *Conn, b []byte, log *slog.Logger) (err error) {
	defer func() {
		if r := recover(); r != nil {
			s.panics.Add(1)
			log.Error("quic: datagram handler panicked", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			err = &Error{Code: CodeInternal, Message: "hub-side failure"}
		}
	}()
	return h(c, b)
}

// recoverStream, deferred in every goroutine serving a stream, turns a panic
// into a failed stream: the process and the connection's other streams go
// on.
func (s *Server) recoverStream(st *Stream, log *slog.Logger) {
	r := recover()
	if r == nil {
		return
	}
	s.panics.Add(1)
	s.failed.Add(1)
	log.Error("quic: handler panicked", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
	st.Fail(&Error{Code: CodeInternal, Message: "hub-side failure; see the hub's log"})
}

func (s *Server) serveStream(ctx context.Context, c *Conn, st *Stream, log *slog.Logger) {
	log = log.With("stream", st.ID())
	defer s.recoverStream(st, log)
	fail := func(err error, what string) {
		s.failed.Add(1)
		e := ToError(err)
		code := e.Code
		if code == CodeProtocol || code == CodeFrameTooLarge {
			s.protoErr.Add(1)
		}
		lvl := slog.LevelWarn
		if code == CodeCanceled || code == CodeUnavailable {
			lvl = slog.LevelDebug
		}
		// Refusals are logged once per reason and interval with a count:
		// a flood of bad streams must not become a flood of log lines.
		s.refusals.log(ctx, lvl, what+"/"+code.String(), "quic: "+what, log, "code", code.String(), "err", err)
		st.Fail(e)
	}
	st.SetReadDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	open, err := s.readOpen(st)
	if err != nil {
		fail(err, "stream refused before OPEN")
		return
	}
	st.SetReadDeadline(time.Time{})
	log = log.With("op", open.Op.String())

	s.mu.RLock()
	h := s.handlers[open.Op]
	s.mu.RUnlock()
	if h == nil {
		fail(Errorf(CodeUnknownOp, "operation %s is not served by this hub", open.Op), "unknown operation")
		return
	}
	p, err := s.authenticate(ctx, c, open.Token)
	if err != nil {
		s.authFail.Add(1)
		fail(err, "unauthenticated")
		return
	}
	log = log.With("principal", p.Name, "auth", p.Method)
	req := &Request{Op: open.Op, Body: open.Body, Principal: p, Conn: c, Stream: st, srv: s, log: log}
	if err := h.ServeQUIC(ctx, req); err != nil {
		if ctx.Err() != nil && CodeOf(err) == CodeInternal {
			err = &Error{Code: CodeUnavailable, Message: "connection or hub closing"}
		}
		fail(err, "operation failed")
		return
	}
	st.Close()
}

// readOpen reads and decodes a stream's OPEN frame: at most MaxOpenBytes
// (or the frame limit, if lower), charged to the budget while it is read.
func (s *Server) readOpen(st *Stream) (*Open, error) {
	var charged int64
	defer func() {
		if charged > 0 {
			s.cfg.Budget.Release(charged)
		}
	}()
	charge := func(n int) error {
		s.openBytes.Add(uint64(min(n, openGrowFrom)))
		if s.cfg.Budget == nil || n <= openGrowFrom {
			return nil
		}
		if !s.cfg.Budget.TryAcquire(int64(n)) {
			s.budgetRefused.Add(1)
			return fmt.Errorf("%w: no room for a %d-byte OPEN frame", ErrBudget, n)
		}
		charged = int64(n)
		return nil
	}
	t, p, err := st.readOpen(min(MaxOpenBytes, s.cfg.MaxFrameBytes), charge)
	if n := uint64(cap(p)); n > openGrowFrom {
		s.openBytes.Add(n - openGrowFrom)
	}
	switch {
	case err != nil && isTimeout(err) && !errors.Is(err, ErrFrameTimeout):
		return nil, fmt.Errorf("%w: none within %s (limits.handshake_timeout)", ErrOpenTimeout, s.cfg.HandshakeTimeout)
	case errors.Is(err, ErrFrameTooLarge) && t == FrameOpen:
		return nil, &Error{Code: CodeFrameTooLarge, Message: fmt.Sprintf("%v; an OPEN frame is at most %d bytes", err, min(MaxOpenBytes, s.cfg.MaxFrameBytes))}
	case err != nil:
		return nil, err
	case t == FrameError:
		e, err := DecodeError(p)
		if err != nil {
			return nil, err
		}
		return nil, e
	case t != FrameOpen:
		return nil, fmt.Errorf("%w: %s, want %s", ErrUnexpectedFrame, t, FrameOpen)
	}
	var open Open
	if err := open.Decode(p); err != nil {
		return nil, err
	}
	return &open, nil
}

func (s *Server) authenticate(ctx context.Context, c *Conn, token string) (Principal, error) {
	if s.cfg.Authenticate == nil {
		return Principal{Method: "anonymous"}, nil
	}
	info := AuthInfo{Token: token, RemoteAddr: c.RemoteAddr()}
	cs := c.qc.ConnectionState().TLS
	if len(cs.VerifiedChains) > 0 {
		info.Certificates = cs.VerifiedChains[0]
	} else if t := s.cfg.TLS; t.VerifyConnection != nil && len(cs.PeerCertificates) > 0 &&
		(t.ClientAuth == tls.RequestClientCert || t.ClientAuth == tls.RequireAnyClientCert) {
		info.Certificates = cs.PeerCertificates // the application verified them
	}
	p, err := s.cfg.Authenticate(ctx, info)
	if err != nil {
		var e *Error
		if !errors.As(err, &e) {
			err = &Error{Code: CodeUnauthenticated, Message: err.Error()}
		}
		return Principal{}, err
	}
	return p, nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// WireError is ToError as an error for handlers: it turns a ReadFrame or
// decode error into the *Error a peer should receive (nil for nil).
func WireError(err error) error {
	if err == nil {
		return nil
	}
	return ToError(err)
}

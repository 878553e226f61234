package hub

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/edgehub/edgehub/quic"
	"github.com/edgehub/edgehub/store"
)

// The data plane adapts the store to the QUIC server: it serves OpInfo,
// OpProduce and OpConsume, and fire-and-forget datagrams. Other parts add
// their operations with dataPlane.handle, the one way to register a QUIC
// handler, in builders that run after addDataPlane (groups: OpGroup,
// federation: OpReplicate).
//
// Lock order: dataPlane.sessMu is a leaf; no other lock is taken under it.

// Tuning of the data plane that is not configuration.
const (
	// maxInflightBytes bounds the record bytes one produce session has read
	// but not yet acknowledged; with QUIC flow control behind it, a producer
	// faster than the disk slows down instead of growing the hub's memory.
	maxInflightBytes = 32 << 20
	// subReserveMax and subReserveMin bound what a subscription reserves
	// of the consume share when it opens: its initial credit, within
	// these. It never holds more (except one record larger than that).
	subReserveMax = 256 << 10
	subReserveMin = 16 << 10
	// storeReads bounds the subscriptions reading from the store (or
	// cutting a chunk to their credit) at once: a read's chunks exist
	// before they are accounted to a reservation.
	storeReads = 8
)

type dataPlane struct {
	h      *Hub
	srv    *quic.Server
	st     *store.Store
	logger *slog.Logger
	limits LimitsConfig
	auth   *authorizer
	budget *memoryBudget
	// storeReads admits subscriptions' store reads.
	storeReads *semaphore.Weighted

	sessMu   sync.Mutex
	sessions map[sessionKey]*dgSession
	nextSess atomic.Uint64
	dgrams   chan dgBatch
	dgDone   sync.WaitGroup
	closing  chan struct{}
	closeMu  sync.Once

	// drainMu guards draining; produceWG counts produce sessions, added
	// only while not draining (so Drain's Wait never races an Add).
	drainMu   sync.Mutex
	draining  bool
	drainCh   chan struct{} // closed by Drain
	produceWG sync.WaitGroup

	m dataPlaneMetrics
	// copyShort counts, per stream name, batches short of their copies
	// (*atomic.Int64), for describe.
	copyShort sync.Map
}

// QUICAddr returns the UDP address the data plane listens on.
func (h *Hub) QUICAddr() net.Addr { return h.dataPlane.srv.Addr() }

// DataPlaneStats returns the QUIC server's counters.
func (h *Hub) DataPlaneStats() quic.Stats { return h.dataPlane.srv.Stats() }

// addDataPlane builds the TLS configuration, binds the QUIC listener and
// registers the data-plane operations and metrics.
func (h *Hub) addDataPlane() error {
	limits := h.cfg.Limits.withDefaults()
	tlsConf, err := h.serverTLS()
	if err != nil {
		return err
	}
	auth, err := newAuthorizer(h.cfg.Auth)
	if err != nil {
		return err
	}
	auth.pins = h.pinClientCerts(tlsConf)
	qc := quic.DefaultConfig(h.cfg.Listen.QUIC)
	qc.TLS = tlsConf
	qc.Authenticate = auth.authenticate
	qc.MaxConnections = limits.MaxConnections
	qc.MaxStreamsPerConn = limits.MaxStreamsPerConnection
	qc.MaxFrameBytes = int(limits.MaxFrameBytes)
	qc.HandshakeTimeout = time.Duration(limits.HandshakeTimeout)
	qc.IdleTimeout = time.Duration(limits.IdleTimeout)
	qc.FrameTimeout = time.Duration(limits.FrameTimeout)
	budget := newMemoryBudget(int64(limits.MemoryBudget))
	qc.Budget = budget.open
	qc.ValidateAddressAbove = limits.ValidateAddressAbove
	qc.Allow0RTT = *limits.Allow0RTT
	qc.EnableDatagrams = *limits.Datagrams
	qc.Logger = h.logger
	if qc.StatelessResetKey, err = h.resetKey(); err != nil {
		return err
	}
	srv, err := quic.Listen(qc)
	if err != nil {
		return fmt.Errorf("hub: data plane: %w", err)
	}
	d := &dataPlane{
		h: h, srv: srv, st: h.store, logger: h.logger, limits: limits, auth: auth, budget: budget,
		storeReads: semaphore.NewWeighted(storeReads),
		sessions:   map[sessionKey]*dgSession{},
		dgrams:     make(chan dgBatch, datagramQueue),
		closing:    make(chan struct{}),
		drainCh:    make(chan struct{}),
	}
	d.registerMetrics(h.metrics)
	budget.register(h.metrics)
	d.handle(quic.OpInfo, quic.HandlerFunc(d.info))
	d.handle(quic.OpProduce, quic.HandlerFunc(d.produce))
	d.handle(quic.OpConsume, quic.HandlerFunc(d.consume))
	if qc.EnableDatagrams {
		srv.HandleDatagrams(d.datagram)
		for range datagramWorkers {
			d.dgDone.Add(1)
			go d.appendDatagrams()
		}
	}
	h.dataPlane = d
	h.add(d)
	cert := h.cfg.TLS.CertFile
	if cert == "" {
		cert = filepath.Join(h.cfg.Hub.DataDir, SelfSignedCertFile) + " (self-signed: clients elsewhere use --ca with a copy)"
	}
	h.logger.Info("data plane listening", "addr", srv.Addr().String(), "auth", auth.enabled,
		"mtls", tlsConf.ClientCAs != nil, "mtls_pins", auth.pins != nil, "cert", cert)
	return nil
}

// Drain is the data plane's part of a graceful shutdown: it stops accepting
// connections and operations, stops reading produce sessions and waits
// until each has acknowledged the batches it had read (appended durably)
// and ended with unavailable, or ctx ends. Subscriptions and the rest end
// with Run's context.
func (d *dataPlane) Drain(ctx context.Context) error {
	d.drainMu.Lock()
	if !d.draining {
		d.draining = true
		close(d.drainCh)
		d.srv.StopAccepting()
	}
	d.drainMu.Unlock()
	done := make(chan struct{})
	go func() {
		d.produceWG.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("data plane: produce sessions still acknowledging: %w", context.Cause(ctx))
	}
}

// beginProduce counts a produce session in, unless the hub is draining.
func (d *dataPlane) beginProduce() bool {
	d.drainMu.Lock()
	defer d.drainMu.Unlock()
	if d.draining {
		return false
	}
	d.produceWG.Add(1)
	return true
}

func (d *dataPlane) isDraining() bool {
	d.drainMu.Lock()
	defer d.drainMu.Unlock()
	return d.draining
}

// errShuttingDown is what operations refused or ended by a drain get.
var errShuttingDown = quic.Errorf(quic.CodeUnavailable, "hub shutting down")

// Run serves QUIC until ctx ends.
func (d *dataPlane) Run(ctx context.Context) error { return d.srv.Run(ctx) }

// Close stops the QUIC server and the datagram workers. Idempotent.
func (d *dataPlane) Close() error {
	err := d.srv.Close()
	d.closeMu.Do(func() {
		close(d.closing)
		d.dgDone.Wait()
	})
	return err
}

// clientErr is toWire for what a client is told: hub-side failures keep
// their details (file paths, say) in the hub's log. err must not be nil.
func (d *dataPlane) clientErr(err error) *quic.Error {
	e := toWire(err)
	if e.Code == quic.CodeStorageFull {
		// The store logs it, once a minute; the client is told plainly.
		return &quic.Error{Code: e.Code, Message: "the hub's disk is full: nothing of the batch was stored; retry once space is freed"}
	}
	if e.Code != quic.CodeInternal && e.Code != quic.CodeCorrupt {
		return e
	}
	d.logger.Error("data plane: operation failed", "code", e.Code.String(), "err", err)
	msg := "hub-side failure; see the hub's log"
	if e.Code == quic.CodeCorrupt {
		msg = "stored data failed verification; see the hub's log"
	}
	return &quic.Error{Code: e.Code, Message: msg}
}

func (d *dataPlane) refuse(op quic.Op, err error) error {
	e := d.clientErr(err)
	d.m.refusals.WithLabelValues(op.String(), e.Code.String()).Inc()
	return e
}

// openStream finds a stream and checks the principal's permission on it.
func (d *dataPlane) openStream(req *quic.Request, name string, action string) (*store.Stream, error) {
	if err := d.auth.allow(req.Principal, action, name); err != nil {
		// The QUIC server logs the refusal with the principal and remote
		// address.
		return nil, d.refuse(req.Op, err)
	}
	st, err := d.st.Stream(name)
	if err != nil {
		return nil, d.refuse(req.Op, err)
	}
	return st, nil
}

func (d *dataPlane) info(ctx context.Context, req *quic.Request) error {
	var ir quic.InfoRequest
	if err := ir.Decode(req.Body); err != nil {
		return quic.WireError(err)
	}
	action := actionConsume
	if d.auth.allow(req.Principal, actionProduce, ir.Stream) == nil {
		action = actionProduce
	}
	st, err := d.openStream(req, ir.Stream, action)
	if err != nil {
		return err
	}
	info := quic.Info{Stream: st.Name(), MaxFrameBytes: uint64(d.limits.MaxFrameBytes)}
	for _, s := range st.Stats() {
		info.Shards = append(info.Shards, quic.ShardBounds{First: s.FirstSeq, Last: s.LastSeq})
	}
	l := wireLayout(st.Layout())
	info.Layout = &l
	return req.Stream.Send(quic.FrameInfo, &info)
}

// handle registers the handler of op on the QUIC server: the data plane's own
// operations and, from builders that run after addDataPlane, other parts'.
// It is the hub's one way to add a QUIC operation; the server panics when
// two parts register one op.
//
// While the hub drains, new operations are refused with unavailable.
func (d *dataPlane) handle(op quic.Op, h quic.Handler) {
	d.srv.Handle(op, quic.HandlerFunc(func(ctx context.Context, req *quic.Request) error {
		if d.isDraining() {
			return d.refuse(req.Op, errShuttingDown)
		}
		return h.ServeQUIC(ctx, req)
	}))
}

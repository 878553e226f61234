package hub

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/semaphore"

	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/quic"
	"github.com/edgehub/edgehub/store"
)

// The data plane adapts the store to the QUIC server: it serves OpInfo,
// OpProduce and OpConsume, and fire-and-forget datagrams. Other parts add
// operations with h.QUIC().Handle in builders that run after addDataPlane.
//
// Lock order: dataPlane.sessMu is a leaf; no other lock is taken under it.

// Tuning of the data plane that is not configuration.
const (
	// maxInflightBytes bounds the record bytes one produce session has read
	// but not yet acknowledged; with QUIC flow control behind it, a producer
	// faster than the disk slows down instead of growing the hub's memory.
	maxInflightBytes = 32 << 20
	// readChunkBytes bounds one store read for a subscription; memory per
	// subscription is about this much whatever the consumer's credit.
	readChunkBytes = 1 << 20
	// datagramQueue and datagramWorkers: datagram batches wait here for an
	// append; a full queue drops them (they are lossy by contract).
	datagramQueue   = 1024
	datagramWorkers = 2
)

// SelfSignedCertFile is where a hub without [tls] cert_file keeps its
// generated certificate, relative to the data directory; the CLI trusts
// ./hub-data/tls/cert.pem by default.
const SelfSignedCertFile = "tls/cert.pem"

type dataPlane struct {
	h      *Hub
	srv    *quic.Server
	st     *store.Store
	logger *slog.Logger
	limits LimitsConfig
	auth   *authorizer

	sessMu   sync.Mutex
	sessions map[sessionKey]*dgSession
	nextSess atomic.Uint64
	dgrams   chan dgBatch
	dgDone   sync.WaitGroup
	closing  chan struct{}
	closeMu  sync.Once

	m dataPlaneMetrics
}

type sessionKey struct {
	conn, id uint64
}

type dgSession struct {
	stream *store.Stream
}

type dgBatch struct {
	stream *store.Stream
	shard  int
	recs   []record.Record
}

type dataPlaneMetrics struct {
	records      *prometheus.CounterVec // stream, mode
	batches      *prometheus.CounterVec // stream, result
	dgDropped    *prometheus.CounterVec // reason
	consumed     *prometheus.CounterVec // stream
	consumedB    *prometheus.CounterVec // stream
	subs         prometheus.Gauge       // open subscriptions
	appendTime   prometheus.Histogram   // store append latency
	refusals     *prometheus.CounterVec // op, code
	inflightSess *prometheus.GaugeVec   // stream: produce sessions
	inflightB    prometheus.Gauge       // produce bytes read, not yet acknowledged
}

// QUIC returns the hub's QUIC server, for parts that add operations.
func (h *Hub) QUIC() *quic.Server { return h.dataPlane.srv }

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
	qc := quic.DefaultConfig(h.cfg.Listen.QUIC)
	qc.TLS = tlsConf
	qc.Authenticate = auth.authenticate
	qc.MaxConnections = limits.MaxConnections
	qc.MaxStreamsPerConn = limits.MaxStreamsPerConnection
	qc.MaxFrameBytes = int(limits.MaxFrameBytes)
	qc.HandshakeTimeout = time.Duration(limits.HandshakeTimeout)
	qc.IdleTimeout = time.Duration(limits.IdleTimeout)
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
		h: h, srv: srv, st: h.store, logger: h.logger, limits: limits, auth: auth,
		sessions: map[sessionKey]*dgSession{},
		dgrams:   make(chan dgBatch, datagramQueue),
		closing:  make(chan struct{}),
	}
	d.registerMetrics(h.metrics)
	srv.Handle(quic.OpInfo, quic.HandlerFunc(d.info))
	srv.Handle(quic.OpProduce, quic.HandlerFunc(d.produce))
	srv.Handle(quic.OpConsume, quic.HandlerFunc(d.consume))
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
		"mtls", tlsConf.ClientCAs != nil, "cert", cert)
	return nil
}

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

// serverTLS loads the configured certificate or creates the self-signed one.
func (h *Hub) serverTLS() (*tls.Config, error) {
	c := h.cfg.TLS
	var cert tls.Certificate
	var err error
	if c.CertFile != "" {
		cert, err = tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("hub: tls: load %s: %w", c.CertFile, err)
		}
	} else {
		hosts := []string{"localhost", "127.0.0.1", "::1"}
		if hn, err := os.Hostname(); err == nil {
			hosts = append(hosts, hn)
		}
		if host, _, err := net.SplitHostPort(h.cfg.Listen.QUIC); err == nil && host != "" {
			if ip := net.ParseIP(host); ip == nil || !ip.IsUnspecified() {
				hosts = append(hosts, host)
			}
		}
		hosts = append(hosts, c.Hosts...)
		dir := h.cfg.Hub.DataDir
		cert, err = quic.LoadOrCreateCert(filepath.Join(dir, SelfSignedCertFile), filepath.Join(dir, "tls/key.pem"), hosts)
		if err != nil {
			return nil, fmt.Errorf("hub: tls: %w", err)
		}
	}
	conf := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}
	if c.ClientCAFile != "" {
		pool, err := quic.CertPool(c.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("hub: tls: %w", err)
		}
		conf.ClientCAs = pool
		conf.ClientAuth = tls.VerifyClientCertIfGiven
		if c.RequireClientCert {
			conf.ClientAuth = tls.RequireAndVerifyClientCert
		}
	}
	return conf, nil
}

// resetKey returns the QUIC stateless reset key kept in the data directory,
// creating it on first start. A stable key lets a restarted hub tell clients
// of the previous process that their connection is gone, so they reconnect
// at once rather than after the idle timeout.
func (h *Hub) resetKey() (*[32]byte, error) {
	path := filepath.Join(h.cfg.Hub.DataDir, "tls", "reset.key")
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("hub: reset key: %w", err)
	}
	if err == nil && len(b) == 32 {
		return (*[32]byte)(b), nil
	}
	if err == nil {
		// The key only lets a restarted hub reset connections of its
		// previous life faster: a damaged one is replaced, not fatal.
		h.logger.Warn("hub: replacing damaged stateless reset key", "file", path, "bytes", len(b))
	}
	b = make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("hub: reset key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("hub: reset key: %w", err)
	}
	if err := writeFileAtomic(path, b, 0o600); err != nil {
		return nil, fmt.Errorf("hub: reset key %s: %w", path, err)
	}
	return (*[32]byte)(b), nil
}

func (d *dataPlane) registerMetrics(reg *prometheus.Registry) {
	d.m = dataPlaneMetrics{
		records: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgehub_produce_records_total",
			Help: "Records stored from producers; mode is durable (acknowledged after fsync) or datagram (fire-and-forget).",
		}, []string{"stream", "mode"}),
		batches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgehub_produce_batches_total",
			Help: "Produce batches by result: ok, duplicate (idempotent retry answered with original positions) or refused.",
		}, []string{"stream", "result"}),
		dgDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgehub_produce_datagrams_dropped_total",
			Help: "Datagram batches dropped, by reason (queue_full, unknown_session, bad_batch, append_failed).",
		}, []string{"reason"}),
		consumed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgehub_consume_records_total", Help: "Records pushed to subscribers (whole chunks, counted as sent).",
		}, []string{"stream"}),
		consumedB: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgehub_consume_bytes_total", Help: "Record batch bytes pushed to subscribers.",
		}, []string{"stream"}),
		subs: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edgehub_consume_subscriptions", Help: "Open subscriptions.",
		}),
		appendTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "edgehub_produce_append_seconds",
			Help:    "Time from a batch's arrival to its durable commit.",
			Buckets: prometheus.ExponentialBuckets(50e-6, 2, 16),
		}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgehub_dataplane_refusals_total", Help: "Operations and batches refused, by operation and error code.",
		}, []string{"op", "code"}),
		inflightSess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "edgehub_produce_sessions", Help: "Open produce sessions.",
		}, []string{"stream"}),
		inflightB: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edgehub_produce_inflight_bytes",
			Help: "Batch bytes read from producers and not yet acknowledged, over all sessions (each session is capped).",
		}),
	}
	reg.MustRegister(d.m.records, d.m.batches, d.m.dgDropped, d.m.consumed, d.m.consumedB, d.m.subs,
		d.m.appendTime, d.m.refusals, d.m.inflightSess, d.m.inflightB)
	st := func(name, help string, typ prometheus.ValueType, f func(quic.Stats) float64) {
		reg.MustRegister(newFuncMetric(name, help, typ, func() float64 { return f(d.srv.Stats()) }))
	}
	st("edgehub_quic_connections", "Open QUIC connections.", prometheus.GaugeValue, func(s quic.Stats) float64 { return float64(s.ConnsActive) })
	st("edgehub_quic_connections_accepted_total", "QUIC connections accepted.", prometheus.CounterValue, func(s quic.Stats) float64 { return float64(s.ConnsAccepted) })
	st("edgehub_quic_connections_refused_total", "QUIC connection attempts refused over limits.max_connections.", prometheus.CounterValue, func(s quic.Stats) float64 { return float64(s.ConnsRefused) })
	st("edgehub_quic_streams", "Open QUIC streams (operations).", prometheus.GaugeValue, func(s quic.Stats) float64 { return float64(s.StreamsActive) })
	st("edgehub_quic_streams_failed_total", "Operations ended with an error code.", prometheus.CounterValue, func(s quic.Stats) float64 { return float64(s.StreamsFailed) })
	st("edgehub_quic_auth_refused_total", "Streams refused as unauthenticated.", prometheus.CounterValue, func(s quic.Stats) float64 { return float64(s.AuthRefused) })
	st("edgehub_quic_protocol_errors_total", "Streams closed for malformed or oversized frames.", prometheus.CounterValue, func(s quic.Stats) float64 { return float64(s.ProtocolErrors) })
	st("edgehub_quic_datagrams_received_total", "QUIC datagrams received.", prometheus.CounterValue, func(s quic.Stats) float64 { return float64(s.DatagramsReceived) })
	st("edgehub_quic_address_validations_total", "Handshakes answered with a Retry because of handshake load (limits.validate_address_above).", prometheus.CounterValue, func(s quic.Stats) float64 { return float64(s.AddressValidations) })
}

// funcMetric is a metric read at scrape time.
type funcMetric struct {
	desc *prometheus.Desc
	typ  prometheus.ValueType
	f    func() float64
}

func newFuncMetric(name, help string, typ prometheus.ValueType, f func() float64) *funcMetric {
	return &funcMetric{desc: prometheus.NewDesc(name, help, nil, nil), typ: typ, f: f}
}

func (m *funcMetric) Describe(ch chan<- *prometheus.Desc) { ch <- m.desc }
func (m *funcMetric) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(m.desc, m.typ, m.f())
}

// wireErr maps a store error to the code a client sees.
func wireErr(err error) error {
	var e *quic.Error
	code := quic.CodeInternal
	switch {
	case err == nil:
		return nil
	case errors.As(err, &e):
		return err
	case errors.Is(err, store.ErrStreamNotFound):
		code = quic.CodeNotFound
	case errors.Is(err, store.ErrInvalidShard), errors.Is(err, store.ErrInvalidName), errors.Is(err, store.ErrInvalidConfig):
		code = quic.CodeInvalidArgument
	case errors.Is(err, store.ErrRecordTooLarge):
		code = quic.CodeRecordTooLarge
	case errors.Is(err, store.ErrSequenceGap):
		code = quic.CodeSequenceGap
	case errors.Is(err, store.ErrDuplicateTooOld):
		code = quic.CodeDuplicateTooOld
	case errors.Is(err, store.ErrSequenceConflict):
		code = quic.CodeSequenceConflict
	case errors.Is(err, store.ErrClosed), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		code = quic.CodeUnavailable
	case errors.Is(err, store.ErrCorrupt):
		code = quic.CodeCorrupt
	}
	return &quic.Error{Code: code, Message: err.Error()}
}

// clientErr is wireErr for what a client is told: hub-side failures keep
// their details (file paths, say) in the hub's log.
func (d *dataPlane) clientErr(err error) error {
	e, ok := wireErr(err).(*quic.Error)
	if !ok || (e.Code != quic.CodeInternal && e.Code != quic.CodeCorrupt) {
		return wireErr(err)
	}
	d.logger.Error("data plane: operation failed", "code", e.Code.String(), "err", err)
	msg := "hub-side failure; see the hub's log"
	if e.Code == quic.CodeCorrupt {
		msg = "stored data failed verification; see the hub's log"
	}
	return &quic.Error{Code: e.Code, Message: msg}
}

func (d *dataPlane) refuse(op quic.Op, err error) error {
	err = d.clientErr(err)
	d.m.refusals.WithLabelValues(op.String(), quic.CodeOf(err).String()).Inc()
	return err
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
	return req.Stream.Send(quic.FrameInfo, &info)
}

// pendingBatch is one BATCH between its arrival and its ACK.
type pendingBatch struct {
	batch   store.Batch
	id      uint64
	size    int64
	start   time.Time
	ack     quic.Ack
	pending *store.Pending // the queued append
	err     error          // or why it could not be queued
}

// produce serves a produce session. Batches are read ahead up to the
// in-flight limits and appended in arrival order per shard (one lane per
// shard, so an idempotent producer's batches reach the store in sequence);
// lanes of different shards commit concurrently and the store's group commit
// coalesces them. Each lane sends its ACKs as its appends commit, so ACKs of
// one shard keep their order while shards do not wait for each other.
func (d *dataPlane) produce(ctx context.Context, req *quic.Request) error {
	var open quic.ProduceOpen
	if err := open.Decode(req.Body); err != nil {
		return quic.WireError(err)
	}
	st, err := d.openStream(req, open.Stream, actionProduce)
	if err != nil {
		return err
	}
	if open.ProducerID == 0 {
		// A non-idempotent append must not run from replayable early data.
		if err := req.Conn.HandshakeComplete(ctx); err != nil {
			return d.refuse(req.Op, err)
		}
	}
	gauge := d.m.inflightSess.WithLabelValues(st.Name())
	gauge.Inc()
	defer gauge.Dec()
	ready := quic.ProduceReady{
		Shards:        uint32(st.Shards()),
		MaxBatchBytes: uint64(d.limits.MaxFrameBytes) - 64,
		MaxInFlight:   uint32(d.limits.MaxInflightBatches),
		// Announced so that clients refuse a record above it at once,
		// not after a round trip.
		MaxRecordBytes: uint64(d.st.Config().MaxRecordBytes),
	}
	if open.Flags&quic.ProduceDatagrams != 0 {
		if err := req.Conn.HandshakeComplete(ctx); err != nil {
			return d.refuse(req.Op, err)
		}
		ready.DatagramSession = d.nextSess.Add(1)
		key := sessionKey{req.Conn.ID(), ready.DatagramSession}
		d.sessMu.Lock()
		d.sessions[key] = &dgSession{stream: st}
		d.sessMu.Unlock()
		defer func() {
			d.sessMu.Lock()
			delete(d.sessions, key)
			d.sessMu.Unlock()
		}()
	}
	if err := req.Stream.Send(quic.FrameProduceReady, &ready); err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// In-flight budget: batches and bytes read but not yet acknowledged.
	// When it is spent the reader stops reading and QUIC flow control
	// holds the producer back.
	countSem := semaphore.NewWeighted(int64(d.limits.MaxInflightBatches))
	bytesSem := semaphore.NewWeighted(maxInflightBytes)
	lanes := map[int32]chan *pendingBatch{}
	var laneWG sync.WaitGroup
	name := st.Name()
	recordsOK := d.m.records.WithLabelValues(name, "durable")
	var ackErr error
	var ackMu sync.Mutex
	// ack sends one batch's ACK and returns its budget. Lanes call it
	// concurrently: ACKs of different shards may overtake each other.
	ack := func(pb *pendingBatch) {
		d.m.appendTime.Observe(time.Since(pb.start).Seconds())
		switch {
		case pb.ack.Code != quic.CodeOK:
			d.m.batches.WithLabelValues(name, "refused").Inc()
			d.m.refusals.WithLabelValues(req.Op.String(), pb.ack.Code.String()).Inc()
		case pb.ack.Duplicate:
			d.m.batches.WithLabelValues(name, "duplicate").Inc()
		default:
			d.m.batches.WithLabelValues(name, "ok").Inc()
			recordsOK.Add(float64(len(pb.batch.Records)))
		}
		if err := req.Stream.Send(quic.FrameAck, &pb.ack); err != nil {
			ackMu.Lock()
			if ackErr == nil {
				ackErr = err
			}
			ackMu.Unlock()
			cancel()
		}
		bytesSem.Release(pb.size)
		countSem.Release(1)
		d.m.inflightB.Sub(float64(pb.size))
	}
	finish := func(readErr error) error {
		for _, l := range lanes {
			close(l)
		}
		laneWG.Wait()
		ackMu.Lock()
		defer ackMu.Unlock()
		if readErr == nil && ackErr != nil {
			readErr = ackErr
		}
		return readErr
	}

	for {
		ft, p, err := req.Stream.ReadFrame()
		if errors.Is(err, io.EOF) {
			return finish(nil)
		}
		if err != nil {
			cancel()
			return finish(quic.WireError(err))
		}
		if ft != quic.FrameBatch {
			cancel()
			return finish(quic.Errorf(quic.CodeProtocol, "%s frame in a produce session", ft))
		}
		var b quic.Batch
		if err := b.Decode(p); err != nil {
			cancel()
			return finish(quic.WireError(err))
		}
		pb := &pendingBatch{id: b.ID, size: min(int64(len(p)), maxInflightBytes), start: time.Now()}
		pb.ack.ID = b.ID
		if err := countSem.Acquire(ctx, 1); err != nil {
			return finish(wireErr(err))
		}
		if err := bytesSem.Acquire(ctx, pb.size); err != nil {
			countSem.Release(1)
			return finish(wireErr(err))
		}
		d.m.inflightB.Add(float64(pb.size))
		recs, err := d.decodeBatch(&b, int(st.Shards()), open.ProducerID)
		if err != nil {
			if quic.CodeOf(err) == quic.CodeProtocol {
				cancel()
				return finish(err)
			}
			// A refusal of this batch alone.
			e := d.clientErr(err).(*quic.Error)
			pb.ack.Code, pb.ack.Message = e.Code, e.Message
			ack(pb)
			continue
		}
		pb.batch = store.Batch{Shard: int(b.Shard), Records: recs}
		if open.ProducerID != 0 {
			pb.batch.ProducerID, pb.batch.ProducerSeq = open.ProducerID, b.ProducerSeq
		}
		lane, ok := lanes[b.Shard]
		if !ok {
			// The lane's buffer holds the whole in-flight budget, so
			// sending to it never blocks.
			lane = make(chan *pendingBatch, d.limits.MaxInflightBatches)
			lanes[b.Shard] = lane
			laneWG.Add(1)
			go func() {
				defer laneWG.Done()
				for pb := range lane {
					d.finishAppend(pb)
					ack(pb)
				}
			}()
		}
		// Queue the append now, in arrival order, so a shard's batches
		// pipeline into the store's group commits instead of each waiting
		// for the previous one's fsync; the lane waits and acks in order.
		d.startAppend(ctx, st, pb)
		lane <- pb
	}
}

// decodeBatch checks a BATCH against the session and decodes its records.
// A malformed record batch is a protocol error (it fails the session); a
// request the hub refuses is an *Error for this batch's ACK.
func (d *dataPlane) decodeBatch(b *quic.Batch, shards int, producerID uint64) ([]record.Record, error) {
	if b.Codec != quic.CodecNone {
		return nil, quic.Errorf(quic.CodeInvalidArgument, "unsupported codec %d", b.Codec)
	}
	recs, err := record.DecodeBatch(b.Records, nil)
	if err != nil {
		return nil, quic.Errorf(quic.CodeProtocol, "batch %d: %v", b.ID, err)
	}
	switch {
	case int(b.Shard) >= shards:
		return nil, quic.Errorf(quic.CodeInvalidArgument, "shard %d of %d", b.Shard, shards)
	case producerID != 0 && b.Shard < 0:
		return nil, quic.Errorf(quic.CodeInvalidArgument, "an idempotent producer must name the shard of each batch")
	}
	for i := range recs {
		if !recs[i].Origin.IsLocal() {
			return nil, quic.Errorf(quic.CodeInvalidArgument, "record %d carries a foreign origin; producers send local records only", i)
		}
		recs[i].Seq, recs[i].IngestTime = 0, 0
	}
	return recs, nil
}

// startAppend queues pb's append in the store without waiting for it.
func (d *dataPlane) startAppend(ctx context.Context, st *store.Stream, pb *pendingBatch) {
	if ctx.Err() != nil {
		pb.ack.Code, pb.ack.Message = quic.CodeCanceled, "session ended"
		return
	}
	pb.pending, pb.err = st.AppendAsync(ctx, pb.batch)
}

// finishAppend waits for pb's append and fills its ACK.
func (d *dataPlane) finishAppend(pb *pendingBatch) {
	if pb.pending == nil && pb.err == nil {
		return // refused before it was queued
	}
	res, err := store.Result{}, pb.err
	if err == nil {
		res, err = pb.pending.Wait()
	}
	if err != nil {
		e := d.clientErr(err).(*quic.Error)
		pb.ack.Code, pb.ack.Message = e.Code, e.Message
		return
	}
	pb.ack.Duplicate = res.Duplicate
	pb.ack.Runs = positionsToRuns(res.Positions)
}

// positionsToRuns compresses per-record positions into runs of consecutive
// sequences in one shard: a batch to one shard is a single run.
func positionsToRuns(ps []store.Position) []quic.Run {
	var runs []quic.Run
	for _, p := range ps {
		if n := len(runs); n > 0 {
			r := &runs[n-1]
			if r.Shard == p.Shard && ((r.FirstSeq == 0 && p.Seq == 0) || (r.FirstSeq != 0 && p.Seq == r.FirstSeq+uint64(r.Count))) {
				r.Count++
				continue
			}
		}
		runs = append(runs, quic.Run{Shard: p.Shard, FirstSeq: p.Seq, Count: 1})
	}
	return runs
}

// datagram queues a fire-and-forget batch. Unknown sessions (a session that
// just ended) and a full queue drop the batch; a malformed datagram closes
// the connection.
func (d *dataPlane) datagram(c *quic.Conn, payload []byte) error {
	var dg quic.Datagram
	if err := dg.Decode(payload); err != nil {
		return quic.WireError(err)
	}
	d.sessMu.Lock()
	sess := d.sessions[sessionKey{c.ID(), dg.Session}]
	d.sessMu.Unlock()
	if sess == nil {
		d.m.dgDropped.WithLabelValues("unknown_session").Inc()
		return nil
	}
	if int(dg.Shard) >= sess.stream.Shards() {
		d.m.dgDropped.WithLabelValues("bad_batch").Inc()
		return nil
	}
	// The payload is owned by us: records may alias it.
	recs, err := record.DecodeBatch(dg.Records, nil)
	if err != nil {
		return quic.Errorf(quic.CodeProtocol, "datagram batch: %v", err)
	}
	for i := range recs {
		if !recs[i].Origin.IsLocal() {
			return quic.Errorf(quic.CodeProtocol, "datagram record with a foreign origin")
		}
	}
	select {
	case d.dgrams <- dgBatch{stream: sess.stream, shard: int(dg.Shard), recs: recs}:
	default:
		d.m.dgDropped.WithLabelValues("queue_full").Inc()
	}
	return nil
}

// appendDatagrams appends queued datagram batches. A datagram holds a few
// records, so appending each alone would cost a commit per datagram: it
// takes whatever is queued and appends it as one batch per stream and shard.
func (d *dataPlane) appendDatagrams() {
	defer d.dgDone.Done()
	type target struct {
		stream *store.Stream
		shard  int
	}
	groups := map[target][]record.Record{}
	for {
		var b dgBatch
		select {
		case b = <-d.dgrams:
		case <-d.closing:
			return
		}
		clear(groups)
		n := 0
		for {
			k := target{b.stream, b.shard}
			groups[k] = append(groups[k], b.recs...)
			n += len(b.recs)
			if n >= 10000 {
				break
			}
			select {
			case b = <-d.dgrams:
				continue
			default:
			}
			break
		}
		for k, recs := range groups {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			_, err := k.stream.Append(ctx, store.Batch{Shard: k.shard, Records: recs})
			cancel()
			if err != nil {
				d.m.dgDropped.WithLabelValues("append_failed").Inc()
				d.logger.Debug("data plane: datagram append failed", "stream", k.stream.Name(), "err", err)
				continue
			}
			d.m.records.WithLabelValues(k.stream.Name(), "datagram").Add(float64(len(recs)))
		}
	}
}

// consume serves a subscription: it pushes stored chunks of the subscribed
// shards from their start positions as soon as they are committed, while the
// consumer's byte credit lasts. It never polls: when every shard is caught
// up it waits on the store's commit notifications.
func (d *dataPlane) consume(ctx context.Context, req *quic.Request) error {
	var open quic.ConsumeOpen
	if err := open.Decode(req.Body); err != nil {
		return quic.WireError(err)
	}
	st, err := d.openStream(req, open.Stream, actionConsume)
	if err != nil {
		return err
	}
	n := st.Shards()
	shards := make([]int, 0, n)
	seen := make([]bool, n)
	for _, s := range open.Shards {
		if int(s) >= n {
			return d.refuse(req.Op, quic.Errorf(quic.CodeInvalidArgument, "shard %d of %d", s, n))
		}
		if !seen[s] {
			seen[s] = true
			shards = append(shards, int(s))
		}
	}
	if len(shards) == 0 {
		for i := range n {
			shards = append(shards, i)
		}
	}
	resume := map[int]uint64{}
	for _, p := range open.Resume {
		resume[int(p.Shard)] = p.Seq
	}
	next := make([]uint64, len(shards))
	ready := quic.ConsumeReady{Shards: uint32(n)}
	for i, sh := range shards {
		first, last, err := st.Bounds(sh)
		if err != nil {
			return d.refuse(req.Op, err)
		}
		var start uint64
		if seq, ok := resume[sh]; ok {
			start = seq
		} else {
			switch open.Start.Kind {
			case quic.StartEarliest:
				start = first
			case quic.StartLatest:
				start = last + 1
			case quic.StartSeq:
				start = open.Start.Value
			case quic.StartTime:
				if open.Start.Value > 1<<63-1 {
					return d.refuse(req.Op, quic.Errorf(quic.CodeInvalidArgument, "start time out of range"))
				}
				start, err = st.SeqAtTime(sh, time.Unix(0, int64(open.Start.Value)))
				if err != nil {
					return d.refuse(req.Op, err)
				}
			}
		}
		start = max(start, first, 1)
		next[i] = start
		ready.Subs = append(ready.Subs, quic.Subscription{Shard: uint32(sh), Start: start, Last: last})
	}
	if err := req.Stream.Send(quic.FrameConsumeReady, &ready); err != nil {
		return err
	}
	d.m.subs.Inc()
	defer d.m.subs.Dec()

	maxCredit := int64(d.limits.MaxConsumerCredit)
	var credit atomic.Int64
	credit.Store(min(int64(min(open.Credit, 1<<62)), maxCredit))
	creditWake := make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	readErr := make(chan error, 1)
	go func() {
		// The consumer's side of the stream carries only CREDIT frames; its
		// end (FIN) ends the subscription.
		defer cancel()
		for {
			ft, p, err := req.Stream.ReadFrame()
			if errors.Is(err, io.EOF) {
				readErr <- nil
				return
			}
			if err != nil {
				readErr <- quic.WireError(err)
				return
			}
			var c quic.Credit
			if ft != quic.FrameCredit {
				readErr <- quic.Errorf(quic.CodeProtocol, "%s frame in a subscription", ft)
				return
			}
			if err := c.Decode(p); err != nil {
				readErr <- quic.WireError(err)
				return
			}
			// Credit beyond the hub's cap is clipped: it bounds what a
			// consumer can make the hub send ahead of its reading.
			for {
				cur := credit.Load()
				nv := min(cur+int64(min(c.Bytes, 1<<62)), maxCredit)
				if credit.CompareAndSwap(cur, nv) {
					break
				}
			}
			select {
			case creditWake <- struct{}{}:
			default:
			}
		}
	}()
	consumed := d.m.consumed.WithLabelValues(st.Name())
	consumedB := d.m.consumedB.WithLabelValues(st.Name())
	cases := make([]reflect.SelectCase, 0, len(shards)+2)
	round := 0
	for {
		if credit.Load() <= 0 {
			select {
			case <-creditWake:
				continue
			case <-ctx.Done():
				return d.endSubscription(ctx, readErr)
			}
		}
		// Take the commit notifications before reading, so a commit that
		// lands after the read still wakes us.
		cases = cases[:0]
		progress := false
		// Start each round at the next shard, so limited credit is shared
		// fairly rather than spent on the first shard with a backlog.
		round++
		for k := range shards {
			if credit.Load() <= 0 {
				break
			}
			i := (k + round) % len(shards)
			sh := shards[i]
			_, last, _ := st.Bounds(sh)
			if next[i] > last {
				cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(st.Changed(sh))})
				if _, last, _ = st.Bounds(sh); next[i] > last {
					continue
				}
			}
			chunks, err := st.ReadRaw(sh, next[i], int(min(credit.Load(), readChunkBytes)))
			if err != nil {
				return d.refuse(req.Op, err)
			}
			for _, c := range chunks {
				info, err := record.ReadInfo(c)
				if err != nil {
					return d.refuse(req.Op, &store.CorruptError{Shard: sh, Err: err})
				}
				if err := req.Stream.Send(quic.FrameRecords, &quic.Records{Shard: uint32(sh), Batch: c}); err != nil {
					if ctx.Err() != nil {
						return d.endSubscription(ctx, readErr)
					}
					return err
				}
				credit.Add(-int64(len(c)))
				consumed.Add(float64(info.Count))
				consumedB.Add(float64(len(c)))
				next[i] = info.LastSeq + 1
				progress = true
			}
		}
		if progress || credit.Load() <= 0 {
			continue
		}
		cases = append(cases,
			reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ctx.Done())},
			reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(creditWake)})
		reflect.Select(cases)
		if ctx.Err() != nil {
			return d.endSubscription(ctx, readErr)
		}
	}
}

// endSubscription reports why a subscription ended: the consumer's clean
// end is not an error.
func (d *dataPlane) endSubscription(ctx context.Context, readErr chan error) error {
	select {
	case err := <-readErr:
		return err
	default:
		return wireErr(ctx.Err())
	}
}

// Permission actions.
const (
	actionProduce = "produce"
	actionConsume = "consume"
)

// authorizer implements [auth]: token and certificate identities and their
// stream patterns. Tokens are looked up by their SHA-256, so lookup time
// does not depend on how much of a guessed token is right.
type authorizer struct {
	enabled bool
	tokens  map[[32]byte]grant // by SHA-256 of the token
	byName  map[string]grant   // token grants by name (names are unique)
	clients map[string]grant
	anon    grant
}

type grant struct {
	name             string
	produce, consume []string
}

func newAuthorizer(c AuthConfig) (*authorizer, error) {
	a := &authorizer{
		enabled: c.Enabled(),
		tokens:  map[[32]byte]grant{},
		byName:  map[string]grant{},
		clients: map[string]grant{},
		anon:    grant{name: "anonymous", produce: c.Anonymous.Produce, consume: c.Anonymous.Consume},
	}
	for _, t := range c.Tokens {
		g := grant{name: t.Name, produce: t.Produce, consume: t.Consume}
		a.tokens[sha256.Sum256([]byte(t.Token))] = g
		a.byName[t.Name] = g
	}
	for _, g := range c.Clients {
		a.clients[g.Name] = grant{name: g.Name, produce: g.Produce, consume: g.Consume}
	}
	return a, nil
}

// authenticate names the stream's principal: a known token, else a verified
// client certificate, else anonymous. An unknown token is refused outright
// rather than downgraded to anonymous, so a typo is reported as such.
func (a *authorizer) authenticate(_ context.Context, info quic.AuthInfo) (quic.Principal, error) {
	if info.Token != "" {
		sum := sha256.Sum256([]byte(info.Token))
		if g, ok := a.tokens[sum]; ok {
			return quic.Principal{Name: g.name, Method: "token"}, nil
		}
		if !a.enabled {
			return quic.Principal{Method: "anonymous"}, nil
		}
		return quic.Principal{}, quic.Errorf(quic.CodeUnauthenticated, "unknown token")
	}
	if len(info.Certificates) > 0 {
		return quic.Principal{Name: certName(info.Certificates[0]), Method: "mtls"}, nil
	}
	return quic.Principal{Method: "anonymous"}, nil
}

func certName(c *x509.Certificate) string {
	if c.Subject.CommonName != "" {
		return c.Subject.CommonName
	}
	if len(c.DNSNames) > 0 {
		return c.DNSNames[0]
	}
	return ""
}

// allow checks action on stream for p; the error says which code applies.
func (a *authorizer) allow(p quic.Principal, action, stream string) error {
	if !a.enabled {
		return nil
	}
	var g grant
	var ok bool
	switch p.Method {
	case "token":
		g, ok = a.byName[p.Name]
	case "mtls":
		g, ok = a.clients[p.Name]
	default:
		g, ok = a.anon, true
	}
	pats := g.consume
	if action == actionProduce {
		pats = g.produce
	}
	if ok {
		for _, pat := range pats {
			if m, _ := path.Match(pat, stream); m {
				return nil
			}
		}
	}
	verb := "consume from"
	if action == actionProduce {
		verb = "produce to"
	}
	if p.Method == "anonymous" || p.Method == "" {
		return quic.Errorf(quic.CodeUnauthenticated, "this hub requires a token or client certificate to %s stream %q", verb, stream)
	}
	return quic.Errorf(quic.CodePermissionDenied, "%s %q may not %s stream %q", p.Method, p.Name, verb, stream)
}

// addr is the data plane's bound UDP address as host:port.
func (d *dataPlane) addr() string { return d.srv.Addr().String() }

// handle registers another part's operation on the QUIC server; call it from
// a builder that runs after addDataPlane.
func (d *dataPlane) handle(op quic.Op, h quic.Handler) { d.srv.Handle(op, h) }

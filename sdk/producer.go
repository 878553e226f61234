package sdk

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync"
	"time"

	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/quic"
)

// ProducerOptions configure a Producer.
type ProducerOptions struct {
	// NotIdempotent turns idempotence off. By default a producer has an id
	// and numbers its batches per shard, so a batch retried after a timeout
	// or reconnect is stored once and acknowledged with its original
	// positions.
	NotIdempotent bool
	// Copies asks that each batch be held by this many hubs (the one the
	// producer talks to included) before it is acknowledged, when more
	// than the stream's copies (docs/guarantees.md, "Copies"). 0: the
	// stream's. A batch short of them fails with an error of code
	// copies_short, although it IS stored on the hub and replicates later
	// (resending it stores it twice unless the producer is idempotent).
	Copies int
	// ProducerID fixes the producer's id (0 picks a random one). Reusing an
	// id across process restarts continues its sequences only if the
	// process also remembers them; leave it 0 unless you do.
	ProducerID uint64
	// BatchRecords and BatchBytes (of encoded records) seal a batch once
	// reached. Defaults 1000 and 512 KiB. They do not limit records: one
	// larger than BatchBytes travels in a batch of its own. What limits
	// records is the hub's store.max_record_bytes, announced when the
	// producer opens its session (see MaxRecordBytes).
	BatchRecords int
	BatchBytes   int
	// Linger holds a batch open this long for more records. 0 (the default)
	// sends as soon as the connection has room: at low rates each record
	// goes alone (lowest latency), at high rates batches fill up while
	// earlier ones are in flight.
	Linger time.Duration
	// MaxInFlight bounds unacknowledged batches per shard. Default 4.
	MaxInFlight int
	// BufferBytes bounds records accepted but not yet acknowledged; Send
	// blocks beyond it (backpressure). Default 64 MiB.
	BufferBytes int
	// DeliveryTimeout fails a record not acknowledged this long after it
	// was accepted, across retries and reconnects. Default 2 minutes.
	DeliveryTimeout time.Duration
	// AckTimeout gives up on a session whose oldest batch has waited this
	// long for its acknowledgement, and resends on a new one (a hub that
	// vanished without closing the connection). Default 30s.
	AckTimeout time.Duration
	// Datagrams sends fire-and-forget over QUIC datagrams: no
	// acknowledgement, no retry, records may be lost. Callbacks get a zero
	// Position once the datagram is sent.
	Datagrams bool
}

func (o ProducerOptions) withDefaults() ProducerOptions {
	if o.BatchRecords <= 0 {
		o.BatchRecords = 1000
	}
	if o.BatchBytes <= 0 {
		o.BatchBytes = 512 << 10
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = 4
	}
	// The hub remembers an idempotent producer's last 16 batches per shard:
	// more in flight could not all be answered with positions on retry.
	o.MaxInFlight = min(o.MaxInFlight, 16)
	if o.BufferBytes <= 0 {
		o.BufferBytes = 64 << 20
	}
	if o.AckTimeout <= 0 {
		o.AckTimeout = 30 * time.Second
	}
	if o.DeliveryTimeout <= 0 {
		o.DeliveryTimeout = 2 * time.Minute
	}
	return o
}

// Position is where a record was stored.
type Position struct {
	Shard int
	Seq   uint64
	// Duplicate: the record's batch had been stored before (a retry) and
	// this is its original position.
	Duplicate bool
	// Copies is how many hubs held the record when it was acknowledged,
	// for streams or producers asking more than one (0 otherwise: the
	// hub's fsync). It may be below what was asked only under a stream's
	// copies_shortfall = "ack".
	Copies int
}

// Future is the outcome of an asynchronous send.
type Future struct {
	done chan struct{}
	pos  Position
	err  error
}

// Done is closed when the result is known.
func (f *Future) Done() <-chan struct{} { return f.done }

// Wait returns the record's position once it is durable, or why it failed.
func (f *Future) Wait(ctx context.Context) (Position, error) {
	select {
	case <-f.done:
		return f.pos, f.err
	case <-ctx.Done():
		return Position{}, ctx.Err()
	}
}

// Producer sends records to one stream. It is safe for concurrent use.
//
// Records are routed to shards by their key hash (the same hash the hub
// uses), keyless records stick to one shard per batch and rotate. Batches
// are pipelined; each is acknowledged after the hub's fsync.
type Producer struct {
	c      *Client
	stream string
	opts   ProducerOptions
	id     uint64

	mu        sync.Mutex
	space     *sync.Cond // signalled when buffered bytes drop or the producer closes
	wake      chan struct{}
	route     router    // the layout records are routed by
	lineage   bool      // the hub speaks layouts: sessions set the lineage flag
	acc       []*pbatch // per shard id: the open batch
	sticky    int       // index in route.open of the shard for keyless records
	nextSeq   []uint64  // per shard: producer sequence of the next batch
	closing   []bool    // per shard: closed by a reshard, its records not all settled (route.go)
	hold      []bool    // per shard: sends nothing while an overlapping shard is closing
	refusedAt []uint64  // per shard: newest layout version of its shard_closed ACKs
	nextID    uint64
	unacked   []*pbatch // sealed, in seal order
	inflight  []int     // per shard: sent and unacknowledged
	buffered  int
	sess      *session
	closed    bool
	fatal     error
	loopDone  chan struct{}
	free      []*pbatch // completed batches whose buffers are reused
	lastLen   []int     // per shard: records in the last sealed batch
	frameMax  int       // the hub's max_batch_bytes (PRODUCE_READY)
	maxRecord int       // the hub's max_record_bytes (PRODUCE_READY), 0 if not announced
	conflict  bool      // stopped by a sequence_conflict

	// Completed batches wait in done for their callbacks, which run
	// outside mu (see deliver): a callback may call the producer.
	done       []*pbatch
	spare      []*pbatch // done's previous array, reused
	delivering bool      // a goroutine is running callbacks
	queued     uint64    // batches ever put in done
	delivered  uint64    // of those, the ones whose callbacks have run
}

type pbatch struct {
	id       uint64
	shard    int
	seq      uint64
	recs     []record.Record
	bytes    int
	payload  []byte
	cbs      []func(Position, error)
	pos      []Position // the outcome, once completed: positions or err
	err      error
	pin      []bool    // per record: sent to this shard by SendTo (nil: none was)
	accepted time.Time // of the oldest record
	flush    uint64    // Flush waits for this batch if it started after the seal of batch id flush
	wire     bool      // sent on the current session, not yet acknowledged
	sent     bool      // sent on some session: it may be stored
	refused  bool      // refused with shard_closed: certainly not stored
	sentAt   time.Time
}

// errResend marks a session ended on purpose, to resend its batches on a
// new one (as opposed to a failure that resending cannot cure).
var errResend = errors.New("sdk: resend on a new session")

// permanent reports whether a session that broke with err must not be
// retried: the hub refused the session itself.
func permanent(err error) bool {
	if errors.Is(err, errResend) || errors.Is(err, quic.ErrClosed) {
		return false
	}
	var e *quic.Error
	if !errors.As(err, &e) {
		return quic.IsHandshakeFailure(err)
	}
	switch e.Code {
	case quic.CodeProtocol, quic.CodeFrameTooLarge, quic.CodeUnauthenticated, quic.CodePermissionDenied,
		quic.CodeNotFound, quic.CodeUnknownOp, quic.CodeInvalidArgument:
		return true
	}
	return false
}

type session struct {
	st     *quic.Stream
	conn   *quic.Client
	dgram  uint64
	broken chan struct{}
	once   sync.Once
	err    error
}

func (s *session) fail(err error) {
	s.once.Do(func() {
		s.err = err
		close(s.broken)
		s.st.Cancel(quic.CodeCanceled)
	})
}

// Producer opens a producer for stream. It fetches the stream's shard count
// and opens a produce session.
func (c *Client) Producer(ctx context.Context, stream string, opts ProducerOptions) (*Producer, error) {
	opts = opts.withDefaults()
	info, err := c.Info(ctx, stream)
	if err != nil {
		return nil, err
	}
	p := &Producer{
		c: c, stream: stream, opts: opts, id: opts.ProducerID,
		route: uniformRouter(len(info.Shards)), lineage: info.layout != nil,
		wake: make(chan struct{}, 1), loopDone: make(chan struct{}),
	}
	if opts.NotIdempotent || opts.Datagrams {
		p.id = 0
	} else if p.id == 0 {
		var b [8]byte
		rand.Read(b[:])
		p.id = binary.LittleEndian.Uint64(b[:]) | 1
	}
	p.space = sync.NewCond(&p.mu)
	p.grow(len(info.Shards))
	if err := p.openSession(ctx); err != nil {
		return nil, err
	}
	go p.loop()
	return p, nil
}

// ID is the producer id (0 when not idempotent).
func (p *Producer) ID() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.id
}

// Shards is the stream's count of open shards (the shards records are
// routed to); a reshard changes it. Shard numbers for SendTo are ids, which
// may be higher: see docs/protocol.md 5.6.
func (p *Producer) Shards() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.route.open)
}

// Send stores rec and returns its position once it is durable.
func (p *Producer) Send(ctx context.Context, rec Record) (Position, error) {
	f, err := p.SendFuture(ctx, rec)
	if err != nil {
		return Position{}, err
	}
	return f.Wait(ctx)
}

// SendFuture queues rec and returns a Future for its outcome. It blocks only
// while the producer's buffer is full.
func (p *Producer) SendFuture(ctx context.Context, rec Record) (*Future, error) {
	f := &Future{done: make(chan struct{})}
	err := p.SendAsync(ctx, rec, func(pos Position, err error) {
		f.pos, f.err = pos, err
		close(f.done)
	})
	if err != nil {
		return nil, err
	}
	return f, nil
}

// SendAsync queues rec; cb runs once with its position or error, on the
// producer's goroutine, callbacks in the order their batches completed. cb
// must not block, but it may call the producer: SendAsync, SendFuture (not
// Send, Flush or Close, which wait for acknowledgements this goroutine would
// deliver). SendAsync blocks only while the producer's buffer is full, until
// ctx ends. The record's byte slices must not change until cb runs.
func (p *Producer) SendAsync(ctx context.Context, rec Record, cb func(Position, error)) error {
	return p.sendAsync(ctx, -1, rec, cb)
}

// SendTo stores rec in the given shard, whatever its key, and returns its
// position once it is durable. A shard closed by a reshard (before or while
// the record travels) fails it with CodeShardClosed: the caller chose the
// shard, so the producer does not re-route it.
func (p *Producer) SendTo(ctx context.Context, shard int, rec Record) (Position, error) {
	if shard < 0 {
		return Position{}, quic.Errorf(quic.CodeInvalidArgument, "shard %d", shard)
	}
	f := &Future{done: make(chan struct{})}
	err := p.sendAsync(ctx, shard, rec, func(pos Position, err error) {
		f.pos, f.err = pos, err
		close(f.done)
	})
	if err != nil {
		return Position{}, err
	}
	return f.Wait(ctx)
}

// SendAsyncTo is SendAsync to an explicit shard (see SendTo).
func (p *Producer) SendAsyncTo(ctx context.Context, shard int, rec Record, cb func(Position, error)) error {
	if shard < 0 {
		return quic.Errorf(quic.CodeInvalidArgument, "shard %d", shard)
	}
	return p.sendAsync(ctx, shard, rec, cb)
}

// MaxRecordBytes is the hub's record limit (store.max_record_bytes), as
// its produce session announced it: the largest Record.PayloadSize (key,
// value, and each header's key and value plus 2 bytes) it stores. Sends of
// larger records fail at once with CodeRecordTooLarge. 0: the hub did not
// announce it (a hub older than the field); the hub then refuses such a
// record in its acknowledgement.
func (p *Producer) MaxRecordBytes() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.maxRecord
}

// checkSize refuses a record the hub would not store, or that could not
// travel in a batch of its own. Called with p.mu held.
func (p *Producer) checkSize(rec *Record, size int) error {
	if n := rec.PayloadSize(); p.maxRecord > 0 && n > p.maxRecord {
		return &quic.Error{Code: quic.CodeRecordTooLarge, Message: fmt.Sprintf(
			"record of %d bytes (key, value, and each header's key and value plus 2) is above the hub's max_record_bytes %d", n, p.maxRecord)}
	}
	if limit := p.batchLimit(); size > limit {
		what := fmt.Sprintf("the hub's max_batch_bytes %d", p.frameMax)
		if p.opts.Datagrams {
			what = "a datagram"
		}
		return &quic.Error{Code: quic.CodeRecordTooLarge, Message: fmt.Sprintf(
			"record encodes to %d bytes: a batch of it alone would not fit %s", size, what)}
	}
	return nil
}

// sendAsync queues rec for shard, or routes it when shard is -1.
func (p *Producer) sendAsync(ctx context.Context, shard int, rec Record, cb func(Position, error)) error {
	rec.Seq, rec.IngestTime, rec.Origin = 0, 0, record.Origin{}
	size := record.ProducerLen(&rec)
	p.mu.Lock()
	defer p.unlock()
	if err := p.checkSize(&rec, size); err != nil {
		return err
	}
	if p.buffered+size > p.opts.BufferBytes && p.buffered > 0 {
		stop := context.AfterFunc(ctx, func() {
			p.mu.Lock()
			p.space.Broadcast()
			p.mu.Unlock()
		})
		for p.buffered+size > p.opts.BufferBytes && p.buffered > 0 && !p.closed && p.fatal == nil && ctx.Err() == nil {
			p.space.Wait()
		}
		stop()
	}
	switch {
	case p.closed:
		return fmt.Errorf("sdk: producer %q: %w", p.stream, ErrClosed)
	case p.fatal != nil:
		return p.fatal
	case ctx.Err() != nil:
		return ctx.Err()
	}
	pinned := shard >= 0
	switch {
	case pinned:
		if shard >= len(p.acc) {
			return quic.Errorf(quic.CodeInvalidArgument, "shard %d of %d", shard, len(p.acc))
		}
		if !p.route.isOpen(shard) {
			return p.closedError(shard)
		}
	case rec.Key != nil:
		shard = p.route.shardFor(record.KeyHash(rec.Key))
	default:
		open := p.route.open
		shard = open[p.sticky].id
		if p.acc[shard] == nil && p.inflight[shard] > 0 {
			// A keyless record may go anywhere: start its batch in an
			// idle shard, whose append can commit alongside the others,
			// rather than queue behind a batch in flight.
			best := p.sticky
			for i := 1; i < len(open); i++ {
				j := (p.sticky + i) % len(open)
				if s := open[j].id; p.acc[s] == nil && p.inflight[s] < p.inflight[open[best].id] {
					best = j
				}
			}
			shard, p.sticky = open[best].id, best
		}
	}
	if b := p.acc[shard]; b != nil && b.bytes+size > p.sealBytes() {
		p.seal(shard) // the record goes in the next batch
	}
	b := p.acc[shard]
	if b == nil {
		if n := len(p.free); n > 0 {
			b = p.free[n-1]
			p.free = p.free[:n-1]
		} else {
			// Size a new batch like the shard's last one: full batches
			// at high rates, small ones at low rates, and no regrowing.
			n := p.lastLen[shard]
			b = &pbatch{recs: make([]record.Record, 0, n), cbs: make([]func(Position, error), 0, n)}
		}
		b.shard, b.accepted = shard, time.Now()
		p.acc[shard] = b
	}
	if pinned && b.pin == nil {
		b.pin = make([]bool, len(b.recs), cap(b.recs))
	}
	if b.pin != nil {
		b.pin = append(b.pin, pinned)
	}
	b.recs = append(b.recs, rec)
	b.cbs = append(b.cbs, cb)
	b.bytes += size
	p.buffered += size
	if len(b.recs) >= p.opts.BatchRecords || b.bytes >= p.sealBytes() {
		p.seal(shard)
	}
	p.signal()
	return nil
}

// batchLimit is the most bytes of encoded records (Record.ProducerLen) one
// batch may carry: the hub's max_batch_bytes, or what fits one QUIC
// datagram, less the batch's own header.
func (p *Producer) batchLimit() int {
	switch {
	case p.opts.Datagrams:
		return 1000 - record.BatchHeaderMax
	case p.frameMax > 0:
		return p.frameMax - record.BatchHeaderMax
	}
	return math.MaxInt
}

// sealBytes is the size at which a batch is sealed: the option, within the
// batch limit.
func (p *Producer) sealBytes() int { return min(p.opts.BatchBytes, p.batchLimit()) }

// seal closes shard's open batch: it gets the shard's next producer
// sequences and is encoded once, for every retry. Called with p.mu held.
func (p *Producer) seal(shard int) {
	b := p.acc[shard]
	if b == nil {
		return
	}
	p.acc[shard] = nil
	p.lastLen[shard] = len(b.recs)
	if b.recs[0].Key == nil {
		p.sticky = (p.sticky + 1) % len(p.route.open)
	}
	p.nextID++
	b.id, b.flush = p.nextID, p.nextID
	b.seq = p.nextSeq[shard]
	p.nextSeq[shard] += uint64(len(b.recs))
	// Size the buffer once: growing it record by record dominated the
	// producer's profile.
	payload, err := record.AppendBatch(make([]byte, 0, b.bytes+record.BatchHeaderMax), b.recs)
	if err != nil {
		p.nextSeq[shard] -= uint64(len(b.recs))
		p.complete(b, nil, fmt.Errorf("sdk: encode batch: %w", err))
		return
	}
	b.payload = payload
	p.unacked = append(p.unacked, b)
}

func (p *Producer) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Flush seals open batches and waits until every record sent before the
// call is acknowledged or failed, and its callback has run.
func (p *Producer) Flush(ctx context.Context) error {
	p.mu.Lock()
	defer p.unlock()
	for i := range p.acc {
		p.seal(i)
	}
	last := p.nextID
	p.signal()
	stop := context.AfterFunc(ctx, func() {
		p.mu.Lock()
		p.space.Broadcast()
		p.mu.Unlock()
	})
	defer stop()
	for p.pendingUpTo(last) && p.fatal == nil && ctx.Err() == nil {
		p.space.Wait()
	}
	p.waitDelivered(ctx)
	if p.fatal != nil {
		return p.fatal
	}
	return ctx.Err()
}

// Close flushes (bounded by ctx) and ends the session. Records not
// acknowledged by then fail with ErrClosed. Close is idempotent.
func (p *Producer) Close(ctx context.Context) error {
	err := p.Flush(ctx)
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.failAll(fmt.Errorf("sdk: producer %q: %w", p.stream, ErrClosed))
	p.space.Broadcast()
	p.signal()
	p.unlock()
	<-p.loopDone
	p.mu.Lock()
	p.waitDelivered(ctx)
	p.mu.Unlock()
	if errors.Is(err, ErrClosed) {
		return nil
	}
	return err
}

// pendingUpTo reports whether a batch Flush must wait for, one sealed up to
// batch id last (or re-routed from one), is not yet acknowledged. Called
// with p.mu held.
func (p *Producer) pendingUpTo(last uint64) bool {
	for _, b := range p.unacked {
		if b.flush <= last {
			return true
		}
	}
	return false
}

func (p *Producer) openSession(ctx context.Context) error {
	flags := quic.ProduceFlags(0)
	if p.opts.Datagrams {
		flags = quic.ProduceDatagrams
	}
	if p.lineage {
		flags |= quic.ProduceLineage
	}
	st, conn, err := p.c.open(ctx, quic.OpProduce, &quic.ProduceOpen{Stream: p.stream, ProducerID: p.id, Flags: flags, Copies: uint32(max(p.opts.Copies, 0))})
	if err != nil {
		return err
	}
	var ready quic.ProduceReady
	var layout quic.Layout
	rctx, cancel := context.WithTimeout(ctx, p.c.opts.DialTimeout)
	stop := context.AfterFunc(rctx, func() { st.Cancel(quic.CodeCanceled) })
	err = st.Expect(quic.FrameProduceReady, &ready)
	if err == nil && p.lineage {
		// The layout comes before any ACK: every batch of this session,
		// resends included, is routed by it.
		err = st.Expect(quic.FrameProduceLayout, &layout)
	}
	stop()
	cancel()
	if err != nil {
		st.Cancel(quic.CodeCanceled)
		return fmt.Errorf("sdk: produce to %q: %w", p.stream, err)
	}
	if p.opts.Copies > 1 && int(ready.Copies) < p.opts.Copies {
		// A hub before copies ignores the ask: its ACKs would mean one.
		st.Cancel(quic.CodeCanceled)
		return fmt.Errorf("sdk: produce to %q: %w", p.stream, quic.Errorf(quic.CodeInvalidArgument,
			"%d copies asked, the hub enforces %d (a hub before copies enforces none)", p.opts.Copies, ready.Copies))
	}
	s := &session{st: st, conn: conn, dgram: ready.DatagramSession, broken: make(chan struct{})}
	p.mu.Lock()
	if p.lineage {
		err = p.setLayout(&layout)
	} else if int(ready.Shards) != len(p.route.shards) {
		err = fmt.Errorf("stream has %d shards, expected %d", ready.Shards, len(p.route.shards))
	}
	if err != nil {
		p.mu.Unlock()
		st.Cancel(quic.CodeCanceled)
		return fmt.Errorf("sdk: produce to %q: %w", p.stream, err)
	}
	p.frameMax = int(min(ready.MaxBatchBytes, 1<<30))
	p.maxRecord = int(min(ready.MaxRecordBytes, 1<<30))
	p.sess = s
	for _, b := range p.unacked {
		b.wire = false
	}
	clear(p.inflight)
	p.mu.Unlock()
	if !p.opts.Datagrams || p.lineage {
		go p.readAcks(s) // datagram sessions get LAYOUT frames, no ACKs
	}
	return nil
}

// loop seals and sends batches, and repairs the session when it breaks:
// every unacknowledged batch is resent, in order, on a new session.
func (p *Producer) loop() {
	defer close(p.loopDone)
	var linger *time.Timer
	tick := time.NewTicker(time.Second) // timeouts are checked even when nothing happens
	defer tick.Stop()
	attempt := 0
	for {
		// Yield once before sealing: a caller in the middle of a burst of
		// sends gets to add the rest of it, so the burst travels (and
		// commits) as one batch. A timer could not do this: Go's timers
		// are far coarser than a commit.
		runtime.Gosched()
		p.mu.Lock()
		if p.closed && (len(p.unacked) == 0 || p.fatal != nil) {
			p.failAll(fmt.Errorf("sdk: producer %q: %w", p.stream, ErrClosed))
			if p.sess != nil {
				p.sess.st.CloseWrite()
				p.sess.fail(ErrClosed)
			}
			p.unlock()
			return
		}
		if p.fatal != nil {
			// Refused for good: nothing to send until Close.
			p.mu.Unlock()
			<-p.wake
			continue
		}
		s := p.sess
		if s == nil {
			p.expire()
			p.unlock()
			if p.isClosedHard() {
				continue
			}
			if err := p.c.backoff(context.Background(), attempt); err != nil {
				p.setFatal(err)
				continue
			}
			attempt++
			ctx, cancel := context.WithTimeout(context.Background(), p.c.opts.DialTimeout)
			err := p.openSession(ctx)
			cancel()
			if err != nil {
				p.c.logger.Debug("sdk: produce session failed", "stream", p.stream, "err", err)
				if !retryable(err) {
					p.setFatal(err)
				}
			}
			continue
		}
		out, wait := p.pick(time.Now())
		p.unlock()

		for _, b := range out {
			if err := p.send(s, b); err != nil {
				s.fail(err)
				break
			}
		}
		if len(out) > 0 {
			continue
		}
		var lingerC <-chan time.Time
		if wait >= 0 {
			if linger == nil {
				linger = time.NewTimer(wait)
			} else {
				linger.Reset(wait)
			}
			lingerC = linger.C
		}
		select {
		case <-p.wake:
			attempt = 0
		case <-lingerC:
		case <-s.broken:
			if permanent(s.err) {
				p.c.logger.Warn("sdk: produce session refused", "stream", p.stream, "err", s.err)
				p.setFatal(s.err)
			}
			p.mu.Lock()
			if p.sess == s {
				p.sess = nil
				if s.err != nil && !errors.Is(s.err, ErrClosed) {
					p.c.logger.Debug("sdk: produce session broken, resending unacknowledged batches",
						"stream", p.stream, "unacked", len(p.unacked), "err", s.err)
				}
			}
			p.mu.Unlock()
		case <-tick.C:
			p.mu.Lock()
			p.expire()
			stale := false
			for _, b := range p.unacked {
				if b.wire && time.Since(b.sentAt) > p.opts.AckTimeout {
					stale = true
				}
			}
			p.unlock()
			if stale {
				s.fail(fmt.Errorf("%w: no acknowledgement for %s", errResend, p.opts.AckTimeout))
			}
		}
	}
}

// pick seals open batches when there is room to send them (or their
// linger is over), so batches grow while the pipe is full, and returns the
// batches to send now, marked as on the wire, and how long until an open
// batch's linger ends (-1: none lingers). Called with p.mu held.
func (p *Producer) pick(now time.Time) (out []*pbatch, wait time.Duration) {
	wait = -1
	for i, b := range p.acc {
		if b == nil || p.inflight[i] >= p.opts.MaxInFlight || p.closing[i] {
			continue
		}
		if age := now.Sub(b.accepted); age >= p.opts.Linger {
			p.seal(i)
		} else if w := p.opts.Linger - age; wait < 0 || w < wait {
			wait = w
		}
	}
	// In seal order, within per-shard limits: a shard at its limit blocks
	// only its own later batches.
	for _, b := range p.unacked {
		if b.wire || b.refused || p.inflight[b.shard] >= p.opts.MaxInFlight {
			continue
		}
		if p.closing[b.shard] {
			if !b.sent {
				continue // certainly not stored: re-routed once the shard drains
			}
		} else if p.hold[b.shard] {
			continue // a closing parent's records go first
		}
		b.wire, b.sent, b.sentAt = true, true, now
		p.inflight[b.shard]++
		out = append(out, b)
	}
	return out, wait
}

// conflicted stops the producer after a sequence_conflict: further sends
// and the batches not yet sent fail with the error (they are certainly not
// stored); batches already sent keep waiting for their ACKs, which report
// what the hub did with each. Called with p.mu held.
func (p *Producer) conflicted(err error) {
	p.conflict = true
	if p.fatal == nil {
		p.fatal = fmt.Errorf("sdk: producer %q stopped: %w", p.stream, err)
	}
	kept := p.unacked[:0]
	for _, u := range p.unacked {
		if u.wire {
			kept = append(kept, u)
		} else {
			p.complete(u, nil, p.fatal)
		}
	}
	clear(p.unacked[len(kept):])
	p.unacked = kept
	for i, u := range p.acc {
		if u != nil {
			p.complete(u, nil, p.fatal)
			p.acc[i] = nil
		}
	}
	p.space.Broadcast()
}

func (p *Producer) isClosedHard() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed && (len(p.unacked) == 0 || p.fatal != nil)
}

func (p *Producer) setFatal(err error) {
	p.mu.Lock()
	defer p.unlock()
	if p.fatal == nil {
		p.fatal = fmt.Errorf("sdk: producer %q: %w", p.stream, err)
	}
	p.failAll(p.fatal)
	p.space.Broadcast()
}

func (p *Producer) send(s *session, b *pbatch) error {
	if p.opts.Datagrams {
		dg := (&quic.Datagram{Session: s.dgram, Shard: int32(b.shard), Records: b.payload}).Append(nil)
		err := s.conn.SendDatagram(dg)
		p.mu.Lock()
		defer p.unlock()
		p.removeSent(b)
		if err != nil {
			p.complete(b, nil, fmt.Errorf("sdk: datagram: %w", err))
			return nil // a lost datagram is not a broken session
		}
		p.complete(b, make([]Position, len(b.recs)), nil)
		return nil
	}
	return s.st.Send(quic.FrameBatch, &quic.Batch{ID: b.id, Shard: int32(b.shard), ProducerSeq: b.seq, Records: b.payload})
}

// readAcks matches ACK frames to sent batches by id (the hub acknowledges
// each shard's batches in order, shards independently) and completes them.
func (p *Producer) readAcks(s *session) {
	for {
		var ack quic.Ack
		layout, err := readAck(s.st, &ack)
		if err != nil {
			s.fail(err)
			p.signal()
			return
		}
		p.mu.Lock()
		if p.sess != s {
			p.mu.Unlock()
			return
		}
		if layout != nil {
			err := p.setLayout(layout)
			p.unlock()
			if err != nil {
				s.fail(quic.Errorf(quic.CodeProtocol, "%v", err))
				p.signal()
				return
			}
			continue
		}
		var b *pbatch
		for _, u := range p.unacked {
			if u.wire && u.id == ack.ID {
				b = u
				break
			}
		}
		if b == nil {
			p.mu.Unlock()
			s.fail(quic.Errorf(quic.CodeProtocol, "ACK for unknown batch %d", ack.ID))
			return
		}
		err = ack.Err()
		switch {
		case err == nil:
			pos, perr := positions(b, &ack)
			p.removeSent(b)
			p.complete(b, pos, perr)
		case quic.CodeOf(err) == quic.CodeCopiesShort:
			// Stored on the hub, short of its copies: its sequences
			// stand (a resend would be a duplicate), so nothing is
			// renumbered; the records fail with the error.
			p.removeSent(b)
			p.complete(b, nil, fmt.Errorf("sdk: produce to %q: %w", p.stream, err))
		case quic.CodeOf(err) == quic.CodeDuplicateTooOld:
			// Stored before; the hub no longer knows where.
			p.removeSent(b)
			p.complete(b, make([]Position, len(b.recs)), nil)
		case quic.CodeOf(err) == quic.CodeSequenceConflict || p.conflict:
			// The hub stored other records under this producer id and
			// sequence: nothing of b was stored, and the producer's
			// numbering can no longer be trusted. Stop (see conflicted).
			p.removeSent(b)
			p.complete(b, nil, fmt.Errorf("sdk: produce to %q: %w", p.stream, err))
			p.conflicted(err)
		case quic.CodeOf(err) == quic.CodeShardClosed && p.lineage:
			// Nothing of b was stored: its records go to the shards that
			// own them now, once the shard has drained (route.go).
			p.refused(b, ack.LayoutVersion)
		case quic.CodeOf(err).Retryable() || quic.CodeOf(err) == quic.CodeSequenceGap:
			// Resend everything unacknowledged on a new session.
			p.mu.Unlock()
			s.fail(fmt.Errorf("%w: %w", errResend, err))
			p.signal()
			return
		case p.id == 0:
			// Refused for good; without sequences the others are
			// unaffected.
			p.removeSent(b)
			p.complete(b, nil, fmt.Errorf("sdk: produce to %q: %w", p.stream, err))
		default:
			// Refused for good. Later batches of the shard were numbered
			// after it and will be refused as a gap: renumber them and
			// resend on a new session.
			p.removeSent(b)
			n := uint64(len(b.recs))
			for _, u := range p.unacked {
				if u.shard == b.shard && u.seq > b.seq {
					u.seq -= n
				}
			}
			p.nextSeq[b.shard] -= n
			p.complete(b, nil, fmt.Errorf("sdk: produce to %q: %w", p.stream, err))
			p.unlock()
			s.fail(fmt.Errorf("%w: %w", errResend, err))
			p.signal()
			return
		}
		p.unlock()
		p.signal()
	}
}

// readAck reads the next frame of a produce session: an ACK into ack, or a
// LAYOUT, which it returns. An ERROR frame is returned as its *Error.
func readAck(st *quic.Stream, ack *quic.Ack) (*quic.Layout, error) {
	ft, payload, err := st.ReadFrame()
	switch {
	case err != nil:
		return nil, err
	case ft == quic.FrameAck:
		return nil, ack.Decode(payload)
	case ft == quic.FrameProduceLayout:
		l := &quic.Layout{}
		return l, l.Decode(payload)
	case ft == quic.FrameError:
		e, err := quic.DecodeError(payload)
		if err != nil {
			return nil, err
		}
		return nil, e
	}
	return nil, fmt.Errorf("%w: %s in a produce session", quic.ErrUnexpectedFrame, ft)
}

func positions(b *pbatch, ack *quic.Ack) ([]Position, error) {
	pos := make([]Position, 0, len(b.recs))
	for _, r := range ack.Runs {
		for i := range r.Count {
			seq := r.FirstSeq
			if seq != 0 {
				seq += uint64(i)
			}
			pos = append(pos, Position{Shard: int(r.Shard), Seq: seq, Duplicate: ack.Duplicate, Copies: int(ack.Copies)})
		}
	}
	if len(pos) != len(b.recs) {
		return nil, fmt.Errorf("sdk: ACK for batch %d covers %d records, sent %d", b.id, len(pos), len(b.recs))
	}
	return pos, nil
}

// removeSent drops an acknowledged batch. Its answer may be the last a
// closing shard waited for: the shards held behind it are released then,
// not at some later layout or refusal that may never come. Called with
// p.mu held.
func (p *Producer) removeSent(b *pbatch) {
	p.inflight[b.shard]--
	b.wire = false
	p.removeUnacked(b)
	if p.closing[b.shard] {
		p.resolve()
	}
}

func (p *Producer) removeUnacked(b *pbatch) {
	for i, u := range p.unacked {
		if u == b {
			p.unacked = append(p.unacked[:i], p.unacked[i+1:]...)
			return
		}
	}
}

// complete records b's outcome and frees its buffer share; its callbacks
// run later, outside p.mu, in completion order (deliver). Called with p.mu
// held.
func (p *Producer) complete(b *pbatch, pos []Position, err error) {
	b.pos, b.err = pos, err
	p.buffered -= b.bytes
	p.space.Broadcast()
	clear(b.recs) // drop references to the records
	b.recs = b.recs[:0]
	p.done = append(p.done, b)
	p.queued++
}

// deliver runs the callbacks of completed batches, in completion order,
// unless another goroutine is already doing so (it then runs these too).
// Called with p.mu held; it releases p.mu while the callbacks run, so
// they may call the producer: a SendAsync from a callback queues its record
// and, if it completes a batch, leaves its callbacks to this loop.
func (p *Producer) deliver() {
	if p.delivering {
		return
	}
	p.delivering = true
	for len(p.done) > 0 {
		q := p.done
		p.done = p.spare[:0]
		p.mu.Unlock()
		for _, b := range q {
			for i, cb := range b.cbs {
				if b.err != nil {
					cb(Position{}, b.err)
				} else {
					cb(b.pos[i], nil)
				}
			}
		}
		p.mu.Lock()
		for i, b := range q {
			// Keep the slices for the next batch.
			clear(b.cbs)
			*b = pbatch{recs: b.recs[:0], cbs: b.cbs[:0]}
			if len(p.free) < 2*len(p.route.open)+4 {
				p.free = append(p.free, b)
			}
			q[i] = nil
		}
		p.spare = q[:0]
		p.delivered += uint64(len(q))
		p.space.Broadcast()
	}
	p.delivering = false
}

// unlock releases p.mu after running the callbacks of what completed
// while it was held.
func (p *Producer) unlock() {
	p.deliver()
	p.mu.Unlock()
}

// waitDelivered waits until the callbacks of every batch completed so far
// have run (running them itself if nobody else is), or ctx ends. Called
// with p.mu held.
func (p *Producer) waitDelivered(ctx context.Context) {
	upto := p.queued
	if p.delivered >= upto {
		return
	}
	stop := context.AfterFunc(ctx, func() {
		p.mu.Lock()
		p.space.Broadcast()
		p.mu.Unlock()
	})
	defer stop()
	for p.delivered < upto && ctx.Err() == nil {
		if !p.delivering {
			p.deliver()
			continue
		}
		p.space.Wait()
	}
}

// expire fails every unacknowledged batch once the oldest is past the
// delivery timeout. Called with p.mu held while no session is open. The
// failed batches may or may not have been stored (their acks were lost), so
// an idempotent producer continues under a new id: reusing the old
// sequences could make the hub take new records for old ones.
func (p *Producer) expire() {
	if p.sess != nil || len(p.unacked) == 0 || time.Since(p.unacked[0].accepted) < p.opts.DeliveryTimeout {
		return
	}
	err := fmt.Errorf("sdk: produce to %q: %w", p.stream, ErrDeliveryTimeout)
	for _, b := range p.unacked {
		p.complete(b, nil, err)
	}
	p.unacked = nil
	if p.id != 0 {
		var b [8]byte
		rand.Read(b[:])
		p.id = binary.LittleEndian.Uint64(b[:]) | 1
		clear(p.nextSeq)
	}
}

// failAll fails every queued record. Called with p.mu held.
func (p *Producer) failAll(err error) {
	for _, b := range p.unacked {
		p.complete(b, nil, err)
	}
	p.unacked = nil
	for i, b := range p.acc {
		if b != nil {
			p.complete(b, nil, err)
			p.acc[i] = nil
		}
	}
}

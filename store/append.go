package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/cespare/xxhash/v2"
	bolt "go.etcd.io/bbolt"

	"github.com/edgehub/edgehub"
	"github.com/edgehub/edgehub/internal/record"
)

// Batch is one append. All of its records commit in one transaction, or none.
type Batch struct {
	// Shard places every record in that shard. -1 routes each record by its
	// key hash, keyless records round-robin.
	Shard int
	// Records to append. Seq and IngestTime are assigned by the store; Key,
	// Value, Headers, Time and Origin are kept. A record with a foreign
	// Origin (Origin.Hub != "") is applied only if its origin sequence is
	// above the stream's watermark for that origin shard, so replayed and
	// replicated records are stored once.
	Records []edgehub.Record
	// ProducerID, if not 0, makes the append idempotent: ProducerSeq is the
	// producer's sequence of Records[0] in (ProducerID, Shard), consecutive
	// across batches. A batch that was stored before is answered with its
	// original positions and Result.Duplicate set. Requires Shard >= 0.
	ProducerID  uint64
	ProducerSeq uint64
	// StrictRange refuses, with ErrShardClosed, a new explicit-shard batch
	// holding a keyed record whose hash is outside the shard's range in
	// the layout at its commit (for clients that route by the shard
	// count, unaware of a reshard). It is checked after the idempotent
	// producer check, so a resend of a batch stored before is still a
	// duplicate, and only once the stream was resharded (layout version >
	// 0): before that, explicit placement stays the caller's choice.
	StrictRange bool
}

// Position is where a record was stored. Seq 0 means the record was not
// stored because its origin had already been applied.
type Position struct {
	Shard uint32
	Seq   uint64
}

// Result reports where each record of a Batch went, in order.
type Result struct {
	Positions []Position
	// Duplicate is set when the whole batch had been stored before
	// (idempotent producer retry).
	Duplicate bool
}

type request struct {
	batch Batch
	maint func(tx *bolt.Tx) error
	after func() // run on the writer goroutine if maint committed
	res   Result
	err   error
	done  chan struct{}
}

// Append stores b durably: with the default SyncAlways it returns only after
// the fsync of the transaction that holds the records. Concurrent appends are
// coalesced into one transaction (group commit).
//
// ctx bounds the wait for a place in the commit queue; once queued, Append
// waits for the commit, since the store reads b.Records until then.
func (s *Stream) Append(ctx context.Context, b Batch) (Result, error) {
	p, err := s.AppendAsync(ctx, b)
	if err != nil {
		return Result{}, err
	}
	return p.Wait()
}

// Pending is an append queued by AppendAsync.
type Pending struct{ req *request }

// Done is closed when the append has committed (or failed).
func (p *Pending) Done() <-chan struct{} { return p.req.done }

// Wait blocks until the append has committed and returns its result.
func (p *Pending) Wait() (Result, error) {
	<-p.req.done
	return p.req.res, p.req.err
}

var donePending = func() *Pending {
	p := &Pending{req: &request{done: make(chan struct{})}}
	close(p.req.done)
	return p
}()

// AppendAsync validates b and queues it for the next group commit without
// waiting for it. Appends queued one after another by one goroutine commit
// in that order (in the same or later transactions), so a producer can keep
// several batches of one shard in flight and still get in-order sequences
// and idempotent-producer checks. The store reads b.Records until the
// append is done: the caller must not modify them before.
func (s *Stream) AppendAsync(ctx context.Context, b Batch) (*Pending, error) {
	if len(b.Records) == 0 {
		return donePending, nil
	}
	req := &request{batch: b, done: make(chan struct{})}
	// Keyed and keyless records of a routed batch are placed by the writer
	// (writer.route), with the layout in force at their commit, so a
	// reshard never sees a record routed by the layout before it.
	n := s.Shards()
	switch {
	case b.Shard >= n || b.Shard < -1:
		return nil, fmt.Errorf("store: append to %q: %w %d of %d", s.name, ErrInvalidShard, b.Shard, n)
	case b.Shard == -1 && b.ProducerID != 0:
		return nil, fmt.Errorf("store: append to %q: idempotent appends need an explicit shard", s.name)
	}
	max := s.st.cfg.MaxRecordBytes
	for i := range b.Records {
		r := &b.Records[i]
		if sz := r.PayloadSize(); sz > max {
			return nil, fmt.Errorf("store: append to %q: record %d: %w: key, value and headers are %d bytes, above max_record_bytes %d", s.name, i, ErrRecordTooLarge, sz, max)
		}
		if len(r.Origin.Hub) > MaxOriginHubLength {
			return nil, fmt.Errorf("store: append to %q: record %d: origin hub name is %d bytes (max %d)", s.name, i, len(r.Origin.Hub), MaxOriginHubLength)
		}
	}
	if err := s.enqueue(ctx, req); err != nil {
		return nil, err
	}
	return &Pending{req: req}, nil
}

func (s *Stream) enqueue(ctx context.Context, req *request) error {
	if s.closed.Load() {
		return fmt.Errorf("store: stream %q: %w", s.name, ErrClosed)
	}
	select {
	case s.reqs <- req:
		return nil
	case <-s.quit:
		return fmt.Errorf("store: stream %q: %w", s.name, ErrClosed)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// maintain runs fn in its own write transaction on the writer goroutine, which
// owns the shards' state.
func (s *Stream) maintain(ctx context.Context, fn func(tx *bolt.Tx) error, after func()) error {
	req := &request{maint: fn, after: after, done: make(chan struct{})}
	if err := s.enqueue(ctx, req); err != nil {
		return err
	}
	<-req.done
	return req.err
}

// gatherYields is how many times the writer yields to appenders when the
// queue runs dry before it commits what it has.
const gatherYields = 8

// run is the writer: it gathers queued appends into one transaction, commits
// (and fsyncs) it, then answers them all.
func (s *Stream) run() {
	defer close(s.done)
	var syncTick <-chan time.Time
	if s.st.cfg.Sync == SyncInterval {
		t := time.NewTicker(s.st.cfg.SyncInterval)
		defer t.Stop()
		syncTick = t.C
	}
	w := &writer{s: s}
	var batch []*request
	for {
		var first *request
		select {
		case first = <-s.reqs:
		case <-syncTick:
			if err := s.db.Sync(); err != nil {
				s.logger.Error("store: periodic fsync failed", "err", err)
			}
			continue
		case <-s.quit:
			// Serve what is queued, then stop.
			for {
				select {
				case r := <-s.reqs:
					s.serve(w, []*request{r})
				default:
					if s.st.cfg.Sync == SyncInterval {
						s.db.Sync()
					}
					return
				}
			}
		}
		if first.maint != nil {
			s.serve(w, []*request{first})
			continue
		}
		batch = append(batch[:0], first)
		n := len(first.batch.Records)
		yields := 0
	gather:
		for n < s.st.cfg.MaxBatchRecords {
			select {
			case r := <-s.reqs:
				if r.maint != nil {
					s.serve(w, batch)
					batch = append(batch[:0], r)
					break gather
				}
				batch = append(batch, r)
				n += len(r.batch.Records)
				yields = 0
			default:
				// The appenders answered by the last commit are waking
				// up: let them run and queue before this commit starts,
				// or every other commit would carry half of them.
				if yields == gatherYields {
					break gather
				}
				yields++
				runtime.Gosched()
			}
		}
		s.serve(w, batch)
		clear(batch)
	}
}

// serve commits reqs in one transaction and answers them.
func (s *Stream) serve(w *writer, reqs []*request) {
	var err error
	if len(reqs) == 1 && reqs[0].maint != nil {
		if err = s.updateTx(reqs[0].maint); err == nil && reqs[0].after != nil {
			reqs[0].after()
		}
	} else {
		err = w.commit(reqs)
		if err != nil && isNoSpace(err) && len(reqs) > 1 {
			// One append that does not fit fails the whole group
			// commit. Alone, the others may fit, and a resend of a
			// stored batch (answered with its positions) needs no
			// space at all: it must not be told that nothing was
			// stored. So each is tried again on its own, in order.
			s.st.noSpace.note(s.logger, err)
			for _, r := range reqs {
				r.err, r.res = nil, Result{}
				if err := w.commit([]*request{r}); err != nil && r.err == nil {
					r.err = s.commitErr(err)
				}
			}
			err = nil
		}
	}
	if err != nil {
		err = s.commitErr(err)
	} else {
		s.st.noSpace.clear(s.logger)
	}
	for _, r := range reqs {
		if err != nil && r.err == nil {
			r.err = err
		}
		close(r.done)
	}
}

// commitErr wraps a failed commit's error for the callers, marking a full
// file system with ErrNoSpace.
func (s *Stream) commitErr(err error) error {
	if isNoSpace(err) {
		s.st.noSpace.note(s.logger, err)
		return fmt.Errorf("store: stream %q: %w: %w", s.name, ErrNoSpace, err)
	}
	return fmt.Errorf("store: stream %q: %w", s.name, err)
}

func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// noSpaceLog logs a full file system once a minute, with how many commits
// failed meanwhile, and its end once commits have succeeded for a second
// without a failure: a full disk refuses every append (a nearly full one
// most), and a line per refusal would flood the log and the disk it is on.
type noSpaceLog struct {
	mu       sync.Mutex
	full     bool
	failed   int
	logged   time.Time // last "full" line
	lastFail time.Time
}

func (l *noSpaceLog) note(logger *slog.Logger, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failed++
	l.lastFail = time.Now()
	if l.full && time.Since(l.logged) < time.Minute {
		return
	}
	l.full, l.logged = true, time.Now()
	logger.Error("store: file system full: appends are refused (storage_full) until space is freed", "failed_commits", l.failed, "err", err)
	l.failed = 0
}

func (l *noSpaceLog) clear(logger *slog.Logger) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.full || time.Since(l.lastFail) < time.Second {
		return
	}
	logger.Warn("store: space available again: appends succeed", "failed_commits", l.failed)
	l.full, l.failed = false, 0
}

// update runs fn in a write transaction, turning a bbolt panic on a damaged
// page into a CorruptError.
func (s *Stream) updateTx(fn func(tx *bolt.Tx) error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &CorruptError{File: s.path, Shard: -1, Err: fmt.Errorf("%v", r)}
		}
	}()
	return s.db.Update(fn)
}

// writer holds the group-commit scratch state; it lives on the writer
// goroutine and is reused across commits.
type writer struct {
	s       *Stream
	lay     *Layout           // the layout route was built for
	open    []ShardLayout     // lay's open shards in hash order
	pending [][]record.Record // per shard, records of this commit
	metas   []shardMeta
	touched []bool
	wm      map[OriginKey]uint64 // watermarks changed in this commit
	buf     []byte
	digest  *xxhash.Digest // batchDigest's hash state
	scratch []byte
}

func (w *writer) commit(reqs []*request) error {
	s := w.s
	table := s.table()
	if w.wm == nil {
		w.wm = map[OriginKey]uint64{}
	}
	if n := len(table); len(w.pending) < n {
		// A reshard added shards since the last commit.
		w.pending = append(w.pending, make([][]record.Record, n-len(w.pending))...)
		w.metas = make([]shardMeta, n)
		w.touched = make([]bool, n)
	}
	if l := s.layout.Load(); l != w.lay {
		w.lay, w.open = l, l.Open()
	}
	for i := range w.pending {
		w.pending[i] = w.pending[i][:0]
		w.metas[i] = table[i].meta
		w.touched[i] = false
	}
	clear(w.wm)
	// bbolt keeps value slices until commit, which is over: reuse the buffer
	// (growing it mid-commit is fine, earlier chunks keep the old array).
	if cap(w.buf) > 8<<20 {
		w.buf = nil
	}
	w.buf = w.buf[:0]
	now := s.st.cfg.Now().UnixNano()

	err := s.updateTx(func(tx *bolt.Tx) error {
		for _, r := range reqs {
			if err := w.apply(tx, r, now); err != nil {
				return err
			}
		}
		return w.flush(tx)
	})
	if err != nil {
		for _, r := range reqs {
			r.res = Result{}
		}
		return err
	}
	s.commits.Add(1)
	for i, sh := range table {
		if !w.touched[i] {
			continue
		}
		s.committed.Add(w.metas[i].Next - sh.meta.Next)
		s.committedBytes.Add(uint64(w.metas[i].Bytes - sh.meta.Bytes))
		sh.committedBytes.Add(uint64(w.metas[i].Bytes - sh.meta.Bytes))
		first := sh.first.Load()
		if sh.records.Load() == 0 {
			first = sh.meta.Next // the shard was empty: its first record is this commit's
		}
		sh.meta = w.metas[i]
		sh.publish(sh.meta, first)
	}
	if len(w.wm) > 0 {
		s.wmMu.Lock()
		for k, v := range w.wm {
			s.watermarks[k] = v
		}
		s.wmMu.Unlock()
	}
	return nil
}

// apply assigns positions to one request's records inside the transaction.
// A request-level refusal (a sequence gap) is recorded in r.err and does not
// fail the other requests.
func (w *writer) apply(tx *bolt.Tx, r *request, now int64) error {
	b := &r.batch
	r.res.Positions = make([]Position, len(b.Records))
	if b.ProducerID != 0 {
		// A resend of a batch stored before its shard closed is still a
		// duplicate: checkProducer answers it before refuseNew.
		dup, err := w.checkProducer(tx, r, now)
		if err != nil || dup {
			return err
		}
	} else if b.Shard >= 0 && w.refuseNew(r) {
		return nil
	}
	for i := range b.Records {
		rec := &b.Records[i]
		shard := b.Shard
		if shard < 0 {
			shard = w.route(rec)
		}
		if !rec.Origin.IsLocal() {
			k := OriginKey{Hub: rec.Origin.Hub, Shard: rec.Origin.Shard}
			if rec.Origin.Seq <= w.watermark(tx, k) {
				r.res.Positions[i] = Position{Shard: uint32(shard)}
				continue
			}
			w.wm[k] = rec.Origin.Seq
		}
		m := &w.metas[shard]
		out := *rec
		out.Seq = m.Next
		m.Next++
		out.IngestTime = max(now, m.LastIngest)
		m.LastIngest = out.IngestTime
		m.Records++
		w.touched[shard] = true
		w.pending[shard] = append(w.pending[shard], out)
		r.res.Positions[i] = Position{Shard: uint32(shard), Seq: out.Seq}
	}
	return nil
}

// route places a record of a routed batch by the layout in force at this
// commit: a keyed record in the open shard owning its hash, a keyless one
// round-robin over the open shards.
func (w *writer) route(rec *record.Record) int {
	if w.lay.Version == 0 {
		// The uniform layout: today's arithmetic, no search.
		n := len(w.open)
		if rec.Key != nil {
			return record.ShardForKey(rec.Key, n)
		}
		return int(w.s.rr.Add(1) % uint64(n))
	}
	if rec.Key == nil {
		return int(w.open[w.s.rr.Add(1)%uint64(len(w.open))].ID)
	}
	h := record.KeyHash(rec.Key)
	i := sort.Search(len(w.open), func(i int) bool { return w.open[i].HashEnd >= h })
	return int(w.open[i].ID)
}

// refuseNew refuses a batch that would be new in its explicit shard when
// that shard is closed, or (StrictRange, on a resharded stream) when one of
// its keyed records hashes outside the shard's range. It sets r.err and
// reports whether it did; nothing of r is stored.
func (w *writer) refuseNew(r *request) bool {
	b := &r.batch
	ls := w.lay.Shards[b.Shard]
	if ls.State != ShardOpen {
		r.err = fmt.Errorf("store: append to %q shard %d: %w (%s at %d): route by the current layout", w.s.name, b.Shard, ErrShardClosed, ls.State, ls.End)
		return true
	}
	if !b.StrictRange || w.lay.Version == 0 {
		return false
	}
	for i := range b.Records {
		k := b.Records[i].Key
		if k == nil {
			continue
		}
		if h := record.KeyHash(k); h < ls.HashStart || h > ls.HashEnd {
			r.err = fmt.Errorf("store: append to %q shard %d: %w: record %d's key hashes to %016x, outside the shard's range [%016x, %016x] since layout version %d",
				w.s.name, b.Shard, ErrShardClosed, i, h, ls.HashStart, ls.HashEnd, w.lay.Version)
			return true
		}
	}
	return false
}

func (w *writer) watermark(tx *bolt.Tx, k OriginKey) uint64 {
	if v, ok := w.wm[k]; ok {
		return v
	}
	w.s.wmMu.RLock()
	v := w.s.watermarks[k]
	w.s.wmMu.RUnlock()
	return v
}

// Idempotent producer state: the last batches of (producer, shard), enough to
// answer a retried batch with its original positions and to tell a retry
// from a different batch sent under the same sequence.
const producerWindow = 16

type producerBatch struct {
	seq    uint64 // producer sequence of the first record
	count  uint32
	first  uint64 // stream sequence of the first record
	digest uint64 // batchDigest of the records; 0: unknown (written before digests)
}

func producerKey(id uint64, shard int) []byte {
	k := binary.BigEndian.AppendUint64(make([]byte, 0, 12), id)
	return binary.BigEndian.AppendUint32(k, uint32(shard))
}

// Producer state encodings. Version 1 (no digests) is still read; every
// write uses version 2. The lengths cannot be confused: version 1 values
// are even, version 2 values odd.
//
//	v1: BE last-used unix nanos ‖ n × (BE seq, BE count u32, BE first)
//	v2: 0xF2 ‖ BE last-used unix nanos ‖ n × (BE seq, BE count u32, BE first, BE digest)
const (
	producerV2      = 0xF2
	producerEntryV1 = 20
	producerEntryV2 = 28
)

// errBadProducer is wrapped by decodeProducer's errors; callers wrap it in a
// CorruptError with the file.
var errBadProducer = errors.New("bad producer state")

// decodeProducer decodes a producer-table value. A damaged value is an
// error, never an empty state: that would silently drop idempotence.
func decodeProducer(v []byte) (lastUsed int64, batches []producerBatch, err error) {
	entry := producerEntryV1
	if len(v)%2 == 1 {
		if v[0] != producerV2 {
			return 0, nil, fmt.Errorf("%w: %d bytes, version byte 0x%02x", errBadProducer, len(v), v[0])
		}
		v, entry = v[1:], producerEntryV2
	}
	if len(v) < 8 || (len(v)-8)%entry != 0 || (len(v)-8)/entry > producerWindow {
		return 0, nil, fmt.Errorf("%w: %d bytes", errBadProducer, len(v))
	}
	lastUsed = int64(binary.BigEndian.Uint64(v))
	batches = make([]producerBatch, 0, (len(v)-8)/entry)
	for v = v[8:]; len(v) > 0; v = v[entry:] {
		pb := producerBatch{seq: binary.BigEndian.Uint64(v), count: binary.BigEndian.Uint32(v[8:]), first: binary.BigEndian.Uint64(v[12:])}
		if entry == producerEntryV2 {
			pb.digest = binary.BigEndian.Uint64(v[20:])
		}
		if pb.count == 0 || pb.seq+uint64(pb.count) < pb.seq {
			return 0, nil, fmt.Errorf("%w: batch at producer sequence %d has %d records", errBadProducer, pb.seq, pb.count)
		}
		if n := len(batches); n > 0 && pb.seq != batches[n-1].seq+uint64(batches[n-1].count) {
			return 0, nil, fmt.Errorf("%w: batch at producer sequence %d does not follow %d+%d", errBadProducer, pb.seq, batches[n-1].seq, batches[n-1].count)
		}
		batches = append(batches, pb)
	}
	return lastUsed, batches, nil
}

func encodeProducer(now int64, batches []producerBatch) []byte {
	b := append(make([]byte, 0, 9+producerEntryV2*len(batches)), producerV2)
	b = binary.BigEndian.AppendUint64(b, uint64(now))
	for _, pb := range batches {
		b = binary.BigEndian.AppendUint64(b, pb.seq)
		b = binary.BigEndian.AppendUint32(b, pb.count)
		b = binary.BigEndian.AppendUint64(b, pb.first)
		b = binary.BigEndian.AppendUint64(b, pb.digest)
	}
	return b
}

// batchDigest is an XXH64 of what a producer chose for each record (time,
// key, value, headers, length-prefixed so that fields cannot shift into
// each other); never 0, which marks an unknown digest. Fields are gathered
// in scratch and hashed in large writes: a Write per field cost more than
// the hashing.
func batchDigest(recs []record.Record, h *xxhash.Digest, scratch *[]byte) uint64 {
	h.Reset()
	buf := (*scratch)[:0]
	for i := range recs {
		r := &recs[i]
		buf = binary.AppendVarint(buf, r.Time)
		buf = binary.AppendUvarint(buf, uint64(len(r.Headers)))
		buf = appendDigestField(h, buf, r.Key, r.Key != nil)
		buf = appendDigestField(h, buf, r.Value, r.Value != nil)
		for _, hd := range r.Headers {
			buf = binary.AppendUvarint(buf, uint64(len(hd.Key))+1)
			buf = append(buf, hd.Key...)
			buf = appendDigestField(h, buf, hd.Value, true)
		}
		if len(buf) > 32<<10 {
			h.Write(buf)
			buf = buf[:0]
		}
	}
	h.Write(buf)
	*scratch = buf[:0]
	if d := h.Sum64(); d != 0 {
		return d
	}
	return 1
}

// appendDigestField adds one length-prefixed field to buf, hashing large
// fields in place rather than copying them.
func appendDigestField(h *xxhash.Digest, buf, b []byte, present bool) []byte {
	if !present {
		return append(buf, 0)
	}
	buf = binary.AppendUvarint(buf, uint64(len(b))+1)
	if len(b) > 4<<10 {
		h.Write(buf)
		h.Write(b)
		return buf[:0]
	}
	return append(buf, b...)
}

// checkProducer decides whether r is new (records its batch), a duplicate
// (fills r.res from the remembered batch), or refused (sets r.err): a gap,
// a conflict (the sequence was used by a different batch), a batch older
// than the window, or damaged producer state. A refusal concerns r alone.
func (w *writer) checkProducer(tx *bolt.Tx, r *request, now int64) (dup bool, err error) {
	b := &r.batch
	pb := tx.Bucket(bucketProducers)
	key := producerKey(b.ProducerID, b.Shard)
	var batches []producerBatch
	if v := pb.Get(key); v != nil {
		if _, batches, err = decodeProducer(v); err != nil {
			r.err = &CorruptError{File: w.s.path, Shard: b.Shard,
				Err: fmt.Errorf("producer table entry of producer %016x: %w", b.ProducerID, err)}
			return true, nil
		}
	}
	next := uint64(0)
	if len(batches) > 0 {
		last := batches[len(batches)-1]
		next = last.seq + uint64(last.count)
	}
	count := uint32(len(b.Records))
	if w.digest == nil {
		w.digest = xxhash.New()
	}
	digest := batchDigest(b.Records, w.digest, &w.scratch)
	switch {
	case len(batches) == 0 || b.ProducerSeq == next:
		// New batch. A producer's first batch may start anywhere, so a
		// producer whose state expired can continue.
		for _, rec := range b.Records {
			if !rec.Origin.IsLocal() {
				r.err = fmt.Errorf("store: append to %q: idempotent batches carry local records only", w.s.name)
				return true, nil
			}
		}
		if w.refuseNew(r) {
			return true, nil
		}
		batches = append(batches, producerBatch{seq: b.ProducerSeq, count: count, first: w.metas[b.Shard].Next, digest: digest})
		if len(batches) > producerWindow {
			batches = batches[len(batches)-producerWindow:]
		}
		return false, pb.Put(key, encodeProducer(now, batches))
	case b.ProducerSeq > next:
		// In a closed shard a gap is a batch sent after one refused
		// there: it cannot be stored either, and the producer must learn
		// that (shard_closed: route it elsewhere), not resend from the gap.
		if w.lay.Shards[b.Shard].State != ShardOpen && w.refuseNew(r) {
			return true, nil
		}
		r.err = fmt.Errorf("store: append to %q shard %d: %w: producer %016x sent sequence %d, expected %d",
			w.s.name, b.Shard, ErrSequenceGap, b.ProducerID, b.ProducerSeq, next)
		return true, nil
	case b.ProducerSeq < batches[0].seq:
		r.err = fmt.Errorf("store: append to %q shard %d: %w: producer %016x sequence %d is older than the last %d batches (they start at sequence %d)",
			w.s.name, b.Shard, ErrDuplicateTooOld, b.ProducerID, b.ProducerSeq, len(batches), batches[0].seq)
		return true, nil
	}
	for _, old := range batches {
		if old.seq != b.ProducerSeq {
			continue
		}
		if old.count == count && (old.digest == 0 || old.digest == digest) {
			for i := range r.res.Positions {
				r.res.Positions[i] = Position{Shard: uint32(b.Shard), Seq: old.first + uint64(i)}
			}
			r.res.Duplicate = true
			return true, nil
		}
		what := "different records"
		if old.count != count {
			what = fmt.Sprintf("%d records, this one %d", old.count, count)
		}
		r.err = fmt.Errorf("store: append to %q shard %d: %w: producer %016x sequence %d was stored by a batch with %s",
			w.s.name, b.Shard, ErrSequenceConflict, b.ProducerID, b.ProducerSeq, what)
		return true, nil
	}
	r.err = fmt.Errorf("store: append to %q shard %d: %w: producer %016x sequence %d falls inside a stored batch, not at its start",
		w.s.name, b.Shard, ErrSequenceConflict, b.ProducerID, b.ProducerSeq)
	return true, nil
}

// flush writes this commit's records as one chunk per shard (split at
// maxChunkBytes), the origin index and watermarks, and the
// touched shards' state.
func (w *writer) flush(tx *bolt.Tx) error {
	meta := tx.Bucket(bucketMeta)
	for i, recs := range w.pending {
		if len(recs) == 0 {
			continue
		}
		cb := tx.Bucket(chunkBucket(i))
		cb.FillPercent = 1.0 // append-only: full pages
		for len(recs) > 0 {
			n, size := 0, 0
			for n < len(recs) && (n == 0 || size < maxChunkBytes) {
				size += record.Size(&recs[n])
				n++
			}
			// bbolt keeps the value slice until commit: each chunk gets
			// its own piece of w.buf, which is not reused before then.
			start := len(w.buf)
			var err error
			w.buf, err = record.AppendBatch(w.buf, recs[:n])
			if err != nil {
				return err
			}
			chunk := w.buf[start:len(w.buf):len(w.buf)]
			if err := cb.Put(u64(recs[0].Seq), chunk); err != nil {
				return err
			}
			w.metas[i].Bytes += int64(len(chunk))
			if err := indexOrigins(tx, i, recs[:n]); err != nil {
				return err
			}
			recs = recs[n:]
		}
		if err := meta.Put(shardKey(i), w.metas[i].encode()); err != nil {
			return err
		}
	}
	wb := tx.Bucket(bucketWatermarks)
	for k, v := range w.wm {
		if err := wb.Put(k.bytes(), u64(v)); err != nil {
			return err
		}
	}
	return nil
}

// originIndexKey is a record's key in the origin index: origin shard ‖ BE
// origin seq.
func originIndexKey(o record.Origin) []byte {
	return binary.BigEndian.AppendUint64(OriginKey{Hub: o.Hub, Shard: o.Shard}.bytes(), o.Seq)
}

// indexOrigins maps each foreign record's origin to its position here, so a
// peer can pull an origin's records after a watermark.
func indexOrigins(tx *bolt.Tx, shard int, recs []record.Record) error {
	var ob *bolt.Bucket
	for i := range recs {
		o := recs[i].Origin
		if o.IsLocal() {
			continue
		}
		if ob == nil {
			ob = tx.Bucket(bucketOrigins)
		}
		k := originIndexKey(o)
		v := binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint32(make([]byte, 0, 12), uint32(shard)), recs[i].Seq)
		if err := ob.Put(k, v); err != nil {
			return err
		}
	}
	return nil
}

package hub

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/quic"
	"github.com/edgehub/edgehub/store"
)

// pendingBatch is one BATCH between its arrival and its ACK.
type pendingBatch struct {
	batch   store.Batch
	id      uint64
	size    int64
	start   time.Time
	ack     quic.Ack
	stream  *store.Stream
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
	if !d.beginProduce() {
		return d.refuse(req.Op, errShuttingDown)
	}
	defer d.produceWG.Done()
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
	// A session without the lineage flag routes by a shard count
	// (docs/resharding.md section 3): its explicit-shard batches are
	// checked against the shards' ranges, so a stale route is refused with
	// shard_closed rather than stored in the wrong shard.
	lineage := open.Flags&quic.ProduceLineage != 0
	if !lineage {
		legacy := d.m.legacySess.WithLabelValues(st.Name())
		legacy.Inc()
		defer legacy.Dec()
	}
	need := copyNeed(st, open.Copies)
	switch {
	case open.Copies > MaxCopies:
		return d.refuse(req.Op, quic.Errorf(quic.CodeInvalidArgument, "%d copies asked: at most %d", open.Copies, MaxCopies))
	case need.Copies > 1 && Replicate(st.Config().Meta[MetaReplicate]).orLocal() == ReplicateLocal:
		return d.refuse(req.Op, quic.Errorf(quic.CodeInvalidArgument,
			"%d copies asked of stream %q, which never leaves this hub (replicate = \"local\")", need.Copies, st.Name()))
	}
	ready := quic.ProduceReady{
		Copies:        uint32(need.Copies),
		Shards:        uint32(st.Shards()),
		MaxBatchBytes: uint64(d.limits.MaxFrameBytes) - 64,
		MaxInFlight:   uint32(d.limits.MaxInflightBatches),
		// Announced so that clients refuse a record above it at once,
		// not after a round trip.
		MaxRecordBytes: uint64(d.st.Config().MaxRecordBytes),
		LayoutVersion:  st.Layout().Version,
	}
	if open.Flags&quic.ProduceDatagrams != 0 {
		if err := req.Conn.HandshakeComplete(ctx); err != nil {
			return d.refuse(req.Op, err)
		}
		var end func()
		ready.DatagramSession, end = d.openDatagramSession(req.Conn, st)
		defer end()
	}
	if err := req.Stream.Send(quic.FrameProduceReady, &ready); err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if lineage {
		// LAYOUT frames, now and at every change, so the client re-routes
		// before it hits a closed shard. A failed send breaks the stream,
		// which the read loop then sees.
		req.Go(func() { _ = sendLayouts(ctx, st, req.Stream, quic.FrameProduceLayout) })
	}
	// In-flight budget: batches and bytes read but not yet acknowledged,
	// per session and (the produce share of the memory budget) over all
	// sessions. A batch takes it after its frame header, before its
	// payload is read; while it waits, QUIC flow control holds the
	// producer back.
	countSem := semaphore.NewWeighted(int64(d.limits.MaxInflightBatches))
	bytesSem := semaphore.NewWeighted(maxInflightBytes)
	var held int64 // taken by admit for the frame being read
	admit := func(t quic.FrameType, n int) error {
		if t != quic.FrameBatch {
			return quic.Errorf(quic.CodeProtocol, "%s frame in a produce session", t)
		}
		size := int64(n)
		if err := countSem.Acquire(ctx, 1); err != nil {
			return err
		}
		if err := bytesSem.Acquire(ctx, min(size, maxInflightBytes)); err != nil {
			countSem.Release(1)
			return err
		}
		if err := d.budget.produce.Acquire(ctx, size); err != nil {
			bytesSem.Release(min(size, maxInflightBytes))
			countSem.Release(1)
			return err
		}
		held = size
		d.m.inflightB.Add(float64(size))
		return nil
	}
	release := func(size int64) {
		d.budget.produce.Release(size)
		bytesSem.Release(min(size, maxInflightBytes))
		countSem.Release(1)
		d.m.inflightB.Sub(float64(size))
	}
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
		release(pb.size)
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

	// A drain stops reading: the batches read so far are appended and
	// acknowledged, then the session ends with unavailable.
	go func() {
		select {
		case <-d.drainCh:
			req.Stream.StopReading()
		case <-ctx.Done():
		}
	}()
	for {
		held = 0
		_, p, err := req.Stream.ReadFrameAdmit(admit)
		if errors.Is(err, io.EOF) {
			return finish(nil)
		}
		if err != nil {
			if held > 0 {
				release(held)
			}
			cancel()
			if d.isDraining() {
				err = errShuttingDown
			}
			return finish(wireErr(err))
		}
		var b quic.Batch
		if err := b.Decode(p); err != nil {
			release(held)
			cancel()
			return finish(quic.WireError(err))
		}
		pb := &pendingBatch{id: b.ID, size: held, start: time.Now()}
		pb.ack.ID = b.ID
		recs, err := d.decodeBatch(&b, int(st.Shards()), open.ProducerID)
		if err != nil {
			e := d.clientErr(err)
			if e.Code == quic.CodeProtocol {
				release(held)
				cancel()
				return finish(e)
			}
			// A refusal of this batch alone.
			pb.ack.Code, pb.ack.Message = e.Code, e.Message
			ack(pb)
			continue
		}
		pb.batch = store.Batch{Shard: int(b.Shard), Records: recs, StrictRange: !lineage && b.Shard >= 0}
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
			req.Go(func() {
				defer laneWG.Done()
				for pb := range lane {
					d.finishAppend(pb)
					if need := copyNeed(st, open.Copies); need.Copies > 1 && pb.ack.Code == quic.CodeOK {
						have, err := d.awaitCopies(ctx, st, need, pb.ack.Runs)
						pb.ack.Copies = uint32(have)
						if err != nil {
							e := toWire(err)
							pb.ack.Code, pb.ack.Message = e.Code, e.Message
						}
					}
					ack(pb)
				}
			})
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
	case b.Shard < -1 || int(b.Shard) >= shards:
		return nil, quic.Errorf(quic.CodeInvalidArgument, "shard %d of a %d-shard stream (0..%d, or -1 to route by key)", b.Shard, shards, shards-1)
	case producerID != 0 && b.Shard < 0:
		return nil, quic.Errorf(quic.CodeInvalidArgument, "an idempotent producer must name the shard of each batch")
	}
	if err := checkProduced(recs); err != nil {
		return nil, err
	}
	return recs, nil
}

// checkProduced refuses what only a hub may set in a record: a sequence,
// an ingest time or a foreign origin. A producer sends them as 0; one that
// sends a batch it consumed elsewhere must re-encode it.
func checkProduced(recs []record.Record) error {
	for i, r := range recs {
		switch {
		case !r.Origin.IsLocal():
			return quic.Errorf(quic.CodeInvalidArgument, "record %d carries a foreign origin; producers send local records only", i)
		case r.Seq != 0 || r.IngestTime != 0:
			return quic.Errorf(quic.CodeInvalidArgument, "record %d carries sequence %d and ingest time %d; producers send both as 0 (the hub assigns them)", i, r.Seq, r.IngestTime)
		}
	}
	return nil
}

// startAppend queues pb's append in the store without waiting for it.
func (d *dataPlane) startAppend(ctx context.Context, st *store.Stream, pb *pendingBatch) {
	if ctx.Err() != nil {
		pb.ack.Code, pb.ack.Message = quic.CodeCanceled, "session ended"
		return
	}
	pb.stream = st
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
		e := d.clientErr(err)
		pb.ack.Code, pb.ack.Message = e.Code, e.Message
		if e.Code == quic.CodeShardClosed {
			// The layout the refusal was made under (or a later one):
			// the client routes by at least this version before resending.
			pb.ack.LayoutVersion = pb.stream.Layout().Version
		}
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

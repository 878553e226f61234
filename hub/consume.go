package hub

import (
	"context"
	"errors"
	"fmt"
	"io"
	"reflect"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/quic"
	"github.com/edgehub/edgehub/store"
)

// consume serves a subscription: it pushes stored chunks of the subscribed
// shards from their start positions as soon as they are committed, while the
// consumer's byte credit lasts. It never polls: when every shard is caught
// up it waits on the store's commit notifications.
//
// Memory: a subscription reserves, when it opens, up to subReserveMax of the
// consume share (its initial credit, at least subReserveMin): the part it is
// guaranteed. A send may borrow more from the share, without waiting, only
// while the share stays at most half held (budgetShare.tryBorrow), and
// within its credit: what the chunk at hand needs beyond the reservation,
// so stored chunks (about 256 KiB plus one record) go out whole, and once
// the consumer has returned credit up to subBurstMax ahead of the store
// read, for several chunks a read. It returns what it borrowed when its
// frames are written. Without room it holds at most its reservation
// between a store read and the end of the frame's write, plus one record
// larger than that, and cuts larger chunks. A consumer that grants credit
// and never reads therefore costs its reservation (and what its first
// chunk needs beyond it), whatever the backlog, and a write its flow
// control does not take within the frame timeout ends it.
func (d *dataPlane) consume(ctx context.Context, req *quic.Request) error {
	var open quic.ConsumeOpen
	if err := open.Decode(req.Body); err != nil {
		return quic.WireError(err)
	}
	st, err := d.openStream(req, open.Stream, actionConsume)
	if err != nil {
		return err
	}
	// The change channel is taken before the layout is read, so a reshard
	// in between is seen at the first round.
	layoutChanged := st.LayoutChanged()
	shards, next, ready, hold, err := subscribe(st, &open, st.Layout())
	if err != nil {
		return d.refuse(req.Op, err)
	}
	maxCredit := int64(d.limits.MaxConsumerCredit)
	reserve := min(max(int64(min(open.Credit, 1<<40)), subReserveMin), subReserveMax, maxCredit)
	if !d.budget.consume.TryAcquire(reserve) {
		return d.refuse(req.Op, d.budget.consume.exhausted("a subscription", reserve))
	}
	defer func() { d.budget.consume.Release(reserve) }()
	if err := req.Stream.Send(quic.FrameConsumeReady, &ready); err != nil {
		return err
	}
	if hold.lineage {
		l := wireLayout(hold.layout)
		if err := req.Stream.Send(quic.FrameConsumeLayout, &l); err != nil {
			return err
		}
	}
	d.m.subs.Inc()
	defer d.m.subs.Dec()

	sub := &subscription{d: d, st: st, req: req, reserve: reserve,
		consumed: d.m.consumed.WithLabelValues(st.Name()), consumedB: d.m.consumedB.WithLabelValues(st.Name()),
		cuts: d.m.cuts.WithLabelValues(st.Name())}
	var credit atomic.Int64
	credit.Store(min(int64(min(open.Credit, 1<<62)), maxCredit))
	creditWake := make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	readErr := make(chan error, 1)
	req.Go(func() {
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
			sub.reads.Store(true)
			select {
			case creditWake <- struct{}{}:
			default:
			}
		}
	})
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
		// Grow the reservation towards the credit, if the budget allows.
		if c := min(credit.Load(), subReserveMax); c > reserve && d.budget.consume.TryAcquire(c-reserve) {
			sub.reserve, reserve = c, c
		}
		// A reshard: new layout to the client (before any record of a
		// shard it adds), new shards followed, children released.
		select {
		case <-layoutChanged:
			layoutChanged = st.LayoutChanged()
			var err error
			if shards, next, err = hold.refresh(st, req.Stream, shards, next); err != nil {
				return d.endOrErr(ctx, readErr, err)
			}
		default:
		}
		// Finished shards: SHARD_END (lineage clients), then their
		// children may go. Frames of one QUIC stream arrive in order, so
		// a client receives a parent's last record before its child's
		// first.
		if err := hold.finish(st, req.Stream, shards, next); err != nil {
			return d.endOrErr(ctx, readErr, err)
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
			if hold.waiting[i] || hold.done[i] {
				continue
			}
			if end, closed := hold.closedEnd(sh); closed && next[i] > end {
				continue // finished: hold.finish marks it at the next round
			}
			_, last, _ := st.Bounds(sh)
			if next[i] > last {
				cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(st.Changed(sh))})
				if _, last, _ = st.Bounds(sh); next[i] > last {
					continue
				}
			}
			sent, err := sub.send(ctx, sh, &next[i], credit.Load())
			if err != nil {
				if ctx.Err() != nil {
					return d.endSubscription(ctx, readErr)
				}
				// Through the one error table: damaged data is
				// corrupt to the client and logged with its file.
				return d.clientErr(err)
			}
			if sent > 0 {
				credit.Add(-sent)
				progress = true
			}
		}
		if progress || credit.Load() <= 0 || hold.pending(shards, next) {
			continue
		}
		cases = append(cases,
			reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(layoutChanged)},
			reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ctx.Done())},
			reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(creditWake)})
		reflect.Select(cases)
		if ctx.Err() != nil {
			return d.endSubscription(ctx, readErr)
		}
	}
}

// subscribe checks a ConsumeOpen against the stream (its layout l) and
// works out where each subscribed shard starts. Every request it cannot
// serve as asked is refused with invalid_argument and a message, never
// adjusted silently.
//
// Lineage (docs/resharding.md section 2): a closed or retired shard whose
// start is past its end is finished at once; in an "all shards"
// subscription a shard with an unfinished parent is held back, and starts
// at its first live record (or its resume position) when released; a
// shard whose parents are all finished at the open starts at its resume
// position, at its first live record when the client resumed a parent and
// gave no position for it, else where the start kind says.
func subscribe(st *store.Stream, open *quic.ConsumeOpen, l store.Layout) (shards []int, next []uint64, ready quic.ConsumeReady, hold *held, err error) {
	bad := func(format string, args ...any) ([]int, []uint64, quic.ConsumeReady, *held, error) {
		return nil, nil, quic.ConsumeReady{}, nil, quic.Errorf(quic.CodeInvalidArgument, format, args...)
	}
	n := st.Shards()
	if open.Start.Kind > quic.StartTime {
		return bad("unknown start kind %d (0 earliest, 1 latest, 2 sequence, 3 time)", open.Start.Kind)
	}
	if open.Start.Kind == quic.StartTime && open.Start.Value > 1<<63-1 {
		return bad("start time %d out of range", open.Start.Value)
	}
	listed := make([]bool, n)
	for _, s := range open.Shards {
		switch {
		case int64(s) >= int64(n):
			return bad("shard %d of a %d-shard stream", s, n)
		case listed[s]:
			return bad("shard %d listed twice", s)
		}
		listed[s] = true
		shards = append(shards, int(s))
	}
	hold = &held{all: len(shards) == 0, lineage: open.Flags&quic.ConsumeLineage != 0, layout: l, index: map[uint32]int{}}
	if len(shards) == 0 {
		for i := range n {
			listed[i] = true
			shards = append(shards, i)
		}
	}
	resume := map[int]uint64{}
	for _, p := range open.Resume {
		sh := int(p.Shard)
		switch _, dup := resume[sh]; {
		case int64(p.Shard) >= int64(n):
			return bad("resume position for shard %d of a %d-shard stream", p.Shard, n)
		case !listed[sh]:
			return bad("resume position for shard %d, which the subscription does not list", p.Shard)
		case dup:
			return bad("two resume positions for shard %d", p.Shard)
		}
		resume[sh] = p.Seq
	}
	next = make([]uint64, len(shards))
	ready = quic.ConsumeReady{Shards: uint32(n), Incarnation: st.Incarnation(), LayoutVersion: l.Version}
	for i, sh := range shards {
		seq, resumed := resume[sh]
		hold.add(uint32(sh), false, false, resumed)
		if sh < len(l.Shards) && l.Shards[sh].State == store.ShardRetired {
			// Gone with every record: finished, whatever the position.
			end := l.Shards[sh].End
			if resumed && seq > end+1 {
				return bad("resume position %d is past the end of shard %d (closed at %d)", seq, sh, end)
			}
			next[i] = end + 1
			hold.done[i] = true
			ready.Subs = append(ready.Subs, quic.Subscription{Shard: uint32(sh), Start: end + 1, Last: end})
			continue
		}
		first, last, err := st.Bounds(sh)
		if err != nil {
			return nil, nil, quic.ConsumeReady{}, nil, err
		}
		var start uint64
		switch {
		case resumed:
			start = seq
		case open.Start.Kind == quic.StartEarliest:
			start = first
		case open.Start.Kind == quic.StartLatest:
			start = last + 1
		case open.Start.Kind == quic.StartSeq:
			start = open.Start.Value
		case open.Start.Kind == quic.StartTime:
			if end, closed := hold.closedEnd(sh); closed && l.Shards[sh].ClosedAt < int64(open.Start.Value) {
				start = end + 1 // closed before T: nothing of it is at or after T
				break
			}
			start, err = st.SeqAtTime(sh, time.Unix(0, int64(open.Start.Value)))
			if err != nil {
				return nil, nil, quic.ConsumeReady{}, nil, err
			}
		}
		// A position past the next sequence to be written names records
		// this hub never had: the client's position comes from another
		// hub or a data directory since replaced.
		if (resumed || open.Start.Kind == quic.StartSeq) && start > last+1 {
			what := "start"
			if resumed {
				what = "resume position"
			}
			return bad("%s %d is past the end of shard %d (its next sequence is %d)", what, start, sh, last+1)
		}
		start = max(start, first, 1)
		next[i] = start
		if end, closed := hold.closedEnd(sh); closed && start > end {
			hold.done[i] = true
		}
		ready.Subs = append(ready.Subs, quic.Subscription{Shard: uint32(sh), Start: start, Last: last})
	}
	if hold.all {
		// Shards with an unfinished parent wait; the others whose parent
		// the client resumed start at their first live record.
		// A finished shard (empty, retired, or before the start) still
		// waits for unfinished parents: its children inherit its range, and
		// are released only through it (ids are in lineage order, so a
		// parent is settled before its children).
		for i, sh := range shards {
			if sh >= len(l.Shards) {
				continue
			}
			ls := l.Shards[sh]
			if !hold.parentsDone(ls) {
				hold.done[i], hold.waiting[i] = false, true
				if !hold.resumed[i] && ls.State != store.ShardRetired {
					first, _, _ := st.Bounds(sh)
					next[i] = max(first, 1)
					ready.Subs[i].Start = next[i]
				}
				continue
			}
			if hold.done[i] || hold.resumed[i] {
				continue
			}
			for _, p := range ls.Parents {
				if _, ok := resume[int(p)]; ok {
					first, _, _ := st.Bounds(sh)
					next[i] = max(first, 1)
					ready.Subs[i].Start = next[i]
					break
				}
			}
		}
	}
	return shards, next, ready, hold, nil
}

// subBurstMax bounds what a send borrows ahead of a store read, beyond the
// subscription's reservation, once its consumer has returned credit: a few
// stored chunks per read (the read step before the memory budget). After
// the read any send may borrow what the chunk at hand still needs, up to
// the chunk's size.
const subBurstMax = 1 << 20

// subscription is what consume's sending needs.
type subscription struct {
	d                   *dataPlane
	st                  *store.Stream
	req                 *quic.Request
	reserve             int64 // bytes of the consume share it holds
	consumed, consumedB prometheus.Counter
	cuts                prometheus.Counter // batches re-encoded to fit
	// reads is set once the consumer returns credit: it reads what it is
	// sent, so borrowing for a read of several chunks will not sit in a
	// write its flow control never takes.
	reads atomic.Bool
}

// send sends what it can of shard sh from *next within credit (at least one
// record), advancing *next, and returns the payload bytes sent. Stored
// chunks that fit both the credit and what the subscription holds (its
// reservation and what it could borrow for this send) go as they are; a
// chunk that does not is re-encoded from *next into a batch that does, so
// a subscription never holds more than the share granted it.
func (s *subscription) send(ctx context.Context, sh int, next *uint64, credit int64) (int64, error) {
	share := s.d.budget.consume
	// Borrowed bytes are this send's only: returned once its frames are
	// written (or it failed).
	var borrowed int64
	defer func() { share.giveBack(borrowed) }()
	if want := min(credit, subBurstMax) - s.reserve; want > 0 && s.reads.Load() && share.tryBorrow(want) {
		borrowed = want
	}
	limit := min(max(credit, subReserveMin), s.reserve+borrowed)
	// Reads are short and bounded in number, so the chunks being read or
	// cut at any moment cost at most storeReads chunks.
	if err := s.d.storeReads.Acquire(ctx, 1); err != nil {
		return 0, err
	}
	chunks, err := s.st.ReadRaw(sh, *next, int(limit))
	var part []byte
	var partLast uint64
	var partCount int
	if err == nil && len(chunks) == 1 && int64(len(chunks[0])) > limit {
		// One chunk larger than the limit: borrow what it still needs
		// if the credit covers it, else cut it.
		need := int64(len(chunks[0])) - s.reserve - borrowed
		if int64(len(chunks[0])) <= credit && share.tryBorrow(need) {
			borrowed += need
		} else {
			part, partLast, partCount, err = cut(chunks[0], *next, limit)
			if ce := (*store.CorruptError)(nil); errors.As(err, &ce) {
				ce.File, ce.Shard, ce.Seq = s.st.Path(), sh, *next
			}
			chunks = nil
		}
	}
	s.d.storeReads.Release(1)
	if err != nil {
		return 0, err
	}
	if part != nil {
		s.cuts.Inc()
		// What the cut batch does not use is returned before the write,
		// which may wait on the consumer.
		borrowed = s.keepBorrowed(borrowed, int64(len(part)))
		return s.write(ctx, sh, next, part, partLast, partCount, s.reserve+borrowed)
	}
	total := int64(0)
	for _, c := range chunks {
		total += int64(len(c))
	}
	borrowed = s.keepBorrowed(borrowed, total)
	var sent int64
	for i, c := range chunks {
		info, err := record.ReadInfo(c)
		if err != nil {
			return sent, &store.CorruptError{File: s.st.Path(), Shard: sh, Seq: *next, Err: err}
		}
		chunks[i] = nil // held by the write only
		n, err := s.write(ctx, sh, next, c, info.LastSeq, info.Count, s.reserve+borrowed)
		sent += n
		if err != nil {
			return sent, err
		}
	}
	return sent, nil
}

// keepBorrowed returns to the share the part of borrowed bytes that
// holding used bytes does not need, and returns what stays borrowed.
func (s *subscription) keepBorrowed(borrowed, used int64) int64 {
	keep := min(borrowed, max(used-s.reserve, 0))
	s.d.budget.consume.giveBack(borrowed - keep)
	return keep
}

// write sends batch (records up to last) as one RECORDS frame; the
// subscription holds held bytes of the share for it.
func (s *subscription) write(ctx context.Context, sh int, next *uint64, batch []byte, last uint64, count int, held int64) (int64, error) {
	// A single record above what is held is held beyond it: take the
	// excess from the share, waiting if need be.
	if excess := int64(len(batch)) - held; excess > 0 {
		if err := s.d.budget.consume.Acquire(ctx, excess); err != nil {
			return 0, err
		}
		defer s.d.budget.consume.Release(excess)
	}
	if err := s.req.Stream.SendBytes(quic.FrameRecords, quic.RecordsPrefix{Shard: uint32(sh), BatchLen: len(batch)}, batch); err != nil {
		return 0, err
	}
	s.consumed.Add(float64(count))
	s.consumedB.Add(float64(len(batch)))
	*next = last + 1
	return int64(len(batch)), nil
}

// cut re-encodes the records of chunk from seq next on that fit limit bytes
// (at least one), returning the batch, its last sequence and record count.
func cut(chunk []byte, next uint64, limit int64) ([]byte, uint64, int, error) {
	recs, err := record.DecodeBatch(chunk, nil)
	if err != nil {
		return nil, 0, 0, &store.CorruptError{Err: err}
	}
	for len(recs) > 0 && recs[0].Seq < next {
		recs = recs[1:]
	}
	if len(recs) == 0 {
		return nil, 0, 0, fmt.Errorf("hub: no record from %d in a chunk read from %d", next, next)
	}
	// A record's encoded size is about its data plus a few varints.
	k, size := 0, int64(64)
	for k < len(recs) {
		size += int64(len(recs[k].Key)+len(recs[k].Value)) + 40
		for _, h := range recs[k].Headers {
			size += int64(len(h.Key)+len(h.Value)) + 10
		}
		if k > 0 && size > limit {
			break
		}
		k++
	}
	part, err := record.AppendBatch(nil, recs[:k])
	for err == nil && k > 1 && int64(len(part)) > limit {
		k = max(1, k*3/4)
		part, err = record.AppendBatch(part[:0], recs[:k])
	}
	if err != nil {
		return nil, 0, 0, err
	}
	return part, recs[k-1].Seq, k, nil
}

// endOrErr ends a subscription whose frame could not be sent: the
// consumer's end if the context ended, else the send's error.
func (d *dataPlane) endOrErr(ctx context.Context, readErr chan error, err error) error {
	if ctx.Err() != nil {
		return d.endSubscription(ctx, readErr)
	}
	return err
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

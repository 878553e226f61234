package hub

import (
	"context"
	"errors"
	"io"
	"reflect"
	"sync/atomic"
	"time"

	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/quic"
	"github.com/edgehub/edgehub/store"
)

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

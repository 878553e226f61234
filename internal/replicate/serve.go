package replicate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"time"

	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/quic"
	"github.com/edgehub/edgehub/store"
)

// Sender is the server end of one pull (a *quic.Stream in production).
type Sender interface {
	Send(t quic.FrameType, f quic.Appender) error
}

// server serves pulls from the local store.
type server struct {
	self      string
	store     *store.Store
	tags      func(hub string) ([]string, bool)
	heartbeat time.Duration
	maxBatch  int
	high      *highCache
	gaps      *gapBook
	logger    *slog.Logger
	metrics   *metrics
	authorize Authorizer
	// layout returns what this hub knows of hub's layout of st (its own
	// for itself) and whether it was ever resharded.
	layout func(st *store.Stream, hub string) (store.Layout, bool)
	// copies holds what replicas reported they applied of our own shards.
	copies *copies
}

// originLayout is what this hub knows of hub's layout of st: the
// replicator's view, else what the stream's file recorded (a relay serving
// before its first reconciliation after a restart must still know that a
// shard it completed is closed, or it would answer PULL_TRIMMED for the
// sequences after its last record of it). Callers ask at the start of a
// pull and when nothing is left to send, not per record.
func (s *server) originLayout(st *store.Stream, hub string) store.Layout {
	if s.layout != nil {
		if l, ok := s.layout(st, hub); ok || hub == s.self {
			return l
		}
	}
	if hub == s.self {
		return st.Layout()
	}
	ls, err := st.OriginLayouts()
	if err != nil {
		return store.Layout{}
	}
	return ls[hub]
}

// ServeQUIC implements quic.Handler for quic.OpReplicate: a session
// (version 2) or a single pull (version 1).
func (s *server) ServeQUIC(ctx context.Context, req *quic.Request) error {
	if len(req.Body) > 0 && req.Body[0] == sessionVersion2 {
		var open SessionOpen
		if err := open.Decode(req.Body); err != nil {
			return quic.WireError(err)
		}
		return s.serveSession(ctx, req, open)
	}
	var pr PullRequest
	if err := pr.Decode(req.Body); err != nil {
		return quic.WireError(err)
	}
	if s.authorize != nil {
		if err := s.authorize(ctx, req, pr.Requester, pr.Stream); err != nil {
			return err
		}
	}
	err := s.serve(ctx, pr, req.Stream)
	var ce *closedEndError
	if errors.As(err, &ce) {
		return nil // a single pull has no closed_end: it simply ends
	}
	return err
}

// serve streams the records of pr.Origin after pr.After to out, following
// new commits if pr.Follow, until ctx ends or a send fails. A closed origin
// shard (a reshard's parent) is served to its end, then serve returns a
// *closedEndError.
func (s *server) serve(ctx context.Context, pr PullRequest, out Sender) error {
	st, err := s.store.Stream(pr.Stream)
	if errors.Is(err, store.ErrStreamNotFound) {
		return quic.Errorf(quic.CodeNotFound, "stream %q not found", pr.Stream)
	} else if err != nil {
		return quic.Errorf(quic.CodeUnavailable, "stream %q: %v", pr.Stream, err)
	}
	pol := policyOf(st.Config())
	if pol.Local() {
		return quic.Errorf(quic.CodeNotFound, "stream %q is not replicated", pr.Stream)
	}
	if !pol.All {
		tags, known := s.tags(pr.Requester)
		if !known {
			// Gossip has not told us about it yet (it just joined): retry.
			return quic.Errorf(quic.CodeUnavailable, "hub %q is not a known member yet", pr.Requester)
		}
		if !pol.Admits(tags) {
			return quic.Errorf(quic.CodePermissionDenied, "stream %q (replicate = %q) does not go to hub %q", pr.Stream, pol, pr.Requester)
		}
	}
	if err := checkIncarnation(st, pr, s.self); err != nil {
		return err
	}
	if err := lineageRefusal(pr, s.originLayout(st, OwnerOf(pr.Origin.Hub))); err != nil {
		return err
	}
	maxBatch := s.maxBatch
	if pr.MaxBatchBytes > 0 && pr.MaxBatchBytes < uint64(maxBatch) {
		maxBatch = max(int(pr.MaxBatchBytes), minBatchBytes)
	}
	if pr.Origin.Hub == s.self {
		if int(pr.Origin.Shard) >= st.Shards() {
			return quic.Errorf(quic.CodeInvalidArgument, "stream %q has %d shards, not %d", pr.Stream, st.Shards(), pr.Origin.Shard+1)
		}
		return s.serveOwn(ctx, st, pr, maxBatch, out)
	}
	return s.serveRelay(ctx, st, pr, maxBatch, out)
}

// serveOwn serves this hub's own records of one shard. Origin sequence ==
// shard sequence, so the scan position is the pull position; replicated
// records interleaved in the shard are skipped.
func (s *server) serveOwn(ctx context.Context, st *store.Stream, pr PullRequest, maxBatch int, out Sender) error {
	shard := int(pr.Origin.Shard)
	compact := st.Config().Compact
	pos := pr.After
	if sf, ok := out.(*srvFollow); ok && pr.Report && s.copies != nil {
		// What the follower applies of our own records counts as copies
		// (copies.go); it holds everything up to where it asked from.
		if err := sf.askReports(copyStream{st.Name(), st.Incarnation()}, pr.Origin.Shard, pr.After); err != nil {
			return err
		}
	}
	var buf []byte
	var recs []record.Record
	idle := false
	for {
		if done(pr, pos) {
			return nil
		}
		// Every record of a closed shard up to its end was scanned: the
		// follow is complete. A retired one (retention removed all of it)
		// has nothing left to scan.
		if sh, ok := shardOf(st.Layout(), pr.Origin.Shard); ok && sh.State != store.ShardOpen && !bounded(pr) {
			if sh.State == store.ShardRetired && pos < sh.End {
				if !compact {
					if err := out.Send(FramePullGap, &Gap{From: pos + 1, To: sh.End, Reason: "deleted by retention at the origin"}); err != nil {
						return err
					}
					s.metrics.servedGaps.Inc()
				}
				pos = sh.End
			}
			if pos >= sh.End {
				return &closedEndError{end: sh.End}
			}
		}
		limit, err := readLimit(ctx, out, maxBatch)
		if err != nil {
			return err
		}
		recs, err = readShard(st, shard, pos+1, limit, recs)
		if err != nil {
			return serveErr(pr, err)
		}
		// Sequences below the first one returned are gone: retention
		// removed them before this peer pulled them.
		first := pos + 1
		if len(recs) > 0 {
			first = recs[0].Seq
		} else if f, _, err := st.Bounds(shard); err == nil && f > first {
			first = f
		}
		if first > pos+1 {
			if !compact {
				if err := out.Send(FramePullGap, &Gap{From: pos + 1, To: first - 1, Reason: "deleted by retention at the origin"}); err != nil {
					return err
				}
				s.metrics.servedGaps.Inc()
			}
			pos = first - 1
		}
		if len(recs) == 0 {
			if err := s.idle(ctx, st, pr, &idle, func(ctx context.Context) error { return st.Wait(ctx, shard, pos+1) }, out); err != nil {
				return err
			}
			if !pr.Follow && idle {
				return nil
			}
			continue
		}
		idle = false
		if bounded(pr) {
			if recs = cutAfter(recs, pr.Until, func(r *record.Record) uint64 { return r.Seq }); len(recs) == 0 {
				return nil
			}
		}
		// The position first: the filter below reuses recs' array.
		pos = recs[len(recs)-1].Seq
		sel := recs[:0]
		for _, r := range recs {
			if r.Origin.IsLocal() {
				r.Origin = record.Origin{Hub: s.self, Shard: uint32(shard), Seq: r.Seq}
				r.Seq = 0
				sel = append(sel, r)
			}
		}
		if len(sel) == 0 {
			continue
		}
		high, err := s.high.own(st, shard)
		if err != nil {
			return serveErr(pr, err)
		}
		if buf, err = s.send(out, buf, sel, max(high, pos)); err != nil {
			return err
		}
	}
}

// readShard returns the records of shard from sequence from on, reading
// about maxBytes of stored chunks (at least one), in dst's array. It is
// Stream.Read sized once: appending chunk after chunk would copy the
// growing result again for each small chunk.
func readShard(st *store.Stream, shard int, from uint64, maxBytes int, dst []record.Record) ([]record.Record, error) {
	chunks, err := st.ReadRaw(shard, from, maxBytes)
	if err != nil {
		return nil, err
	}
	n := 0
	for _, c := range chunks {
		info, err := record.ReadInfo(c)
		if err != nil {
			return nil, &store.CorruptError{File: st.Path(), Shard: shard, Seq: from, Err: err}
		}
		n += info.Count
	}
	clear(dst) // drop references to the previous chunks
	recs := slices.Grow(dst[:0], n)
	for _, c := range chunks {
		if recs, err = record.DecodeBatch(c, recs); err != nil {
			return nil, &store.CorruptError{File: st.Path(), Shard: shard, Seq: from, Err: err}
		}
	}
	skip := 0 // the first chunk may begin before from
	for skip < len(recs) && recs[skip].Seq < from {
		skip++
	}
	return recs[skip:], nil
}

// serveRelay serves records of a foreign origin held here, through the
// store's origin index.
//
// The index has holes: the origin's own numbering skips the records its
// shard replicated from others (normal), this hub's retention may have
// removed records, and this hub may have accepted gaps (recorded in the
// gap book). Recorded gaps are announced to the puller (PULL_GAP) where
// they fall, so a gap travels down a chain of relays instead of becoming a
// silent skip. For any other hole this hub cannot tell numbering from
// trimming, except that retention removes an origin's records oldest
// first: while we still hold a record of the origin at or below the
// puller's position, nothing after it was trimmed. Otherwise, if our
// retention ever trimmed the stream, we refuse (PULL_TRIMMED) rather than
// risk a silent skip, and the puller asks the origin or another peer.
// Compacted streams converge on the latest record per key; their holes
// are expected and served as they are.
func (s *server) serveRelay(ctx context.Context, st *store.Stream, pr PullRequest, maxBatch int, out Sender) error {
	k := pr.Origin
	pos := pr.After
	compact := st.Config().Compact
	var buf []byte
	idle := false
	// mayBeTrimmed reports whether records of k after pos may have been
	// removed by our retention.
	mayBeTrimmed := func() (bool, error) {
		if compact || !trimmed(st) {
			return false, nil
		}
		first, err := st.ReadOrigin(k, 0, 1)
		if err != nil {
			return false, err
		}
		return len(first) == 0 || first[0].Origin.Seq > pos, nil
	}
	for {
		if done(pr, pos) {
			return nil
		}
		limit, err := readLimit(ctx, out, maxBatch)
		if err != nil {
			return err
		}
		// ReadOrigin bounds by count: assume records of 64 bytes or more.
		recs, err := st.ReadOrigin(k, pos, max(limit/64, 64))
		if err != nil {
			return serveErr(pr, err)
		}
		if len(recs) > 0 && recs[0].Origin.Seq > pos+1 && !s.gaps.covers(pr.Stream, k, pos+1, recs[0].Origin.Seq-1) {
			risky, err := mayBeTrimmed()
			if err != nil {
				return serveErr(pr, err)
			}
			if risky {
				return out.Send(FramePullTrimmed, quic.RawPayload(appendUvarint(nil, recs[0].Origin.Seq)))
			}
		}
		if len(recs) == 0 && !bounded(pr) && st.Watermark(k) > pos {
			// A closed origin shard held here to its end is complete once
			// nothing of it is left after pos (its last sequences may
			// number others' records): unless our retention may have
			// removed some, which the trimmed check below reports.
			end, closed := closedEnd(s.originLayout(st, OwnerOf(k.Hub)), k.Shard)
			if closed && st.Watermark(k) >= end {
				risky := false
				if pos < end {
					if risky, err = mayBeTrimmed(); err != nil {
						return serveErr(pr, err)
					}
				}
				if !risky {
					if err := s.sendGaps(out, pr, pos, end); err != nil {
						return err
					}
					return &closedEndError{end: end}
				}
			}
		}
		if len(recs) == 0 {
			if wm := st.Watermark(k); wm > pos {
				// We applied records after pos and hold none of them.
				switch {
				case s.gaps.covers(pr.Stream, k, pos+1, wm):
					if err := s.sendGaps(out, pr, pos, wm); err != nil {
						return err
					}
					pos = wm
				case compact:
					pos = wm
				default:
					return out.Send(FramePullTrimmed, quic.RawPayload(appendUvarint(nil, wm+1)))
				}
			}
			if err := s.idle(ctx, st, pr, &idle, func(ctx context.Context) error { return waitWatermark(ctx, st, k, pos) }, out); err != nil {
				return err
			}
			if !pr.Follow && idle {
				return nil
			}
			continue
		}
		idle = false
		if bounded(pr) {
			if recs = cutAfter(recs, pr.Until, func(r *record.Record) uint64 { return r.Origin.Seq }); len(recs) == 0 {
				return nil
			}
		}
		for i := range recs {
			recs[i].Seq = 0
		}
		high := max(st.Watermark(k), recs[len(recs)-1].Origin.Seq)
		// Send the records, with the recorded gaps where they fall.
		i := 0
		for _, g := range s.gaps.within(pr.Stream, k, pos+1, recs[len(recs)-1].Origin.Seq) {
			j := i
			for j < len(recs) && recs[j].Origin.Seq < g[0] {
				j++
			}
			if j > i {
				if buf, err = s.send(out, buf, recs[i:j], high); err != nil {
					return err
				}
				pos = recs[j-1].Origin.Seq
			}
			to := g[1]
			if j < len(recs) {
				to = min(to, recs[j].Origin.Seq-1)
			}
			if err := s.sendGaps(out, pr, pos, to); err != nil {
				return err
			}
			pos, i = max(pos, to), j
		}
		if i < len(recs) {
			if buf, err = s.send(out, buf, recs[i:], high); err != nil {
				return err
			}
			pos = recs[len(recs)-1].Origin.Seq
		}
	}
}

// bounded reports whether pr ends at Until (a pull that does not follow).
func bounded(pr PullRequest) bool { return pr.Until > 0 && !pr.Follow }

// done reports whether a bounded pull has sent everything up to its bound.
func done(pr PullRequest, pos uint64) bool { return bounded(pr) && pos >= pr.Until }

// cutAfter drops the records whose sequence (by seq) is above until: an
// empty result means a bounded pull has nothing more to send.
func cutAfter(recs []record.Record, until uint64, seq func(*record.Record) uint64) []record.Record {
	n := len(recs)
	for n > 0 && seq(&recs[n-1]) > until {
		n--
	}
	return recs[:n]
}

// sendGaps announces the recorded gaps of pr's origin within pos+1..to.
func (s *server) sendGaps(out Sender, pr PullRequest, pos, to uint64) error {
	for _, g := range s.gaps.within(pr.Stream, pr.Origin, pos+1, to) {
		from, end := max(g[0], pos+1), min(g[1], to)
		if from > end {
			continue
		}
		if err := out.Send(FramePullGap, &Gap{From: from, To: end, Reason: "lost at " + s.self + " before it held them (reported there as a gap)"}); err != nil {
			return err
		}
		s.metrics.servedGaps.Inc()
	}
	return nil
}

// idle runs when the puller has everything: it says so once, then waits
// for more (following pulls), sending progress every heartbeat so the
// client's lag stays current and a dead client is noticed.
func (s *server) idle(ctx context.Context, st *store.Stream, pr PullRequest, idle *bool, wait func(context.Context) error, out Sender) error {
	var high uint64
	if pr.Origin.Hub == s.self {
		h, err := s.high.own(st, int(pr.Origin.Shard))
		if err != nil {
			return serveErr(pr, err)
		}
		high = h
	} else {
		high = st.Watermark(pr.Origin)
	}
	if !*idle {
		*idle = true
		if err := out.Send(FramePullProgress, &Progress{High: high, Time: time.Now().UnixNano()}); err != nil {
			return err
		}
		if !pr.Follow {
			return nil
		}
	}
	wctx, cancel := context.WithTimeout(ctx, s.heartbeat)
	err := wait(wctx)
	cancel()
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(err, context.DeadlineExceeded):
		return out.Send(FramePullProgress, &Progress{High: high, Time: time.Now().UnixNano()})
	case errors.Is(err, store.ErrClosed):
		return quic.Errorf(quic.CodeUnavailable, "stream %q closed", pr.Stream)
	case errors.Is(err, store.ErrShardClosed):
		return nil // the shard closed at a reshard: the serving loop ends the follow
	}
	return serveErr(pr, err)
}

func (s *server) send(out Sender, buf []byte, recs []record.Record, high uint64) ([]byte, error) {
	buf, err := record.AppendBatch(buf[:0], recs)
	if err != nil {
		return buf, fmt.Errorf("replicate: encode batch: %w", err)
	}
	if err := out.Send(FramePullRecords, &Records{High: high, Batch: buf}); err != nil {
		return buf, err
	}
	s.metrics.servedRecords.Add(float64(len(recs)))
	s.metrics.servedBytes.Add(float64(len(buf)))
	return buf, nil
}

// trimmed reports whether retention ever removed the head of a shard.
func trimmed(st *store.Stream) bool {
	for _, sh := range st.Stats() {
		if sh.FirstSeq > 1 {
			return true
		}
	}
	return false
}

// waitWatermark blocks until origin k's watermark passes pos (any shard may
// receive its records), or ctx ends. Commits wake it; it never polls.
func waitWatermark(ctx context.Context, st *store.Stream, k store.OriginKey, pos uint64) error {
	var cases []reflect.SelectCase
	for {
		// A reshard adds shards (where k's next records may go): the
		// cases are rebuilt each round, and the layout's change wakes us.
		n := st.Shards()
		cases = append(cases[:0],
			reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ctx.Done())},
			reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(st.LayoutChanged())})
		for i := 0; i < n; i++ {
			cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(st.Changed(i))})
		}
		if st.Watermark(k) > pos {
			return nil
		}
		if i, _, _ := reflect.Select(cases); i == 0 {
			return ctx.Err()
		}
	}
}

func serveErr(pr PullRequest, err error) error {
	var ce *store.CorruptError
	switch {
	case errors.As(err, &ce):
		return quic.Errorf(quic.CodeCorrupt, "stream %q: %v", pr.Stream, err)
	case errors.Is(err, store.ErrClosed):
		return quic.Errorf(quic.CodeUnavailable, "stream %q closed", pr.Stream)
	}
	return fmt.Errorf("replicate: serve %s/%s/%d: %w", pr.Stream, pr.Origin.Hub, pr.Origin.Shard, err)
}

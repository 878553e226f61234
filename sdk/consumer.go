package sdk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/quic"
)

// Start is where a subscription begins in each shard.
type Start struct {
	kind  quic.StartKind
	value uint64
}

// FromEarliest starts at the first live record.
func FromEarliest() Start { return Start{kind: quic.StartEarliest} }

// FromLatest starts at the next record to be committed.
func FromLatest() Start { return Start{kind: quic.StartLatest} }

// FromSeq starts at sequence seq (or the first live record after it).
func FromSeq(seq uint64) Start { return Start{kind: quic.StartSeq, value: seq} }

// FromTime starts at the first record ingested at or after t.
func FromTime(t time.Time) Start {
	ns := t.UnixNano()
	if ns < 0 {
		ns = 0
	}
	return Start{kind: quic.StartTime, value: uint64(ns)}
}

// ConsumeOptions configure a Subscription.
type ConsumeOptions struct {
	// Shards to read; nil means all.
	Shards []int
	// From is where to start; default FromEarliest.
	From Start
	// Credit is how many bytes of records the hub may send ahead of what
	// the application has taken with Next. Default 4 MiB (the hub caps it).
	Credit int
}

// Message is a record with the shard it was read from.
type Message struct {
	Stream string
	Shard  int
	Record Record
}

// Subscription reads a stream. The hub pushes records as they are
// committed, within the credit the subscription grants as the application
// reads; a slow reader slows only its own subscription. It reconnects and
// resumes after the last record returned. A Subscription is not safe for
// concurrent use.
type Subscription struct {
	c      *Client
	stream string
	opts   ConsumeOptions

	st      *quic.Stream
	frames  chan frameOrErr
	cancel  context.CancelFunc
	next    map[int]uint64 // per shard: the next sequence wanted
	last    map[int]uint64 // per shard: last sequence when the subscription opened
	shards  int
	inc     string // the stream's incarnation the positions count in
	owed    int    // credit consumed and not yet returned
	cur     []record.Record
	curB    int
	curSh   int
	closed  bool
	attempt int
}

type frameOrErr struct {
	recs   quic.Records
	size   int
	layout *quic.Layout   // a LAYOUT frame instead of records
	end    *quic.ShardEnd // a SHARD_END frame instead of records
	err    error
}

// Subscribe opens a subscription to stream.
func (c *Client) Subscribe(ctx context.Context, stream string, opts ConsumeOptions) (*Subscription, error) {
	if opts.Credit <= 0 {
		opts.Credit = 4 << 20
	}
	s := &Subscription{c: c, stream: stream, opts: opts, next: map[int]uint64{}, last: map[int]uint64{}}
	if err := s.open(ctx, true); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Subscription) open(ctx context.Context, first bool) error {
	req := &quic.ConsumeOpen{Stream: s.stream, Start: quic.Start{Kind: s.opts.From.kind, Value: s.opts.From.value}, Credit: uint64(s.opts.Credit),
		// Lineage: the hub tells us the layout and when a closed shard is
		// finished (docs/protocol.md 5.6).
		Flags: quic.ConsumeLineage}
	for _, sh := range s.opts.Shards {
		req.Shards = append(req.Shards, uint32(sh))
	}
	for sh, seq := range s.next {
		req.Resume = append(req.Resume, quic.Position{Shard: uint32(sh), Seq: seq})
	}
	st, _, err := s.c.open(ctx, quic.OpConsume, req)
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { st.Cancel(quic.CodeCanceled) })
	var ready quic.ConsumeReady
	err = st.Expect(quic.FrameConsumeReady, &ready)
	stop()
	if err != nil {
		st.Cancel(quic.CodeCanceled)
		return fmt.Errorf("sdk: subscribe to %q: %w", s.stream, err)
	}
	if !first && s.inc != "" && ready.Incarnation != "" && ready.Incarnation != s.inc && len(s.next) > 0 {
		// The stream was deleted and created again while we were away:
		// our positions are void. Start over at the new stream's
		// beginning rather than skip its first records.
		st.Cancel(quic.CodeCanceled)
		s.c.logger.Warn("sdk: the stream was deleted and created again; reading it from its beginning",
			"stream", s.stream, "old_incarnation", s.inc, "new_incarnation", ready.Incarnation)
		s.inc = ready.Incarnation
		clear(s.next)
		s.opts.From = FromEarliest()
		return s.open(ctx, false)
	}
	s.inc = ready.Incarnation
	s.shards = int(ready.Shards)
	for _, sub := range ready.Subs {
		if first {
			s.last[int(sub.Shard)] = sub.Last
		}
		s.next[int(sub.Shard)] = sub.Start
	}
	rctx, cancel := context.WithCancel(context.Background())
	s.st, s.cancel, s.owed = st, cancel, 0
	// Room for what the credit allows, so the reader never waits on us
	// while holding credit the hub needs.
	s.frames = make(chan frameOrErr, 64)
	go readRecords(rctx, st, s.frames)
	return nil
}

func readRecords(ctx context.Context, st *quic.Stream, out chan<- frameOrErr) {
	defer close(out)
	for {
		var f frameOrErr
		ft, p, err := st.ReadFrame()
		switch {
		case err != nil:
			f.err = err
		case ft == quic.FrameError:
			e, derr := quic.DecodeError(p)
			f.err = e
			if derr != nil {
				f.err = derr
			}
		case ft == quic.FrameConsumeLayout:
			f.layout = &quic.Layout{}
			f.err = f.layout.Decode(p)
		case ft == quic.FrameShardEnd:
			f.end = &quic.ShardEnd{}
			f.err = f.end.Decode(p)
		case ft != quic.FrameRecords:
			f.err = fmt.Errorf("%w: %s in a subscription", quic.ErrUnexpectedFrame, ft)
		default:
			f.err = f.recs.Decode(p)
			f.size = len(f.recs.Batch)
		}
		select {
		case out <- f:
		case <-ctx.Done():
			return
		}
		if f.err != nil {
			return
		}
	}
}

// Shards is the stream's count of open shards (from a hub before
// resharding, its shard count). A reshard changes it.
func (s *Subscription) Shards() int { return s.shards }

// CaughtUp reports whether every subscribed shard has been read up to the
// last sequence it held when the subscription opened.
func (s *Subscription) CaughtUp() bool {
	for sh, last := range s.last {
		if s.next[sh] <= last {
			return false
		}
	}
	return true
}

// Buffered is how many records Next can return without waiting.
func (s *Subscription) Buffered() int { return len(s.cur) - s.curB }

// Next returns the next record, waiting for one to be committed if needed.
// Records of one shard come in sequence order; shards interleave.
func (s *Subscription) Next(ctx context.Context) (Message, error) {
	for s.curB >= len(s.cur) {
		if err := s.fill(ctx); err != nil {
			return Message{}, err
		}
	}
	r := s.cur[s.curB]
	s.curB++
	s.next[s.curSh] = r.Seq + 1
	return Message{Stream: s.stream, Shard: s.curSh, Record: r}, nil
}

// NextBatch returns the records of the next batch the hub sent (at least
// one), which is cheaper than Next record by record. The slice is valid
// until the next call.
func (s *Subscription) NextBatch(ctx context.Context) (shard int, recs []Record, err error) {
	for s.curB >= len(s.cur) {
		if err := s.fill(ctx); err != nil {
			return 0, nil, err
		}
	}
	recs = s.cur[s.curB:]
	s.curB = len(s.cur)
	s.next[s.curSh] = recs[len(recs)-1].Seq + 1
	return s.curSh, recs, nil
}

// fill takes the next RECORDS frame, returning credit for the bytes the
// application has consumed, and reconnects when the subscription breaks.
func (s *Subscription) fill(ctx context.Context) error {
	if s.closed {
		return ErrClosed
	}
	// Return credit in chunks of a quarter of the window.
	if s.owed >= s.opts.Credit/4 && s.st != nil {
		if err := s.st.Send(quic.FrameCredit, &quic.Credit{Bytes: uint64(s.owed)}); err == nil {
			s.owed = 0
		}
	}
	if s.st == nil {
		if err := s.c.backoff(ctx, s.attempt); err != nil {
			return err
		}
		s.attempt++
		if err := s.open(ctx, false); err != nil {
			if !retryable(err) {
				return err
			}
			s.c.logger.Debug("sdk: resubscribe failed", "stream", s.stream, "err", err)
			return nil
		}
	}
	var f frameOrErr
	var ok bool
	select {
	case f, ok = <-s.frames:
	case <-ctx.Done():
		return ctx.Err()
	}
	if !ok || f.err != nil {
		err := f.err
		if !ok {
			err = io.ErrUnexpectedEOF
		}
		s.drop()
		if errors.Is(err, io.EOF) {
			err = fmt.Errorf("sdk: subscription to %q ended by the hub: %w", s.stream, io.ErrUnexpectedEOF)
		}
		if !retryable(err) {
			return fmt.Errorf("sdk: subscription to %q: %w", s.stream, err)
		}
		s.c.logger.Debug("sdk: subscription broken, resuming", "stream", s.stream, "err", err)
		return nil
	}
	s.attempt = 0
	switch {
	case f.layout != nil:
		open := 0
		for _, sh := range f.layout.Shards {
			if sh.State == quic.ShardOpen {
				open++
			}
		}
		s.shards = open
		return nil
	case f.end != nil:
		// Finished: a resume names the shard at end+1, so the hub never
		// sends it again and starts its children at their beginning.
		sh := int(f.end.Shard)
		s.next[sh] = max(s.next[sh], f.end.End+1)
		return nil
	}
	s.owed += f.size
	recs, err := record.DecodeBatch(f.recs.Batch, s.cur[:0])
	if err != nil {
		s.drop()
		return fmt.Errorf("sdk: subscription to %q: shard %d: %w", s.stream, f.recs.Shard, err)
	}
	sh := int(f.recs.Shard)
	want := s.next[sh]
	skip := 0
	for skip < len(recs) && recs[skip].Seq < want {
		skip++ // the chunk began before our position
	}
	s.cur, s.curB, s.curSh = recs, skip, sh
	return nil
}

func (s *Subscription) drop() {
	if s.st != nil {
		s.cancel()
		s.st.Cancel(quic.CodeCanceled)
		s.st = nil
	}
}

// Close ends the subscription. Close is idempotent.
func (s *Subscription) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	if s.st != nil {
		s.st.Close()
		s.cancel()
		s.st = nil
	}
	return nil
}

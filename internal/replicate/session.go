package replicate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/edgehub/edgehub/quic"
)

// Limits of the serving side of a session.
const (
	// maxSessionFollows bounds the follows one session may have open: each
	// is a goroutine here.
	maxSessionFollows = 1 << 16
	// maxFollowCredit caps a follow's credit, so credit arithmetic cannot
	// overflow whatever a client grants.
	maxFollowCredit = 1 << 40
)

// srvSession serves one replication session: many follows multiplexed on
// one QUIC stream. The stream is read by one goroutine (follow, credit and
// cancel frames) and written by one (writer), which takes frames from the
// follows in the order they became ready, so no follow can monopolise it;
// per-follow credit bounds what a busy follow sends ahead of its client.
type srvSession struct {
	s         *server
	req       *quic.Request
	requester string
	ctx       context.Context
	cancel    context.CancelCauseFunc
	writes    chan *sessionWrite

	mu      sync.Mutex
	follows map[uint64]*srvFollow
	lastID  uint64
	wg      sync.WaitGroup
}

type sessionWrite struct {
	t    quic.FrameType
	f    quic.Appender
	done chan error
}

// srvFollow is one follow of a session, and its Sender.
type srvFollow struct {
	id     uint64
	ss     *srvSession
	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex
	credit   int64
	more     chan struct{} // signalled when credit is added
	canceled bool          // by the client: no PULL_END is owed
	copies   *copyStream   // set once PULL_REPORT was sent: reports count
	shard    uint32
}

// askReports makes the follow's PULL_APPLIED reports count as copies of
// own shard of stream k, from after (what the client holds already), and
// asks the client for them. A client that did not offer reports is never
// asked: a server must not make an older client read a frame it does not
// know.
func (sf *srvFollow) askReports(k copyStream, shard uint32, after uint64) error {
	sf.ss.s.copies.applied(k, shard, sf.ss.requester, after)
	sf.mu.Lock()
	sf.copies, sf.shard = &k, shard // before the ask: the answer may come at once
	sf.mu.Unlock()
	return sf.ss.send(sf.ctx, FramePullReport, followID(sf.id))
}

// followID is a payload of just a follow id (PULL_REPORT).
type followID uint64

func (f followID) Append(dst []byte) []byte { return appendUvarint(dst, uint64(f)) }

// serveSession runs a session until the client ends it (FIN: nil), the
// stream fails, or ctx ends.
func (s *server) serveSession(ctx context.Context, req *quic.Request, open SessionOpen) error {
	sctx, cancel := context.WithCancelCause(ctx)
	ss := &srvSession{s: s, req: req, requester: open.Requester, ctx: sctx, cancel: cancel,
		writes: make(chan *sessionWrite), follows: map[uint64]*srvFollow{}}
	s.metrics.sessions.Inc()
	defer s.metrics.sessions.Dec()
	// The reader blocks in ReadFrame: end the stream when the hub or the
	// connection closes.
	stop := context.AfterFunc(ctx, func() { req.Stream.Fail(quic.Errorf(quic.CodeUnavailable, "hub closing")) })
	defer stop()
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		ss.writer()
	}()
	err := ss.read() // never nil: io.EOF is the client's FIN
	if !errors.Is(err, io.EOF) && !errors.Is(context.Cause(sctx), errSessionWrite) {
		// Tell the client why (a protocol error, say). Fail bounds its
		// write, which also unblocks a writer stuck on a client that
		// stopped reading.
		err = quic.WireError(err)
		req.Stream.Fail(err)
	}
	cancel(err)
	ss.wg.Wait()
	<-writerDone
	if errors.Is(err, io.EOF) || errors.Is(context.Cause(sctx), errSessionWrite) {
		return nil // the client is done, or gone: nobody to tell
	}
	return err
}

// errSessionWrite: the session's stream could not be written (the peer
// went away).
var errSessionWrite = errors.New("replicate: session write failed")

// writer writes the follows' frames, first come first served.
func (ss *srvSession) writer() {
	for {
		select {
		case w := <-ss.writes:
			err := ss.req.Stream.Send(w.t, w.f)
			if err != nil {
				ss.cancel(fmt.Errorf("%w: %w", errSessionWrite, err))
				ss.req.Stream.Cancel(quic.CodeCanceled) // ends the reader too
			}
			w.done <- err
		case <-ss.ctx.Done():
			return
		}
	}
}

// send hands one frame to the writer and waits until it is written.
func (ss *srvSession) send(ctx context.Context, t quic.FrameType, f quic.Appender) error {
	w := &sessionWrite{t: t, f: f, done: make(chan error, 1)}
	select {
	case ss.writes <- w:
	case <-ctx.Done():
		return ctx.Err()
	}
	// The writer answers every frame it took, written or failed.
	return <-w.done
}

// read handles the client's frames until the stream ends; it returns
// io.EOF when the client finished the stream cleanly, never nil.
func (ss *srvSession) read() error {
	for {
		t, p, err := ss.req.Stream.ReadFrame()
		if err != nil {
			return err
		}
		switch t {
		case FramePullFollow:
			var f Follow
			if err := f.Decode(p); err != nil {
				return err
			}
			if err := ss.start(f); err != nil {
				return err
			}
		case FramePullCredit:
			var c FollowCredit
			if err := c.Decode(p); err != nil {
				return err
			}
			if sf := ss.follow(c.ID); sf != nil { // else already ended: its credit is moot
				sf.addCredit(c.Bytes)
			}
		case FramePullApplied:
			var a FollowApplied
			if err := a.Decode(p); err != nil {
				return err
			}
			if sf := ss.follow(a.ID); sf != nil {
				sf.mu.Lock()
				k, shard := sf.copies, sf.shard
				sf.mu.Unlock()
				if k == nil {
					return quic.Errorf(quic.CodeProtocol, "PULL_APPLIED for follow %d, which was not asked to report", a.ID)
				}
				ss.s.copies.applied(*k, shard, ss.requester, a.Applied)
			}
		case FramePullCancel:
			var c FollowCancel
			if err := c.Decode(p); err != nil {
				return err
			}
			if sf := ss.follow(c.ID); sf != nil {
				sf.mu.Lock()
				sf.canceled = true
				sf.mu.Unlock()
				sf.cancel()
			}
		default:
			return quic.Errorf(quic.CodeProtocol, "%s frame in a replication session", frameName(t))
		}
	}
}

// follow returns the open follow id, nil if it ended (or never was).
func (ss *srvSession) follow(id uint64) *srvFollow {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.follows[id]
}

// start authorises and starts one follow; refusals end only that follow.
func (ss *srvSession) start(f Follow) error {
	ss.mu.Lock()
	if f.ID <= ss.lastID {
		ss.mu.Unlock()
		return quic.Errorf(quic.CodeProtocol, "follow id %d after %d: ids must increase", f.ID, ss.lastID)
	}
	ss.lastID = f.ID
	n := len(ss.follows)
	ss.mu.Unlock()
	var refusal error
	if n >= maxSessionFollows {
		refusal = quic.Errorf(quic.CodeLimit, "%d follows open in this session (max %d)", n, maxSessionFollows)
	} else if ss.s.authorize != nil {
		refusal = ss.s.authorize(ss.ctx, ss.req, ss.requester, f.Stream)
	}
	if refusal != nil {
		end := &FollowEnd{ID: f.ID, Code: quic.CodeOf(refusal), Message: errMessage(refusal)}
		if err := ss.send(ss.ctx, FramePullEnd, end); err != nil {
			return err
		}
		return nil
	}
	fctx, cancel := context.WithCancel(ss.ctx)
	sf := &srvFollow{id: f.ID, ss: ss, ctx: fctx, cancel: cancel, more: make(chan struct{}, 1)}
	sf.addCredit(f.Credit)
	ss.mu.Lock()
	ss.follows[f.ID] = sf
	ss.mu.Unlock()
	ss.s.metrics.follows.Inc()
	ss.wg.Add(1)
	go func() {
		defer ss.wg.Done()
		defer ss.s.metrics.follows.Dec()
		err := ss.s.serve(fctx, f.request(ss.requester), sf)
		ss.mu.Lock()
		delete(ss.follows, f.ID)
		ss.mu.Unlock()
		sf.mu.Lock()
		canceled := sf.canceled
		sf.mu.Unlock()
		cancel()
		if canceled || ss.ctx.Err() != nil {
			return
		}
		if err != nil && quic.CodeOf(err) == quic.CodeInternal {
			ss.s.logger.Warn("replicate: serving a follow failed", "requester", ss.requester, "stream", f.Stream,
				"origin", f.Origin.Hub, "shard", f.Origin.Shard, "err", err)
		}
		end := &FollowEnd{ID: f.ID, Code: quic.CodeOf(err), Message: errMessage(err)}
		var ce *closedEndError
		if errors.As(err, &ce) {
			end = &FollowEnd{ID: f.ID, Code: quic.CodeOK, Closed: true, ClosedEnd: ce.end}
		}
		ss.send(ss.ctx, FramePullEnd, end)
	}()
	return nil
}

func errMessage(err error) string {
	var e *quic.Error
	switch {
	case err == nil:
		return ""
	case errors.As(err, &e):
		return e.Message
	}
	return err.Error()
}

func (sf *srvFollow) addCredit(n uint64) {
	sf.mu.Lock()
	sf.credit = min(sf.credit+int64(min(n, maxFollowCredit)), maxFollowCredit)
	sf.mu.Unlock()
	select {
	case sf.more <- struct{}{}:
	default:
	}
}

// available blocks until the follow has credit and returns it.
func (sf *srvFollow) available(ctx context.Context) (int64, error) {
	for {
		sf.mu.Lock()
		c := sf.credit
		sf.mu.Unlock()
		if c > 0 {
			return c, nil
		}
		select {
		case <-sf.more:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// Send implements Sender: the frame goes out tagged with the follow's id;
// record batches wait for credit and spend it.
func (sf *srvFollow) Send(t quic.FrameType, f quic.Appender) error {
	if r, ok := f.(*Records); ok && t == FramePullRecords {
		if _, err := sf.available(sf.ctx); err != nil {
			return err
		}
		sf.mu.Lock()
		sf.credit -= int64(len(r.Batch))
		sf.mu.Unlock()
	}
	return sf.ss.send(sf.ctx, t, tagged{id: sf.id, f: f})
}

// creditor is a Sender with per-pull flow control (a session's follow):
// the serving loops size their reads by its credit.
type creditor interface {
	available(ctx context.Context) (int64, error)
}

// readLimit is how many record bytes to read for the next batch: the pull's
// batch size, or less while out's client has less credit. It blocks while
// out has none.
func readLimit(ctx context.Context, out Sender, maxBatch int) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	c, ok := out.(creditor)
	if !ok {
		return maxBatch, nil
	}
	n, err := c.available(ctx)
	if err != nil {
		return 0, err
	}
	return int(min(int64(maxBatch), max(n, minBatchBytes))), nil
}

// minBatchBytes is the smallest batch a server reads for a pull.
const minBatchBytes = 4 << 10

package sdk

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgehub/edgehub/quic"
)

// Consumer groups: members of a group share a stream's shards. The hub
// leases each shard to one member with an epoch, moves shards when members
// come and go, and keeps the group's committed offsets. See docs/groups.md.

// CodeStaleEpoch refuses a commit for a shard the member no longer holds.
const CodeStaleEpoch = quic.CodeStaleEpoch

// GroupOptions configure a GroupConsumer.
type GroupOptions struct {
	// MemberID names this member in the group. Give a stable id (say, the
	// instance's name) so that a restarted process takes its shards back at
	// once; the default is unique per process (host name, process id and a
	// random suffix), so a restarted process is a new member and the old
	// one's shards wait for its session timeout.
	MemberID string
	// SessionTimeout: the hub gives this member's shards to others when it
	// has heard nothing from it for this long (heartbeats go every third of
	// it). 0 takes the hub's default (10s).
	SessionTimeout time.Duration
	// From positions shards the group has never committed; default
	// FromEarliest. Once the group has an offset for a shard, From is
	// ignored for it.
	From Start
	// Credit is the subscription's byte credit, as ConsumeOptions.Credit.
	Credit int
	// CommitInterval: records are committed automatically, from Next and
	// NextBatch, at most this often, and at once when a shard closed by a
	// reshard has been processed to its end (its children are leased only
	// after that commit). Default 1s; negative commits only in Commit, on
	// rebalances and in Close: then call Commit after the last record of a
	// closed shard, or its children wait.
	CommitInterval time.Duration
	// OnRevoke is called, from the goroutine calling Next, NextBatch or
	// Commit, with shards this member is giving up, before their final
	// commit: finish and flush the work of those shards in it.
	OnRevoke func(shards []int)
	// OnAssign is called, likewise, with shards this member has been given.
	OnAssign func(shards []int)
}

// GroupConsumer is a member of a consumer group: it reads the shards the
// hub assigns it, commits what the application has processed, and follows
// rebalances.
//
// A record counts as processed once the application comes back for more:
// calling Next, NextBatch, Commit or Close marks every record returned
// before as processed. Processed records are committed every
// CommitInterval, before shards move to another member, and in Close. After
// a crash, the next owner of a shard starts at its last commit, so records
// processed since are delivered again: at least once, with the redelivery
// bounded by the uncommitted work. A GroupConsumer is not safe for
// concurrent use.
type GroupConsumer struct {
	c      *Client
	group  string
	stream string
	member string
	opts   GroupOptions
	join   quic.GroupJoin

	ctx    context.Context // ends at Close
	cancel context.CancelFunc

	// Shared with the session goroutine; guarded by mu.
	mu       sync.Mutex
	latest   *quic.GroupAssignment // newest assignment, not yet applied
	st       *quic.Stream          // the session's stream; nil while rejoining
	fatal    error                 // the membership cannot continue
	waiters  map[uint64]chan commitResult
	commitID uint64
	leaving  bool

	wake     chan struct{} // an assignment, a new session or a fatal error (capacity 1)
	up       atomic.Bool   // a session is established
	loopDone chan struct{}
	hbEvery  atomic.Int64  // heartbeat interval, ns
	recvGen  atomic.Uint64 // generation of the newest assignment received

	// The application goroutine's state.
	sub        *Subscription
	subAttempt int
	leases     map[int]*groupLease
	gen        uint64
	applied    bool // the first assignment has been applied
	dirty      int  // shard whose delivered position moved since the last call; -1 none
	lastCommit time.Time
	closed     atomic.Bool
	closeOnce  sync.Once
	closeErr   error
}

// groupLease is a held shard. Positions are sequences: delivered is after
// the last record returned, processed after the last one known processed,
// committed the offset the hub has.
type groupLease struct {
	epoch                           uint64
	delivered, processed, committed uint64
	// closedNext is 0 while the shard is open; once a reshard closed it,
	// its end+1: reaching it is committed at once, since the hub leases the
	// shard's children only after that commit.
	closedNext uint64
}

type commitResult struct {
	ack quic.GroupCommitAck
	err error
}

// errNoSession: the member is between sessions (reconnecting).
var errNoSession = errors.New("sdk: group session is reconnecting")

// JoinGroup joins group as a consumer of stream and returns once the first
// assignment is in force. Several members (in any processes) that join the
// same group share the stream's shards.
func (c *Client) JoinGroup(ctx context.Context, group, stream string, opts GroupOptions) (*GroupConsumer, error) {
	if opts.MemberID == "" {
		opts.MemberID = defaultMemberID()
	}
	if opts.CommitInterval == 0 {
		opts.CommitInterval = time.Second
	}
	g := &GroupConsumer{
		c: c, group: group, stream: stream, member: opts.MemberID, opts: opts,
		join: quic.GroupJoin{Group: group, Stream: stream, MemberID: opts.MemberID,
			SessionTimeoutMillis: quic.Millis(opts.SessionTimeout),
			Start:                quic.Start{Kind: opts.From.kind, Value: opts.From.value}},
		waiters:  map[uint64]chan commitResult{},
		wake:     make(chan struct{}, 1),
		loopDone: make(chan struct{}),
		leases:   map[int]*groupLease{},
		dirty:    -1,
	}
	g.ctx, g.cancel = context.WithCancel(context.Background())
	// The first join is made here so that its refusal is JoinGroup's error.
	st, a, err := g.openSession(ctx)
	if err != nil {
		g.cancel()
		return nil, fmt.Errorf("sdk: join group %q: %w", group, err)
	}
	g.setSession(st)
	g.deliver(a)
	go g.run(st)
	if err := g.maintain(ctx); err != nil {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		g.Close(cctx)
		return nil, fmt.Errorf("sdk: join group %q: %w", group, err)
	}
	g.lastCommit = time.Now()
	return g, nil
}

// defaultMemberID is unique per process: host name, pid and a random part.
func defaultMemberID() string {
	host, _ := os.Hostname()
	host = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-' {
			return r
		}
		return '-'
	}, host)
	if len(host) > 64 {
		host = host[:64]
	}
	if host == "" || host[0] == '.' || host[0] == '_' || host[0] == '-' {
		host = "member" + host
	}
	var b [4]byte
	rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

// Member returns this member's id.
func (g *GroupConsumer) Member() string { return g.member }

// Shards returns the shards this member holds now, in order.
func (g *GroupConsumer) Shards() []int { return slices.Sorted(maps.Keys(g.leases)) }

// Buffered is how many records Next can return without waiting.
func (g *GroupConsumer) Buffered() int {
	if g.sub == nil {
		return 0
	}
	return g.sub.Buffered()
}

// CaughtUp reports whether every shard this member holds has been read up
// to the last sequence it had when this member started reading it.
func (g *GroupConsumer) CaughtUp() bool {
	return g.applied && (len(g.leases) == 0 || (g.sub != nil && g.sub.CaughtUp()))
}

// Next returns the next record of the shards this member holds, waiting
// for one if needed, and marks the record returned before as processed.
func (g *GroupConsumer) Next(ctx context.Context) (Message, error) {
	if err := g.await(ctx); err != nil {
		return Message{}, err
	}
	m, err := g.sub.Next(ctx)
	if err != nil {
		return Message{}, err
	}
	g.delivered(m.Shard, m.Record.Seq)
	return m, nil
}

// NextBatch returns the records of the next batch (at least one, all of
// one shard) and marks what was returned before as processed. The slice is
// valid until the next call.
func (g *GroupConsumer) NextBatch(ctx context.Context) (shard int, recs []Record, err error) {
	if err := g.await(ctx); err != nil {
		return 0, nil, err
	}
	shard, recs, err = g.sub.NextBatch(ctx)
	if err != nil {
		return 0, nil, err
	}
	g.delivered(shard, recs[len(recs)-1].Seq)
	return shard, recs, nil
}

func (g *GroupConsumer) delivered(shard int, seq uint64) {
	if l := g.leases[shard]; l != nil {
		l.delivered = seq + 1
		g.dirty = shard
	}
}

// markProcessed: the application came back, so what it was given is done.
func (g *GroupConsumer) markProcessed() {
	if g.dirty < 0 {
		return
	}
	if l := g.leases[g.dirty]; l != nil {
		l.processed = l.delivered
	}
	g.dirty = -1
}

// await marks the previous record processed, then applies assignments and
// auto-commits until the subscription has a record to return.
func (g *GroupConsumer) await(ctx context.Context) error {
	if g.closed.Load() {
		return ErrClosed
	}
	g.markProcessed()
	for {
		if err := g.maintain(ctx); err != nil {
			return err
		}
		if !g.up.Load() {
			// Between sessions this member cannot know whether it still
			// holds its shards (a hub restart or a session expiry moves
			// them): hold records back until the rejoin's assignment.
			select {
			case <-g.wake:
				continue
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if g.sub != nil && g.sub.Buffered() > 0 {
			return nil
		}
		if err := g.wait(ctx); err != nil {
			return err
		}
	}
}

// wait blocks until the subscription receives records, an assignment
// arrives, or ctx ends.
func (g *GroupConsumer) wait(ctx context.Context) error {
	if g.sub == nil && len(g.leases) > 0 {
		// The subscription could not be opened last time: try again.
		if err := g.c.backoff(ctx, g.subAttempt); err != nil {
			return err
		}
		g.subAttempt++
		return g.resubscribe(ctx)
	}
	if g.sub == nil { // nothing assigned: wait for an assignment
		select {
		case <-g.wake:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// An idle member still commits what it processed, when the interval is
	// up, instead of leaving it uncommitted until the next record.
	var due <-chan time.Time
	if g.opts.CommitInterval > 0 && g.uncommitted() {
		t := time.NewTimer(max(time.Until(g.lastCommit.Add(g.opts.CommitInterval)), 0))
		defer t.Stop()
		due = t.C
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-g.wake:
			cancel()
		case <-due:
			cancel()
		case <-stop:
		}
	}()
	err := g.sub.fill(wctx)
	if err != nil && ctx.Err() == nil && wctx.Err() != nil {
		return nil // woken for an assignment or a commit; maintain does it
	}
	return err
}

// closedReached reports whether a closed shard has been processed to its
// end and that is not committed yet: it is committed at once, whatever the
// interval, so that the shard's children are not held back (an SDK before
// resharding commits it at its interval, which only delays them).
func (g *GroupConsumer) closedReached() bool {
	for _, l := range g.leases {
		if l.closedNext > 0 && l.processed >= l.closedNext && l.committed < l.closedNext {
			return true
		}
	}
	return false
}

// uncommitted reports whether some shard has processed records not yet
// committed.
func (g *GroupConsumer) uncommitted() bool {
	for _, l := range g.leases {
		if l.processed > l.committed {
			return true
		}
	}
	return false
}

// maintain applies a new assignment and auto-commits when due.
func (g *GroupConsumer) maintain(ctx context.Context) error {
	g.mu.Lock()
	a, fatal := g.latest, g.fatal
	g.latest = nil
	g.mu.Unlock()
	if fatal != nil {
		return fatal
	}
	if a != nil {
		if err := g.apply(ctx, a); err != nil {
			return err
		}
	}
	if g.opts.CommitInterval > 0 && (time.Since(g.lastCommit) >= g.opts.CommitInterval || g.closedReached()) {
		if err := g.commit(ctx); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			// A refusal comes with a new assignment; a broken session
			// rejoins. Either way the next interval tries again.
			g.c.logger.Debug("sdk: group auto-commit failed", "group", g.group, "err", err)
		}
	}
	return nil
}

// apply puts an assignment in force: shards given up get their final
// commit, shards kept with the same epoch keep their positions, new ones
// start at the group's offset; the subscription is reopened if the set of
// shards or any position changed; then the hub is told (SYNC), which lets
// it hand the given-up shards to their new owners.
func (g *GroupConsumer) apply(ctx context.Context, a *quic.GroupAssignment) error {
	g.applied = true
	next := make(map[int]*groupLease, len(a.Leases))
	var added []int
	for _, l := range a.Leases {
		sh := int(l.Shard)
		if old := g.leases[sh]; old != nil && old.epoch == l.Epoch {
			old.closedNext = l.ClosedNext // the shard may have closed since
			next[sh] = old
			continue
		}
		next[sh] = &groupLease{epoch: l.Epoch, delivered: l.Offset, processed: l.Offset, committed: l.Offset, closedNext: l.ClosedNext}
		added = append(added, sh)
	}
	var revoked []int
	var final []quic.GroupOffset
	for sh, old := range g.leases {
		if nl := next[sh]; nl != nil && nl.epoch == old.epoch {
			continue
		}
		revoked = append(revoked, sh)
		if old.processed > old.committed {
			final = append(final, quic.GroupOffset{Shard: uint32(sh), Epoch: old.epoch, Offset: old.processed})
		}
	}
	slices.Sort(revoked)
	slices.Sort(added)
	if len(revoked) > 0 && g.opts.OnRevoke != nil {
		g.opts.OnRevoke(revoked)
	}
	if len(final) > 0 {
		if _, err := g.sendCommit(ctx, final); err != nil {
			// Stale (the hub already moved them) or no session: the next
			// owner starts at the previous commit.
			g.c.logger.Debug("sdk: group final commit failed", "group", g.group, "shards", revoked, "err", err)
		}
	}
	changed := len(revoked) > 0 || len(added) > 0
	g.leases, g.gen = next, a.Generation
	g.dirty = -1
	if changed || (g.sub == nil && len(next) > 0) {
		if err := g.resubscribe(ctx); err != nil {
			return err
		}
	}
	g.mu.Lock()
	st := g.st
	g.mu.Unlock()
	if st != nil {
		// Best effort: without it, the hub moves the shards after the
		// session timeout.
		st.Send(quic.FrameGroupSync, &quic.GroupSync{Generation: a.Generation})
	}
	if len(added) > 0 && g.opts.OnAssign != nil {
		g.opts.OnAssign(added)
	}
	return nil
}

// resubscribe replaces the subscription with one over the held shards from
// their delivered positions. A retryable failure leaves no subscription,
// and wait tries again.
func (g *GroupConsumer) resubscribe(ctx context.Context) error {
	if g.sub != nil {
		g.sub.Close()
		g.sub = nil
	}
	if len(g.leases) == 0 {
		return nil
	}
	resume := make(map[int]uint64, len(g.leases))
	for sh, l := range g.leases {
		resume[sh] = l.delivered
	}
	sub, err := g.c.subscribeAt(ctx, g.stream, g.opts.Credit, resume)
	if err != nil {
		if retryable(err) && ctx.Err() == nil {
			g.c.logger.Debug("sdk: group subscription failed; retrying", "group", g.group, "err", err)
			return nil
		}
		return err
	}
	g.sub, g.subAttempt = sub, 0
	return nil
}

// subscribeAt opens a subscription to the shards of resume, each from its
// position there (the Subscription resumes from such positions after a
// break as well).
func (c *Client) subscribeAt(ctx context.Context, stream string, credit int, resume map[int]uint64) (*Subscription, error) {
	if credit <= 0 {
		credit = 4 << 20
	}
	opts := ConsumeOptions{Shards: slices.Sorted(maps.Keys(resume)), From: FromEarliest(), Credit: credit}
	s := &Subscription{c: c, stream: stream, opts: opts, next: maps.Clone(resume), last: map[int]uint64{}}
	if err := s.open(ctx, true); err != nil {
		return nil, err
	}
	return s, nil
}

// Commit marks every record returned so far as processed and commits the
// positions of the shards this member holds, returning after the hub has
// stored them durably. A shard that moved to another member is refused
// with CodeStaleEpoch (its records will be processed again there).
func (g *GroupConsumer) Commit(ctx context.Context) error {
	if g.closed.Load() {
		return ErrClosed
	}
	g.markProcessed()
	return g.commit(ctx)
}

func (g *GroupConsumer) commit(ctx context.Context) error {
	var offs []quic.GroupOffset
	for sh, l := range g.leases {
		if l.processed > l.committed {
			offs = append(offs, quic.GroupOffset{Shard: uint32(sh), Epoch: l.epoch, Offset: l.processed})
		}
	}
	if len(offs) == 0 {
		g.lastCommit = time.Now()
		return nil
	}
	ack, err := g.sendCommit(ctx, offs)
	if err != nil {
		return fmt.Errorf("sdk: commit group %q: %w", g.group, err)
	}
	g.lastCommit = time.Now()
	for i, r := range ack.Results {
		if r.Code != quic.CodeOK || i >= len(offs) {
			continue
		}
		if l := g.leases[int(r.Shard)]; l != nil && l.epoch == offs[i].Epoch {
			l.committed = max(l.committed, offs[i].Offset)
		}
	}
	if err := ack.Err(); err != nil {
		return fmt.Errorf("sdk: commit group %q: %w", g.group, err)
	}
	return nil
}

// sendCommit sends a commit on the current session and waits for its ack.
func (g *GroupConsumer) sendCommit(ctx context.Context, offs []quic.GroupOffset) (quic.GroupCommitAck, error) {
	g.mu.Lock()
	st := g.st
	if st == nil {
		g.mu.Unlock()
		return quic.GroupCommitAck{}, errNoSession
	}
	g.commitID++
	id := g.commitID
	ch := make(chan commitResult, 1)
	g.waiters[id] = ch
	g.mu.Unlock()
	forget := func() {
		g.mu.Lock()
		delete(g.waiters, id)
		g.mu.Unlock()
	}
	if err := st.Send(quic.FrameGroupCommit, &quic.GroupCommit{ID: id, Offsets: offs}); err != nil {
		forget()
		if errors.Is(err, quic.ErrClosed) {
			// The session's stream broke before the run loop noticed (a
			// heartbeat's write failed, the hub ended the session): nothing
			// of this commit was sent, as when no session is up.
			return quic.GroupCommitAck{}, fmt.Errorf("%w: %w", errNoSession, err)
		}
		return quic.GroupCommitAck{}, err
	}
	select {
	case r := <-ch:
		return r.ack, r.err
	case <-ctx.Done():
		forget()
		return quic.GroupCommitAck{}, ctx.Err()
	}
}

// openSession opens a member session and reads its first assignment.
func (g *GroupConsumer) openSession(ctx context.Context) (*quic.Stream, *quic.GroupAssignment, error) {
	st, _, err := g.c.open(ctx, quic.OpGroup, &g.join)
	if err != nil {
		return nil, nil, err
	}
	stop := context.AfterFunc(ctx, func() { st.Cancel(quic.CodeCanceled) })
	var a quic.GroupAssignment
	err = st.Expect(quic.FrameGroupAssignment, &a)
	stop()
	if err != nil {
		st.Cancel(quic.CodeCanceled)
		return nil, nil, err
	}
	g.hbEvery.Store(int64(max(time.Duration(a.SessionTimeoutMillis)*time.Millisecond/3, time.Millisecond)))
	return st, &a, nil
}

// run keeps the membership alive until Close: it reads the session's
// frames, heartbeats, and rejoins when the session breaks or expires.
func (g *GroupConsumer) run(st *quic.Stream) {
	defer close(g.loopDone)
	attempt := 0
	for {
		g.setSession(st)
		err := g.session(st)
		g.mu.Lock()
		g.st = nil
		g.up.Store(false)
		for id, ch := range g.waiters {
			ch <- commitResult{err: fmt.Errorf("%w: %w", errNoSession, err)}
			delete(g.waiters, id)
		}
		leaving := g.leaving
		g.mu.Unlock()
		g.signal() // stop handing out records until the rejoin
		st.Cancel(quic.CodeCanceled)
		if leaving || g.ctx.Err() != nil {
			return
		}
		switch {
		case quic.CodeOf(err) == quic.CodeSessionExpired:
			// The hub expired or replaced this session: rejoin at once; the
			// new assignment fences what the old one held.
			g.c.logger.Warn("sdk: group session expired; rejoining", "group", g.group, "member", g.member, "err", err)
			attempt = 0
		case !retryable(err):
			g.setFatal(fmt.Errorf("sdk: group %q: %w", g.group, err))
			return
		default:
			g.c.logger.Debug("sdk: group session broken; rejoining", "group", g.group, "err", err)
		}
		for {
			if err := g.c.backoff(g.ctx, attempt); err != nil {
				return
			}
			attempt++
			var a *quic.GroupAssignment
			st, a, err = g.openSession(g.ctx)
			if err == nil {
				attempt = 0
				g.deliver(a)
				break
			}
			if g.ctx.Err() != nil {
				return
			}
			if !retryable(err) && quic.CodeOf(err) != quic.CodeSessionExpired {
				g.setFatal(fmt.Errorf("sdk: rejoin group %q: %w", g.group, err))
				return
			}
		}
	}
}

// session serves one session stream until it ends, returning why.
func (g *GroupConsumer) session(st *quic.Stream) error {
	// Close may come while a rejoin opens this stream: end it then too.
	stop := context.AfterFunc(g.ctx, func() { st.Cancel(quic.CodeCanceled) })
	defer stop()
	hbDone := make(chan struct{})
	defer close(hbDone)
	go func() {
		t := time.NewTimer(time.Duration(g.hbEvery.Load()))
		defer t.Stop()
		for {
			select {
			case <-hbDone:
				return
			case <-t.C:
			}
			if err := st.Send(quic.FrameGroupHeartbeat, &quic.GroupHeartbeat{Generation: g.recvGen.Load()}); err != nil {
				return
			}
			t.Reset(time.Duration(g.hbEvery.Load()))
		}
	}()
	for {
		t, p, err := st.ReadFrame()
		if err != nil {
			return err
		}
		switch t {
		case quic.FrameGroupAssignment:
			var a quic.GroupAssignment
			if err := a.Decode(p); err != nil {
				return err
			}
			g.hbEvery.Store(int64(max(time.Duration(a.SessionTimeoutMillis)*time.Millisecond/3, time.Millisecond)))
			g.deliver(&a)
		case quic.FrameGroupCommitAck:
			var ack quic.GroupCommitAck
			if err := ack.Decode(p); err != nil {
				return err
			}
			g.mu.Lock()
			ch := g.waiters[ack.ID]
			delete(g.waiters, ack.ID)
			g.mu.Unlock()
			if ch != nil {
				ch <- commitResult{ack: ack}
			}
		case quic.FrameError:
			e, err := quic.DecodeError(p)
			if err != nil {
				return err
			}
			return e
		default:
			return fmt.Errorf("%w: %s in a group session", quic.ErrUnexpectedFrame, t)
		}
	}
}

// setSession makes st the current session and wakes the application
// goroutine, which holds records back while no session is up.
func (g *GroupConsumer) setSession(st *quic.Stream) {
	g.mu.Lock()
	g.st = st
	g.up.Store(true)
	g.mu.Unlock()
	g.signal()
}

func (g *GroupConsumer) signal() {
	select {
	case g.wake <- struct{}{}:
	default:
	}
}

// deliver hands a new assignment to the application goroutine.
func (g *GroupConsumer) deliver(a *quic.GroupAssignment) {
	g.recvGen.Store(a.Generation)
	g.mu.Lock()
	g.latest = a
	g.mu.Unlock()
	g.signal()
}

func (g *GroupConsumer) setFatal(err error) {
	g.mu.Lock()
	if g.fatal == nil {
		g.fatal = err
	}
	g.mu.Unlock()
	g.signal()
}

// Close commits what was processed, leaves the group (its shards move to
// the other members at once, from this commit) and closes the
// subscription. It waits for the hub's answers until ctx ends. Close is
// idempotent; call it from the goroutine that calls Next, or after that
// goroutine stopped.
func (g *GroupConsumer) Close(ctx context.Context) error {
	g.closeOnce.Do(func() {
		g.closed.Store(true)
		g.markProcessed()
		var errs []error
		if err := g.commit(ctx); err != nil && !errors.Is(err, errNoSession) {
			errs = append(errs, err)
		}
		g.mu.Lock()
		g.leaving = true
		st := g.st
		g.mu.Unlock()
		if st != nil {
			if err := st.Send(quic.FrameGroupLeave, &quic.GroupLeave{}); err == nil {
				// The hub ends the session after the leave; wait for it.
				select {
				case <-g.loopDone:
				case <-ctx.Done():
				}
			}
		}
		g.cancel()
		if st != nil {
			st.Cancel(quic.CodeCanceled)
		}
		<-g.loopDone
		if g.sub != nil {
			g.sub.Close()
			g.sub = nil
		}
		g.closeErr = errors.Join(errs...)
	})
	return g.closeErr
}

package groups

import (
	"errors"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// errDetached ends a session whose member stays in the group until its
// session timeout (Detach).
var errDetached = errors.New("groups: session detached")

// Session is one connection of a member: the member's view of its
// assignment and the only way to commit for it. Methods are safe for
// concurrent use.
type Session struct {
	g       *group
	m       *member
	changed chan struct{} // a new assignment is ready (capacity 1)
	done    chan struct{} // closed when the session ends
	err     error         // why it ended; guarded by g.mu
}

// Lease is one shard of an assignment.
type Lease struct {
	Shard int
	// Epoch fences commits: only this epoch commits the shard.
	Epoch uint64
	// Offset is the shard's committed offset: where to start.
	Offset uint64
	// ClosedNext is 0 while the shard is open; for a shard a reshard
	// closed it is End+1, the offset that finishes it: the member commits
	// it as soon as it has processed the shard's last record, which lets
	// the shard's children be leased.
	ClosedNext uint64
}

// Assignment is a member's current leases.
type Assignment struct {
	// Generation increases with every change of the member's leases.
	Generation     uint64
	SessionTimeout time.Duration
	// Shards bounds the shard ids: the ids ever assigned in the stream
	// (its shard count while it was never resharded).
	Shards int
	Leases []Lease
}

// Commit is one shard's offset in a commit.
type Commit struct {
	Shard  int
	Epoch  uint64
	Offset uint64
}

// Member returns the session's member id.
func (s *Session) Member() string { return s.m.id }

// Group returns the group's name.
func (s *Session) Group() string { return s.g.name }

// Changed receives when a new assignment is ready for Assignment.
func (s *Session) Changed() <-chan struct{} { return s.changed }

// Done is closed when the session ends; Err says why.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err returns why the session ended (ErrSessionExpired, ErrReplaced,
// ErrDeleted, ErrClosed, ErrLeft), or nil while it lives.
func (s *Session) Err() error {
	s.g.mu.Lock()
	defer s.g.mu.Unlock()
	if s.err == errDetached {
		return nil
	}
	return s.err
}

func (s *Session) notify() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// end finishes the session (callers hold g.mu). The member, if it still
// points to this session, becomes detached.
func (s *Session) end(why error) {
	if s.err != nil {
		return
	}
	s.err = why
	close(s.done)
	if s.m.sess == s {
		s.m.sess = nil
	}
}

// Assignment returns the member's current leases: the shards it holds and
// is not handing over.
func (s *Session) Assignment() Assignment {
	g := s.g
	g.mu.Lock()
	defer g.mu.Unlock()
	a := Assignment{Generation: s.m.gen, SessionTimeout: s.m.timeout, Shards: len(g.leases), Leases: []Lease{}}
	for shard, l := range g.leases {
		if l.member == s.m.id && !l.revoking {
			a.Leases = append(a.Leases, Lease{Shard: shard, Epoch: l.epoch, Offset: g.offsets[shard].Offset,
				ClosedNext: g.closedNext(shard)})
		}
	}
	return a
}

// Touch records a sign of life (any frame from the member): the session
// timeout starts again.
func (s *Session) Touch() {
	s.g.mu.Lock()
	defer s.g.mu.Unlock()
	s.touch(time.Now())
}

func (s *Session) touch(now time.Time) {
	if s.err == nil {
		s.m.lastSeen, s.m.deadline = now, now.Add(s.m.timeout)
	}
}

// Commit stores offsets durably and returns one result per offset: nil, or
// why it was refused (ErrStaleEpoch, ErrInvalid, or why the session ended).
// An offset is accepted only with the epoch of the shard's current lease,
// held by this session's member, including a lease it is handing over.
//
// The group's lock is not held during the write, so that commits of many
// members share transactions and heartbeats do not wait for the disk. A
// shard whose commit is being written is not granted to anyone until the
// write is done: the next owner always starts from the last accepted
// offset, and offsets of a shard are written in the order they were
// accepted.
func (s *Session) Commit(offsets []Commit) []error {
	g := s.g
	errs := make([]error, len(offsets))
	g.mu.Lock()
	if s.err != nil {
		why := s.err
		if why == errDetached {
			why = ErrSessionExpired
		}
		g.mu.Unlock()
		for i := range errs {
			errs[i] = fmt.Errorf("groups: commit: %w", why)
		}
		g.c.refused.Add(uint64(len(offsets)))
		return errs
	}
	now := time.Now()
	s.touch(now)
	var ok []int
	for i, o := range offsets {
		if o.Shard < 0 || o.Shard >= len(g.leases) || o.Offset == 0 {
			errs[i] = fmt.Errorf("%w: offset %d for shard %d of %d", ErrInvalid, o.Offset, o.Shard, len(g.leases))
			continue
		}
		l := g.leases[o.Shard]
		if l.member != s.m.id || l.epoch != o.Epoch {
			holder := l.member
			if holder == "" {
				holder = "nobody"
			}
			errs[i] = fmt.Errorf("%w: shard %d: commit with epoch %d, the lease is at epoch %d held by %s",
				ErrStaleEpoch, o.Shard, o.Epoch, l.epoch, holder)
			g.c.refused.Add(1)
			continue
		}
		if g.retired(o.Shard) {
			// Nothing of a retired shard is kept: its offset was deleted
			// with it, and storing one again would only leak.
			continue
		}
		ok = append(ok, i)
		g.writing[o.Shard]++
	}
	inc := g.def.Incarnation
	g.mu.Unlock()
	if len(ok) == 0 {
		return errs
	}

	t := now.UnixNano()
	err := g.c.db.Batch(func(tx *bolt.Tx) error {
		if !sameIncarnation(tx, g.name, inc) {
			return fmt.Errorf("%w: %w", ErrSessionExpired, ErrStreamRecreated)
		}
		for _, i := range ok {
			o := offsets[i]
			if err := putOffset(tx, g.name, o.Shard, offsetRec{Offset: o.Offset, Time: t, Epoch: o.Epoch, Member: s.m.id}); err != nil {
				return err
			}
		}
		return nil
	})

	g.mu.Lock()
	defer g.mu.Unlock()
	freed, retired := false, false
	for _, i := range ok {
		o := offsets[i]
		g.writing[o.Shard]--
		freed = freed || (g.writing[o.Shard] == 0 && g.leases[o.Shard].member == "")
		if err != nil {
			errs[i] = fmt.Errorf("groups: commit: %w", err)
			continue
		}
		was := g.finished(o.Shard)
		g.offsets[o.Shard] = offsetRec{Offset: o.Offset, Time: t, Epoch: o.Epoch, Member: s.m.id}
		g.c.commits.Add(1)
		// A closed shard committed past its end is finished: its lease is
		// handed back and its children may be leased.
		freed = freed || (!was && g.finished(o.Shard))
		retired = retired || g.retired(o.Shard) // retired while this was written
	}
	if retired && g.gone == nil {
		if err := g.dropRetired(); err != nil {
			g.c.logger.Warn("group: offsets of retired shards kept until the next layout change", "group", g.name, "err", err)
		}
	}
	if freed && g.gone == nil {
		g.settle(time.Now()) // grant what waited for this write
	}
	return errs
}

// Sync confirms that the member applied assignment gen: it stopped
// processing every shard gen does not list, after committing them. Those
// shards then move to their new owners.
func (s *Session) Sync(gen uint64) error {
	g := s.g
	g.mu.Lock()
	defer g.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	now := time.Now()
	s.touch(now)
	if g.releaseRevoking(s.m, gen) {
		g.settle(now)
	}
	return nil
}

// Leave removes the member from the group at once; its shards move to the
// other members from their committed offsets.
func (s *Session) Leave() {
	g := s.g
	g.mu.Lock()
	defer g.mu.Unlock()
	if s.err != nil {
		return
	}
	g.removeMember(s.m, ErrLeft)
	g.c.leaves.Add(1)
	g.c.logger.Info("group member left", "group", g.name, "member", s.m.id, "members", len(g.members))
	g.settle(time.Now())
}

// Detach ends the session without leaving: the member keeps its leases
// until its session timeout, so that it can rejoin after a broken
// connection without its shards moving. Shards it was handing over move
// now, since nobody can confirm them any more. Detach after the session
// ended does nothing.
func (s *Session) Detach() {
	g := s.g
	g.mu.Lock()
	defer g.mu.Unlock()
	if s.err != nil {
		return
	}
	s.end(errDetached)
	if g.releaseRevoking(s.m, ^uint64(0)) {
		g.settle(time.Now())
	}
}

// settle rebalances after a change and re-arms the timer; a failed
// rebalance is retried by the timer.
func (g *group) settle(now time.Time) {
	if err := g.rebalance(now, nil); err != nil {
		g.c.logger.Error("group rebalance failed; retrying", "group", g.name, "err", err, "retry_in", retryAfter)
		g.armAt(now, now.Add(retryAfter))
		return
	}
	g.arm(now)
}

// Shard states in GroupInfo.
const (
	StateAssigned   = "assigned"
	StateRevoking   = "handing_over"
	StateUnassigned = "unassigned"
)

// Shard states in ShardInfo.ShardState (the stream's layout, as the group
// sees it).
const (
	ShardStateOpen     = "open"
	ShardStateClosed   = "closed"   // not finished by the group yet
	ShardStateFinished = "finished" // closed and committed past its end (or nothing left to read)
	ShardStateRetired  = "retired"
)

// GroupInfo describes a group.
type GroupInfo struct {
	Name   string
	Stream string
	// Incarnation is the stream incarnation the offsets belong to ("" if
	// not known yet: a group from before incarnations).
	Incarnation string
	Shards      int
	Created     time.Time
	// Epoch is the highest epoch granted so far.
	Epoch uint64
	// Rebalances since the hub started.
	Rebalances uint64
	Members    []MemberInfo // by id
	Offsets    []ShardInfo  // by shard
}

// MemberInfo describes a member.
type MemberInfo struct {
	ID     string
	Remote string
	// Connected is false while the member's stream is gone and its session
	// timeout runs.
	Connected      bool
	SessionTimeout time.Duration
	Joined         time.Time
	LastSeen       time.Time
	Generation     uint64
	Shards         []int // held and not handing over
	HandingOver    []int
}

// ShardInfo describes a shard's lease and committed offset.
type ShardInfo struct {
	Shard int
	State string // StateAssigned, StateRevoking, StateUnassigned
	Owner string
	Epoch uint64 // of the current lease; 0 when unassigned
	// Offset is the committed offset (next sequence to process); 0 when
	// the group never positioned this shard.
	Offset      uint64
	CommittedAt time.Time
	CommittedBy string // member, or "" for a reset
	// ShardState is ShardStateOpen, ShardStateClosed, ShardStateFinished
	// or ShardStateRetired; End is the last sequence of a closed shard.
	ShardState string
	End        uint64
	// WaitingFor lists the parents the group has not finished: the shard
	// is not leased before they are.
	WaitingFor []int
}

// Groups describes every group, by name.
func (c *Coordinator) Groups() []GroupInfo {
	c.mu.Lock()
	gs := make([]*group, 0, len(c.groups))
	for _, g := range c.groups {
		gs = append(gs, g)
	}
	c.mu.Unlock()
	out := make([]GroupInfo, 0, len(gs))
	for _, g := range gs {
		out = append(out, g.info())
	}
	slices.SortFunc(out, func(a, b GroupInfo) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	return out
}

// Group describes one group.
func (c *Coordinator) Group(name string) (GroupInfo, error) {
	c.mu.Lock()
	g := c.groups[name]
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return GroupInfo{}, ErrClosed
	}
	if g == nil {
		return GroupInfo{}, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	return g.info(), nil
}

func (g *group) info() GroupInfo {
	g.mu.Lock()
	defer g.mu.Unlock()
	gi := GroupInfo{Name: g.name, Stream: g.def.Stream, Incarnation: g.def.Incarnation, Shards: g.def.Shards, Created: g.def.Created,
		Epoch: g.epoch, Rebalances: g.rebalances, Members: []MemberInfo{}, Offsets: make([]ShardInfo, len(g.leases))}
	byID := map[string]*MemberInfo{}
	for _, m := range g.members {
		gi.Members = append(gi.Members, MemberInfo{ID: m.id, Remote: m.remote, Connected: m.sess != nil,
			SessionTimeout: m.timeout, Joined: m.joined, LastSeen: m.lastSeen, Generation: m.gen,
			Shards: []int{}, HandingOver: []int{}})
	}
	slices.SortFunc(gi.Members, func(a, b MemberInfo) int {
		if a.ID < b.ID {
			return -1
		}
		return 1
	})
	for i := range gi.Members {
		byID[gi.Members[i].ID] = &gi.Members[i]
	}
	for s, l := range g.leases {
		r := g.offsets[s]
		si := ShardInfo{Shard: s, State: StateUnassigned, Owner: l.member, Epoch: l.epoch, Offset: r.Offset, CommittedBy: r.Member,
			ShardState: ShardStateOpen, WaitingFor: g.waitingFor(s)}
		if sh, _ := g.shard(s); sh.Closed {
			si.End = sh.End
			switch {
			case sh.Retired:
				si.ShardState = ShardStateRetired
			case g.finished(s):
				si.ShardState = ShardStateFinished
			default:
				si.ShardState = ShardStateClosed
			}
		}
		if r.Time != 0 {
			si.CommittedAt = time.Unix(0, r.Time).UTC()
		}
		if m := byID[l.member]; m != nil {
			if l.revoking {
				si.State = StateRevoking
				m.HandingOver = append(m.HandingOver, s)
			} else {
				si.State = StateAssigned
				m.Shards = append(m.Shards, s)
			}
		}
		gi.Offsets[s] = si
	}
	return gi
}

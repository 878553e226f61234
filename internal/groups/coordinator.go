package groups

import (
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgehub/edgehub/internal/names"
)

// maxShards bounds a group's shard count (the wire protocol's limit).
const maxShards = 1 << 16

// retryAfter is how soon a rebalance that failed (the file could not be
// written, a stream position could not be resolved) is tried again.
const retryAfter = time.Second

// Coordinator keeps the consumer groups of one hub. It is safe for
// concurrent use.
type Coordinator struct {
	cfg    Config
	logger *slog.Logger
	db     *bolt.DB

	mu     sync.Mutex // guards groups, busy and closed; taken before any group.mu
	groups map[string]*group
	// busy holds the names whose group is being created, rebound or
	// deleted: mu is not held while that is written, and other calls for
	// the name wait for the channel to close.
	busy   map[string]chan struct{}
	closed bool
	// layouts holds the newest layout set per stream (SetLayout); a group
	// takes its stream's when it is created or loaded.
	layouts map[string]*streamLayout

	joins, leaves, expirations, rebalances, commits, refused atomic.Uint64

	closeOnce sync.Once
	closeErr  error

	// testHookWrite, if set, runs inside every write transaction of the
	// coordinator's own operations (op: "create", "rebind", "delete",
	// "grant", "reset", "retire"): a test's slow fsync.
	testHookWrite func(op string)
	// testSkipParents, if set, lets rebalance lease a child before its
	// parents are finished: the negative control of the lineage tests.
	testSkipParents bool
}

// update runs fn in a write transaction of groups.db, which commits with
// an fsync.
func (c *Coordinator) update(op string, fn func(*bolt.Tx) error) error {
	return c.db.Update(func(tx *bolt.Tx) error {
		if c.testHookWrite != nil {
			c.testHookWrite(op)
		}
		return fn(tx)
	})
}

// group is one consumer group. Everything in it is guarded by mu.
type group struct {
	c    *Coordinator
	name string
	def  groupDef

	mu         sync.Mutex
	epoch      uint64      // highest epoch granted (persisted)
	offsets    []offsetRec // per shard
	leases     []lease     // per shard
	writing    []int       // per shard: accepted commits being written
	members    map[string]*member
	timer      *time.Timer // fires at the earliest member or revocation deadline
	gone       error       // ErrDeleted or ErrClosed once the group is no more
	rebalances uint64
	// layout is the stream's layout (nil until the hub sets one: every
	// shard of the creation is open).
	layout *streamLayout
}

// lease is a shard's current grant. member "" means unassigned.
type lease struct {
	member  string
	epoch   uint64
	granted time.Time
	// revoking: the shard is out of its holder's assignment and waits for
	// the holder's Sync of revokeGen (or revokeBy) before moving.
	revoking  bool
	revokeGen uint64
	revokeBy  time.Time
}

// member is a member of a group; sess is nil while it is detached (its
// stream ended without a leave) until it rejoins or expires.
type member struct {
	id       string
	sess     *Session
	timeout  time.Duration
	deadline time.Time // expires when nothing arrives before
	start    Start
	remote   string
	joined   time.Time
	lastSeen time.Time
	gen      uint64 // generation of the newest assignment
}

// Open opens (or creates) the groups file and loads every group's offsets.
func Open(cfg Config) (*Coordinator, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	db, err := openDB(cfg.Path, cfg.OpenTimeout)
	if err != nil {
		return nil, err
	}
	loaded, err := loadGroups(db)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("groups: open %s: %w", cfg.Path, err)
	}
	c := &Coordinator{cfg: cfg, logger: cfg.Logger, db: db, groups: map[string]*group{}, busy: map[string]chan struct{}{},
		layouts: map[string]*streamLayout{}, testSkipParents: cfg.TestSkipParents}
	if cfg.TestSkipParents {
		c.logger.Warn("consumer groups: children of a reshard are leased before their parents are finished (test knob)")
	}
	for name, s := range loaded {
		g := c.newGroup(name, s.def)
		g.epoch = s.epoch
		for shard, r := range s.offsets {
			g.grow(shard + 1) // children of a reshard have ids past the creation count
			g.offsets[shard] = r
		}
		c.groups[name] = g
	}
	return c, nil
}

func (c *Coordinator) newGroup(name string, def groupDef) *group {
	return &group{
		c: c, name: name, def: def,
		offsets: make([]offsetRec, def.Shards),
		leases:  make([]lease, def.Shards),
		writing: make([]int, def.Shards),
		members: map[string]*member{},
	}
}

// Close ends every session with ErrClosed and closes the file. Idempotent.
func (c *Coordinator) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		for _, g := range c.groups {
			g.mu.Lock()
			g.shutdown(ErrClosed)
			g.mu.Unlock()
		}
		c.mu.Unlock()
		if err := c.db.Close(); err != nil {
			c.closeErr = fmt.Errorf("groups: close: %w", err)
		}
	})
	return c.closeErr
}

// shutdown ends the group's sessions and timer; the group is unusable after.
func (g *group) shutdown(why error) {
	g.gone = why
	if g.timer != nil {
		g.timer.Stop()
	}
	for _, m := range g.members {
		if m.sess != nil {
			m.sess.end(why)
		}
	}
}

// Stats are the coordinator's counters since Open.
type Stats struct {
	Joins, Leaves, Expirations, Rebalances uint64
	Commits                                uint64 // shard offsets committed
	CommitsRefused                         uint64 // shard offsets refused as stale
}

// Stats returns the counters.
func (c *Coordinator) Stats() Stats {
	return Stats{
		Joins: c.joins.Load(), Leaves: c.leaves.Load(), Expirations: c.expirations.Load(),
		Rebalances: c.rebalances.Load(), Commits: c.commits.Load(), CommitsRefused: c.refused.Load(),
	}
}

// JoinRequest asks for membership.
type JoinRequest struct {
	Group  string
	Stream string
	// Shards is the stream's shard count at creation (a reshard does not
	// change it; the ids of later shards come from SetLayout).
	Shards int
	// Incarnation is the stream's incarnation now; "" skips the check. A
	// group whose offsets belong to another incarnation starts over.
	Incarnation string
	// Member is the member id, stable across the member's reconnects.
	Member string
	// SessionTimeout: 0 takes Config.DefaultSessionTimeout.
	SessionTimeout time.Duration
	// Start positions shards the group has never committed.
	Start Start
	// Remote is the member's address, for display.
	Remote string
}

// Join adds a member to a group, creating the group on its first join, and
// returns the member's session, whose first assignment is ready. A join
// with the id of a member the group still has (connected or within its
// session timeout) replaces that member's session and keeps its leases.
func (c *Coordinator) Join(req JoinRequest) (*Session, error) {
	timeout := req.SessionTimeout
	if timeout == 0 {
		timeout = c.cfg.DefaultSessionTimeout
	}
	switch {
	case names.Validate(req.Group) != nil:
		return nil, fmt.Errorf("%w: group name: %w", ErrInvalid, names.Validate(req.Group))
	case names.Validate(req.Member) != nil:
		return nil, fmt.Errorf("%w: member id: %w", ErrInvalid, names.Validate(req.Member))
	case req.Stream == "":
		return nil, fmt.Errorf("%w: no stream", ErrInvalid)
	case req.Shards < 1 || req.Shards > maxShards:
		return nil, fmt.Errorf("%w: %d shards", ErrInvalid, req.Shards)
	case timeout < c.cfg.MinSessionTimeout || timeout > c.cfg.MaxSessionTimeout:
		return nil, fmt.Errorf("%w: session timeout %s outside %s..%s", ErrInvalid, timeout,
			c.cfg.MinSessionTimeout, c.cfg.MaxSessionTimeout)
	case req.Start.Kind > StartTime:
		return nil, fmt.Errorf("%w: start kind %d", ErrInvalid, req.Start.Kind)
	}
	g, err := c.group(req.Group, req.Stream, req.Shards, req.Incarnation, true)
	if err != nil {
		return nil, err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.gone != nil {
		return nil, fmt.Errorf("groups: join %q: %w", g.name, g.gone)
	}
	now := time.Now()
	m, known := g.members[req.Member]
	switch {
	case !known && len(g.members) >= c.cfg.MaxMembers:
		return nil, fmt.Errorf("%w: group %q has %d members", ErrTooManyMembers, g.name, len(g.members))
	case !known:
		m = &member{id: req.Member, joined: now}
		g.members[m.id] = m
	case m.sess != nil:
		m.sess.end(ErrReplaced)
	}
	// Shards the previous session was handing over cannot be confirmed by
	// this one: let them go now.
	g.releaseRevoking(m, ^uint64(0))
	s := &Session{g: g, m: m, changed: make(chan struct{}, 1), done: make(chan struct{})}
	m.sess, m.timeout, m.start, m.remote = s, timeout, req.Start, req.Remote
	m.lastSeen, m.deadline = now, now.Add(timeout)
	if err := g.rebalance(now, m); err != nil {
		g.removeMember(m, err)
		g.arm(now)
		return nil, err
	}
	g.arm(now)
	c.joins.Add(1)
	c.logger.Info("group member joined", "group", g.name, "member", m.id, "remote", req.Remote,
		"rejoin", known, "session_timeout", timeout, "members", len(g.members))
	return s, nil
}

// group returns the named group, creating it (durably) when create is set.
// It checks that the group consumes stream with shards shards. A group
// whose offsets belong to another incarnation of the stream (it was deleted
// and created again) is replaced by a fresh one first, whatever the shard
// count; inc == "" skips that check. c.mu is not held while a creation or
// rebinding is written: the name is busy meanwhile (claim).
func (c *Coordinator) group(name, stream string, shards int, inc string, create bool) (*group, error) {
	for {
		c.mu.Lock()
		if err := c.wait(name); err != nil {
			c.mu.Unlock()
			return nil, err
		}
		g := c.groups[name]
		if g == nil && !create {
			c.mu.Unlock()
			return nil, fmt.Errorf("%w: %q", ErrNotFound, name)
		}
		if g != nil {
			g.mu.Lock()
			def := g.def
			g.mu.Unlock()
			if def.Stream != stream {
				c.mu.Unlock()
				return nil, fmt.Errorf("%w: group %q consumes stream %q, not %q", ErrStreamMismatch, name, def.Stream, stream)
			}
			if inc == "" || def.Incarnation == inc {
				c.mu.Unlock()
				if def.Shards != shards {
					return nil, fmt.Errorf("%w: group %q has offsets for %d shards, stream %q has %d now; delete the group to start over",
						ErrShardsChanged, name, def.Shards, stream, shards)
				}
				return g, nil
			}
		}
		done := c.claim(name)
		c.mu.Unlock()
		var ng *group
		var err error
		if g == nil {
			ng, err = c.create(name, groupDef{Stream: stream, Shards: shards, Created: time.Now().UTC(), Incarnation: inc})
		} else {
			ng, err = c.rebind(g, shards, inc)
		}
		c.mu.Lock()
		done()
		if err == nil && c.closed {
			err = ErrClosed // Close shut down what it found; ng is not served
		}
		if err == nil {
			c.groups[name] = ng
			// Under c.mu, as SetLayout stores the layout: the group sees
			// the newest one either way.
			if l := c.layouts[ng.def.Stream]; l != nil && l != ng.layout {
				ng.mu.Lock()
				ng.layout = l
				ng.grow(len(l.shards))
				ng.mu.Unlock()
			}
		}
		c.mu.Unlock()
		if err != nil {
			return nil, err
		}
		// Check the written group like any other.
	}
}

// wait waits, with c.mu held (released while waiting), until no creation,
// rebinding or deletion of name is being written.
func (c *Coordinator) wait(name string) error {
	for {
		if c.closed {
			return ErrClosed
		}
		ch := c.busy[name]
		if ch == nil {
			return nil
		}
		c.mu.Unlock()
		<-ch
		c.mu.Lock()
	}
}

// claim marks name busy (caller holds c.mu, after wait); done, called with
// c.mu held, releases it.
func (c *Coordinator) claim(name string) (done func()) {
	ch := make(chan struct{})
	c.busy[name] = ch
	return func() {
		delete(c.busy, name)
		close(ch)
	}
}

// create writes a new group's definition.
func (c *Coordinator) create(name string, def groupDef) (*group, error) {
	if err := c.update("create", func(tx *bolt.Tx) error { return putDef(tx, name, def) }); err != nil {
		return nil, fmt.Errorf("groups: create %q: %w", name, err)
	}
	return c.newGroup(name, def), nil
}

// rebind binds g to incarnation inc of its stream (the caller has claimed
// its name) and returns the group to keep under the name. A group from
// before incarnations adopts it and keeps its offsets; a group bound to
// another incarnation is replaced by a fresh group of the same name:
// offsets dropped, members' sessions ended with ErrStreamRecreated (they
// rejoin and start at their start positions), epochs continuing so a lease
// of the old group never matches one of the new.
func (c *Coordinator) rebind(g *group, shards int, inc string) (*group, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.gone != nil {
		return nil, fmt.Errorf("groups: %q: %w", g.name, g.gone)
	}
	def := g.def
	def.Incarnation = inc
	if g.def.Incarnation == "" {
		if err := c.update("rebind", func(tx *bolt.Tx) error { return putDef(tx, g.name, def) }); err != nil {
			return nil, fmt.Errorf("groups: %q: record the stream incarnation: %w", g.name, err)
		}
		g.def = def
		c.logger.Info("group bound to its stream's incarnation", "group", g.name, "stream", def.Stream, "incarnation", inc)
		return g, nil
	}
	def.Shards = shards
	err := c.update("rebind", func(tx *bolt.Tx) error {
		if err := dropOffsets(tx, g.name); err != nil {
			return err
		}
		return putDef(tx, g.name, def)
	})
	if err != nil {
		return nil, fmt.Errorf("groups: %q: start over on the recreated stream: %w", g.name, err)
	}
	c.logger.Warn("group's stream was deleted and created again: committed offsets dropped, the group starts over",
		"group", g.name, "stream", def.Stream, "old_incarnation", g.def.Incarnation, "new_incarnation", inc,
		"members_ended", len(g.members))
	g.shutdown(ErrStreamRecreated)
	ng := c.newGroup(g.name, def)
	ng.epoch = g.epoch
	return ng, nil
}

// rebalance moves the group towards the balanced, sticky assignment of its
// shards among its members: it grants free shards, starts handing over
// shards whose owner must give them up, and pushes the new assignments.
// force gets a new assignment even if its leases did not change (a member
// that just joined). Callers hold g.mu and call g.arm after.
func (g *group) rebalance(now time.Time, force *member) error {
	ids := make([]string, 0, len(g.members))
	for id := range g.members {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	// Only assignable shards are balanced: a finished shard is given up
	// (through the hand-over below) and a child waits for its parents.
	var pick []int
	for s := range g.leases {
		if g.assignable(s) {
			pick = append(pick, s)
		}
	}
	owner := make([]string, len(pick))
	revoking := make([]bool, len(pick))
	for i, s := range pick {
		owner[i], revoking[i] = g.leases[s].member, g.leases[s].revoking
	}
	target := make([]string, len(g.leases))
	for i, t := range assign(ids, owner, revoking) {
		target[pick[i]] = t
	}

	changed := map[*member]bool{}
	if force != nil {
		changed[force] = true
	}
	var grants, revokes []int
	for s := range g.leases {
		l := &g.leases[s]
		t := target[s]
		switch {
		case l.member == "":
			// A shard waits for its last holder's commit to be written:
			// its new owner starts from that offset.
			if t != "" && g.writing[s] == 0 {
				grants = append(grants, s)
			}
		case l.member == t:
			if l.revoking { // the balance wants it back where it is
				l.revoking = false
				changed[g.members[t]] = true
			}
		case l.revoking:
			// Already on its way; it moves when the holder confirms.
		default:
			holder := g.members[l.member]
			if holder == nil || holder.sess == nil {
				// Nobody can confirm a hand-over: the epoch fences
				// whatever the holder might still commit.
				g.leases[s] = lease{}
				if t != "" && g.writing[s] == 0 {
					grants = append(grants, s)
				}
				continue
			}
			l.revoking, l.revokeBy = true, now.Add(holder.timeout)
			changed[holder] = true
			revokes = append(revokes, s)
		}
	}
	if len(grants) > 0 {
		if err := g.grant(now, grants, target); err != nil {
			return err
		}
		for _, s := range grants {
			changed[g.members[target[s]]] = true
		}
	}
	for m := range changed {
		m.gen++
	}
	for _, s := range revokes {
		g.leases[s].revokeGen = g.members[g.leases[s].member].gen
	}
	if len(grants)+len(revokes) > 0 {
		g.rebalances++
		g.c.rebalances.Add(1)
		g.c.logger.Info("group rebalanced", "group", g.name, "members", len(g.members),
			"granted", grants, "handing_over", revokes)
	}
	for m := range changed {
		if m.sess != nil {
			m.sess.notify()
		}
	}
	for _, s := range grants {
		// A closed shard positioned past its end (a "latest" start) is
		// finished by its grant: give it back and lease its children now.
		// A finished shard is never granted again, so this ends.
		if g.finished(s) {
			return g.rebalance(now, nil)
		}
	}
	return nil
}

// grant leases shards to their targets with new epochs, positioning shards
// never committed, and persists the epochs and positions before any member
// can learn them.
func (g *group) grant(now time.Time, shards []int, target []string) error {
	first := g.epoch + 1
	initial := map[int]offsetRec{}
	for i, s := range shards {
		if g.offsets[s].Offset != 0 {
			continue
		}
		pos, err := g.c.cfg.Resolve(g.def.Stream, s, g.childStart(s, g.members[target[s]].start))
		if err != nil {
			return fmt.Errorf("groups: group %q: position of shard %d: %w", g.name, s, err)
		}
		initial[s] = offsetRec{Offset: max(pos, 1), Time: now.UnixNano(), Epoch: first + uint64(i), Member: target[s]}
	}
	last := first + uint64(len(shards)) - 1
	err := g.c.update("grant", func(tx *bolt.Tx) error {
		if err := putEpoch(tx, g.name, last); err != nil {
			return err
		}
		for s, r := range initial {
			if err := putOffset(tx, g.name, s, r); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("groups: group %q: grant: %w", g.name, err)
	}
	g.epoch = last
	for i, s := range shards {
		g.leases[s] = lease{member: target[s], epoch: first + uint64(i), granted: now}
	}
	for s, r := range initial {
		g.offsets[s] = r
	}
	return nil
}

// releaseRevoking frees the shards m is handing over whose hand-over was
// announced at generation gen or before, reporting whether any was freed.
func (g *group) releaseRevoking(m *member, gen uint64) bool {
	freed := false
	for s, l := range g.leases {
		if l.member == m.id && l.revoking && l.revokeGen <= gen {
			g.leases[s] = lease{}
			freed = true
		}
	}
	return freed
}

// removeMember ends m's session with why, frees its leases and forgets it.
func (g *group) removeMember(m *member, why error) {
	if m.sess != nil {
		m.sess.end(why)
	}
	for s, l := range g.leases {
		if l.member == m.id {
			g.leases[s] = lease{}
		}
	}
	delete(g.members, m.id)
}

// arm schedules the timer at the earliest member or hand-over deadline.
func (g *group) arm(now time.Time) {
	var next time.Time
	for _, m := range g.members {
		if next.IsZero() || m.deadline.Before(next) {
			next = m.deadline
		}
	}
	for _, l := range g.leases {
		if l.revoking && (next.IsZero() || l.revokeBy.Before(next)) {
			next = l.revokeBy
		}
	}
	g.armAt(now, next)
}

func (g *group) armAt(now, at time.Time) {
	if at.IsZero() || g.gone != nil {
		if g.timer != nil {
			g.timer.Stop()
		}
		return
	}
	d := max(at.Sub(now), 0)
	if g.timer == nil {
		g.timer = time.AfterFunc(d, g.tick)
	} else {
		g.timer.Reset(d)
	}
}

// tick expires members whose session timed out and hand-overs whose holder
// did not confirm in time, then rebalances. Rebalancing when nothing
// changed is a no-op; doing it always also retries one that failed.
func (g *group) tick() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.gone != nil {
		return
	}
	now := time.Now()
	for _, m := range g.members {
		if now.Before(m.deadline) {
			continue
		}
		g.c.logger.Warn("group member expired: nothing received within its session timeout", "group", g.name,
			"member", m.id, "session_timeout", m.timeout, "last_seen", m.lastSeen, "connected", m.sess != nil)
		g.removeMember(m, ErrSessionExpired)
		g.c.expirations.Add(1)
	}
	for s, l := range g.leases {
		if l.revoking && !now.Before(l.revokeBy) {
			g.c.logger.Warn("group hand-over not confirmed in time: the shard moves without its holder's final commit",
				"group", g.name, "shard", s, "holder", l.member, "epoch", l.epoch)
			g.leases[s] = lease{}
		}
	}
	g.settle(now)
}

// Delete deletes an idle group and its offsets. c.mu is not held while
// the deletion is written: the name is busy meanwhile.
func (c *Coordinator) Delete(name string) error {
	c.mu.Lock()
	if err := c.wait(name); err != nil {
		c.mu.Unlock()
		return err
	}
	g := c.groups[name]
	if g == nil {
		c.mu.Unlock()
		return fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	done := c.claim(name)
	c.mu.Unlock()
	err := g.delete()
	c.mu.Lock()
	done()
	if err == nil && c.groups[name] == g {
		delete(c.groups, name)
	}
	c.mu.Unlock()
	if err == nil {
		c.logger.Info("group deleted", "group", name)
	}
	return err
}

// delete writes the deletion of an idle group and shuts it down.
func (g *group) delete() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.gone != nil {
		return fmt.Errorf("groups: delete %q: %w", g.name, g.gone)
	}
	if n := len(g.members); n > 0 {
		return fmt.Errorf("%w: group %q has %d member(s); stop them first", ErrActive, g.name, n)
	}
	if err := g.c.update("delete", func(tx *bolt.Tx) error { return deleteGroup(tx, g.name) }); err != nil {
		return fmt.Errorf("groups: delete %q: %w", g.name, err)
	}
	g.shutdown(ErrDeleted)
	return nil
}

// ResetRequest sets an idle group's committed offsets.
type ResetRequest struct {
	Group  string
	Stream string
	Shards int // the stream's shard count at creation
	// Incarnation is the stream's incarnation now ("" skips the check): a
	// group bound to another one starts over before the reset applies.
	Incarnation string
	// Offsets maps shards to the next sequence to process (at least 1).
	// Shards not listed keep their offsets.
	Offsets map[int]uint64
}

// Reset sets committed offsets of a group without members, creating the
// group if it does not exist (so offsets can be set before the first
// member joins).
func (c *Coordinator) Reset(req ResetRequest) error {
	if err := names.Validate(req.Group); err != nil {
		return fmt.Errorf("%w: group name: %w", ErrInvalid, err)
	}
	if req.Stream == "" || req.Shards < 1 || req.Shards > maxShards {
		return fmt.Errorf("%w: stream %q with %d shards", ErrInvalid, req.Stream, req.Shards)
	}
	// Refuse before the group is created: ids are bounded by the creation
	// count or, once resharded, by the stream's layout.
	c.mu.Lock()
	bound := req.Shards
	if l := c.layouts[req.Stream]; l != nil {
		bound = max(bound, len(l.shards))
	}
	c.mu.Unlock()
	for s, off := range req.Offsets {
		if s < 0 || s >= bound || off == 0 {
			return fmt.Errorf("%w: offset %d for shard %d of %d", ErrInvalid, off, s, bound)
		}
	}
	g, err := c.group(req.Group, req.Stream, req.Shards, req.Incarnation, true)
	if err != nil {
		return err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	// Shard ids are bounded by the layout (children of a reshard have ids
	// past the creation count).
	for s, off := range req.Offsets {
		if _, known := g.shard(s); s < 0 || !known || off == 0 {
			return fmt.Errorf("%w: offset %d for shard %d of %d", ErrInvalid, off, s, max(len(g.leases), req.Shards))
		}
	}
	if g.gone != nil {
		return fmt.Errorf("groups: reset %q: %w", g.name, g.gone)
	}
	if n := len(g.members); n > 0 {
		return fmt.Errorf("%w: group %q has %d member(s); stop them before resetting offsets", ErrActive, g.name, n)
	}
	for s, n := range g.writing {
		if n > 0 {
			return fmt.Errorf("%w: group %q: a commit of shard %d is being written; try again", ErrActive, g.name, s)
		}
	}
	now := time.Now().UnixNano()
	err = c.update("reset", func(tx *bolt.Tx) error {
		for s, off := range req.Offsets {
			if err := putOffset(tx, g.name, s, offsetRec{Offset: off, Time: now}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("groups: reset %q: %w", g.name, err)
	}
	for s, off := range req.Offsets {
		g.offsets[s] = offsetRec{Offset: off, Time: now}
	}
	c.logger.Info("group offsets reset", "group", g.name, "stream", g.def.Stream, "shards", len(req.Offsets))
	return nil
}

package gossip

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// MemberState is a member's liveness as memberlist sees it.
type MemberState string

// Member states. memberlist does not expose its suspicion state, so a
// suspected member is reported alive until it is declared dead.
const (
	StateAlive MemberState = "alive"
	StateDead  MemberState = "dead"
	StateLeft  MemberState = "left"
)

// Member is one hub of the federation, ourselves included.
type Member struct {
	Name  string
	Addr  string // gossip host:port
	Meta  NodeMeta
	State MemberState
	// Since is when this hub saw the member enter State (zero for
	// ourselves): how long a member has been dead or gone.
	Since time.Time
	// Self marks the local hub.
	Self bool
}

// StreamView is what the federation says about one stream: every
// publisher's definition and vectors.
type StreamView struct {
	// Defs maps publisher → its definition of the stream.
	Defs map[string]Def
	// Vectors maps publisher → origin hub → vector.
	Vectors map[string]map[string]Vector
	// Layouts maps publisher → origin hub → the layout it knows (nil if
	// no publisher published any).
	Layouts map[string]map[string]Layout
}

// Def returns the winning definition (the newest not deleted one wins
// against older ones; a newer deletion wins against older definitions).
func (v StreamView) Def() (Def, bool) {
	var best Def
	found := false
	for _, d := range v.Defs {
		if !found || d.Newer(best) {
			best, found = d, true
		}
	}
	return best, found && !best.Deleted
}

// maxBroadcast bounds the size of one entry sent by piggybacked UDP gossip;
// larger entries (huge specs, vectors of very many shards) travel only by
// push/pull over TCP.
const maxBroadcast = 1000

// Gossip is a running member of a federation. It is safe for concurrent use.
//
// Lock order: mu, then keyMu; memberlist calls the delegate with its own
// locks held, so the delegate only takes mu and never calls into memberlist
// while holding it.
type Gossip struct {
	cfg    Config
	logger *slog.Logger
	ml     *memberlist.Memberlist
	queue  *memberlist.TransmitLimitedQueue
	ring   *memberlist.Keyring

	mu      sync.Mutex
	meta    []byte            // encoded NodeMeta
	members map[string]Member // from memberlist events: dead and left ones too
	pruned  map[string]bool   // members pruned while gone: their entries are refused until they return
	tab     table
	clock   uint64
	notify  chan struct{}

	keyMu      sync.Mutex
	keyModTime time.Time
	keySize    int64

	closeOnce sync.Once
	closeErr  error
	done      chan struct{}
}

// New creates the member and starts listening, but does not join anyone:
// call Join (or Run, which joins and keeps rejoining).
func New(cfg Config) (*Gossip, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	g := &Gossip{
		cfg:     cfg,
		logger:  cfg.Logger.With("component", "gossip"),
		meta:    cfg.Meta.encode(),
		tab:     table{},
		members: map[string]Member{},
		pruned:  map[string]bool{},
		notify:  make(chan struct{}),
		done:    make(chan struct{}),
	}
	mc := cfg.memberlistConfig()
	mc.Logger = newLogLogger(g.logger)
	mc.Delegate = (*delegate)(g)
	mc.Events = (*events)(g)
	if cfg.SecretKeyFile != "" {
		keys, err := LoadKeyFile(cfg.SecretKeyFile)
		if err != nil {
			return nil, fmt.Errorf("gossip: new: %w", err)
		}
		ring, err := memberlist.NewKeyring(keys, keys[0])
		if err != nil {
			return nil, fmt.Errorf("gossip: new: %w: %w", ErrBadKeyFile, err)
		}
		mc.Keyring = ring
		g.ring = ring
		if fi, err := os.Stat(cfg.SecretKeyFile); err == nil {
			g.keyModTime, g.keySize = fi.ModTime(), fi.Size()
		}
	}
	if cfg.opts.Tune != nil {
		cfg.opts.Tune(mc)
	}
	g.queue = &memberlist.TransmitLimitedQueue{
		NumNodes:       func() int { return g.numMembers() },
		RetransmitMult: mc.RetransmitMult,
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("gossip: start %s on %s: %w", cfg.Name, cfg.Bind, err)
	}
	g.ml = ml
	return g, nil
}

func (g *Gossip) numMembers() int {
	if g.ml == nil {
		return 1
	}
	return g.ml.NumMembers()
}

// Joining returns the configured join addresses while no other member is
// alive, that is while Run is still retrying them every RejoinInterval
// (after a start before the others, or a partition); nil once joined, or
// without a join list.
func (g *Gossip) Joining() []string {
	if len(g.cfg.Join) == 0 || g.numMembers() > 1 {
		return nil
	}
	return slices.Clone(g.cfg.Join)
}

// RejoinInterval returns how often Run retries the join list.
func (g *Gossip) RejoinInterval() time.Duration { return g.cfg.RejoinInterval }

// Name returns the local member's name.
func (g *Gossip) Name() string { return g.cfg.Name }

// Addr returns the host:port other members reach us at.
func (g *Gossip) Addr() string {
	n := g.ml.LocalNode()
	return n.Address()
}

// Join contacts the configured (or given) members; it returns how many
// answered. Joining an empty list is not an error: we are the first member.
func (g *Gossip) Join(ctx context.Context, addrs ...string) (int, error) {
	if len(addrs) == 0 {
		addrs = g.cfg.Join
	}
	if len(addrs) == 0 {
		return 0, nil
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	n, err := g.ml.Join(addrs)
	if n == 0 && err != nil {
		return 0, fmt.Errorf("gossip: join %v: %w", addrs, err)
	}
	return n, nil
}

// Run keeps the member healthy until ctx ends: it rejoins the configured
// members while no other member is alive (after a partition or a start
// before the others) and reloads the key file when it changes. It returns
// nil when ctx ends.
func (g *Gossip) Run(ctx context.Context) error {
	rejoin := time.NewTicker(g.cfg.RejoinInterval)
	defer rejoin.Stop()
	var keyTick <-chan time.Time
	if g.cfg.KeyCheckInterval > 0 && g.cfg.SecretKeyFile != "" {
		t := time.NewTicker(g.cfg.KeyCheckInterval)
		defer t.Stop()
		keyTick = t.C
	}
	sweepTick := time.NewTicker(g.cfg.sweepInterval())
	defer sweepTick.Stop()
	if g.numMembers() <= 1 {
		if _, err := g.Join(ctx); err != nil {
			g.logger.Warn("gossip: join failed; will retry", "join", g.cfg.Join, "err", err)
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-g.done:
			return nil
		case <-rejoin.C:
			if g.numMembers() <= 1 && len(g.cfg.Join) > 0 {
				if _, err := g.Join(ctx); err != nil {
					g.logger.Debug("gossip: rejoin failed", "err", err)
				}
			}
		case now := <-sweepTick.C:
			g.sweep(now)
		case <-keyTick:
			if changed, err := g.keyFileChanged(); err != nil {
				g.logger.Warn("gossip: key file check failed", "file", g.cfg.SecretKeyFile, "err", err)
			} else if changed {
				if err := g.ReloadKeys(); err != nil {
					g.logger.Error("gossip: key reload failed; keeping the current keys", "err", err)
				}
			}
		}
	}
}

func (g *Gossip) keyFileChanged() (bool, error) {
	fi, err := os.Stat(g.cfg.SecretKeyFile)
	if err != nil {
		return false, err
	}
	g.keyMu.Lock()
	defer g.keyMu.Unlock()
	return !fi.ModTime().Equal(g.keyModTime) || fi.Size() != g.keySize, nil
}

// ReloadKeys re-reads the secret key file and installs its keys (see
// LoadKeyFile for the rotation procedure). A bad file leaves the keyring
// unchanged.
func (g *Gossip) ReloadKeys() error {
	if g.ring == nil {
		return fmt.Errorf("gossip: reload keys: encryption is off (no secret key file)")
	}
	g.keyMu.Lock()
	defer g.keyMu.Unlock()
	fi, statErr := os.Stat(g.cfg.SecretKeyFile)
	keys, err := LoadKeyFile(g.cfg.SecretKeyFile)
	if err != nil {
		return fmt.Errorf("gossip: reload keys: %w", err)
	}
	if err := installKeys(g.ring, keys); err != nil {
		return fmt.Errorf("gossip: reload keys: %w", err)
	}
	if statErr == nil {
		g.keyModTime, g.keySize = fi.ModTime(), fi.Size()
	}
	g.logger.Info("gossip: keys reloaded", "keys", len(keys))
	return nil
}

// Encrypted reports whether gossip is encrypted and authenticated with a
// keyring: only then does what members say about themselves (their
// metadata, certificate pins included) come from a key holder.
func (g *Gossip) Encrypted() bool { return g.ring != nil }

// Keys returns the installed keys, the primary first.
func (g *Gossip) Keys() [][]byte {
	if g.ring == nil {
		return nil
	}
	primary := g.ring.GetPrimaryKey()
	out := [][]byte{primary}
	for _, k := range g.ring.GetKeys() {
		if !bytes.Equal(k, primary) {
			out = append(out, k)
		}
	}
	return out
}

// SetMeta replaces the local node metadata and gossips it.
func (g *Gossip) SetMeta(ctx context.Context, m NodeMeta) error {
	enc := m.encode()
	if len(enc) > memberlist.MetaMaxSize {
		return fmt.Errorf("gossip: set meta: %w: %d bytes", ErrMetaTooLarge, len(enc))
	}
	g.mu.Lock()
	g.meta = enc
	g.mu.Unlock()
	timeout := 5 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	if err := g.ml.UpdateNode(timeout); err != nil {
		return fmt.Errorf("gossip: set meta: %w", err)
	}
	return nil
}

// Members returns every member we have heard of, ourselves included, sorted
// by name: alive and suspect ones, and dead or left ones until memberlist
// reaps them. A member whose metadata cannot be decoded is listed with empty
// metadata (and logged): it may run a newer version.
func (g *Gossip) Members() []Member {
	// Only events feed the table: memberlist's Members returns nodes it
	// keeps mutating under its own lock, so reading them here would race.
	g.mu.Lock()
	out := make([]Member, 0, len(g.members))
	for _, m := range g.members {
		out = append(out, m)
	}
	g.mu.Unlock()
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Member returns the named member.
func (g *Gossip) Member(name string) (Member, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	m, ok := g.members[name]
	return m, ok
}

// member converts n. memberlist does not keep Node.State current (its own
// nodeState does, privately), so the state comes from the event that
// reported n: gone is true in NotifyLeave. A member that announced its
// departure in its metadata has left; otherwise it is dead.
func (g *Gossip) member(n *memberlist.Node, gone bool) Member {
	m := Member{Name: n.Name, Addr: n.Address(), Self: n.Name == g.cfg.Name, State: StateAlive}
	if len(n.Meta) > 0 {
		meta, err := decodeNodeMeta(n.Meta)
		if err != nil {
			g.logger.Debug("gossip: undecodable node meta", "member", n.Name, "err", err)
		}
		m.Meta = meta
	}
	if gone {
		m.State = StateDead
		if m.Meta.leaving {
			m.State = StateLeft
		}
	}
	return m
}

// observe records n's current state; memberlist calls the event delegate
// with its node lock held, so this must not call back into memberlist.
func (g *Gossip) observe(n *memberlist.Node, gone bool) {
	m := g.member(n, gone)
	now := time.Now()
	g.mu.Lock()
	if old, ok := g.members[m.Name]; ok && old.State == m.State {
		m.Since = old.Since
	} else if !m.Self {
		m.Since = now
	}
	if m.State == StateAlive {
		delete(g.pruned, m.Name)
	}
	g.members[m.Name] = m
	g.signalLocked()
	g.mu.Unlock()
}

// sweep forgets members dead or left for PruneAfter, with every entry
// they published (so the table does not grow with every hub that ever
// was), and drops deletion tombstones older than TombstoneTTL. A pruned
// member's entries relayed by members that have not pruned it yet are
// refused until it comes back alive.
func (g *Gossip) sweep(now time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	changed := false
	if pa := g.cfg.PruneAfter; pa > 0 {
		for name, m := range g.members {
			if m.Self || m.State == StateAlive || now.Sub(m.Since) < pa {
				continue
			}
			delete(g.members, name)
			g.pruned[name] = true
			for k, e := range g.tab {
				if e.hub == name {
					delete(g.tab, k)
				}
			}
			changed = true
			g.logger.Info("gossip: pruned a member gone for longer than prune_after", "member", name,
				"state", m.State, "since", m.Since, "prune_after", pa)
		}
	}
	for k, e := range g.tab {
		if g.expired(e, now) {
			delete(g.tab, k)
			changed = true
		}
	}
	if changed {
		g.signalLocked()
	}
}

// expired reports whether e is a deletion tombstone past TombstoneTTL,
// counted from its publication (an entry's version is its publisher's
// clock, never behind the wall clock in nanoseconds).
func (g *Gossip) expired(e *entry, now time.Time) bool {
	ttl := g.cfg.TombstoneTTL
	return ttl > 0 && e.kind == kindDef && e.def.Deleted && e.version < uint64(now.Add(-ttl).UnixNano())
}

// Changed returns a channel closed at the next change of membership or of
// gossiped entries. Watchers call it again after each wake-up.
func (g *Gossip) Changed() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.notify
}

func (g *Gossip) signalLocked() {
	close(g.notify)
	g.notify = make(chan struct{})
}

func (g *Gossip) signal() {
	g.mu.Lock()
	g.signalLocked()
	g.mu.Unlock()
}

// tick returns the next version of the local clock: after every version
// issued before, and at least the wall clock, so a restarted hub's entries
// are newer than those it published before.
func (g *Gossip) tickLocked() uint64 {
	g.clock = max(g.clock+1, uint64(time.Now().UnixNano()))
	return g.clock
}

// PublishDef publishes our definition of stream. Publishing the same
// definition again is a no-op.
func (g *Gossip) PublishDef(stream string, d Def) {
	g.publish(&entry{kind: kindDef, hub: g.cfg.Name, stream: stream, def: d}, func(old *entry) bool {
		return old.def.Version == d.Version && old.def.Deleted == d.Deleted && bytes.Equal(old.def.Spec, d.Spec)
	})
}

// PublishVector publishes how much of origin hub's records of stream we
// hold. Publishing an unchanged vector is a no-op, so callers may publish
// periodically.
func (g *Gossip) PublishVector(stream, origin string, v Vector) {
	v.Seqs = slices.Clone(v.Seqs)
	g.publish(&entry{kind: kindVector, hub: g.cfg.Name, stream: stream, origin: origin, vector: v}, func(old *entry) bool {
		return slices.Equal(old.vector.Seqs, v.Seqs) && old.vector.Incarnation == v.Incarnation
	})
}

func (g *Gossip) publish(e *entry, same func(old *entry) bool) {
	g.mu.Lock()
	if old, ok := g.tab[e.key()]; ok && same(old) {
		g.mu.Unlock()
		return
	}
	e.version = g.tickLocked()
	g.tab.merge(e)
	g.signalLocked()
	g.mu.Unlock()
	g.broadcast(e)
}

// broadcast queues e for piggybacked gossip; a newer entry for the same key
// replaces it in the queue.
func (g *Gossip) broadcast(e *entry) {
	msg := appendEntries(nil, []*entry{e})
	if len(msg) > maxBroadcast {
		// Too big for a UDP packet: push/pull carries it.
		return
	}
	g.queue.QueueBroadcast(&broadcast{name: e.key(), msg: msg})
}

// Streams returns what the federation says about every stream, from
// entries of all publishers (alive or not: callers filter by Members).
func (g *Gossip) Streams() map[string]StreamView {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := map[string]StreamView{}
	var layouts []*entry
	for _, e := range g.tab {
		if _, _, _, isLayout, _ := layoutEntry(e); isLayout {
			layouts = append(layouts, e)
			continue
		}
		v, ok := out[e.stream]
		if !ok {
			v = StreamView{Defs: map[string]Def{}, Vectors: map[string]map[string]Vector{}}
			out[e.stream] = v
		}
		switch e.kind {
		case kindDef:
			v.Defs[e.hub] = e.def
		case kindVector:
			if v.Vectors[e.hub] == nil {
				v.Vectors[e.hub] = map[string]Vector{}
			}
			v.Vectors[e.hub][e.origin] = Vector{Seqs: slices.Clone(e.vector.Seqs), Incarnation: e.vector.Incarnation}
		}
	}
	// Layouts of streams nobody else says anything about are dropped:
	// they describe nothing a caller could act on.
	for _, e := range layouts {
		stream, origin, l, _, ok := layoutEntry(e)
		v, have := out[stream]
		if !ok || !have {
			continue
		}
		if v.Layouts == nil {
			v.Layouts = map[string]map[string]Layout{}
			out[stream] = v
		}
		if v.Layouts[e.hub] == nil {
			v.Layouts[e.hub] = map[string]Layout{}
		}
		v.Layouts[e.hub][origin] = l
	}
	return out
}

// Leave tells the federation we are leaving (so peers mark us left, not
// dead) and waits for that to be sent, at most until ctx ends.
func (g *Gossip) Leave(ctx context.Context) error {
	timeout := 5 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	// memberlist reports a graceful leave and a death alike to the other
	// members' event delegates: mark our metadata first so they can tell.
	g.mu.Lock()
	meta, err := decodeNodeMeta(g.meta)
	if err == nil {
		meta.leaving = true
		g.meta = meta.encode()
	}
	g.mu.Unlock()
	if err == nil {
		if err := g.ml.UpdateNode(timeout / 2); err != nil {
			g.logger.Debug("gossip: announcing departure", "err", err)
		}
	}
	if err := g.ml.Leave(timeout); err != nil {
		return fmt.Errorf("gossip: leave: %w", err)
	}
	return nil
}

// Shutdown leaves gracefully (bounded by ctx) and stops.
func (g *Gossip) Shutdown(ctx context.Context) error {
	if err := g.Leave(ctx); err != nil {
		g.logger.Warn("gossip: leave failed", "err", err)
	}
	return g.Close()
}

// Close stops the member at once, without leaving: peers will find it
// dead. Close is idempotent.
func (g *Gossip) Close() error {
	g.closeOnce.Do(func() {
		close(g.done)
		if err := g.ml.Shutdown(); err != nil {
			g.closeErr = fmt.Errorf("gossip: close: %w", err)
		}
		g.signal()
	})
	return g.closeErr
}

// broadcast is one queued entry.
type broadcast struct {
	name string
	msg  []byte
}

func (b *broadcast) Invalidates(o memberlist.Broadcast) bool {
	ob, ok := o.(*broadcast)
	return ok && ob.name == b.name
}
func (b *broadcast) Name() string    { return b.name }
func (b *broadcast) Message() []byte { return b.msg }
func (b *broadcast) Finished()       {}

// delegate implements memberlist.Delegate. memberlist calls it from its
// packet and stream handlers: it must not block.
type delegate Gossip

func (d *delegate) NodeMeta(limit int) []byte {
	g := (*Gossip)(d)
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.meta) > limit {
		g.logger.Error("gossip: node metadata exceeds the limit; sending none", "bytes", len(g.meta), "limit", limit)
		return nil
	}
	return g.meta
}

func (d *delegate) NotifyMsg(b []byte) {
	g := (*Gossip)(d)
	es, err := decodeEntries(b)
	if err != nil {
		g.logger.Warn("gossip: dropping malformed message", "bytes", len(b), "err", err)
		return
	}
	g.mergeEntries(es, true)
}

// mergeEntries applies es; entries that were news are re-broadcast when
// relay is set, so they spread epidemically beyond the members their
// publisher reached.
func (g *Gossip) mergeEntries(es []*entry, relay bool) {
	var news []*entry
	g.mu.Lock()
	for _, e := range es {
		if e.hub == g.cfg.Name {
			// Our own entries: a copy from before a restart must not win
			// over what we publish now, so our clock moves past it and the
			// current value is republished at a newer version.
			if e.version > g.clock {
				g.clock = e.version
			}
			if cur, ok := g.tab[e.key()]; ok && e.version >= cur.version {
				// Entries in the table are immutable (LocalState encodes
				// them without the lock): replace, never modify.
				bumped := *cur
				bumped.version = g.tickLocked()
				g.tab[e.key()] = &bumped
				news = append(news, &bumped)
			}
			continue
		}
		if g.pruned[e.hub] || g.expired(e, time.Now()) {
			continue
		}
		if g.tab.merge(e) {
			news = append(news, e)
		}
	}
	if len(news) > 0 {
		g.signalLocked()
	}
	g.mu.Unlock()
	if relay {
		for _, e := range news {
			g.broadcast(e)
		}
	}
}

func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.queue.GetBroadcasts(overhead, limit)
}

// LocalState sends every entry we know, not just ours: a member that
// missed broadcasts (partitioned, restarted) catches up from any peer.
func (d *delegate) LocalState(join bool) []byte {
	g := (*Gossip)(d)
	g.mu.Lock()
	es := g.tab.sorted()
	g.mu.Unlock()
	return appendEntries(nil, es)
}

func (d *delegate) MergeRemoteState(buf []byte, join bool) {
	g := (*Gossip)(d)
	if len(buf) == 0 {
		return
	}
	es, err := decodeEntries(buf)
	if err != nil {
		g.logger.Warn("gossip: dropping malformed push/pull state", "bytes", len(buf), "err", err)
		return
	}
	g.mergeEntries(es, true)
}

// events implements memberlist.EventDelegate: membership changes wake
// watchers.
type events Gossip

func (e *events) NotifyJoin(n *memberlist.Node) {
	(*Gossip)(e).logger.Info("gossip: member joined", "member", n.Name, "addr", n.Address())
	(*Gossip)(e).observe(n, false)
}

func (e *events) NotifyLeave(n *memberlist.Node) {
	g := (*Gossip)(e)
	g.observe(n, true)
	m, _ := g.Member(n.Name)
	g.logger.Info("gossip: member gone", "member", n.Name, "state", m.State)
}

func (e *events) NotifyUpdate(n *memberlist.Node) { (*Gossip)(e).observe(n, false) }

package groups

import (
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Shard is one shard of a stream's layout as the coordinator needs it
// (docs/resharding.md section 2). The coordinator stays a leaf: the hub
// converts the store's layout into these.
type Shard struct {
	ID      uint32
	Parents []uint32
	// Closed: a reshard closed the shard; End is its last sequence (0 if
	// it never held a record) and ClosedAt when it was closed.
	Closed   bool
	End      uint64
	ClosedAt time.Time
	// Retired: closed, and retention removed every record of it.
	Retired bool
	// First is the shard's first live sequence when the layout was set.
	// For a closed shard it only grows, and it passes End only at the
	// close itself (nothing live was left) or when the last record goes,
	// which retires the shard and changes the layout: a snapshot taken at
	// every SetLayout is therefore enough to tell "first live > End".
	First uint64
}

// streamLayout is the newest layout set for a stream.
type streamLayout struct {
	version uint64
	shards  []Shard // by id
}

// SetLayout gives the coordinator the layout of stream: every shard ever
// assigned, by id (shards[i].ID == i). The hub calls it at start and at
// every layout change, one call at a time per stream: the newest call wins
// (versions are not compared, since a stream deleted and created again
// starts at version 0 again, and a retirement keeps the version). Each
// group of the stream grows its shard table to the ids, deletes the
// offsets of shards retired since, and rebalances.
func (c *Coordinator) SetLayout(stream string, version uint64, shards []Shard) error {
	for i, s := range shards {
		if s.ID != uint32(i) {
			return fmt.Errorf("%w: layout of %q: shard %d at index %d", ErrInvalid, stream, s.ID, i)
		}
		for _, p := range s.Parents {
			if p >= s.ID { // a child's id is above its parents
				return fmt.Errorf("%w: layout of %q: shard %d has parent %d", ErrInvalid, stream, s.ID, p)
			}
		}
	}
	if len(shards) > maxShards {
		return fmt.Errorf("%w: layout of %q: %d shards", ErrInvalid, stream, len(shards))
	}
	l := &streamLayout{version: version, shards: slices.Clone(shards)}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	c.layouts[stream] = l
	var gs []*group
	for _, g := range c.groups {
		if g.def.Stream == stream {
			gs = append(gs, g)
		}
	}
	c.mu.Unlock()
	var errs []error
	for _, g := range gs {
		g.mu.Lock()
		if g.gone == nil {
			if err := g.setLayout(l); err != nil {
				errs = append(errs, err)
			}
		}
		g.mu.Unlock()
	}
	if len(errs) > 0 {
		return errs[0]
	}
	return nil
}

// setLayout puts l in force for g (callers hold g.mu): it grows the shard
// table, deletes the offsets of retired shards and rebalances.
func (g *group) setLayout(l *streamLayout) error {
	before := make([]uint64, len(g.leases))
	for s := range g.leases {
		before[s] = g.closedNext(s)
	}
	g.layout = l
	g.grow(len(l.shards))
	// A holder of a shard that closed gets a new assignment (same leases,
	// now with closed_next), so it knows where the shard ends.
	changed := map[*member]bool{}
	for s, cn := range before {
		if m := g.members[g.leases[s].member]; m != nil && !g.leases[s].revoking && g.closedNext(s) != cn {
			changed[m] = true
		}
	}
	for m := range changed {
		m.gen++
		if m.sess != nil {
			m.sess.notify()
		}
	}
	err := g.dropRetired()
	g.settle(time.Now())
	return err
}

// grow extends the per-shard tables to n ids (ids only grow).
func (g *group) grow(n int) {
	if n <= len(g.leases) {
		return
	}
	g.offsets = append(g.offsets, make([]offsetRec, n-len(g.offsets))...)
	g.leases = append(g.leases, make([]lease, n-len(g.leases))...)
	g.writing = append(g.writing, make([]int, n-len(g.writing))...)
}

// dropRetired deletes the stored offsets of retired shards. A finished
// parent's offset is kept until then: deleting it earlier would make the
// parent look unfinished again.
func (g *group) dropRetired() error {
	var drop []int
	for s, r := range g.offsets {
		if r != (offsetRec{}) && g.retired(s) && g.writing[s] == 0 {
			drop = append(drop, s)
		}
	}
	if len(drop) == 0 {
		return nil
	}
	err := g.c.update("retire", func(tx *bolt.Tx) error {
		for _, s := range drop {
			if err := deleteOffset(tx, g.name, s); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("groups: group %q: delete offsets of retired shards %v: %w", g.name, drop, err)
	}
	for _, s := range drop {
		g.offsets[s] = offsetRec{}
	}
	g.c.logger.Info("group offsets of retired shards deleted", "group", g.name, "shards", drop)
	return nil
}

// shard returns the layout entry of s, or false when no layout names it.
// Without any layout (the hub never set one: a stream never resharded in
// tests) the creation's shards are open and have no parents.
func (g *group) shard(s int) (Shard, bool) {
	if g.layout == nil {
		if s < g.def.Shards {
			return Shard{ID: uint32(s)}, true
		}
		return Shard{}, false
	}
	if s < len(g.layout.shards) {
		return g.layout.shards[s], true
	}
	return Shard{}, false
}

func (g *group) retired(s int) bool {
	sh, ok := g.shard(s)
	return ok && sh.Retired
}

// finished reports whether the group is done with shard s: it is closed
// and the group committed past its end, or nothing of it is left to read
// (retired, or first live > End) and its parents are finished. The last
// clause matters for a shard left empty between two reshards (merged, then
// split at once): its children inherit its range, so they must not be
// released before its own parents are read. Parents have smaller ids
// (SetLayout checks), so the recursion ends; it is memoized, since a long
// history of split and merge is a lattice with many paths to one shard.
func (g *group) finished(s int) bool { return g.finishedIn(s, nil) }

func (g *group) finishedIn(s int, memo map[int]bool) bool {
	sh, ok := g.shard(s)
	if !ok || !sh.Closed {
		return false
	}
	if g.offsets[s].Offset > sh.End {
		return true
	}
	if !sh.Retired && sh.First <= sh.End {
		return false
	}
	if f, ok := memo[s]; ok {
		return f
	}
	if memo == nil {
		memo = map[int]bool{}
	}
	f := true
	for _, p := range sh.Parents {
		if !g.finishedIn(int(p), memo) {
			f = false
			break
		}
	}
	memo[s] = f
	return f
}

// waitingFor returns the unfinished parents of s.
func (g *group) waitingFor(s int) []int {
	sh, ok := g.shard(s)
	if !ok {
		return nil
	}
	var out []int
	for _, p := range sh.Parents {
		if !g.finished(int(p)) {
			out = append(out, int(p))
		}
	}
	return out
}

// assignable reports whether s may be leased: known, not finished, and
// every parent finished (a child is read only after its parents, which
// keeps each key's order across a reshard).
func (g *group) assignable(s int) bool {
	if _, ok := g.shard(s); !ok || g.finished(s) {
		return false
	}
	if g.c.testSkipParents {
		return true
	}
	return len(g.waitingFor(s)) == 0
}

// closedNext is what GROUP_ASSIGNMENT carries for s: 0 while open, else
// End+1, the offset that finishes it.
func (g *group) closedNext(s int) uint64 {
	if sh, ok := g.shard(s); ok && sh.Closed {
		return sh.End + 1
	}
	return 0
}

// childStart is where a child shard never positioned starts: at its first
// live record when the group existed before the child did (the parents'
// close), whatever the member's start, so that nothing written to the
// child between the reshard and its grant is skipped; otherwise the
// member's start applies as to any shard.
func (g *group) childStart(s int, start Start) Start {
	sh, ok := g.shard(s)
	if !ok || len(sh.Parents) == 0 {
		return start
	}
	var born time.Time
	for _, p := range sh.Parents {
		if ps, ok := g.shard(int(p)); ok && ps.ClosedAt.After(born) {
			born = ps.ClosedAt
		}
	}
	if g.def.Created.Before(born) {
		return Start{Kind: StartEarliest}
	}
	return start
}

// WaitingShards returns, for every stream with groups, how many shards
// wait for unfinished parents, summed over its groups
// (edgehub_lineage_waiting_shards{reader="group"}).
func (c *Coordinator) WaitingShards() map[string]int {
	c.mu.Lock()
	gs := make([]*group, 0, len(c.groups))
	for _, g := range c.groups {
		gs = append(gs, g)
	}
	c.mu.Unlock()
	out := map[string]int{}
	for _, g := range gs {
		g.mu.Lock()
		n := 0
		for s := range g.leases {
			if !g.finished(s) && len(g.waitingFor(s)) > 0 {
				n++
			}
		}
		out[g.def.Stream] += n
		g.mu.Unlock()
	}
	return out
}

package replicate

import (
	"context"
	"slices"
	"sync"

	"github.com/edgehub/edgehub/store"
)

// copies tracks, for this hub's own shards, how far each peer has applied
// (durably appended) their records: what the replicas report over their
// replication sessions (PULL_APPLIED), starting from the position each
// follow asked from. A report is a fact about a peer's disk, so it outlives
// the session that carried it; it is forgotten with the hub's restart and
// learnt again when the peer follows (its follow's after). Keyed by the
// stream's incarnation, so a deleted and recreated stream starts from
// nothing.
type copies struct {
	mu      sync.Mutex
	streams map[copyStream]*copyState
}

type copyStream struct{ name, incarnation string }

type copyHolder struct {
	shard uint32
	peer  string
}

type copyState struct {
	applied map[copyHolder]uint64 // last own sequence of the shard the peer holds
	changed chan struct{}         // closed and replaced at every advance
}

func newCopies() *copies { return &copies{streams: map[copyStream]*copyState{}} }

func (c *copies) stateLocked(k copyStream) *copyState {
	s := c.streams[k]
	if s == nil {
		s = &copyState{applied: map[copyHolder]uint64{}, changed: make(chan struct{})}
		c.streams[k] = s
	}
	return s
}

// applied records that peer holds k's shard through seq.
func (c *copies) applied(k copyStream, shard uint32, peer string, seq uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stateLocked(k)
	h := copyHolder{shard, peer}
	if seq <= s.applied[h] {
		return
	}
	s.applied[h] = seq
	close(s.changed)
	s.changed = make(chan struct{})
}

// holders returns the peers admitted by admit that hold every shard of
// ends through its sequence, sorted, and a channel closed at the next
// report for k.
func (c *copies) holders(k copyStream, ends map[uint32]uint64, admit func(peer string) bool) ([]string, <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stateLocked(k)
	count := map[string]int{}
	for h, a := range s.applied {
		if end, ok := ends[h.shard]; ok && a >= end {
			count[h.peer]++
		}
	}
	var out []string
	for p, n := range count {
		if n == len(ends) && admit(p) {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out, s.changed
}

// CopyTarget is what one acknowledgement waits for: every record up to
// Seq of each listed own shard held by Peers hubs besides this one.
type CopyTarget struct {
	// Ends maps an own shard id to the last sequence the batch wrote in it.
	Ends map[uint32]uint64
	// Peers is how many other hubs must hold them.
	Peers int
	// At, if not the zero Policy, admits only peers carrying one of its
	// tags (a stream's copies_at); otherwise any peer the stream's
	// replication policy sends it to counts.
	At Policy
}

// AwaitCopies waits until enough peers hold a batch's records (CopyTarget)
// or ctx ends, and returns the peers that hold all of them when it
// returned, sorted. A peer counts only once it has reported them applied:
// gossip, a vector or a session's existence never stand in for a copy.
func (r *Replicator) AwaitCopies(ctx context.Context, st *store.Stream, t CopyTarget) []string {
	admit := func(peer string) bool {
		if t.At.Local() {
			return true // the stream's policy admitted it to follow at all
		}
		tags, ok := r.srv.tags(peer)
		return ok && t.At.Admits(tags)
	}
	k := copyStream{st.Name(), st.Incarnation()}
	for {
		held, changed := r.srv.copies.holders(k, t.Ends, admit)
		if len(held) >= t.Peers {
			return held
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return held
		}
	}
}

// CopiesHeld returns the peers known to hold shard of st through seq.
func (r *Replicator) CopiesHeld(st *store.Stream, shard uint32, seq uint64) []string {
	h, _ := r.srv.copies.holders(copyStream{st.Name(), st.Incarnation()}, map[uint32]uint64{shard: seq}, func(string) bool { return true })
	return h
}

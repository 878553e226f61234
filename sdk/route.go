package sdk

import (
	"fmt"
	"sort"

	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/quic"
)

// router is the layout a producer routes by (docs/protocol.md 5.6): the
// open shards' hash ranges, and every id's range and state. A stream never
// resharded has the uniform ranges of its shard count.
type router struct {
	version uint64
	uniform bool       // layout version 0: route by arithmetic
	open    []span     // open shards in hash order
	shards  []shardRef // by id, every id ever assigned
}

type span struct {
	lo, hi uint64
	id     int
}

type shardRef struct {
	lo, hi uint64
	open   bool
}

// uniformRouter is the layout of a stream of n shards never resharded.
func uniformRouter(n int) router {
	r := router{uniform: true, open: make([]span, n), shards: make([]shardRef, n)}
	for i := range n {
		lo, hi := record.HashRange(i, n)
		r.open[i] = span{lo, hi, i}
		r.shards[i] = shardRef{lo, hi, true}
	}
	return r
}

// newRouter builds a router from a LAYOUT. It refuses one whose open
// ranges do not partition the hash space: routing by it would misplace
// records.
func newRouter(l *quic.Layout) (router, error) {
	n := int(l.NextID)
	for _, s := range l.Shards {
		n = max(n, int(s.ID)+1)
	}
	if n > quic.MaxLayoutShards {
		return router{}, fmt.Errorf("sdk: layout with %d shard ids", n)
	}
	r := router{version: l.Version, shards: make([]shardRef, n)}
	for _, s := range l.Shards {
		open := s.State == quic.ShardOpen
		r.shards[s.ID] = shardRef{s.HashStart, s.HashEnd, open}
		if open {
			r.open = append(r.open, span{s.HashStart, s.HashEnd, int(s.ID)})
		}
	}
	sort.Slice(r.open, func(i, j int) bool { return r.open[i].lo < r.open[j].lo })
	next := uint64(0)
	for i, s := range r.open {
		if s.lo != next || s.hi < s.lo || (i < len(r.open)-1 && s.hi == ^uint64(0)) {
			return router{}, fmt.Errorf("sdk: layout %d: open ranges do not partition the hash space at shard %d", l.Version, s.id)
		}
		next = s.hi + 1
	}
	if len(r.open) == 0 || r.open[len(r.open)-1].hi != ^uint64(0) {
		return router{}, fmt.Errorf("sdk: layout %d: open ranges do not reach the end of the hash space", l.Version)
	}
	r.uniform = l.Version == 0
	return r, nil
}

// shardFor returns the open shard owning hash.
func (r *router) shardFor(hash uint64) int {
	if r.uniform {
		return r.open[record.ShardForHash(hash, len(r.open))].id
	}
	i := sort.Search(len(r.open), func(i int) bool { return r.open[i].hi >= hash })
	return r.open[i].id
}

// closedError is the shard_closed error of a send to closed shard id
// (SendTo: the caller chose the shard, so it is not re-routed).
func (p *Producer) closedError(id int) error {
	return &quic.Error{Code: quic.CodeShardClosed, Message: fmt.Sprintf("shard %d is closed (layout version %d)", id, p.route.version)}
}

// isOpen reports whether shard id exists and takes appends.
func (r *router) isOpen(id int) bool { return id >= 0 && id < len(r.shards) && r.shards[id].open }

// overlaps reports whether shards a and b's ranges intersect.
func (r *router) overlaps(a, b int) bool {
	x, y := r.shards[a], r.shards[b]
	return x.lo <= y.hi && y.lo <= x.hi
}

// setLayout starts routing by l (a LAYOUT frame). Shards it closes that
// hold records not yet known to be stored start draining; see reroute.
// Called with p.mu held.
func (p *Producer) setLayout(l *quic.Layout) error {
	if l.Version < p.route.version {
		return nil // older than what we route by
	}
	r, err := newRouter(l)
	if err != nil {
		return err
	}
	p.route = r
	p.grow(len(r.shards))
	p.sticky %= len(r.open)
	for id := range p.acc {
		if !r.isOpen(id) && p.hasWork(id) {
			p.closing[id] = true
		}
	}
	p.resolve()
	return nil
}

// grow sizes the per-shard slices for n shard ids.
func (p *Producer) grow(n int) {
	for len(p.acc) < n {
		p.acc = append(p.acc, nil)
		p.lastLen = append(p.lastLen, 0)
		p.nextSeq = append(p.nextSeq, 0)
		p.inflight = append(p.inflight, 0)
		p.closing = append(p.closing, false)
		p.hold = append(p.hold, false)
		p.refusedAt = append(p.refusedAt, 0)
	}
}

// hasWork reports whether shard id holds records not yet acknowledged.
func (p *Producer) hasWork(id int) bool {
	if p.acc[id] != nil {
		return true
	}
	for _, b := range p.unacked {
		if b.shard == id {
			return true
		}
	}
	return false
}

// refused handles a shard_closed ACK for b: nothing of it was stored. It
// stays queued, never resent to its shard, until the shard has drained.
// Called with p.mu held.
func (p *Producer) refused(b *pbatch, layoutVersion uint64) {
	p.inflight[b.shard]--
	b.wire, b.refused = false, true
	p.closing[b.shard] = true
	p.refusedAt[b.shard] = max(p.refusedAt[b.shard], layoutVersion)
	p.resolve()
}

// resolve re-routes the records of every closing shard that has drained:
// the layout we route by says it is closed (and is at least as new as its
// refusals), and none of its batches sent to the hub waits for an ACK any
// more. Until then the open shards overlapping its range are held: they
// send nothing, so that a key's records accepted before the reshard are
// stored before those accepted after it (docs/resharding.md section 3).
// Called with p.mu held.
func (p *Producer) resolve() {
	for id, c := range p.closing {
		if c && !p.route.isOpen(id) && p.route.version >= p.refusedAt[id] && p.drained(id) {
			p.reroute(id)
			p.closing[id] = false
		}
	}
	clear(p.hold)
	for id, c := range p.closing {
		if !c {
			continue
		}
		for _, s := range p.route.open {
			if p.route.overlaps(id, s.id) {
				p.hold[s.id] = true
			}
		}
	}
	p.signal()
}

// drained reports whether no batch of shard id is on its way to the hub or
// was sent without an answer (such a batch may have been stored before the
// close, and is resent to the shard to learn where).
func (p *Producer) drained(id int) bool {
	for _, b := range p.unacked {
		if b.shard == id && b.sent && !b.refused {
			return false
		}
	}
	return true
}

// reroute moves the records of closed shard id that are certainly not
// stored (batches refused with shard_closed, batches never sent, the open
// batch) to the open shards that own them now, in their original order, as
// new batches placed ahead of every batch those shards have not sent yet.
// Records sent to id explicitly (SendTo) fail with shard_closed: the
// caller chose the shard. Called with p.mu held.
func (p *Producer) reroute(id int) {
	var moved []*pbatch
	kept := p.unacked[:0]
	for _, b := range p.unacked {
		if b.shard == id {
			moved = append(moved, b)
		} else {
			kept = append(kept, b)
		}
	}
	clear(p.unacked[len(kept):])
	p.unacked = kept
	if b := p.acc[id]; b != nil {
		p.acc[id] = nil
		b.flush = p.nextID + 1 // for Flush: accepted after everything sealed so far
		moved = append(moved, b)
	}
	if len(moved) == 0 {
		return
	}
	out := map[int][]*pbatch{} // per open shard: new batches, in order
	var order []int
	var pinned *pbatch
	for _, b := range moved {
		p.buffered -= b.bytes
		for i := range b.recs {
			rec, cb := b.recs[i], b.cbs[i]
			size := record.ProducerLen(&rec)
			if b.pin != nil && b.pin[i] {
				if pinned == nil {
					pinned = &pbatch{shard: id}
				}
				pinned.recs = append(pinned.recs, rec)
				pinned.cbs = append(pinned.cbs, cb)
				pinned.bytes += size
				p.buffered += size
				continue
			}
			to := p.route.open[p.sticky].id
			if rec.Key != nil {
				to = p.route.shardFor(record.KeyHash(rec.Key))
			}
			q := out[to]
			if len(q) == 0 {
				order = append(order, to)
			}
			if n := len(q); n == 0 || len(q[n-1].recs) >= p.opts.BatchRecords || q[n-1].bytes+size > p.sealBytes() {
				q = append(q, &pbatch{shard: to, accepted: b.accepted, flush: b.flush})
				out[to] = q
			}
			nb := q[len(q)-1]
			nb.recs = append(nb.recs, rec)
			nb.cbs = append(nb.cbs, cb)
			nb.bytes += size
			if b.accepted.Before(nb.accepted) {
				nb.accepted = b.accepted
			}
			nb.flush = min(nb.flush, b.flush)
			p.buffered += size
		}
	}
	if pinned != nil {
		p.complete(pinned, nil, fmt.Errorf("sdk: produce to %q: %w", p.stream, p.closedError(id)))
	}
	for _, to := range order {
		p.insertAhead(to, out[to])
	}
	p.space.Broadcast()
}

// insertAhead queues batches for open shard to ahead of its batches not
// yet sent, numbering them from where those started (nothing of them
// reached the hub, so they are renumbered after). Called with p.mu held.
func (p *Producer) insertAhead(to int, bs []*pbatch) {
	at := len(p.unacked)
	base := p.nextSeq[to]
	for i, u := range p.unacked {
		if u.shard == to && !u.sent {
			at, base = i, u.seq
			break
		}
	}
	seq, n := base, uint64(0)
	var ok []*pbatch
	for _, b := range bs {
		p.nextID++
		b.id, b.seq = p.nextID, seq
		payload, err := record.AppendBatch(make([]byte, 0, b.bytes+record.BatchHeaderMax), b.recs)
		if err != nil {
			p.complete(b, nil, fmt.Errorf("sdk: encode batch: %w", err))
			continue
		}
		b.payload = payload
		seq += uint64(len(b.recs))
		n += uint64(len(b.recs))
		ok = append(ok, b)
	}
	for _, u := range p.unacked[at:] {
		if u.shard == to {
			u.seq += n
		}
	}
	p.nextSeq[to] += n
	p.unacked = append(p.unacked[:at], append(ok, p.unacked[at:]...)...)
}

package replicate

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/edgehub/edgehub/quic"
	"github.com/edgehub/edgehub/store"
)

// Replication across a reshard (docs/federation.md, "Resharded origins").
//
// Layouts are per hub: a reshard at hub H closes some of H's shards and
// opens children, and only H's origin shards change. Other hubs learn H's
// layout by gossip (published beside the vectors, relayed by every hub
// that holds the stream, persisted in the stream's file with
// store.Stream.SetOriginLayout so it survives restarts and partitions),
// and use it for two things:
//
//   - order: the task of origin shard (H, c) pulls only once every parent
//     p of c is finished here (watermark (H, p) at end(p), or the rest of p
//     a recorded gap), so a key's records from p are stored before its
//     records from c;
//   - completion: a hub serving a follow of a closed shard ends it, once
//     everything is sent, with PULL_END code 0 and closed_end = end(p); the
//     puller raises its watermark to it (store.Stream.AdvanceWatermark):
//     origin sequences skip the records the shard replicated from others,
//     so the last record of p may lie below end(p).

// OriginLayout is a layout of an origin hub's stream and the incarnation of
// that stream it belongs to.
type OriginLayout struct {
	Incarnation string
	Layout      store.Layout
}

// EncodeLayout is the gossip encoding of an origin layout:
//
//	byte version (1), string incarnation, store.EncodeOriginLayout
func EncodeLayout(l OriginLayout) []byte {
	b := []byte{1}
	b = appendString(b, l.Incarnation)
	return append(b, store.EncodeOriginLayout(l.Layout)...)
}

// DecodeLayout parses EncodeLayout's output (from gossip: untrusted).
func DecodeLayout(b []byte) (OriginLayout, error) {
	d := newReader(b, "layout")
	if v := d.Byte(); d.Err == nil && v != 1 {
		d.Fail("version %d", v)
	}
	inc := d.String(maxIncarnationLen)
	if d.Err != nil {
		return OriginLayout{}, fmt.Errorf("replicate: decode layout: %w", d.Err)
	}
	l, err := store.DecodeOriginLayout(d.Buf)
	if err != nil {
		return OriginLayout{}, fmt.Errorf("replicate: decode layout: %w", err)
	}
	return OriginLayout{Incarnation: inc, Layout: l}, nil
}

// shardOf returns shard id of l.
func shardOf(l store.Layout, id uint32) (store.ShardLayout, bool) {
	for _, sh := range l.Shards {
		if sh.ID == id {
			return sh, true
		}
	}
	return store.ShardLayout{}, false
}

// closedEnd returns the end of shard id if l says it is closed (or retired).
func closedEnd(l store.Layout, id uint32) (uint64, bool) {
	sh, ok := shardOf(l, id)
	if !ok || sh.State == store.ShardOpen {
		return 0, false
	}
	return sh.End, true
}

// knownLayout returns what this hub knows of hub's layout of st: its own
// for itself, else the highest version learned (0 and false when none: the
// origin was never resharded, as far as we know).
func (r *Replicator) knownLayout(st *store.Stream, hub string) (store.Layout, bool) {
	if hub == r.cfg.Self {
		l := st.Layout()
		return l, l.Version > 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	l, ok := r.layouts[st.Name()][hub]
	return l.Layout, ok && l.Layout.Version > 0
}

// syncLayouts adopts the highest layout version peers publish of every
// origin of st (in the origin incarnation we follow), records it in the
// stream's file, and returns what we now know of every origin but us.
func (r *Replicator) syncLayouts(ctx context.Context, st *store.Stream, peers []Peer) map[string]OriginLayout {
	known := map[string]OriginLayout{}
	stored, err := st.OriginLayouts()
	if err != nil {
		r.logger.Warn("replicate: reading the origin layouts we know", "stream", st.Name(), "err", err)
	}
	for hub, l := range stored {
		known[hub] = OriginLayout{Incarnation: st.OriginIncarnation(hub), Layout: l}
	}
	for _, p := range peers {
		ps, ok := p.Streams[st.Name()]
		if !ok {
			continue
		}
		for hub, ol := range ps.Layouts {
			if authoritative(r.cfg.Self, hub) || ol.Incarnation != st.OriginIncarnation(hub) || ol.Layout.Version <= known[hub].Layout.Version {
				continue
			}
			if err := st.SetOriginLayout(ctx, hub, ol.Layout); err != nil {
				r.logger.Warn("replicate: recording an origin's layout", "stream", st.Name(), "origin", hub,
					"version", ol.Layout.Version, "peer", p.Name, "err", err)
				continue
			}
			r.logger.Info("replicate: learned an origin's shard layout", "stream", st.Name(), "origin", hub,
				"version", ol.Layout.Version, "peer", p.Name)
			known[hub] = ol
		}
	}
	r.mu.Lock()
	r.layouts[st.Name()] = known
	r.mu.Unlock()
	return known
}

// publishedLayouts is what this hub publishes of st's layouts: its own and
// every origin's it knows, each only once resharded (version 0 is implied
// by the definition, so un-resharded streams publish nothing new).
func publishedLayouts(self string, st *store.Stream, known map[string]OriginLayout) map[string]OriginLayout {
	out := map[string]OriginLayout{}
	if l := st.Layout(); l.Version > 0 {
		out[self] = OriginLayout{Incarnation: st.Incarnation(), Layout: l}
	}
	for hub, ol := range known {
		if ol.Layout.Version > 0 {
			out[hub] = ol
		}
	}
	return out
}

// originShards is the shard count origin hub created st with: its
// published definition's, else ours (definitions agree on it).
func (r *Replicator) originShards(st *store.Stream, hub string) int {
	for _, p := range r.cfg.Membership.Peers() {
		if p.Name == hub {
			if ps, ok := p.Streams[st.Name()]; ok && ps.Def != nil {
				return ps.Def.Config.Shards
			}
		}
	}
	return st.Config().Shards
}

// Lineage gate outcomes.
const (
	gateOpen     = iota // pull
	gateWaiting         // wait: parents unfinished, or the layout naming the shard unknown
	gateComplete        // the origin shard is closed and held here to its end
)

// lineageGate says whether t may pull now. why explains a wait; parents
// reports whether the wait is for parent shards (the lineage gauge).
func (r *Replicator) lineageGate(st *store.Stream, t *task) (gate int, why string, parents bool) {
	k := t.key.origin
	if OwnerOf(k.Hub) != k.Hub {
		// A plugin origin numbers outputs by input shard; its order across
		// a reshard of the input is the plugin runner's (docs/plugins.md).
		return gateOpen, "", false
	}
	l, resharded := r.knownLayout(st, k.Hub)
	if !resharded {
		if int(k.Shard) < r.originShards(st, k.Hub) {
			return gateOpen, "", false
		}
		return gateWaiting, fmt.Sprintf("the layout of %s naming shard %d is not known yet (it comes by gossip)", k.Hub, k.Shard), false
	}
	sh, ok := shardOf(l, k.Shard)
	if !ok {
		return gateWaiting, fmt.Sprintf("layout version %d of %s does not name shard %d yet (a newer one comes by gossip)", l.Version, k.Hub, k.Shard), false
	}
	if sh.State != store.ShardOpen && r.position(st, t.key) >= sh.End {
		return gateComplete, "", false
	}
	// A parent is finished once it is applied to its end and its own
	// parents are: a shard that closed empty (split and merged again before
	// a record reached it) is "at its end" at once, and must not let its
	// children run ahead of the grandparents' records of the same keys.
	memo := map[uint32]bool{}
	var finished func(id uint32) bool
	finished = func(id uint32) bool {
		if v, ok := memo[id]; ok {
			return v
		}
		end, closed := closedEnd(l, id)
		ok := closed && r.position(st, taskKey{t.key.stream, store.OriginKey{Hub: k.Hub, Shard: id}}) >= end
		if ok {
			p, _ := shardOf(l, id)
			for _, pp := range p.Parents {
				if pp < id && !finished(pp) { // parents have lower ids: no cycle
					ok = false
					break
				}
			}
		}
		memo[id] = ok
		return ok
	}
	var waiting []uint32
	for _, p := range sh.Parents {
		if !finished(p) {
			waiting = append(waiting, p)
		}
	}
	if len(waiting) > 0 {
		return gateWaiting, fmt.Sprintf("waiting for parent shards %v of %s (a reshard): their records are applied first", waiting, k.Hub), true
	}
	return gateOpen, "", false
}

// errShardComplete ends a pull whose origin shard is closed and now held
// to its end.
var errShardComplete = errors.New("replicate: origin shard complete")

// completeShard applies a PULL_END with closed_end from src: if our layout
// of the origin agrees that the shard closed there, the watermark rises to
// it. It returns the new watermark.
func (r *Replicator) completeShard(ctx context.Context, st *store.Stream, t *task, src string, wm, end uint64) (uint64, error) {
	k := t.key.origin
	l, _ := r.knownLayout(st, OwnerOf(k.Hub))
	if e, closed := closedEnd(l, k.Shard); !closed || e != end {
		// Gossip will bring the layout that says so; until then this is
		// an ordinary end, retried.
		return wm, fmt.Errorf("replicate: %s ended %s/%d as closed at %d, which the layout we know of %s does not say (yet)",
			src, k.Hub, k.Shard, end, k.Hub)
	}
	if end > wm {
		if err := st.AdvanceWatermark(ctx, k, end); err != nil {
			return wm, fmt.Errorf("replicate: complete %s/%d at %d: %w", k.Hub, k.Shard, end, err)
		}
		wm = end
	}
	t.set(func(s *TaskStatus) {
		s.Watermark, s.High = wm, max(s.High, wm)
		s.State, s.LastError = "complete", ""
	})
	return wm, errShardComplete
}

// closedEndError ends serving a closed origin shard: everything up to End
// was sent (PULL_END code 0 with closed_end).
type closedEndError struct{ end uint64 }

func (e *closedEndError) Error() string {
	return fmt.Sprintf("replicate: origin shard closed at %d, every record sent", e.end)
}

// lineageRefusal refuses a follow of a child shard to a requester that
// would not wait for its parents (a hub from before lineage): it would
// store the child's records of a key before the parent's.
func lineageRefusal(pr PullRequest, l store.Layout) error {
	if pr.Lineage {
		return nil
	}
	sh, ok := shardOf(l, pr.Origin.Shard)
	if !ok || len(sh.Parents) == 0 {
		return nil
	}
	return quic.Errorf(quic.CodeUnavailable, "origin shard %s/%d of %q was opened by a reshard (parents %v): pulling it needs a hub that applies a reshard's parents first (lineage); upgrade hub %q",
		pr.Origin.Hub, pr.Origin.Shard, pr.Stream, sh.Parents, pr.Requester)
}

// lineageWaiting counts, per stream, the pull tasks waiting for parent
// shards (edgehub_lineage_waiting_shards{reader="replica"}).
func (r *Replicator) lineageWaiting() map[string]int {
	r.mu.Lock()
	tasks := make([]*task, 0, len(r.tasks))
	for _, t := range r.tasks {
		tasks = append(tasks, t)
	}
	r.mu.Unlock()
	out := map[string]int{}
	for _, t := range tasks {
		t.mu.Lock()
		if t.parentsWait {
			out[t.key.stream]++
		}
		t.mu.Unlock()
	}
	return out
}

// Vectors of closed origin shards. Once every live peer holds a closed
// origin shard to its end, its entry says nothing anyone needs: a hub
// drops it from the vector it publishes (the store keeps the watermark).
// A reader must then not take the missing entry for "holds nothing": a
// lineage-aware hub pulls a child only after completing its parents, so a
// peer whose vector shows records of a child of p, and which publishes the
// layout that closed p, holds p to its end. impliedVector restores such
// entries; a hub drops an entry only when that rule restores it.

// impliedVector returns ps's vector with the entries of closed origin
// shards its publisher dropped restored at their end, and whether it
// restored any (else it is ps.Vector itself).
func impliedVector(ps PeerStream) (map[store.OriginKey]uint64, bool) {
	var out map[store.OriginKey]uint64
	for hub, ol := range ps.Layouts {
		for _, sh := range ol.Layout.Shards {
			k := store.OriginKey{Hub: hub, Shard: sh.ID}
			if sh.State == store.ShardOpen || ps.Vector[k] >= sh.End || !holdsChild(ps.Vector, hub, sh) {
				continue
			}
			if out == nil {
				out = make(map[store.OriginKey]uint64, len(ps.Vector)+1)
				for k, v := range ps.Vector {
					out[k] = v
				}
			}
			out[k] = sh.End
		}
	}
	if out == nil {
		return ps.Vector, false
	}
	return out, true
}

// holdsChild reports whether v holds a record of a child of sh.
func holdsChild(v map[store.OriginKey]uint64, hub string, sh store.ShardLayout) bool {
	for _, c := range sh.Children {
		if v[store.OriginKey{Hub: hub, Shard: c}] > 0 {
			return true
		}
	}
	return false
}

// withImpliedVectors returns peers with impliedVector applied; peers that
// publish no layout (no resharded origin) are returned as they are.
func withImpliedVectors(peers []Peer) []Peer {
	var out []Peer
	for i, p := range peers {
		var streams map[string]PeerStream
		for name, ps := range p.Streams {
			if len(ps.Layouts) == 0 {
				continue
			}
			v, restored := impliedVector(ps)
			if !restored {
				continue
			}
			if streams == nil {
				streams = make(map[string]PeerStream, len(p.Streams))
				for n, x := range p.Streams {
					streams[n] = x
				}
			}
			ps.Vector = v
			streams[name] = ps
		}
		if streams == nil {
			continue
		}
		if out == nil {
			out = slices.Clone(peers)
		}
		out[i].Streams = streams
	}
	if out == nil {
		return peers
	}
	return out
}

// pruneClosed returns ours without the entries of closed origin shards that
// every live peer holding stream holds to their end (explicitly or as
// impliedVector restores it), and that impliedVector restores from what we
// publish (we hold a record of a child). layouts are the layouts we
// publish, our own included.
func pruneClosed(stream string, ours map[store.OriginKey]uint64, layouts map[string]OriginLayout, peers []Peer) map[store.OriginKey]uint64 {
	var drop []store.OriginKey
	for hub, ol := range layouts {
		for _, sh := range ol.Layout.Shards {
			k := store.OriginKey{Hub: hub, Shard: sh.ID}
			if sh.State == store.ShardOpen || ours[k] < sh.End || ours[k] == 0 || !holdsChild(ours, hub, sh) {
				continue
			}
			all := true
			for _, p := range peers {
				ps, ok := p.Streams[stream]
				if !ok || !p.Alive {
					continue
				}
				if ps.Vector[k] < sh.End { // peers' vectors are implied already
					all = false
					break
				}
			}
			if all {
				drop = append(drop, k)
			}
		}
	}
	if len(drop) == 0 {
		return ours
	}
	out := make(map[store.OriginKey]uint64, len(ours))
	for k, v := range ours {
		out[k] = v
	}
	for _, k := range drop {
		delete(out, k)
	}
	return out
}

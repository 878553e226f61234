package replicate

import (
	"context"
	"errors"
	"time"

	"github.com/edgehub/edgehub/store"
)

// Deleting a replicated stream (docs/federation.md, "Deleting a replicated
// stream"). A replicated stream is one stream with one definition across
// the federation, so its deletion travels like any change of definition: a
// tombstone (a deleted definition) whose version is above every definition
// of the stream so far. Each hub holding a copy with an older definition
// deletes it, whatever origins its records have, and publishes a tombstone
// of its own, so the deletion outlives the hub that made it. A definition
// newer than the tombstone (the stream created again anywhere) wins as
// usual, and its new incarnation is pulled from its beginning. Tombstones
// are republished for Config.TombstoneTTL, then forgotten: a hub offline
// longer comes back with its copy and defines the stream again.

// tomb is a deletion this hub publishes.
type tomb struct {
	def Def
	at  time.Time // when this hub made or applied it
}

// StreamDeleted records that stream c is about to be deleted here (the hub
// calls it before deleting a stream): if it is replicated, its tombstone is
// published, so peers delete their copies and nobody's definition
// recreates it here.
func (r *Replicator) StreamDeleted(c store.StreamConfig) {
	if policyOf(c).Local() {
		return
	}
	// Not during a reconciliation that may have read the stream before
	// this and would publish its definition over the tombstone.
	r.defMu.Lock()
	defer r.defMu.Unlock()
	v, _ := defVersion(c)
	d := Def{Config: publishable(c), Version: max(uint64(time.Now().UnixNano()), v+1)}
	r.mu.Lock()
	if t, ok := r.tombs[c.Name]; ok && t.def.Version >= d.Version {
		d.Version = t.def.Version + 1
	}
	r.tombs[c.Name] = tomb{def: d, at: time.Now()}
	r.mu.Unlock()
	r.logger.Info("replicate: replicated stream deleted: its tombstone tells peers to delete their copies",
		"stream", c.Name, "version", d.Version, "ttl", r.cfg.TombstoneTTL)
	if r.cfg.Publisher != nil {
		r.cfg.Publisher.PublishDeleted(c.Name, d)
	}
}

// tombstones returns the newest deletion of each stream, ours and the
// peers' (dropping ours past their TTL).
func (r *Replicator) tombstones(peers []Peer, now time.Time) map[string]Def {
	out := map[string]Def{}
	r.mu.Lock()
	for name, t := range r.tombs {
		if ttl := r.cfg.TombstoneTTL; ttl > 0 && now.Sub(t.at) > ttl {
			delete(r.tombs, name)
			continue
		}
		out[name] = t.def
	}
	r.mu.Unlock()
	for _, p := range peers {
		for name, ps := range p.Streams {
			if d := ps.Deleted; d != nil {
				if cur, ok := out[name]; !ok || d.Version > cur.Version {
					out[name] = *d
				}
			}
		}
	}
	return out
}

// publishTombstones republishes our tombstones of streams we do not hold
// (a no-op when unchanged) and forgets those of streams created here again,
// whose definition now takes the same gossip key.
func (r *Replicator) publishTombstones(local map[string]store.StreamConfig) {
	r.mu.Lock()
	pub := map[string]Def{}
	for name, t := range r.tombs {
		if _, ok := local[name]; ok {
			delete(r.tombs, name)
			continue
		}
		pub[name] = t.def
	}
	r.mu.Unlock()
	if r.cfg.Publisher == nil {
		return
	}
	for name, d := range pub {
		r.cfg.Publisher.PublishDeleted(name, d)
	}
}

// applyTombstone deletes our copy of c if a tombstone newer than its
// definition says so, and reports whether it did (or tried).
func (r *Replicator) applyTombstone(ctx context.Context, c store.StreamConfig, tombs map[string]Def) bool {
	t, ok := tombs[c.Name]
	if !ok || policyOf(c).Local() || c.Meta[MetaDef] == "" {
		return false
	}
	v, _ := defVersion(c)
	if v >= t.Version {
		return false
	}
	r.mu.Lock()
	r.tombs[c.Name] = tomb{def: t, at: time.Now()}
	r.mu.Unlock()
	if r.cfg.Publisher != nil {
		r.cfg.Publisher.PublishDeleted(c.Name, t)
	}
	if err := r.cfg.Store.DeleteStream(ctx, c.Name); err != nil && !errors.Is(err, store.ErrStreamNotFound) {
		r.logger.Warn("replicate: deleting a stream the federation deleted", "stream", c.Name, "err", err)
		return true
	}
	r.logger.Warn("replicate: stream deleted by the federation: a peer deleted it after the definition held here",
		"stream", c.Name, "ours", v, "deleted", t.Version)
	return true
}

package replicate

import (
	"context"
	"strings"

	"github.com/edgehub/edgehub/quic"
	"github.com/edgehub/edgehub/store"
)

// Incarnations (docs/federation.md, "Incarnations"). A stream deleted and
// created again at its origin hub numbers its records from 1 again, under a
// new incarnation. Origin sequences therefore mean something only within
// one incarnation of the origin's stream: every hub records, per stream and
// origin hub, the incarnation its watermarks of that origin count in
// (store.Stream.OriginIncarnation), publishes it with its vector, and sends
// it with each pull. When the origin announces a new incarnation, the hub
// forgets its positions of that origin (watermarks, origin index entries,
// gaps) and pulls the new incarnation from its beginning; records of the
// old one that it holds stay. A server asked for positions in an
// incarnation it does not hold refuses the pull.

// sameIncarnation reports whether peer stream ps counts origin hub's
// records in incarnation inc, as far as anyone knows ("" is unknown: a hub
// from before incarnations, or an origin not heard of yet).
func sameIncarnation(ps PeerStream, hub, inc string) bool {
	theirs := ps.Incarnations[hub]
	return theirs == "" || inc == "" || theirs == inc
}

// authoritative reports whether peer speaks for origin hub's incarnation:
// the origin itself, or the hub whose plugins' origins hub names
// ("HUB/plugin/...").
func authoritative(peer, hub string) bool {
	return hub == peer || strings.HasPrefix(hub, peer+"/")
}

// syncIncarnations follows the incarnations peers announce for the origins
// of st: an unknown one is adopted; a different one replaces ours if the
// origin itself announces it (or, from a relay, if it is newer: the origin
// may be unreachable), after the pulls of that origin stopped. A relay
// announcing an older one is no source of that origin (sameIncarnation).
func (r *Replicator) syncIncarnations(ctx context.Context, st *store.Stream, peers []Peer) error {
	type claim struct {
		inc, peer string
		auth      bool
	}
	best := map[string]claim{}
	for _, p := range peers {
		ps, ok := p.Streams[st.Name()]
		if !ok || !p.Alive {
			continue
		}
		for hub, inc := range ps.Incarnations {
			if authoritative(r.cfg.Self, hub) || inc == "" {
				continue // our own origins (and our plugins') are ours to say
			}
			c := claim{inc: inc, peer: p.Name, auth: authoritative(p.Name, hub)}
			if b, ok := best[hub]; !ok || (c.auth && !b.auth) || (c.auth == b.auth && c.inc > b.inc) {
				best[hub] = c
			}
		}
	}
	for hub, c := range best {
		ours := st.OriginIncarnation(hub)
		switch {
		case ours == c.inc:
		case ours == "":
			if _, err := st.SetOriginIncarnation(ctx, hub, c.inc, false); err != nil {
				return err
			}
		case c.auth || c.inc > ours:
			if err := r.restartOrigin(ctx, st, hub, ours, c.inc, c.peer); err != nil {
				return err
			}
		}
	}
	return nil
}

// restartOrigin stops the pulls of origin hub of st, forgets what this hub
// recorded of the origin's old incarnation and records the new one; the
// next reconciliation pulls it from its beginning.
func (r *Replicator) restartOrigin(ctx context.Context, st *store.Stream, hub, old, inc, peer string) error {
	r.mu.Lock()
	var stopped []*task
	for k, t := range r.tasks {
		if k.stream == st.Name() && k.origin.Hub == hub {
			t.cancel()
			delete(r.tasks, k)
			stopped = append(stopped, t)
		}
	}
	r.mu.Unlock()
	// A pull still appending would store old records under the new
	// positions: wait for every one to end.
	for _, t := range stopped {
		select {
		case <-t.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	n, err := st.SetOriginIncarnation(ctx, hub, inc, true)
	if err != nil {
		return err
	}
	if err := r.gaps.forgetOrigin(st.Name(), hub); err != nil {
		r.logger.Warn("replicate: forgetting the gaps of an origin's old incarnation", "stream", st.Name(), "origin", hub, "err", err)
	}
	r.logger.Warn("replicate: the origin's stream was deleted and created again: pulling the new incarnation from its beginning",
		"stream", st.Name(), "origin", hub, "old_incarnation", old, "new_incarnation", inc, "announced_by", peer, "origin_shards_forgotten", n)
	return nil
}

// noticeRecreated forgets what the replicator kept about a stream of this
// name that was deleted and created again here (its gaps).
func (r *Replicator) noticeRecreated(st *store.Stream) {
	r.mu.Lock()
	old := r.streamInc[st.Name()]
	r.streamInc[st.Name()] = st.Incarnation()
	r.mu.Unlock()
	if old == "" || old == st.Incarnation() {
		return
	}
	if err := r.gaps.forget(func(name string) bool { return name != st.Name() }); err != nil {
		r.logger.Warn("replicate: forgetting the gaps of a recreated stream", "stream", st.Name(), "err", err)
	}
}

// checkIncarnation refuses a pull whose positions count in another
// incarnation of the origin's stream than the one held here.
func checkIncarnation(st *store.Stream, pr PullRequest, self string) error {
	if pr.Incarnation == "" {
		return nil
	}
	held := st.Incarnation()
	if pr.Origin.Hub != self {
		held = st.OriginIncarnation(pr.Origin.Hub)
	}
	if held == "" || held == pr.Incarnation {
		return nil
	}
	return quic.Errorf(quic.CodeUnavailable, "stream %q: origin %s is at incarnation %s here, the pull counts in %s (the stream was deleted and created again)",
		pr.Stream, pr.Origin.Hub, held, pr.Incarnation)
}

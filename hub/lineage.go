package hub

import (
	"context"

	"github.com/edgehub/edgehub/quic"
	"github.com/edgehub/edgehub/store"
)

// The data plane's side of resharding (docs/resharding.md sections 2 and
// 3): layouts on the wire, and the lineage hold of subscriptions.

// wireLayout is l as LAYOUT frames and INFO carry it.
func wireLayout(l store.Layout) quic.Layout {
	w := quic.Layout{Version: l.Version, NextID: uint32(len(l.Shards)), Shards: make([]quic.LayoutShard, len(l.Shards))}
	for i, sh := range l.Shards {
		w.Shards[i] = quic.LayoutShard{ID: sh.ID, State: quic.ShardState(sh.State), HashStart: sh.HashStart,
			HashEnd: sh.HashEnd, End: sh.End, Parents: append([]uint32{}, sh.Parents...)}
	}
	return w
}

// sendLayouts sends the stream's layout as a ft frame now and after every
// change, until ctx ends or a send fails. The layout is read after taking
// the change channel, so a change between the two is never missed.
func sendLayouts(ctx context.Context, st *store.Stream, s *quic.Stream, ft quic.FrameType) error {
	for {
		changed := st.LayoutChanged()
		l := wireLayout(st.Layout())
		if err := s.Send(ft, &l); err != nil {
			return err
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil
		}
	}
}

// shardClosed reports whether shard id of st is closed or retired.
func shardClosed(st *store.Stream, id uint32) bool {
	l := st.Layout()
	return int(id) < len(l.Shards) && l.Shards[id].State != store.ShardOpen
}

// held tracks, for one subscription, which of its shards it may send
// (docs/resharding.md section 2). An "all shards" subscription (n = 0)
// holds a shard back until every parent is finished for it, whatever the
// client's flags, and adds the shards reshards create after the open;
// an explicit list is sent as asked. A closed shard is finished once its
// end has been sent (or was below the subscription's start) and its
// parents are finished: an empty or retired shard between two reshards
// must not release its children before its own parents are read.
type held struct {
	all     bool // n = 0: hold children, follow new shards
	lineage bool // the client asked for LAYOUT and SHARD_END frames
	layout  store.Layout
	index   map[uint32]int // shard id → position in the subscription's slices
	waiting []bool         // held back: a parent is not finished yet
	done    []bool         // finished: nothing more will be sent
	resumed []bool         // the client gave a position: a released shard starts there
	ended   []bool         // SHARD_END sent (or not owed: the shard is not closed)
}

func (h *held) add(id uint32, waiting, done, resumed bool) {
	h.index[id] = len(h.waiting)
	h.waiting = append(h.waiting, waiting)
	h.done = append(h.done, done)
	h.resumed = append(h.resumed, resumed)
	h.ended = append(h.ended, false)
}

// finish marks the closed shards sent to their end as done, sends their
// SHARD_END to lineage clients, and releases the held shards whose parents
// are now all finished, at their first live record (or resume position),
// until nothing changes.
func (h *held) finish(st *store.Stream, s *quic.Stream, shards []int, next []uint64) error {
	for changed := true; changed; {
		changed = false
		for i, sh := range shards {
			if h.waiting[i] {
				if h.all && int(sh) < len(h.layout.Shards) && h.parentsDone(h.layout.Shards[sh]) {
					h.waiting[i] = false
					if !h.resumed[i] && h.layout.Shards[sh].State != store.ShardRetired {
						first, _, _ := st.Bounds(sh)
						next[i] = max(first, 1)
					}
					changed = true
				}
				continue
			}
			end, closed := h.closedEnd(sh)
			if !closed {
				continue
			}
			if !h.done[i] && next[i] > end {
				h.done[i] = true
				changed = true
			}
			if h.done[i] && !h.ended[i] {
				h.ended[i] = true
				if h.lineage {
					if err := s.Send(quic.FrameShardEnd, &quic.ShardEnd{Shard: uint32(sh), End: end}); err != nil {
						return err
					}
				}
			}
		}
	}
	return nil
}

// pending reports whether finish has work: a closed shard sent to its end
// and not yet marked.
func (h *held) pending(shards []int, next []uint64) bool {
	for i, sh := range shards {
		if end, closed := h.closedEnd(sh); closed && !h.waiting[i] && (!h.done[i] && next[i] > end || h.done[i] && !h.ended[i]) {
			return true
		}
	}
	return false
}

// refresh takes the stream's new layout: sends it to lineage clients, and
// in an "all shards" subscription follows the shards created since, held
// until their parents are finished. It returns the grown slices.
func (h *held) refresh(st *store.Stream, s *quic.Stream, shards []int, next []uint64) ([]int, []uint64, error) {
	h.layout = st.Layout()
	if h.lineage {
		l := wireLayout(h.layout)
		if err := s.Send(quic.FrameConsumeLayout, &l); err != nil {
			return shards, next, err
		}
	}
	if !h.all {
		return shards, next, nil
	}
	for _, sh := range h.layout.Shards {
		if _, ok := h.index[sh.ID]; ok {
			continue
		}
		// Held even when retired: finished only once its parents are.
		h.add(sh.ID, true, false, false)
		shards = append(shards, int(sh.ID))
		next = append(next, sh.End+1) // replaced at release unless retired
	}
	return shards, next, nil
}

// parentsDone reports whether every parent of sh is finished.
func (h *held) parentsDone(sh store.ShardLayout) bool {
	for _, p := range sh.Parents {
		// A parent the subscription does not follow cannot be waited
		// for; only n = 0 holds, and it follows every id.
		if i, ok := h.index[p]; ok && !h.done[i] {
			return false
		}
	}
	return true
}

// closedEnd returns the end of shard id if it is closed or retired.
func (h *held) closedEnd(id int) (uint64, bool) {
	if id >= len(h.layout.Shards) || h.layout.Shards[id].State == store.ShardOpen {
		return 0, false
	}
	return h.layout.Shards[id].End, true
}

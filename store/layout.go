package store

import (
	"sort"

	"github.com/edgehub/edgehub/internal/record"
)

// ShardState is a shard's place in its lifecycle (docs/store.md "Layout").
type ShardState uint8

const (
	// ShardOpen takes appends.
	ShardOpen ShardState = iota
	// ShardClosed is read-only: a reshard closed it and its End is final.
	ShardClosed
	// ShardRetired is closed and retention removed every record of it. It
	// stays in the layout (ids are never reused, children name it) but is
	// gone from listings.
	ShardRetired
)

func (s ShardState) String() string {
	switch s {
	case ShardOpen:
		return "open"
	case ShardClosed:
		return "closed"
	case ShardRetired:
		return "retired"
	}
	return "unknown"
}

// ShardLayout is one shard of a Layout.
type ShardLayout struct {
	ID                 uint32
	State              ShardState
	HashStart, HashEnd uint64 // inclusive hash range
	End                uint64 // last sequence; valid once State != ShardOpen (0: never held a record)
	ClosedAt           int64  // Unix ns of the close; 0 while open
	Parents, Children  []uint32
}

// Layout is a stream's shards and their lineage. Shards is indexed by id:
// Shards[i].ID == i, retired shards included. The open shards' ranges
// partition the hash space.
type Layout struct {
	Version uint64 // 0: never resharded
	Shards  []ShardLayout
}

// ShardFor returns the open shard owning hash (a binary search over the
// open ranges). For layout version 0 it equals record.ShardForHash(hash, n).
func (l Layout) ShardFor(hash uint64) uint32 {
	open := l.Open()
	i := sort.Search(len(open), func(i int) bool { return open[i].HashEnd >= hash })
	if i == len(open) {
		i = len(open) - 1 // unreachable for a valid layout: the last open range ends at 2^64-1
	}
	return open[i].ID
}

// Open returns the open shards in hash order.
func (l Layout) Open() []ShardLayout {
	out := make([]ShardLayout, 0, len(l.Shards))
	for _, sh := range l.Shards {
		if sh.State == ShardOpen {
			out = append(out, sh)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].HashStart < out[j].HashStart })
	return out
}

// uniformLayout is layout version 0 of a stream created with n shards: ids
// 0..n-1 with record.HashRange's ranges, all open. A stream never resharded
// (format 2) has exactly this layout and stores none.
func uniformLayout(n int) Layout {
	l := Layout{Shards: make([]ShardLayout, n)}
	for i := range l.Shards {
		lo, hi := record.HashRange(i, n)
		l.Shards[i] = ShardLayout{ID: uint32(i), HashStart: lo, HashEnd: hi}
	}
	return l
}

// Layout returns a snapshot of the stream's layout. The caller may keep it;
// it does not change (a reshard publishes a new one).
func (s *Stream) Layout() Layout {
	l := *s.layout.Load()
	l.Shards = append([]ShardLayout(nil), l.Shards...)
	return l
}

// LayoutChanged returns a channel closed at the next reshard or retirement.
// Readers that follow the lineage select on it and then call Layout.
func (s *Stream) LayoutChanged() <-chan struct{} {
	s.layoutMu.Lock()
	defer s.layoutMu.Unlock()
	return s.layoutCh
}

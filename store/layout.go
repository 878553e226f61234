package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
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
	if l.Version == 0 && len(l.Shards) > 0 {
		// Never resharded: the uniform ranges, found by arithmetic
		// (TestLayoutShardForUniform checks that search agrees).
		return uint32(record.ShardForHash(hash, len(l.Shards)))
	}
	return l.search(hash)
}

// search finds the open shard owning hash by binary search.
func (l Layout) search(hash uint64) uint32 {
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
// it does not change (a reshard publishes a new one). Its Parents and
// Children slices are shared with the store: read them, do not modify them.
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

// layoutEncoding is the first byte of m/layout.
const layoutEncoding = 0x01

// Caps on a stream's shards (docs/store.md "Resharding"): the open shards
// and the ids ever assigned. A stream created with more than
// maxOpenShards shards may keep that many open.
const (
	maxOpenShards = 256
	maxShardIDs   = 4096
)

// encodeLayout is m/layout: 0x01 ‖ uvarint version ‖ uvarint next_id ‖
// uvarint n ‖ n × (uvarint id ‖ state ‖ BE lo ‖ BE hi ‖ uvarint end ‖
// varint closed_at ‖ uvarint #parents ‖ ids ‖ uvarint #children ‖ ids).
// Every id ever assigned has an entry, so next_id == n.
func encodeLayout(l Layout) []byte {
	b := []byte{layoutEncoding}
	b = binary.AppendUvarint(b, l.Version)
	b = binary.AppendUvarint(b, uint64(len(l.Shards)))
	b = binary.AppendUvarint(b, uint64(len(l.Shards)))
	for _, sh := range l.Shards {
		b = binary.AppendUvarint(b, uint64(sh.ID))
		b = append(b, byte(sh.State))
		b = binary.BigEndian.AppendUint64(b, sh.HashStart)
		b = binary.BigEndian.AppendUint64(b, sh.HashEnd)
		b = binary.AppendUvarint(b, sh.End)
		b = binary.AppendVarint(b, sh.ClosedAt)
		b = binary.AppendUvarint(b, uint64(len(sh.Parents)))
		for _, p := range sh.Parents {
			b = binary.AppendUvarint(b, uint64(p))
		}
		b = binary.AppendUvarint(b, uint64(len(sh.Children)))
		for _, c := range sh.Children {
			b = binary.AppendUvarint(b, uint64(c))
		}
	}
	return b
}

// layoutReader is a sticky-error reader: every count is bounded by the
// bytes left, so a damaged value cannot make it allocate much.
type layoutReader struct {
	b   []byte
	err error
}

func (r *layoutReader) fail(format string, a ...any) {
	if r.err == nil {
		r.err = fmt.Errorf(format, a...)
	}
}

func (r *layoutReader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 || n != len(binary.AppendUvarint(nil, v)) {
		r.fail("bad uvarint") // overlong encodings too: one value, one encoding
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *layoutReader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 || n != len(binary.AppendVarint(nil, v)) {
		r.fail("bad varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *layoutReader) u64() uint64 {
	if r.err != nil {
		return 0
	}
	if len(r.b) < 8 {
		r.fail("short value")
		return 0
	}
	v := binary.BigEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

func (r *layoutReader) byte1() byte {
	if r.err != nil {
		return 0
	}
	if len(r.b) < 1 {
		r.fail("short value")
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

// count reads a count of items of at least min bytes each.
func (r *layoutReader) count(min int) int {
	n := r.uvarint()
	if r.err == nil && n > uint64(len(r.b)/min) {
		r.fail("count %d exceeds the %d bytes left", n, len(r.b))
		return 0
	}
	return int(n)
}

func (r *layoutReader) ids(nextID uint64) []uint32 {
	n := r.count(1)
	if n == 0 {
		return nil
	}
	out := make([]uint32, n)
	for i := range out {
		id := r.uvarint()
		if r.err == nil && id >= nextID {
			r.fail("lineage names shard %d, next id is %d", id, nextID)
		}
		out[i] = uint32(id)
	}
	return out
}

// decodeLayout decodes m/layout and checks every invariant that needs no
// other key: ids dense below next_id without duplicates, valid states and
// ranges, open ranges partitioning the hash space, closed fields only on
// closed shards, parents and children naming each other.
func decodeLayout(v []byte) (Layout, error) {
	r := &layoutReader{b: v}
	if enc := r.byte1(); r.err == nil && enc != layoutEncoding {
		return Layout{}, fmt.Errorf("layout: unknown encoding 0x%02x", enc)
	}
	var l Layout
	l.Version = r.uvarint()
	nextID := r.uvarint()
	n := r.count(20) // id, state, lo, hi, end, closed_at, two counts
	if r.err == nil && (uint64(n) != nextID || n == 0 || nextID > maxShardIDs) {
		r.fail("%d entries for next id %d", n, nextID)
	}
	if r.err == nil {
		l.Shards = make([]ShardLayout, n)
	}
	seen := make([]bool, len(l.Shards))
	for i := 0; i < n && r.err == nil; i++ {
		var sh ShardLayout
		id := r.uvarint()
		sh.State = ShardState(r.byte1())
		sh.HashStart, sh.HashEnd = r.u64(), r.u64()
		sh.End = r.uvarint()
		sh.ClosedAt = r.varint()
		sh.Parents = r.ids(nextID)
		sh.Children = r.ids(nextID)
		if r.err != nil {
			break
		}
		switch {
		case id >= nextID:
			r.fail("shard id %d, next id is %d", id, nextID)
		case seen[id]:
			r.fail("shard %d listed twice", id)
		case id != uint64(i):
			r.fail("shard %d listed at position %d: entries are in id order", id, i)
		case sh.State > ShardRetired:
			r.fail("shard %d: unknown state %d", id, sh.State)
		case sh.HashStart > sh.HashEnd:
			r.fail("shard %d: empty range [%x, %x]", id, sh.HashStart, sh.HashEnd)
		case sh.State == ShardOpen && (sh.End != 0 || sh.ClosedAt != 0 || len(sh.Children) != 0):
			r.fail("shard %d is open but has an end, a close time or children", id)
		case sh.State != ShardOpen && len(sh.Children) == 0:
			r.fail("shard %d is closed without children", id)
		}
		if r.err != nil {
			break
		}
		seen[id] = true
		sh.ID = uint32(id)
		l.Shards[id] = sh
	}
	if r.err == nil && len(r.b) != 0 {
		r.fail("%d bytes after the layout", len(r.b))
	}
	if r.err != nil {
		return Layout{}, fmt.Errorf("layout: %w", r.err)
	}
	if err := l.check(); err != nil {
		return Layout{}, fmt.Errorf("layout: %w", err)
	}
	return l, nil
}

// check verifies the invariants of a whole layout: open ranges partition
// [0, 2^64-1], and lineage is symmetric (a child names each parent that
// names it) with no shard its own parent.
func (l Layout) check() error {
	open := l.Open()
	if len(open) == 0 {
		return errors.New("no open shard")
	}
	if len(open) > max(maxOpenShards, MaxShards) {
		return fmt.Errorf("%d open shards", len(open))
	}
	var next uint64
	for i, sh := range open {
		if sh.HashStart != next || (i > 0 && next == 0) {
			return fmt.Errorf("open shard %d starts at %x, want %x: the open ranges do not partition the hash space", sh.ID, sh.HashStart, next)
		}
		next = sh.HashEnd + 1 // wraps to 0 after the last
	}
	if open[len(open)-1].HashEnd != ^uint64(0) {
		return fmt.Errorf("the open ranges end at %x, not at the top of the hash space", open[len(open)-1].HashEnd)
	}
	has := func(ids []uint32, id uint32) bool { return slices.Contains(ids, id) }
	for _, sh := range l.Shards {
		for _, p := range sh.Parents {
			if p == sh.ID || !has(l.Shards[p].Children, sh.ID) || l.Shards[p].State == ShardOpen {
				return fmt.Errorf("shard %d names parent %d, which does not name it as a closed parent", sh.ID, p)
			}
		}
		for _, c := range sh.Children {
			if c == sh.ID || !has(l.Shards[c].Parents, sh.ID) {
				return fmt.Errorf("shard %d names child %d, which does not name it", sh.ID, c)
			}
		}
	}
	return nil
}

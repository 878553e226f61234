package store

import (
	"context"
	"errors"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"

	"github.com/edgehub/edgehub/internal/record"
)

// loadLayout reads the stream's layout: m/layout in a format-3 file, the
// uniform layout of the creation count in a format-2 file (which has none
// and is left unwritten, so an older store can still open it).
func (s *Stream) loadLayout(m *bolt.Bucket, created int) (Layout, error) {
	format := m.Get(keyFormat)
	v := m.Get(keyLayout)
	corrupt := func(err error) (Layout, error) {
		return Layout{}, &CorruptError{File: s.path, Shard: -1, Err: err}
	}
	if len(format) == 8 && format[7] == formatVersion {
		if v != nil {
			return corrupt(errors.New("format 2 file with a layout"))
		}
		return uniformLayout(created), nil
	}
	if v == nil {
		return corrupt(errors.New("format 3 file without a layout"))
	}
	l, err := decodeLayout(v)
	if err != nil {
		return corrupt(err)
	}
	if l.Version == 0 || len(l.Shards) < created {
		return corrupt(fmt.Errorf("layout version %d with %d shard ids for a stream created with %d", l.Version, len(l.Shards), created))
	}
	return l, nil
}

// reshardPlan closes some open shards and opens children covering exactly
// their union: the one primitive split, merge and reshard are plans for.
type reshardPlan struct {
	op       string
	base     uint64      // layout version the plan was made from
	close    []uint32    // open shards to close
	children [][2]uint64 // inclusive ranges of the children, in hash order
}

// Split closes open shard and opens two children [lo, at-1] and [at, hi].
// at 0 splits at the midpoint lo + (hi-lo)/2 + 1. A shard of one hash
// cannot be split. The split is durable when Split returns.
func (s *Stream) Split(ctx context.Context, shard uint32, at uint64) (Layout, error) {
	l := s.Layout()
	sh, err := s.openShard(l, shard, "split")
	if err != nil {
		return Layout{}, err
	}
	lo, hi := sh.HashStart, sh.HashEnd
	if at == 0 {
		at = lo + (hi-lo)/2 + 1
	}
	if lo == hi || at <= lo || at > hi {
		return Layout{}, fmt.Errorf("store: split %q shard %d: %w: split point %016x outside (%016x, %016x]", s.name, shard, ErrInvalidShard, at, lo, hi)
	}
	return s.reshard(ctx, reshardPlan{op: "split", base: l.Version, close: []uint32{shard},
		children: [][2]uint64{{lo, at - 1}, {at, hi}}})
}

// Merge closes two open shards with adjacent ranges and opens one child
// owning both. It is durable when Merge returns.
func (s *Stream) Merge(ctx context.Context, a, b uint32) (Layout, error) {
	l := s.Layout()
	sa, err := s.openShard(l, a, "merge")
	if err != nil {
		return Layout{}, err
	}
	sb, err := s.openShard(l, b, "merge")
	if err != nil {
		return Layout{}, err
	}
	if sb.HashStart < sa.HashStart {
		sa, sb = sb, sa
	}
	if a == b || sa.HashEnd+1 != sb.HashStart {
		return Layout{}, fmt.Errorf("store: merge %q shards %d and %d: %w", s.name, a, b, ErrNotAdjacent)
	}
	return s.reshard(ctx, reshardPlan{op: "merge", base: l.Version, close: []uint32{sa.ID, sb.ID},
		children: [][2]uint64{{sa.HashStart, sb.HashEnd}}})
}

// Reshard makes the open shards exactly the uniform ranges of open shards
// (record.HashRange(i, open)), in one transaction: every open shard whose
// range is not one of them is closed, and a child is opened for each range
// that is not already an open shard. A reshard to the current ranges
// changes nothing. It is durable when Reshard returns.
func (s *Stream) Reshard(ctx context.Context, open int) (Layout, error) {
	l := s.Layout()
	if open < 1 || open > s.maxOpen() {
		return Layout{}, fmt.Errorf("store: reshard %q to %d shards: %w (at most %d open)", s.name, open, ErrTooManyShards, s.maxOpen())
	}
	type rng = [2]uint64
	have := map[rng]uint32{}
	for _, sh := range l.Open() {
		have[rng{sh.HashStart, sh.HashEnd}] = sh.ID
	}
	want := map[rng]bool{}
	p := reshardPlan{op: "reshard", base: l.Version}
	for i := 0; i < open; i++ {
		lo, hi := record.HashRange(i, open)
		want[rng{lo, hi}] = true
		if _, ok := have[rng{lo, hi}]; !ok {
			p.children = append(p.children, rng{lo, hi})
		}
	}
	for _, sh := range l.Open() {
		if !want[rng{sh.HashStart, sh.HashEnd}] {
			p.close = append(p.close, sh.ID)
		}
	}
	if len(p.close) == 0 {
		return l, nil
	}
	return s.reshard(ctx, p)
}

func (s *Stream) openShard(l Layout, id uint32, op string) (ShardLayout, error) {
	if int(id) >= len(l.Shards) {
		return ShardLayout{}, fmt.Errorf("store: %s %q: %w %d of %d", op, s.name, ErrInvalidShard, id, len(l.Shards))
	}
	sh := l.Shards[id]
	if sh.State != ShardOpen {
		return ShardLayout{}, fmt.Errorf("store: %s %q shard %d: %w (%s)", op, s.name, id, ErrShardClosed, sh.State)
	}
	return sh, nil
}

// maxOpen is the cap on open shards: maxOpenShards, or the creation count
// if a stream was created with more.
func (s *Stream) maxOpen() int { return max(maxOpenShards, s.cfg.Load().Shards) }

// next builds the layout after p from cur, on the writer goroutine (table
// is the writer's shard table, whose Next values are exact there).
func (s *Stream) nextLayout(cur *Layout, table []*shard, p reshardPlan, now int64) (Layout, error) {
	if cur.Version != p.base {
		return Layout{}, fmt.Errorf("%w: planned on layout version %d, now %d", ErrReshardBusy, p.base, cur.Version)
	}
	nl := Layout{Version: cur.Version + 1, Shards: slices.Clone(cur.Shards)}
	for _, id := range p.close {
		if nl.Shards[id].State != ShardOpen {
			return Layout{}, fmt.Errorf("%w: shard %d is %s", ErrReshardBusy, id, nl.Shards[id].State)
		}
	}
	openAfter := len(cur.Open()) - len(p.close) + len(p.children)
	if openAfter > s.maxOpen() || len(nl.Shards)+len(p.children) > maxShardIDs {
		return Layout{}, fmt.Errorf("%w: %d open shards (at most %d), %d ids ever (at most %d)",
			ErrTooManyShards, openAfter, s.maxOpen(), len(nl.Shards)+len(p.children), maxShardIDs)
	}
	for _, id := range p.close {
		sh := &nl.Shards[id]
		sh.State, sh.End, sh.ClosedAt = ShardClosed, table[id].meta.Next-1, now
		sh.Children = nil
	}
	for _, c := range p.children {
		child := ShardLayout{ID: uint32(len(nl.Shards)), HashStart: c[0], HashEnd: c[1]}
		for _, id := range p.close {
			if par := &nl.Shards[id]; par.HashStart <= c[1] && c[0] <= par.HashEnd {
				child.Parents = append(child.Parents, id)
				par.Children = append(par.Children, child.ID)
			}
		}
		nl.Shards = append(nl.Shards, child)
	}
	if err := nl.check(); err != nil {
		return Layout{}, fmt.Errorf("store: %s plan is invalid: %w", p.op, err)
	}
	return nl, nil
}

// reshard runs p in one maintenance transaction on the writer: every
// record committed before it is in a parent, every one after in a child.
func (s *Stream) reshard(ctx context.Context, p reshardPlan) (Layout, error) {
	var nl Layout
	var added []*shard
	err := s.maintain(ctx, func(tx *bolt.Tx) error {
		var err error
		nl, err = s.nextLayout(s.layout.Load(), s.table(), p, s.st.cfg.Now().UnixNano())
		if err != nil {
			return err
		}
		m := tx.Bucket(bucketMeta)
		added = added[:0]
		for _, sh := range nl.Shards[len(s.table()):] {
			if _, err := tx.CreateBucket(chunkBucket(int(sh.ID))); err != nil {
				return err
			}
			meta := shardMeta{Next: 1}
			if err := m.Put(shardKey(int(sh.ID)), meta.encode()); err != nil {
				return err
			}
			added = append(added, &shard{meta: meta, notify: make(chan struct{})})
		}
		if err := m.Put(keyLayout, encodeLayout(nl)); err != nil {
			return err
		}
		if err := m.Put(keyFormat, u64(formatResharded)); err != nil {
			return err
		}
		chaosReshard("before-commit")
		return nil
	}, func() {
		chaosReshard("after-commit")
		for _, sh := range added {
			sh.publish(sh.meta, sh.meta.Next)
		}
		s.publishLayout(append(slices.Clone(s.table()), added...), &nl)
	})
	if err == nil {
		err = s.syncIfRelaxed()
	}
	if err != nil {
		return Layout{}, fmt.Errorf("store: %s %q: %w", p.op, s.name, err)
	}
	s.logger.Info("store: resharded", "op", p.op, "layout_version", nl.Version, "closed", p.close, "open", len(nl.Open()))
	return s.Layout(), nil
}

// publishLayout makes table and l current (on the writer goroutine) and
// wakes LayoutChanged. The table goes first: a reader that loads the
// layout and then the table finds every id of the layout in the table.
func (s *Stream) publishLayout(table []*shard, l *Layout) {
	s.shards.Store(&table)
	s.layout.Store(l)
	s.layoutMu.Lock()
	close(s.layoutCh)
	s.layoutCh = make(chan struct{})
	s.layoutMu.Unlock()
}

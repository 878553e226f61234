package plugins

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgehub/edgehub/internal/backoff"
	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/store"
	"github.com/edgehub/edgehub/wasmhost"
)

// Plugins across a reshard (docs/plugins.md, "Resharded inputs"). A
// plugin reads an input shard only once every parent of it is finished
// for the plugin, and a child's run starts from the parents' final state:
//
//   - finished: the shard is closed and its checkpoint passed End (or it
//     is retired, or marked done, or empty). A runner whose input shard is
//     closed processes to End, commits, and exits.
//   - handoff: one plugins.db transaction that creates the run bucket of
//     every child whose parents are all finished, with its checkpoint at
//     the child's first live record and its keyed state from the parents'
//     final state; marks the parents done; and deletes a parent's state
//     once every child of it has a bucket. It is idempotent (a child with a
//     bucket is skipped), and the lineage loop runs it at start and after
//     every runner that finishes, so a crash in between is just a handoff
//     after the restart.
//
// State rule: a child takes the union of its parents' states; each key
// only if its hash is in the child's range when the definition says
// StateByKey. A key two parents hold with different values is a conflict:
// eh_state_merge resolves it, or the plugin pauses (ErrStateConflict).

// keyDone marks a run whose input shard is finished and handed off.
var keyDone = []byte("done")

// runInfo is what plugins.db holds of one run (plugin, input, shard).
type runInfo struct {
	exists   bool
	cp       checkpoint
	done     bool
	hasState bool
}

// finished reports whether sh is finished for a plugin whose run of it is
// ri; first is the shard's first live sequence.
func finished(sh store.ShardLayout, ri runInfo, first uint64) bool {
	switch {
	case sh.State == store.ShardOpen:
		return false
	case sh.State == store.ShardRetired, ri.done:
		return true
	case ri.exists:
		return ri.cp.Next > sh.End && ri.cp.PendingSeq == 0
	}
	return first > sh.End // nothing left to read
}

// lineagePlan is what a lineage pass does for one input.
type lineagePlan struct {
	create    []uint32 // children to create, in id order (parents before children)
	runnable  []uint32 // shards whose runner may run (bucket or root, not finished, parents finished)
	waiting   int      // shards not finished whose parents are not all finished
	dropState []uint32 // finished parents whose children all have buckets
	markDone  []uint32 // finished parents of created children not yet marked
}

// planLineage decides, from the layout and the runs, which children to
// create and which shards may run. running names shards whose runner is
// still running in this process: not finished, whatever their checkpoint
// says (a runner between its last commit and its exit may still fire a
// timer). firsts gives each shard's first live sequence.
// With create false it only reads: children without runs are left waiting.
func planLineage(l store.Layout, runs map[uint32]runInfo, running map[uint32]bool, firsts func(uint32) uint64, create bool) lineagePlan {
	var pl lineagePlan
	sim := make(map[uint32]runInfo, len(runs))
	for k, v := range runs {
		sim[k] = v
	}
	// A shard is finished for the plan once its run says so and its
	// parents are finished: an empty or retired shard between two
	// reshards must not release its children before its own parents are
	// read (their state reaches the children through it). Memoized: a
	// shard's run is final once the pass below has visited it, and fin
	// only looks at lower ids before that.
	memo := make(map[uint32]bool, len(l.Shards))
	var fin func(id uint32) bool
	fin = func(id uint32) bool {
		if int(id) >= len(l.Shards) {
			return true // not in the layout: nothing to wait for
		}
		if f, ok := memo[id]; ok {
			return f
		}
		f := !running[id] && finished(l.Shards[id], sim[id], firsts(id))
		for _, p := range l.Shards[id].Parents {
			f = f && (p >= id || fin(p))
		}
		memo[id] = f
		return f
	}
	// covered reports whether every shard of ids has a run or is retired
	// with its own children covered: a parent's state may go only once
	// nothing can still inherit it (gatherState looks through retired
	// shards without runs). Only used after the pass below, when sim is
	// final, so it is memoized.
	coveredMemo := map[uint32]bool{}
	var covered func(ids []uint32) bool
	covered = func(ids []uint32) bool {
		for _, c := range ids {
			if int(c) >= len(l.Shards) || sim[c].exists {
				continue
			}
			ok, known := coveredMemo[c]
			if !known {
				ok = l.Shards[c].State == store.ShardRetired && covered(l.Shards[c].Children)
				coveredMemo[c] = ok
			}
			if !ok {
				return false
			}
		}
		return true
	}
	created := map[uint32]bool{}
	// Ids are assigned densely and a child's id is above its parents':
	// one pass in id order sees every parent decided before its child.
	for _, sh := range l.Shards {
		ri := sim[sh.ID]
		parentsDone := true
		for _, p := range sh.Parents {
			if !fin(p) {
				parentsDone = false
			}
		}
		if create && !ri.exists && len(sh.Parents) > 0 && parentsDone && sh.State != store.ShardRetired {
			pl.create = append(pl.create, sh.ID)
			created[sh.ID] = true
			sim[sh.ID] = runInfo{exists: true, cp: checkpoint{Next: max(firsts(sh.ID), 1)}}
			for _, p := range sh.Parents {
				if pr := sim[p]; pr.exists && !pr.done {
					pr.done = true
					sim[p] = pr
					if !slices.Contains(pl.markDone, p) {
						pl.markDone = append(pl.markDone, p)
					}
				}
			}
			ri = sim[sh.ID]
		}
		if fin(sh.ID) || sh.State == store.ShardRetired {
			continue
		}
		switch {
		case !parentsDone, !ri.exists && len(sh.Parents) > 0:
			pl.waiting++
		case ri.exists || len(sh.Parents) == 0:
			pl.runnable = append(pl.runnable, sh.ID)
		}
	}
	for _, sh := range l.Shards {
		ri := sim[sh.ID]
		if !ri.hasState || len(sh.Children) == 0 || !fin(sh.ID) {
			continue
		}
		if covered(sh.Children) {
			pl.dropState = append(pl.dropState, sh.ID)
		}
	}
	return pl
}

// stateMerger resolves a conflict: key holds a in one parent and b in
// another. keep false drops the key from the child.
type stateMerger func(ctx context.Context, child uint32, key, a, b []byte) (value []byte, keep bool, err error)

// childState is the state a handoff gives one child.
type childState struct {
	id    uint32
	cp    checkpoint
	state map[string][]byte
}

// loadRuns reads the runs of plugin on input for every shard of l.
func loadRuns(tx *bolt.Tx, plugin, input string, l store.Layout) (map[uint32]runInfo, error) {
	runs := make(map[uint32]runInfo, len(l.Shards))
	for _, sh := range l.Shards {
		rb, err := runBucket(tx, plugin, input, int(sh.ID), false)
		if err != nil {
			return nil, err
		}
		if rb == nil {
			continue
		}
		ri := runInfo{exists: true, done: rb.Get(keyDone) != nil}
		if v := rb.Get(keyCheckpoint); v != nil {
			if ri.cp, err = decodeCheckpoint(v); err != nil {
				return nil, fmt.Errorf("checkpoint of %s/%d: %w", input, sh.ID, err)
			}
		} else {
			ri.exists = false // a bucket without a checkpoint is a run not begun
		}
		if st := rb.Bucket(bucketState); st != nil {
			k, _ := st.Cursor().First()
			ri.hasState = k != nil
		}
		runs[sh.ID] = ri
	}
	return runs, nil
}

// handoff runs one lineage pass for plugin def on input with layout l:
// it creates the children whose parents are finished and returns the plan
// (runnable shards included). Parents' states are read in one read
// transaction, conflicts are resolved with merge (nil: none can be)
// outside any transaction, and the children are written in one update
// transaction that skips a child someone created meanwhile.
// firsts gives each shard's first live sequence (firstsOf; tests pass
// hand-built layouts and their own).
func (m *Manager) handoff(ctx context.Context, def Definition, input string, firsts func(uint32) uint64, l store.Layout, running map[uint32]bool, merge stateMerger) (lineagePlan, error) {
	var pl lineagePlan
	var children []*childState
	var conflicts []conflict
	err := m.db.View(func(tx *bolt.Tx) error {
		runs, err := loadRuns(tx, def.Name, input, l)
		if err != nil {
			return err
		}
		allow := m.cfg.beforeHandoff == nil || m.cfg.beforeHandoff()
		pl = planLineage(l, runs, running, firsts, allow)
		created := map[uint32]bool{}
		for _, id := range pl.create {
			created[id] = true
		}
		for _, id := range pl.create {
			cs, cf, err := gatherState(tx, def, input, l, id, created)
			if err != nil {
				return err
			}
			cs.cp = checkpoint{Next: max(firsts(id), 1)}
			children = append(children, cs)
			conflicts = append(conflicts, cf...)
		}
		return nil
	})
	if err != nil {
		return pl, fmt.Errorf("plugins: %s: handoff %s: %w", def.Name, input, err)
	}
	if len(pl.create) == 0 && len(pl.dropState) == 0 && len(pl.markDone) == 0 {
		return pl, nil
	}
	byID := map[uint32]*childState{}
	for _, cs := range children {
		byID[cs.id] = cs
	}
	for _, c := range conflicts {
		cs := byID[c.child]
		if cur, ok := cs.state[c.key]; ok {
			c.a = cur // a third parent meets the merge of the first two
		} else {
			cs.state[c.key] = c.b // the merge of the first two dropped it
			continue
		}
		if merge == nil {
			return pl, fmt.Errorf("plugins: %s: handoff %s: %w: key %q of shard %d has different values in parents %d and %d (export %s to merge them)",
				def.Name, input, ErrStateConflict, c.key, c.child, c.parents[0], c.parents[1], "eh_state_merge")
		}
		v, keep, err := merge(ctx, c.child, []byte(c.key), c.a, c.b)
		if err != nil {
			return pl, fmt.Errorf("plugins: %s: handoff %s: %w: key %q of shard %d (parents %d and %d): eh_state_merge: %w",
				def.Name, input, ErrStateConflict, c.key, c.child, c.parents[0], c.parents[1], err)
		}
		if keep {
			cs.state[c.key] = bytes.Clone(v)
		} else {
			delete(cs.state, c.key)
		}
	}
	err = m.db.Update(func(tx *bolt.Tx) error {
		for _, cs := range children {
			rb, err := runBucket(tx, def.Name, input, int(cs.id), true)
			if err != nil {
				return err
			}
			if rb.Get(keyCheckpoint) != nil {
				continue // created by an earlier pass: idempotent
			}
			st := rb.Bucket(bucketState)
			cp := cs.cp
			keys := make([]string, 0, len(cs.state))
			for k := range cs.state {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			for _, k := range keys {
				v := cs.state[k]
				if err := st.Put([]byte(k), v); err != nil {
					return err
				}
				cp.StateBytes += int64(len(k) + len(v))
				cp.StateKeys++
			}
			if err := rb.Put(keyCheckpoint, cp.encode()); err != nil {
				return err
			}
		}
		for _, id := range pl.markDone {
			rb, err := runBucket(tx, def.Name, input, int(id), false)
			if err != nil || rb == nil {
				return err
			}
			if err := rb.Put(keyDone, []byte{1}); err != nil {
				return err
			}
		}
		for _, id := range pl.dropState {
			if err := dropState(tx, def.Name, input, id); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return pl, fmt.Errorf("plugins: %s: handoff %s: %w", def.Name, input, err)
	}
	return pl, nil
}

// dropState deletes a finished parent's state and zeroes its counters; its
// checkpoint and done mark stay.
func dropState(tx *bolt.Tx, plugin, input string, id uint32) error {
	rb, err := runBucket(tx, plugin, input, int(id), false)
	if err != nil || rb == nil {
		return err
	}
	if rb.Bucket(bucketState) != nil {
		if err := rb.DeleteBucket(bucketState); err != nil {
			return err
		}
	}
	if _, err := rb.CreateBucket(bucketState); err != nil {
		return err
	}
	v := rb.Get(keyCheckpoint)
	if v == nil {
		return nil
	}
	cp, err := decodeCheckpoint(v)
	if err != nil {
		return err
	}
	cp.StateBytes, cp.StateKeys = 0, 0
	return rb.Put(keyCheckpoint, cp.encode())
}

// conflict is a key two parents of child hold with different values.
type conflict struct {
	child   uint32
	key     string
	a, b    []byte
	parents [2]uint32
}

// gatherState is the union of the parents' states for child id (each key
// filtered by the child's hash range under StateByKey), with the keys held
// by two parents with different values listed as conflicts (the first
// parent's value stays in the map until resolved). A parent without a run
// (retired before any reader came, or created in this same pass, as an
// empty shard between two reshards is) passes on its own parents' states:
// the state travels with the keys' ranges through every generation.
func gatherState(tx *bolt.Tx, def Definition, input string, l store.Layout, id uint32, created map[uint32]bool) (*childState, []conflict, error) {
	sh := l.Shards[id]
	cs := &childState{id: id, state: map[string][]byte{}}
	from := map[string]uint32{}
	var conflicts []conflict
	seen := map[uint32]bool{}
	todo := slices.Clone(sh.Parents)
	for len(todo) > 0 {
		p := todo[0]
		todo = todo[1:]
		if seen[p] || int(p) >= len(l.Shards) {
			continue
		}
		seen[p] = true
		rb, err := runBucket(tx, def.Name, input, int(p), false)
		if err != nil {
			return nil, nil, err
		}
		if created[p] || rb == nil || rb.Get(keyCheckpoint) == nil {
			todo = append(todo, l.Shards[p].Parents...)
			continue
		}
		if rb.Bucket(bucketState) == nil {
			continue
		}
		err = rb.Bucket(bucketState).ForEach(func(k, v []byte) error {
			if def.StateByKey {
				if h := record.KeyHash(k); h < sh.HashStart || h > sh.HashEnd {
					return nil
				}
			}
			if old, ok := cs.state[string(k)]; ok {
				if !bytes.Equal(old, v) {
					conflicts = append(conflicts, conflict{child: id, key: string(k), a: old, b: bytes.Clone(v),
						parents: [2]uint32{from[string(k)], p}})
				}
				return nil
			}
			cs.state[string(k)] = bytes.Clone(v)
			from[string(k)] = p
			return nil
		})
		if err != nil {
			return nil, nil, err
		}
	}
	return cs, conflicts, nil
}

// firstsOf returns the first live sequence of each shard of s.
func firstsOf(s *store.Stream) func(uint32) uint64 {
	return func(id uint32) uint64 {
		first, _, err := s.Bounds(int(id))
		if err != nil {
			return 0
		}
		return first
	}
}

// lineage is the loop of one plugin on one input: it hands finished
// parents off to their children and starts the runners the layout allows,
// at every layout change and after every runner that ends.
type lineage struct {
	m       *Manager
	p       *plugin
	def     Definition
	mod     *wasmhost.Module
	in      *store.Stream
	inName  string
	started map[uint32]bool // runners started by this loop (never restarted by it)
	running map[uint32]bool
	exited  chan uint32
	waiting int
}

// startRunner starts the runner of shard id. From the loop (locked
// false) it takes startMu so that no runner starts once a drain began.
func (lin *lineage) startRunner(ctx context.Context, id uint32, locked bool) {
	m, p := lin.m, lin.p
	if lin.started[id] {
		return
	}
	if locked {
		m.startMu.Lock()
		defer m.startMu.Unlock()
		if m.draining {
			return
		}
	}
	lin.started[id] = true
	if lin.running == nil {
		lin.running = map[uint32]bool{}
	}
	lin.running[id] = true
	r := newRunner(m, p, lin.def, lin.mod, lin.in, int(id))
	if locked {
		p.mu.Lock()
	}
	p.runners = append(p.runners, r)
	if locked {
		p.mu.Unlock()
	}
	p.wg.Add(1)
	m.runWG.Add(1)
	go func() {
		defer p.wg.Done()
		defer m.runWG.Done()
		r.run(ctx)
		select {
		case lin.exited <- id:
		case <-ctx.Done():
		}
	}()
}

// run is the loop. For a stream never resharded it passes once (finding
// nothing to hand off) and waits for a layout change.
func (lin *lineage) run(ctx context.Context) {
	defer lin.setWaiting(0)
	for {
		ch := lin.in.LayoutChanged()
		l := lin.in.Layout()
		pl, err := lin.m.handoff(ctx, lin.def, lin.in.Name(), firstsOf(lin.in), l, lin.running, lin.merger())
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, ErrStateConflict) {
				lin.p.logs.add(LevelError, lin.in.Name(), -1, err.Error())
				lin.m.pauseAsync(lin.p, lin.def.Version, err.Error())
				return
			}
			lin.p.logger.Error("plugin: handoff failed; retrying", "input", lin.in.Name(), "err", err)
			if !backoff.Sleep(ctx, backoff.Delay(lin.def.BackoffMin, lin.def.BackoffMax, 1)) {
				return
			}
			continue
		}
		for _, id := range pl.create {
			lin.p.logs.add(LevelInfo, lin.in.Name(), int(id), fmt.Sprintf("input shard %d starts from its parents %v (handoff)", id, l.Shards[id].Parents))
		}
		lin.setWaiting(pl.waiting)
		for _, id := range pl.runnable {
			lin.startRunner(ctx, id, true)
		}
		select {
		case <-ctx.Done():
			return
		case <-ch:
		case id := <-lin.exited:
			delete(lin.running, id)
		}
	}
}

func (lin *lineage) setWaiting(n int) {
	lin.p.mu.Lock()
	defer lin.p.mu.Unlock()
	if lin.p.lineageWaiting == nil {
		lin.p.lineageWaiting = map[string]int{}
	}
	lin.p.lineageWaiting[lin.inName] += n - lin.waiting
	lin.waiting = n
}

// LineageWaiting returns, per input stream, how many of its shards some
// plugin may not start yet because a parent shard is not finished for it
// (edgehub_lineage_waiting_shards{reader="plugin"}); streams with none are
// absent.
func (m *Manager) LineageWaiting() map[string]int {
	m.mu.RLock()
	ps := make([]*plugin, 0, len(m.plugins))
	for _, p := range m.plugins {
		ps = append(ps, p)
	}
	m.mu.RUnlock()
	out := map[string]int{}
	for _, p := range ps {
		p.mu.Lock()
		for in, n := range p.lineageWaiting {
			if n > 0 {
				out[in] += n
			}
		}
		p.mu.Unlock()
	}
	return out
}

// merger returns the conflict resolver of the module: an instance of it
// serving the child shard, made at the first conflict and closed after
// the pass. nil when the module exports no eh_state_merge.
func (lin *lineage) merger() stateMerger {
	if lin.mod == nil || !lin.mod.HasStateMerge() {
		return nil
	}
	return func(ctx context.Context, child uint32, key, a, b []byte) ([]byte, bool, error) {
		inst, err := lin.mod.Instantiate(ctx, mergeHost{input: lin.inName, shard: child})
		if err != nil {
			return nil, false, err
		}
		defer inst.Close()
		if err := inst.Init(ctx, wasmhost.AppendConfig(nil, lin.def.guestConfig())); err != nil {
			return nil, false, err
		}
		v, keep, err := inst.StateMerge(ctx, key, a, b)
		return bytes.Clone(v), keep, err
	}
}

// mergeHost serves eh_init and eh_state_merge of the instance that merges
// state for a child shard: it reads and writes no state (the ABI refuses
// state reads in eh_state_merge; its answer goes to the Instance).
type mergeHost struct {
	input string
	shard uint32
}

func (mergeHost) Emit([]byte, wasmhost.OutputRecord, int, int) error { return nil }
func (mergeHost) StateGet([]byte) ([]byte, bool, error)              { return nil, false, nil }
func (mergeHost) StateSet(_, _ []byte) error                         { return nil }
func (mergeHost) StateDelete([]byte) error                           { return nil }
func (mergeHost) StateNext(_, _ []byte) ([]byte, bool, error)        { return nil, false, nil }
func (mergeHost) Log(wasmhost.Level, []byte)                         {}
func (mergeHost) Now() int64                                         { return time.Now().UnixNano() }
func (h mergeHost) Input() (string, uint32)                          { return h.input, h.shard }

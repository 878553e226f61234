package plugins

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/store"
)

// Hand-built layouts (the store's Split/Merge are exercised by the
// integration tests in reshard_test.go).

const half = uint64(1) << 63

// splitLayout: shard 0 of 1 split at the midpoint into 1 and 2.
func splitLayout(end uint64) store.Layout {
	return store.Layout{Version: 1, Shards: []store.ShardLayout{
		{ID: 0, State: store.ShardClosed, HashStart: 0, HashEnd: ^uint64(0), End: end, Children: []uint32{1, 2}},
		{ID: 1, State: store.ShardOpen, HashStart: 0, HashEnd: half - 1, Parents: []uint32{0}},
		{ID: 2, State: store.ShardOpen, HashStart: half, HashEnd: ^uint64(0), Parents: []uint32{0}},
	}}
}

// mergeLayout: shards 0 and 1 of 2 merged into 2.
func mergeLayout(end0, end1 uint64) store.Layout {
	return store.Layout{Version: 1, Shards: []store.ShardLayout{
		{ID: 0, State: store.ShardClosed, HashStart: 0, HashEnd: half - 1, End: end0, Children: []uint32{2}},
		{ID: 1, State: store.ShardClosed, HashStart: half, HashEnd: ^uint64(0), End: end1, Children: []uint32{2}},
		{ID: 2, State: store.ShardOpen, HashStart: 0, HashEnd: ^uint64(0), Parents: []uint32{0, 1}},
	}}
}

func TestPlanLineage(t *testing.T) {
	firsts := func(uint32) uint64 { return 1 }
	at := func(next uint64) runInfo { return runInfo{exists: true, cp: checkpoint{Next: next}, hasState: true} }
	tests := []struct {
		name     string
		l        store.Layout
		runs     map[uint32]runInfo
		running  map[uint32]bool
		create   []uint32
		runnable []uint32
		drop     []uint32
		waiting  int
	}{
		{name: "never resharded", l: store.Layout{Shards: []store.ShardLayout{{ID: 0}, {ID: 1, HashStart: half}}},
			runs: map[uint32]runInfo{0: at(5)}, runnable: []uint32{0, 1}},
		{name: "split, parent not at its end", l: splitLayout(10), runs: map[uint32]runInfo{0: at(10)},
			runnable: []uint32{0}, waiting: 2},
		{name: "split, parent at its end but still running", l: splitLayout(10), runs: map[uint32]runInfo{0: at(11)},
			running: map[uint32]bool{0: true}, runnable: []uint32{0}, waiting: 2},
		{name: "split, parent finished", l: splitLayout(10), runs: map[uint32]runInfo{0: at(11)},
			create: []uint32{1, 2}, runnable: []uint32{1, 2}, drop: []uint32{0}},
		{name: "split, timer firing pending", l: splitLayout(10),
			runs:     map[uint32]runInfo{0: {exists: true, cp: checkpoint{Next: 11, PendingSeq: 3}}},
			runnable: []uint32{0}, waiting: 2},
		{name: "split, handed off already", l: splitLayout(10),
			runs:     map[uint32]runInfo{0: {exists: true, done: true, cp: checkpoint{Next: 11}}, 1: at(1), 2: at(4)},
			runnable: []uint32{1, 2}},
		{name: "merge, one parent finished", l: mergeLayout(10, 20), runs: map[uint32]runInfo{0: at(11), 1: at(7)},
			runnable: []uint32{1}, waiting: 1},
		{name: "merge, both finished", l: mergeLayout(10, 20), runs: map[uint32]runInfo{0: at(11), 1: at(21)},
			create: []uint32{2}, runnable: []uint32{2}, drop: []uint32{0, 1}},
		{name: "merge, empty parent without run", l: mergeLayout(0, 20), runs: map[uint32]runInfo{1: at(21)},
			create: []uint32{2}, runnable: []uint32{2}, drop: []uint32{1}},
		{name: "chain: split child empty and closed", l: store.Layout{Version: 2, Shards: []store.ShardLayout{
			{ID: 0, State: store.ShardClosed, HashEnd: ^uint64(0), End: 3, Children: []uint32{1, 2}},
			{ID: 1, State: store.ShardClosed, HashEnd: half - 1, End: 0, Parents: []uint32{0}, Children: []uint32{3, 4}},
			{ID: 2, State: store.ShardOpen, HashStart: half, HashEnd: ^uint64(0), Parents: []uint32{0}},
			{ID: 3, State: store.ShardOpen, HashEnd: half/2 - 1, Parents: []uint32{1}},
			{ID: 4, State: store.ShardOpen, HashStart: half / 2, HashEnd: half - 1, Parents: []uint32{1}},
		}}, runs: map[uint32]runInfo{0: at(4)}, create: []uint32{1, 2, 3, 4}, runnable: []uint32{2, 3, 4}, drop: []uint32{0}},
	}
	// Reading only (Manager.start): a child without its run waits.
	if pl := planLineage(splitLayout(10), map[uint32]runInfo{0: at(11)}, nil, firsts, false); len(pl.create) != 0 || len(pl.runnable) != 0 || pl.waiting != 2 {
		t.Fatalf("read-only plan create %v runnable %v waiting %d, want nothing to run and 2 waiting", pl.create, pl.runnable, pl.waiting)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pl := planLineage(tt.l, tt.runs, tt.running, firsts, true)
			if !slices.Equal(pl.create, tt.create) || !slices.Equal(pl.runnable, tt.runnable) ||
				!slices.Equal(pl.dropState, tt.drop) || pl.waiting != tt.waiting {
				t.Fatalf("plan create %v runnable %v drop %v waiting %d; want %v %v %v %d",
					pl.create, pl.runnable, pl.dropState, pl.waiting, tt.create, tt.runnable, tt.drop, tt.waiting)
			}
		})
	}
}

// handoffEnv is a plugins.db with runs written directly, for handoff
// passes over hand-built layouts.
type handoffEnv struct {
	t *testing.T
	m *Manager
}

func newHandoffEnv(t *testing.T) *handoffEnv {
	db, err := openDB(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return &handoffEnv{t: t, m: &Manager{db: db}}
}

func (h *handoffEnv) put(shard int, next uint64, state map[string]string) {
	h.t.Helper()
	err := h.m.db.Update(func(tx *bolt.Tx) error {
		rb, err := runBucket(tx, "p", "in", shard, true)
		if err != nil {
			return err
		}
		cp := checkpoint{Next: next}
		for k, v := range state {
			if err := rb.Bucket(bucketState).Put([]byte(k), []byte(v)); err != nil {
				return err
			}
			cp.StateBytes += int64(len(k) + len(v))
			cp.StateKeys++
		}
		return rb.Put(keyCheckpoint, cp.encode())
	})
	if err != nil {
		h.t.Fatal(err)
	}
}

// run reads shard's run: checkpoint, done mark and state.
func (h *handoffEnv) run(shard int) (cp checkpoint, done, exists bool, state map[string]string) {
	h.t.Helper()
	state = map[string]string{}
	err := h.m.db.View(func(tx *bolt.Tx) error {
		rb, _ := runBucket(tx, "p", "in", shard, false)
		if rb == nil || rb.Get(keyCheckpoint) == nil {
			return nil
		}
		exists, done = true, rb.Get(keyDone) != nil
		var err error
		if cp, err = decodeCheckpoint(rb.Get(keyCheckpoint)); err != nil {
			return err
		}
		return rb.Bucket(bucketState).ForEach(func(k, v []byte) error { state[string(k)] = string(v); return nil })
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return cp, done, exists, state
}

func (h *handoffEnv) handoff(def Definition, l store.Layout, firsts func(uint32) uint64, merge stateMerger) (lineagePlan, error) {
	return h.m.handoff(context.Background(), def, "in", firsts, l, nil, merge)
}

func TestHandoffSplitCopiesState(t *testing.T) {
	h := newHandoffEnv(t)
	state := map[string]string{}
	for i := 0; i < 200; i++ {
		state[fmt.Sprintf("k%d", i)] = fmt.Sprint(i)
	}
	h.put(0, 11, state)
	firsts := func(id uint32) uint64 { return map[uint32]uint64{0: 1, 1: 1, 2: 1}[id] }
	pl, err := h.handoff(Definition{Name: "p"}, splitLayout(10), firsts, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(pl.create, []uint32{1, 2}) {
		t.Fatalf("created %v", pl.create)
	}
	for _, c := range []int{1, 2} {
		cp, done, ok, st := h.run(c)
		if !ok || done || cp.Next != 1 || len(st) != len(state) || cp.StateKeys != int64(len(state)) {
			t.Fatalf("child %d: exists %v done %v next %d keys %d (counted %d), want the whole state", c, ok, done, cp.Next, len(st), cp.StateKeys)
		}
	}
	cp, done, _, st := h.run(0)
	if !done || len(st) != 0 || cp.StateBytes != 0 || cp.Next != 11 {
		t.Fatalf("parent after handoff: done %v state %d keys (%d bytes) next %d; want done, state dropped, checkpoint kept", done, len(st), cp.StateBytes, cp.Next)
	}
	// Idempotent: a second pass (a restart) changes nothing.
	h.put(1, 7, map[string]string{"progress": "x"})
	if pl, err := h.handoff(Definition{Name: "p"}, splitLayout(10), firsts, nil); err != nil || len(pl.create) != 0 {
		t.Fatalf("second pass created %v (%v)", pl.create, err)
	}
	if cp, _, _, st := h.run(1); cp.Next != 7 || st["progress"] != "x" {
		t.Fatalf("second pass touched the child: next %d state %v", cp.Next, st)
	}
}

func TestHandoffStateByKeyHalvesTheCopy(t *testing.T) {
	h := newHandoffEnv(t)
	state := map[string]string{}
	for i := 0; i < 1000; i++ {
		state[fmt.Sprintf("key-%d", i)] = "v"
	}
	h.put(0, 11, state)
	l := splitLayout(10)
	if _, err := h.handoff(Definition{Name: "p", StateByKey: true}, l, func(uint32) uint64 { return 1 }, nil); err != nil {
		t.Fatal(err)
	}
	_, _, _, s1 := h.run(1)
	_, _, _, s2 := h.run(2)
	if len(s1)+len(s2) != len(state) || len(s1) == 0 || len(s2) == 0 {
		t.Fatalf("children hold %d + %d keys, want %d split between them", len(s1), len(s2), len(state))
	}
	for c, st := range map[int]map[string]string{1: s1, 2: s2} {
		sh := l.Shards[c]
		for k := range st {
			if hh := record.KeyHash([]byte(k)); hh < sh.HashStart || hh > sh.HashEnd {
				t.Fatalf("key %q (hash %x) copied to child %d [%x, %x]", k, hh, c, sh.HashStart, sh.HashEnd)
			}
		}
	}
	t.Logf("state_by_key: %d keys split %d / %d (a plain split copies %d to each)", len(state), len(s1), len(s2), len(state))
}

func TestHandoffMergeUnionAndConflict(t *testing.T) {
	l := mergeLayout(10, 20)
	firsts := func(uint32) uint64 { return 1 }

	t.Run("union", func(t *testing.T) {
		h := newHandoffEnv(t)
		h.put(0, 11, map[string]string{"a": "1", "same": "x"})
		h.put(1, 21, map[string]string{"b": "2", "same": "x"})
		if _, err := h.handoff(Definition{Name: "p"}, l, firsts, nil); err != nil {
			t.Fatal(err)
		}
		_, _, ok, st := h.run(2)
		if !ok || len(st) != 3 || st["a"] != "1" || st["b"] != "2" || st["same"] != "x" {
			t.Fatalf("merged child %v (exists %v), want the union", st, ok)
		}
	})

	t.Run("only one parent finished", func(t *testing.T) {
		h := newHandoffEnv(t)
		h.put(0, 11, map[string]string{"a": "1"})
		h.put(1, 5, map[string]string{"b": "2"})
		if pl, err := h.handoff(Definition{Name: "p"}, l, firsts, nil); err != nil || len(pl.create) != 0 {
			t.Fatalf("created %v (%v) before the second parent finished", pl.create, err)
		}
		if _, _, ok, _ := h.run(2); ok {
			t.Fatal("child created before both parents finished")
		}
		if _, done, _, st := h.run(0); done || st["a"] != "1" {
			t.Fatalf("finished parent marked %v with state %v before its child exists", done, st)
		}
	})

	t.Run("conflict", func(t *testing.T) {
		h := newHandoffEnv(t)
		h.put(0, 11, map[string]string{"a": "1", "total": "5"})
		h.put(1, 21, map[string]string{"b": "2", "total": "7"})
		_, err := h.handoff(Definition{Name: "p"}, l, firsts, nil)
		if !errors.Is(err, ErrStateConflict) || !containsAll(err.Error(), `"total"`, "state_conflict", "parents 0 and 1") {
			t.Fatalf("err %v, want state_conflict naming the key and the parents", err)
		}
		if _, _, ok, _ := h.run(2); ok {
			t.Fatal("child created despite the conflict")
		}
		// The resolver's answer is what the child gets; the parents'
		// states stay until it exists.
		merge := func(_ context.Context, child uint32, key, a, b []byte) ([]byte, bool, error) {
			if child != 2 || string(key) != "total" {
				t.Errorf("merge of %q for child %d", key, child)
			}
			return []byte(string(a) + "+" + string(b)), true, nil
		}
		if _, err := h.handoff(Definition{Name: "p"}, l, firsts, merge); err != nil {
			t.Fatal(err)
		}
		if _, _, _, st := h.run(2); st["total"] != "5+7" || st["a"] != "1" || st["b"] != "2" {
			t.Fatalf("child after merge: %v", st)
		}
	})
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

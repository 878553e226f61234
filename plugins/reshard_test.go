package plugins

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgehub/edgehub/internal/plugintest"
	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/internal/testutil"
	"github.com/edgehub/edgehub/store"
)

// Plugins across real reshards (store.Stream.Split/Merge) of a keyed input,
// with the sum test plugin (plugins/testdata/sumcore: per-key running sum,
// one output per input record) in real wazero.

const reshardKeys = 40

// sumDef is the sum plugin reading "in" and writing "sums".
func sumDef(byKey bool, config map[string]string) Definition {
	c := map[string]string{"output": "sums"}
	for k, v := range config {
		c[k] = v
	}
	return Definition{Name: "sum", Inputs: []string{"in"}, Outputs: []string{"sums"}, Start: StartEarliest,
		Config: c, StateByKey: byKey, TimerInterval: time.Hour, OnError: PolicyPause}
}

// producer appends keyed records of value 1 in small batches and counts
// what it produced per key.
type producer struct {
	mu       sync.Mutex
	produced map[string]int
	n        int
}

func (p *producer) batch(tb testing.TB, in *store.Stream, size int) {
	tb.Helper()
	recs := make([]record.Record, size)
	p.mu.Lock()
	for i := range recs {
		k := "key-" + strconv.Itoa(p.n%reshardKeys)
		p.n++
		p.produced[k]++
		recs[i] = rec(k, "1")
	}
	p.mu.Unlock()
	if _, err := in.Append(context.Background(), store.Batch{Shard: -1, Records: recs}); err != nil {
		tb.Fatal(err)
	}
}

// checkSums waits until every key's last output is its produced sum, then
// checks the outputs of each key: exactly 1, 2, ..., n in output order (no
// loss, no duplicate, per-key order) and every origin once.
func checkSums(tb testing.TB, out *store.Stream, produced map[string]int) {
	tb.Helper()
	total := 0
	for _, n := range produced {
		total += n
	}
	recs := readAll(tb, out, total)
	byKey := map[string][]int{}
	origins := map[record.Origin]bool{}
	for _, r := range recs {
		n, _ := strconv.Atoi(string(r.Value))
		byKey[string(r.Key)] = append(byKey[string(r.Key)], n)
		if origins[r.Origin] {
			tb.Fatalf("origin %+v stored twice", r.Origin)
		}
		origins[r.Origin] = true
	}
	if len(recs) != total {
		tb.Fatalf("%d outputs, want %d (one per input record)", len(recs), total)
	}
	for k, want := range produced {
		got := byKey[k]
		for i, n := range got {
			if n != i+1 {
				tb.Fatalf("key %s: output %d is sum %d, want %d (outputs %v)", k, i, n, i+1, got)
			}
		}
		if len(got) != want {
			tb.Fatalf("key %s: final sum %d, produced %d", k, len(got), want)
		}
	}
}

// children returns the children of parent in s's layout.
func children(tb testing.TB, s *store.Stream, parent uint32) []uint32 {
	tb.Helper()
	l := s.Layout()
	return l.Shards[parent].Children
}

func TestReshardCountingPlugin(t *testing.T) {
	wasm := plugintest.Wasm(t, "plugins/testdata/sum")
	e := newEnv(t)
	in := e.stream("in", 2)
	e.stream("sums", 2)
	e.deploy(sumDef(true, nil), wasm)
	p := &producer{produced: map[string]int{}}
	ctx := context.Background()
	for i := 0; i < 20; i++ {
		p.batch(t, in, 25)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 120; i++ {
			p.batch(t, in, 25)
		}
	}()
	// Split shard 0 while records flow, then merge its two children back,
	// then split shard 1.
	time.Sleep(20 * time.Millisecond)
	if _, err := in.Split(ctx, 0, 0); err != nil {
		t.Fatal(err)
	}
	kids := children(t, in, 0)
	time.Sleep(20 * time.Millisecond)
	if _, err := in.Merge(ctx, kids[0], kids[1]); err != nil {
		t.Fatal(err)
	}
	if _, err := in.Split(ctx, 1, 0); err != nil {
		t.Fatal(err)
	}
	<-done
	for i := 0; i < 10; i++ {
		p.batch(t, in, 25)
	}
	out, _ := e.st.Stream("sums")
	checkSums(t, out, p.produced)
	testutil.Eventually(t, "no shard waiting, parents done", func() bool {
		info, _ := e.m.Describe("sum")
		return info.Lag == 0 && info.Status == StatusRunning
	})
	if w := e.m.LineageWaiting(); len(w) != 0 {
		t.Fatalf("LineageWaiting %v after every parent finished", w)
	}
	t.Logf("layout %d: %d records over %d shard ids", in.Layout().Version, p.n, len(in.Layout().Shards))
}

// splitThenMerge deploys the summing module built from dir over a
// 1-shard input, splits it, lets each key grow in one child (the other
// keeps the split's copy of its state) and merges the children back: every
// key's state then differs between the two parents of the merge.
func splitThenMerge(t *testing.T, dir string) (*env, *store.Stream, *store.Stream, *producer) {
	t.Helper()
	wasm := plugintest.Wasm(t, dir)
	e := newEnv(t)
	in := e.stream("in", 1)
	e.stream("sums", 1)
	e.deploy(sumDef(false, nil), wasm)
	p := &producer{produced: map[string]int{}}
	ctx := context.Background()
	p.batch(t, in, 100)
	if _, err := in.Split(ctx, 0, 0); err != nil {
		t.Fatal(err)
	}
	p.batch(t, in, 100)
	kids := children(t, in, 0)
	out, _ := e.st.Stream("sums")
	readAll(t, out, 200)
	if _, err := in.Merge(ctx, kids[0], kids[1]); err != nil {
		t.Fatal(err)
	}
	return e, in, out, p
}

func TestReshardStateConflictPauses(t *testing.T) {
	e, _, _, _ := splitThenMerge(t, "plugins/testdata/sum")
	testutil.Eventually(t, "paused with state_conflict", func() bool {
		info, _ := e.m.Describe("sum")
		return info.Status == StatusPaused
	})
	info, _ := e.m.Describe("sum")
	if !strings.Contains(info.PauseReason, "state_conflict") || !strings.Contains(info.PauseReason, `key "key-`) {
		t.Fatalf("pause reason %q, want state_conflict naming the key", info.PauseReason)
	}
	t.Logf("pause reason: %s", info.PauseReason)
}

func TestReshardStateMergeResolves(t *testing.T) {
	e, in, out, p := splitThenMerge(t, "plugins/testdata/summerge")
	p.batch(t, in, 100)
	checkSums(t, out, p.produced)
	if info, _ := e.m.Describe("sum"); info.Status != StatusRunning {
		t.Fatalf("status %s (%s), want running: eh_state_merge resolves the conflicts", info.Status, info.PauseReason)
	}
}

// TestReshardCrashBeforeHandoff stops the manager after the parent's runner
// committed its last checkpoint and before the handoff ran (the hook
// refuses it), then opens it again: the handoff at start gives the
// children their state, nothing lost or repeated.
func TestReshardCrashBeforeHandoff(t *testing.T) {
	wasm := plugintest.Wasm(t, "plugins/testdata/sum")
	var block sync.Mutex
	blocked := true
	e := newEnvTuned(t, func(c *Config) {
		c.beforeHandoff = func() bool {
			block.Lock()
			defer block.Unlock()
			return !blocked
		}
	})
	in := e.stream("in", 1)
	e.stream("sums", 1)
	e.deploy(sumDef(true, nil), wasm)
	p := &producer{produced: map[string]int{}}
	ctx := context.Background()
	p.batch(t, in, 200)
	if _, err := in.Split(ctx, 0, 0); err != nil {
		t.Fatal(err)
	}
	end := in.Layout().Shards[0].End
	p.batch(t, in, 200)
	testutil.Eventually(t, "parent at its end", func() bool {
		info, _ := e.m.Describe("sum")
		return len(info.Shards) > 0 && info.Shards[0].Checkpoint == end+1
	})
	testutil.Eventually(t, "both children counted as waiting", func() bool { return e.m.LineageWaiting()["in"] == 2 })
	if info, _ := e.m.Describe("sum"); info.Shards[1].Checkpoint != 0 {
		t.Fatalf("child has a checkpoint (%d) though the handoff was refused", info.Shards[1].Checkpoint)
	}
	e.stop()
	block.Lock()
	blocked = false
	block.Unlock()
	e.start()
	p.batch(t, in, 100)
	out, _ := e.st.Stream("sums")
	checkSums(t, out, p.produced)
}

// TestReshardToThree reshards 2 shards to 3 and back to 2 while records
// flow: the middle child of 3 has both shards of 2 as parents, and each
// shard of 2 is a parent of two children.
func TestReshardToThree(t *testing.T) {
	wasm := plugintest.Wasm(t, "plugins/testdata/sum")
	e := newEnv(t)
	in := e.stream("in", 2)
	e.stream("sums", 2)
	e.deploy(sumDef(true, nil), wasm)
	p := &producer{produced: map[string]int{}}
	ctx := context.Background()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 100; i++ {
			p.batch(t, in, 20)
		}
	}()
	time.Sleep(10 * time.Millisecond)
	if _, err := in.Reshard(ctx, 3); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond)
	l, err := in.Reshard(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	<-done
	p.batch(t, in, 20)
	out, _ := e.st.Stream("sums")
	checkSums(t, out, p.produced)
	t.Logf("layout %d, %d shard ids, %d records", l.Version, len(l.Shards), p.n)
}

// TestReshardTimersSeeInheritedState: the sum plugin flushes each key's
// sum from its timer ("total=N", then deletes it). Across a split and a
// merge done before any timer fired, a key's totals add up to what was
// produced: the merged child's timer flushes what it inherited through two
// handoffs, and no total is flushed twice.
func TestReshardTimersSeeInheritedState(t *testing.T) {
	wasm := plugintest.Wasm(t, "plugins/testdata/sum")
	e := newEnv(t)
	in := e.stream("in", 1)
	e.stream("sums", 1)
	def := sumDef(true, map[string]string{"flush": "true"})
	def.TimerInterval = 20 * time.Millisecond
	e.deploy(def, wasm)
	p := &producer{produced: map[string]int{}}
	ctx := context.Background()
	p.batch(t, in, 300)
	if _, err := in.Split(ctx, 0, 0); err != nil {
		t.Fatal(err)
	}
	p.batch(t, in, 300)
	kids := children(t, in, 0)
	if _, err := in.Merge(ctx, kids[0], kids[1]); err != nil {
		t.Fatal(err)
	}
	p.batch(t, in, 300)
	out, _ := e.st.Stream("sums")
	deadline := time.Now().Add(60 * time.Second)
	for {
		recs, err := out.Read(0, 1, store.ReadOptions{MaxRecords: 1 << 20, MaxBytes: 1 << 30})
		if err != nil {
			t.Fatal(err)
		}
		totals := map[string]int{}
		for _, r := range recs {
			if v, ok := strings.CutPrefix(string(r.Value), "total="); ok {
				if !strings.HasSuffix(r.Origin.Hub, "/timer") {
					t.Fatalf("total from origin %+v", r.Origin)
				}
				n, _ := strconv.Atoi(v)
				totals[string(r.Key)] += n
			}
		}
		same := len(totals) == len(p.produced)
		for k, n := range p.produced {
			if totals[k] > n {
				t.Fatalf("key %s: timers flushed %d, produced %d (a state flushed twice)", k, totals[k], n)
			}
			same = same && totals[k] == n
		}
		if same {
			return
		}
		if time.Now().After(deadline) {
			info, _ := e.m.Describe("sum")
			t.Fatalf("status %s (%s), %d outputs, timer totals %v, produced %v", info.Status, info.PauseReason, len(recs), totals, p.produced)
		}
		waitAny(out, 100*time.Millisecond)
	}
}

// TestReshardThroughEmptyShards: the input is split, merged back and split
// again with no record in between, so three shards sit empty between the
// root and the grandchildren (closed, or retired by maintenance). The
// plugin, deployed afterwards, reads the root to its end before the
// grandchildren, and their state comes from the root through the empty
// generations: every key's sums run 1..n. Without the rule the
// grandchildren ran at once from an empty state.
func TestReshardThroughEmptyShards(t *testing.T) {
	for _, retire := range []bool{false, true} {
		t.Run(map[bool]string{false: "empty", true: "retired"}[retire], func(t *testing.T) {
			wasm := plugintest.Wasm(t, "plugins/testdata/sum")
			e := newEnv(t)
			in := e.stream("in", 1)
			e.stream("sums", 1)
			p := &producer{produced: map[string]int{}}
			ctx := context.Background()
			for range 8 {
				p.batch(t, in, 25)
			}
			if _, err := in.Split(ctx, 0, 0); err != nil { // 1, 2
				t.Fatal(err)
			}
			if _, err := in.Merge(ctx, 1, 2); err != nil { // 3
				t.Fatal(err)
			}
			if _, err := in.Split(ctx, 3, 0); err != nil { // 4, 5
				t.Fatal(err)
			}
			p.batch(t, in, 100)
			if retire {
				if err := in.Enforce(ctx, false); err != nil {
					t.Fatal(err)
				}
				for _, id := range []int{1, 2, 3} {
					if s := in.Layout().Shards[id].State; s != store.ShardRetired {
						t.Fatalf("shard %d is %v after maintenance, want retired", id, s)
					}
				}
			}
			e.deploy(sumDef(true, nil), wasm)
			p.batch(t, in, 50)
			out, _ := e.st.Stream("sums")
			checkSums(t, out, p.produced)
		})
	}
}

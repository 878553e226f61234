package hub

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"

	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/internal/testutil"
	"github.com/edgehub/edgehub/store"
)

// keyedProducer appends keyed records at h until stopped: value
// "key:counter", the counter rising by one per record of the key, so that
// every hub's log can be checked for per-key order.
type keyedProducer struct {
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	n    int
	err  error
}

func startKeyedProducer(tb testing.TB, h *Hub, stream string, keys int) *keyedProducer {
	tb.Helper()
	st := mustStreamEventually(tb, h, stream)
	p := &keyedProducer{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		counters := make([]int, keys)
		for i := 0; ; i++ {
			select {
			case <-p.stop:
				return
			default:
			}
			batch := make([]record.Record, 0, 50)
			for j := 0; j < cap(batch); j++ {
				k := (i*50 + j) % keys
				counters[k]++
				batch = append(batch, record.Record{Key: fmt.Appendf(nil, "key%d", k), Value: fmt.Appendf(nil, "key%d:%d", k, counters[k])})
			}
			if _, err := st.Append(context.Background(), store.Batch{Shard: -1, Records: batch}); err != nil {
				p.mu.Lock()
				p.err = err
				p.mu.Unlock()
				return
			}
			p.mu.Lock()
			p.n += len(batch)
			p.mu.Unlock()
		}
	}()
	tb.Cleanup(func() { p.halt(tb) })
	return p
}

// halt stops the producer and returns how many records it wrote.
func (p *keyedProducer) halt(tb testing.TB) int {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		tb.Fatalf("producer: %v", p.err)
	}
	return p.n
}

// written waits until the producer wrote at least n records in all.
func (p *keyedProducer) written(tb testing.TB, n int) {
	tb.Helper()
	testutil.Eventually(tb, fmt.Sprintf("%d records produced", n), func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.n >= n || p.err != nil
	})
}

// checkKeyOrder fails unless h's log holds every key's records of origin
// hub origin in counter order, each once: a key routes to one local shard
// here, so its stored order is its sequence order in that shard, whatever
// origin shards (parents, then children) the records came from.
func checkKeyOrder(tb testing.TB, h *Hub, stream, origin string) int {
	tb.Helper()
	st := mustStreamEventually(tb, h, stream)
	last := map[string]int{}
	n := 0
	for _, sh := range st.Layout().Shards {
		for from := uint64(1); ; {
			recs, err := st.Read(int(sh.ID), from, store.ReadOptions{MaxRecords: 20000, MaxBytes: 8 << 20})
			if err != nil {
				tb.Fatal(err)
			}
			if len(recs) == 0 {
				break
			}
			for _, r := range recs {
				if !(r.Origin.Hub == origin || (r.Origin.IsLocal() && h.cfg.Hub.Name == origin)) {
					continue
				}
				key, c, ok := bytes.Cut(r.Value, []byte(":"))
				cnt, err := strconv.Atoi(string(c))
				if !ok || err != nil {
					tb.Fatalf("%s: value %q", h.cfg.Hub.Name, r.Value)
				}
				if want := last[string(key)] + 1; cnt != want {
					tb.Fatalf("%s: %s: counter %d after %d (origin %s/%d/%d, local shard %d seq %d): per-key order broken",
						h.cfg.Hub.Name, key, cnt, last[string(key)], r.Origin.Hub, r.Origin.Shard, r.Origin.Seq, sh.ID, r.Seq)
				}
				last[string(key)] = cnt
				n++
			}
			from = recs[len(recs)-1].Seq + 1
		}
	}
	return n
}

// Three federated hubs while the origin splits a keyed stream and merges
// the children under a producer: every hub's log holds every record once,
// per key in order along the lineage; the replicas completed the closed
// parents at their ends.
func TestFederationReshardUnderProducer(t *testing.T) {
	n := newFedNet(t)
	a, b, c := n.start("a"), n.start("b"), n.start("c")
	createReplicated(t, a, "rs", 2, "all")
	st := mustStreamEventually(t, a, "rs")
	mustStreamEventually(t, b, "rs")
	mustStreamEventually(t, c, "rs")
	p := startKeyedProducer(t, a, "rs", 64)
	ctx := context.Background()
	p.written(t, 2000)
	l1, err := st.Split(ctx, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	p.written(t, 4000)
	var kids []uint32
	for _, sh := range l1.Shards {
		if len(sh.Parents) == 1 && sh.Parents[0] == 1 {
			kids = append(kids, sh.ID)
		}
	}
	if len(kids) != 2 {
		t.Fatalf("split of 1: %+v", l1)
	}
	if _, err := st.Merge(ctx, kids[0], kids[1]); err != nil {
		t.Fatal(err)
	}
	p.written(t, 6000)
	total := p.halt(t)
	converged(t, "rs", total, a, b, c)
	for _, h := range []*Hub{a, b, c} {
		if got := checkKeyOrder(t, h, "rs", "a"); got != total {
			t.Fatalf("%s holds %d of a's records, want %d", h.cfg.Hub.Name, got, total)
		}
	}
	l := st.Layout()
	for _, h := range []*Hub{b, c} {
		hst := mustStreamEventually(t, h, "rs")
		for _, sh := range l.Shards {
			if sh.State == store.ShardOpen {
				continue
			}
			if wm := hst.Watermark(store.OriginKey{Hub: "a", Shard: sh.ID}); wm != sh.End {
				t.Errorf("%s: watermark of closed a/%d is %d, want its end %d", h.cfg.Hub.Name, sh.ID, wm, sh.End)
			}
		}
		if hl := hst.Layout(); hl.Version != 0 {
			t.Errorf("%s's own layout changed to version %d: layouts are per hub", h.cfg.Hub.Name, hl.Version)
		}
	}
}

// A reshard learned while partitioned converges after the heal: c keeps
// what it had, learns a's layout when gossip returns, completes the parent
// and then takes the children, in per-key order.
func TestFederationReshardLearnedAfterPartition(t *testing.T) {
	n := newFedNet(t)
	a, b, c := n.start("a"), n.start("b"), n.start("c")
	createReplicated(t, a, "rp", 2, "all")
	st := mustStreamEventually(t, a, "rp")
	mustStreamEventually(t, b, "rp")
	mustStreamEventually(t, c, "rp")
	p := startKeyedProducer(t, a, "rp", 32)
	p.written(t, 1000)
	n.setCut("a", "c", true)
	n.setCut("b", "c", true)
	if _, err := st.Split(context.Background(), 0, 0); err != nil {
		t.Fatal(err)
	}
	p.written(t, 3000)
	total := p.halt(t)
	converged(t, "rp", total, a, b)
	n.setCut("a", "c", false)
	n.setCut("b", "c", false)
	converged(t, "rp", total, a, b, c)
	checkKeyOrder(t, c, "rp", "a")
}

// Two hubs resharding the same stream differently is no conflict: each
// stores the other's records by key in its own layout, definitions do not
// change, and both logs keep per-key order.
func TestFederationDifferentLayoutsAreNoConflict(t *testing.T) {
	n := newFedNet(t)
	a, b := n.start("a"), n.start("b")
	createReplicated(t, a, "rd", 2, "all")
	sa := mustStreamEventually(t, a, "rd")
	sb := mustStreamEventually(t, b, "rd")
	defBefore := sa.Config().Meta["federation.def"]
	pa := startKeyedProducer(t, a, "rd", 16)
	pa.written(t, 500)
	ctx := context.Background()
	if _, err := sa.Split(ctx, 0, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := sb.Split(ctx, 1, 0); err != nil {
		t.Fatal(err)
	}
	pa.written(t, 2000)
	total := pa.halt(t)
	converged(t, "rd", total, a, b)
	checkKeyOrder(t, b, "rd", "a")
	if sa.Layout().Version != 1 || sb.Layout().Version != 1 {
		t.Fatalf("layouts %d and %d, want each hub's own split", sa.Layout().Version, sb.Layout().Version)
	}
	if got := sa.Config().Meta["federation.def"]; got != defBefore {
		t.Fatalf("a's definition changed at a reshard: %q, was %q", got, defBefore)
	}
	if got := sb.Config().Meta["federation.def"]; got != defBefore {
		t.Fatalf("b's definition %q, a's %q: a reshard made a definition conflict", got, defBefore)
	}
}

package replicate

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/internal/testutil"
	"github.com/edgehub/edgehub/store"
)

// reopen stops h, runs damage on its data directory while it is stopped,
// and starts it again on the same directory.
func (n *memNet) reopen(t testing.TB, h *memHub, damage func(dir string)) {
	t.Helper()
	h.halt()
	cfg := h.store.Config()
	if err := h.store.Close(); err != nil {
		t.Fatal(err)
	}
	damage(cfg.Dir)
	st, err := store.Open(cfg)
	if err != nil {
		t.Fatalf("reopen %s: %v", h.name, err)
	}
	t.Cleanup(func() { st.Close() })
	n.mu.Lock()
	h.store = st
	n.mu.Unlock()
	n.start(t, h)
}

func allRecords(t testing.TB, st *store.Stream, shard int) ([]record.Record, error) {
	t.Helper()
	var out []record.Record
	for from := uint64(1); ; {
		recs, err := st.Read(shard, from, store.ReadOptions{MaxRecords: 10000})
		if err != nil {
			return nil, err
		}
		if len(recs) == 0 {
			return out, nil
		}
		for _, r := range recs {
			out = append(out, r.Clone())
		}
		from = recs[len(recs)-1].Seq + 1
	}
}

// sameStored compares what a repair must restore: sequence, origin, key,
// value, headers and producer time (ingest times come from the peer's copy).
func sameStored(a, b []record.Record) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.Seq != y.Seq || x.Origin != y.Origin || !bytes.Equal(x.Key, y.Key) || !bytes.Equal(x.Value, y.Value) ||
			x.Time != y.Time || len(x.Headers) != len(y.Headers) {
			return false
		}
	}
	return true
}

// A hub whose stream file had bytes flipped while it was stopped, in a
// chunk of its own records and in a chunk of records replicated from a
// peer, starts, does not serve the damaged ranges, and re-fetches them:
// while the peer is cut off they stay reported; once it is back every
// record is readable again with its sequence and content.
func TestRepairRefetchesDamagedChunks(t *testing.T) {
	net := newMemNet()
	a := net.addHubWith(t, "a", func(c *Config) { c.RepairInterval = 50 * time.Millisecond })
	b := net.addHub(t, "b")
	createStream(t, a, "r", 1, "all")
	produce(t, a, "r", 500)
	testutil.Eventually(t, "b has the stream", func() bool { _, err := b.store.Stream("r"); return err == nil })
	produce(t, b, "r", 500)
	testutil.Eventually(t, "converged", func() bool {
		ca := content(t, a, "r")
		return total(ca) == 1000 && sameContent(ca, content(t, b, "r"))
	})
	before, err := allRecords(t, stream(t, a, "r"), 0)
	if err != nil {
		t.Fatal(err)
	}

	net.setCut("a", "b", true) // nobody can repair a at first
	net.reopen(t, a, func(dir string) {
		path := filepath.Join(dir, "streams", "r.db")
		testutil.FlipAll(t, path, "a-123") // a's own records
		testutil.FlipAll(t, path, "b-321") // records of origin b
		testutil.FlipAll(t, path, "a-499") // a's own, in the last chunk of the shard
	})
	st := stream(t, a, "r")
	testutil.Eventually(t, "the scrub found every damaged chunk", func() bool { return len(st.Damaged()) == 3 })
	var ce *store.CorruptError
	if _, err := allRecords(t, st, 0); !errors.As(err, &ce) || ce.File != filepath.Join(a.store.Config().Dir, "streams", "r.db") {
		t.Fatalf("reading the damaged stream: %v", err)
	}
	testutil.Eventually(t, "repair attempted", func() bool {
		rs := a.rep.Repairs()
		return len(rs) == 3 && rs[0].LastError != "" && rs[0].Missing > 0
	})
	if n := counterValue(a.rep.repair.repaired); n != 0 {
		t.Fatalf("%v chunks repaired with no peer reachable", n)
	}
	if _, err := allRecords(t, st, 0); !errors.As(err, &ce) {
		t.Fatalf("damaged records served before repair: %v", err)
	}

	net.setCut("a", "b", false)
	testutil.Eventually(t, "repaired", func() bool { return len(st.Damaged()) == 0 })
	after, err := allRecords(t, st, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !sameStored(before, after) {
		t.Fatalf("after repair: %d records, before %d, or different contents", len(after), len(before))
	}
	if n := counterValue(a.rep.repair.repaired); n != 3 {
		t.Fatalf("%v chunks counted repaired, want 3", n)
	}
	if n, err := st.Scrub(context.Background()); err != nil || n != 0 {
		t.Fatalf("scrub after repair: %d damaged, %v", n, err)
	}
	// Replication goes on over the repaired ranges.
	produce(t, b, "r", 100)
	testutil.Eventually(t, "converged again", func() bool {
		ca := content(t, a, "r")
		return total(ca) == 1100 && sameContent(ca, content(t, b, "r"))
	})
}

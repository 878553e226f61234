package hub

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/internal/replicate"
	"github.com/edgehub/edgehub/internal/testutil"
	"github.com/edgehub/edgehub/sdk"
	"github.com/edgehub/edgehub/store"
)

// storedRecords reads every record of a stream, by shard; a read error
// (a damaged range) is returned.
func storedRecords(tb testing.TB, s *store.Store, name string) (map[int][]record.Record, error) {
	tb.Helper()
	st, err := s.Stream(name)
	if err != nil {
		return nil, err
	}
	out := map[int][]record.Record{}
	for sh := range st.Shards() {
		for from := uint64(1); ; {
			recs, err := st.Read(sh, from, store.ReadOptions{MaxRecords: 10000})
			if err != nil {
				return nil, err
			}
			if len(recs) == 0 {
				break
			}
			for _, r := range recs {
				out[sh] = append(out[sh], r.Clone())
			}
			from = recs[len(recs)-1].Seq + 1
		}
	}
	return out, nil
}

// sameRecord compares what a repair must restore: sequence, origin, key,
// value, headers and producer time (ingest times come from the peer's copy,
// kept between the neighbouring chunks').
func sameRecord(a, b record.Record) bool {
	if a.Seq != b.Seq || a.Origin != b.Origin || !bytes.Equal(a.Key, b.Key) || !bytes.Equal(a.Value, b.Value) ||
		a.Time != b.Time || len(a.Headers) != len(b.Headers) {
		return false
	}
	for i := range a.Headers {
		if a.Headers[i].Key != b.Headers[i].Key || !bytes.Equal(a.Headers[i].Value, b.Headers[i].Value) {
			return false
		}
	}
	return true
}

func describeStreamAt(tb testing.TB, h *Hub, name string) StreamInfo {
	tb.Helper()
	resp, err := http.Get("http://" + h.AdminAddr().String() + "/v1/streams/" + name)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	var s StreamInfo
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil || resp.StatusCode != http.StatusOK {
		tb.Fatalf("describe %s: %d %v", name, resp.StatusCode, err)
	}
	return s
}

func damagedRanges(s StreamInfo) []DamagedRange {
	var out []DamagedRange
	for _, sh := range s.Shards {
		out = append(out, sh.Damaged...)
	}
	return out
}

// TestFederationRepairsDamagedChunk: three real hubs (memberlist, QUIC
// pulls) replicate a stream. One is stopped, bytes of two of its chunks (one
// of its own records, one of records replicated from a peer) are flipped on
// disk, and it starts again cut off from its peers: the damaged ranges are
// not served, and GET /v1/streams/{name} and edgehub_shard_damaged_chunks
// show them. Once the links heal, they are fetched again from a peer: every
// record is stored as before and served once, intact, over QUIC.
func TestFederationRepairsDamagedChunk(t *testing.T) {
	if testing.Short() {
		t.Skip("three federated hubs, one restarted")
	}
	n := newFedNet(t)
	beta := n.start("beta") // first: the others join it, alpha again after its restart
	gamma := n.start("gamma")
	dir := t.TempDir()
	alphaConfig := func() Config {
		c := n.config("alpha", dir)
		tune := c.Gossip.tuneReplication
		c.Gossip.tuneReplication = func(r *replicate.Config) {
			tune(r)
			r.RepairInterval = 100 * time.Millisecond
		}
		return c
	}
	alpha, stop := startStoppable(t, alphaConfig())
	createReplicated(t, alpha, "rep", 2, "all")
	produceAt(t, alpha, "rep", 1000, 64)
	produceAt(t, beta, "rep", 1000, 64)
	converged(t, "rep", 2000, alpha, beta, gamma)
	before, err := storedRecords(t, alpha.Store(), "rep")
	if err != nil {
		t.Fatal(err)
	}
	n.mu.Lock()
	gossipAddr := n.addrs["alpha"]
	n.mu.Unlock()
	stop()

	path := filepath.Join(dir, "streams", "rep.db")
	testutil.FlipAll(t, path, "alpha-123-") // alpha's own records
	testutil.FlipAll(t, path, "beta-456-")  // records of origin beta
	// Nobody can repair alpha at first.
	n.setCut("alpha", "beta", true)
	n.setCut("alpha", "gamma", true)
	cfg := alphaConfig()
	cfg.Gossip.Bind = gossipAddr // back at its address, as in production
	alpha, _ = startStoppable(t, cfg)
	admin := "http://" + alpha.AdminAddr().String()

	testutil.Eventually(t, "both damaged ranges shown as failing repairs", func() bool {
		d := damagedRanges(describeStreamAt(t, alpha, "rep"))
		if len(d) != 2 {
			return false
		}
		for _, r := range d {
			if r.Repair != "failing" || r.Missing == 0 || r.LastError == "" || r.Error == "" || r.To < r.From {
				return false
			}
		}
		return true
	})
	if got := scrapeMetric(t, admin, "edgehub_shard_damaged_chunks", `stream="rep"`); got != 2 {
		t.Fatalf("edgehub_shard_damaged_chunks = %v, want 2", got)
	}
	if got := scrapeMetric(t, admin, "edgehub_replication_repaired_chunks_total", ""); got != 0 {
		t.Fatalf("%v chunks repaired with no peer reachable", got)
	}
	var ce *store.CorruptError
	if _, err := storedRecords(t, alpha.Store(), "rep"); !errors.As(err, &ce) || ce.File != path {
		t.Fatalf("reading the damaged stream: %v", err)
	}

	n.setCut("alpha", "beta", false)
	n.setCut("alpha", "gamma", false)
	testutil.Eventually(t, "the damaged ranges repaired", func() bool {
		return len(damagedRanges(describeStreamAt(t, alpha, "rep"))) == 0
	})
	if got := scrapeMetric(t, admin, "edgehub_shard_damaged_chunks", `stream="rep"`); got != 0 {
		t.Errorf("edgehub_shard_damaged_chunks = %v after the repair", got)
	}
	if got := scrapeMetric(t, admin, "edgehub_replication_repaired_chunks_total", ""); got != 2 {
		t.Errorf("edgehub_replication_repaired_chunks_total = %v, want 2", got)
	}
	after, err := storedRecords(t, alpha.Store(), "rep")
	if err != nil {
		t.Fatal(err)
	}
	for sh, recs := range before {
		if len(after[sh]) != len(recs) {
			t.Fatalf("shard %d: %d records after the repair, %d before", sh, len(after[sh]), len(recs))
		}
		for i := range recs {
			if !sameRecord(recs[i], after[sh][i]) {
				t.Fatalf("shard %d: record %d is %+v after the repair, was %+v", sh, i, after[sh][i], recs[i])
			}
		}
	}

	// Served over QUIC: each record once, as it was.
	want := map[[2]uint64]record.Record{}
	for sh, recs := range before {
		for _, r := range recs {
			want[[2]uint64{uint64(sh), r.Seq}] = r
		}
	}
	c := (&dpHub{addr: alpha.QUICAddr().String(), ca: filepath.Join(dir, SelfSignedCertFile)}).client(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sub, err := c.Subscribe(ctx, "rep", sdk.ConsumeOptions{From: sdk.FromEarliest()})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	for range 2000 {
		m, err := sub.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		k := [2]uint64{uint64(m.Shard), m.Record.Seq}
		r, ok := want[k]
		if !ok {
			t.Fatalf("shard %d sequence %d served twice or never stored", m.Shard, m.Record.Seq)
		}
		if !sameRecord(r, m.Record) {
			t.Fatalf("shard %d sequence %d served as %q, stored %q", m.Shard, m.Record.Seq, m.Record.Value, r.Value)
		}
		delete(want, k)
	}
	if len(want) != 0 {
		t.Fatalf("%d records not served", len(want))
	}
}

// TestDamageMetByReaderIsShown: a damaged chunk of a local stream that only
// a consumer meets (at open the store verifies each shard's last chunk; the
// scrub runs over replicated streams) is remembered when the hub refuses to
// serve it: GET /v1/streams/{name} shows its range (repair "none": no peer
// holds a copy) and edgehub_shard_damaged_chunks counts it. The consumer
// gets every record before it, then code corrupt. (Before, a consumer's
// read reported the damage to the client and the log only.)
func TestDamageMetByReaderIsShown(t *testing.T) {
	cfg := testConfig(t)
	cfg.Logger = quietTestLogger()
	h, stop := startStoppable(t, cfg)
	if _, err := h.Store().CreateStream(context.Background(), store.StreamConfig{Name: "loc", Shards: 1}); err != nil {
		t.Fatal(err)
	}
	st := mustStreamEventually(t, h, "loc")
	for b := range 3 { // three appends, three chunks
		var recs []record.Record
		for i := range 100 {
			recs = append(recs, record.Record{Value: fmt.Appendf(nil, "rec-%d-%d-", b, i)})
		}
		if _, err := st.Append(context.Background(), store.Batch{Shard: 0, Records: recs}); err != nil {
			t.Fatal(err)
		}
	}
	stop()
	testutil.FlipAll(t, filepath.Join(cfg.Hub.DataDir, "streams", "loc.db"), "rec-1-50-")
	h, _ = startStoppable(t, cfg)
	if d := damagedRanges(describeStreamAt(t, h, "loc")); len(d) != 0 {
		t.Fatalf("damage known before any read: %+v", d)
	}

	c := (&dpHub{addr: h.QUICAddr().String(), ca: filepath.Join(cfg.Hub.DataDir, SelfSignedCertFile)}).client(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sub, err := c.Subscribe(ctx, "loc", sdk.ConsumeOptions{From: sdk.FromEarliest()})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	var got []uint64
	for {
		m, err := sub.Next(ctx)
		if err != nil {
			if sdk.CodeOf(err) != sdk.CodeCorrupt {
				t.Fatalf("after %d records: %v, want code corrupt", len(got), err)
			}
			break
		}
		got = append(got, m.Record.Seq)
	}
	d := damagedRanges(describeStreamAt(t, h, "loc"))
	if len(d) != 1 || d[0].From != 101 || d[0].To != 200 || d[0].Repair != "none" || d[0].LastError == "" || d[0].Error == "" {
		t.Fatalf("damaged ranges after the read: %+v, want 101..200 with repair none", d)
	}
	if len(got) != 100 || got[0] != 1 || got[99] != 100 {
		t.Fatalf("served %d records before the damage (%v), want 1..100", len(got), got)
	}
	if n := scrapeMetric(t, "http://"+h.AdminAddr().String(), "edgehub_shard_damaged_chunks", `stream="loc"`); n != 1 {
		t.Fatalf("edgehub_shard_damaged_chunks = %v, want 1", n)
	}
}

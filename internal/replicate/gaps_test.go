package replicate

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/internal/testutil"
	"github.com/edgehub/edgehub/store"
)

func TestGapBook(t *testing.T) {
	k := store.OriginKey{Hub: "a", Shard: 2}
	steps := []struct {
		name       string
		from, to   uint64
		wantFresh  uint64
		wantRanges [][2]uint64
	}{
		{name: "first", from: 10, to: 19, wantFresh: 10, wantRanges: [][2]uint64{{10, 19}}},
		{name: "announced again", from: 10, to: 19, wantFresh: 0, wantRanges: [][2]uint64{{10, 19}}},
		{name: "inside", from: 12, to: 15, wantFresh: 0, wantRanges: [][2]uint64{{10, 19}}},
		{name: "extends", from: 15, to: 24, wantFresh: 5, wantRanges: [][2]uint64{{10, 24}}},
		{name: "disjoint", from: 40, to: 49, wantFresh: 10, wantRanges: [][2]uint64{{10, 24}, {40, 49}}},
		{name: "adjacent merges", from: 25, to: 30, wantFresh: 6, wantRanges: [][2]uint64{{10, 30}, {40, 49}}},
		{name: "bridges", from: 5, to: 45, wantFresh: 5 + 9, wantRanges: [][2]uint64{{5, 49}}},
		{name: "empty range", from: 60, to: 59, wantFresh: 0, wantRanges: [][2]uint64{{5, 49}}},
	}
	path := filepath.Join(t.TempDir(), "gaps.json")
	b, err := newGapBook(path)
	if err != nil {
		t.Fatal(err)
	}
	gaps := uint64(0)
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			fresh, err := b.add("s", k, st.from, st.to, st.name)
			if err != nil || fresh != st.wantFresh {
				t.Fatalf("add = %d, %v; want %d", fresh, err, st.wantFresh)
			}
			if fresh > 0 {
				gaps++
			}
			e, _ := b.entry("s", k)
			if !reflect.DeepEqual(e.Ranges, st.wantRanges) || e.Gaps != gaps {
				t.Fatalf("entry %+v, want ranges %v and %d gaps", e, st.wantRanges, gaps)
			}
		})
	}
	t.Run("covers and within", func(t *testing.T) {
		b2 := &gapBook{entries: map[gapKey]*gapEntry{}}
		b2.add("s", k, 10, 19, "")
		b2.add("s", k, 30, 39, "")
		tests := []struct {
			lo, hi uint64
			covers bool
			within int
		}{
			{lo: 10, hi: 19, covers: true, within: 1},
			{lo: 12, hi: 13, covers: true, within: 1},
			{lo: 9, hi: 19, covers: false, within: 1},
			{lo: 10, hi: 30, covers: false, within: 2},
			{lo: 20, hi: 29, covers: false, within: 0},
			{lo: 1, hi: 100, covers: false, within: 2},
		}
		for _, tt := range tests {
			if got := b2.covers("s", k, tt.lo, tt.hi); got != tt.covers {
				t.Errorf("covers(%d, %d) = %v", tt.lo, tt.hi, got)
			}
			if got := len(b2.within("s", k, tt.lo, tt.hi)); got != tt.within {
				t.Errorf("within(%d, %d) has %d ranges, want %d", tt.lo, tt.hi, got, tt.within)
			}
		}
	})
	t.Run("reloaded", func(t *testing.T) {
		again, err := newGapBook(path)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := b.entry("s", k)
		got, ok := again.entry("s", k)
		if !ok || !reflect.DeepEqual(got, want) {
			t.Fatalf("reloaded %+v, want %+v", got, want)
		}
		if fresh, _ := again.add("s", k, 5, 49, "again"); fresh != 0 {
			t.Fatalf("a reloaded book counts a known gap again (%d fresh)", fresh)
		}
		if all := again.all(); len(all) != 1 || all[0].Gaps != gaps || all[0].Origin != "a" || all[0].Shard != 2 {
			t.Fatalf("all = %+v", all)
		}
	})
	t.Run("forget deleted streams", func(t *testing.T) {
		if err := b.forget(func(string) bool { return false }); err != nil {
			t.Fatal(err)
		}
		again, err := newGapBook(path)
		if err != nil || len(again.all()) != 0 {
			t.Fatalf("after forget: %+v, %v", again.all(), err)
		}
	})
	t.Run("damaged file", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "gaps.json")
		if err := os.WriteFile(bad, []byte("{not json"), 0o644); err != nil {
			t.Fatal(err)
		}
		b, err := newGapBook(bad)
		if err == nil || b == nil || len(b.all()) != 0 {
			t.Fatalf("damaged book: %v, %v", b, err)
		}
	})
}

// trimTo shrinks st's size limit so retention drops its oldest chunks, and
// returns the first origin sequence of k still held.
func trimTo(t testing.TB, s *store.Store, st *store.Stream, maxBytes int64, k store.OriginKey) uint64 {
	t.Helper()
	c := st.Config()
	c.MaxBytes = maxBytes
	if err := s.UpdateStream(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	if err := st.Enforce(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	first, err := st.ReadOrigin(k, 0, 1)
	if err != nil || len(first) == 0 {
		t.Fatalf("nothing of %v left: %v", k, err)
	}
	if first[0].Origin.Seq <= 1 {
		t.Fatalf("retention removed nothing of %v", k)
	}
	return first[0].Origin.Seq
}

// TestGapWhenOriginGoneAndRelaysTrimmed: the origin is down and the only
// peer holding more of it trimmed the records a new hub needs first. The
// new hub waits for the origin for GapAfter; if the origin returns it gets
// everything; if not, it reports the gap and takes the rest from the peer.
func TestGapWhenOriginGoneAndRelaysTrimmed(t *testing.T) {
	tests := []struct {
		name          string
		gapAfter      time.Duration
		originReturns bool
	}{
		{name: "origin gone: gap after GapAfter", gapAfter: 100 * time.Millisecond},
		{name: "origin returns within GapAfter: no gap", gapAfter: time.Hour, originReturns: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			net := newMemNet()
			a, b := net.addHub(t, "a"), net.addHub(t, "b")
			createStream(t, a, "r", 1, "all")
			for i := 1; i <= 4; i++ { // separate appends at b: chunks its retention drops one by one
				produce(t, a, "r", 500)
				testutil.Eventually(t, "b synced", func() bool { return total(content(t, b, "r")) == 500*i })
			}
			ka := store.OriginKey{Hub: "a"}
			bst := stream(t, b, "r")
			first := trimTo(t, b.store, bst, bst.Stats()[0].Bytes/2, ka)
			a.halt()
			c := net.addHubWith(t, "c", func(c *Config) { c.GapAfter = tt.gapAfter })
			if tt.originReturns {
				testutil.Eventually(t, "c waits for the origin, saying why", func() bool {
					for _, s := range c.rep.Status() {
						if s.Origin == "a" && s.State == "waiting" && strings.Contains(s.LastError, "declaring them a gap in") {
							return true
						}
					}
					return false
				})
				if got := len(content(t, c, "r")[ka]); got != 0 {
					t.Fatalf("c took %d records of a while waiting for it", got)
				}
				net.start(t, a)
				testutil.Eventually(t, "c holds all of a's records", func() bool { return sameContent(content(t, a, "r"), content(t, c, "r")) })
				if n := counterValue(c.rep.metrics.gaps.WithLabelValues("r", "a")); n != 0 {
					t.Fatalf("%v gaps reported though the origin returned", n)
				}
				return
			}
			testutil.Eventually(t, "c holds what b holds", func() bool { return sameContent(content(t, b, "r"), content(t, c, "r")) })
			if got, want := len(content(t, c, "r")[ka]), int(2000-first+1); got != want {
				t.Fatalf("c holds %d of a's records, want %d", got, want)
			}
			testutil.Eventually(t, "the gap is reported", func() bool {
				return counterValue(c.rep.metrics.gaps.WithLabelValues("r", "a")) == 1 &&
					counterValue(c.rep.metrics.gapSeqs.WithLabelValues("r", "a")) == float64(first-1)
			})
			var gs []GapStatus
			for _, g := range c.rep.Gaps() {
				// (b's own origin shows a gap too: b's retention deleted
				// sequences of its shard, which c cannot tell from b's own
				// records; see docs/federation.md, "Gaps".)
				if g.Origin == "a" {
					gs = append(gs, g)
				}
			}
			if len(gs) != 1 || gs[0].Sequences != first-1 || !strings.Contains(gs[0].Last, "unreachable") {
				t.Fatalf("gaps listed: %+v", gs)
			}
			for _, s := range c.rep.Status() {
				if s.Origin == "a" && (s.Gaps != 1 || s.GapSeqs != first-1) {
					t.Fatalf("pull status %+v, want 1 gap of %d", s, first-1)
				}
			}
		})
	}
}

// TestGapCountedOnceAcrossRestart: an origin whose retention deleted a
// whole idle shard announces the gap at every pull, and the puller's
// watermark never moves past it; the gap book (StateFile) keeps it counted
// once across reconnects and restarts.
func TestGapCountedOnceAcrossRestart(t *testing.T) {
	net := newMemNet()
	a := net.addHub(t, "a")
	st := createStream(t, a, "e", 1, "all")
	produce(t, a, "e", 500)
	c := st.Config()
	c.Retention = time.Millisecond
	if err := a.store.UpdateStream(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond)
	if err := st.Enforce(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if first, last, _ := st.Bounds(0); first <= last {
		t.Fatalf("retention left %d..%d", first, last)
	}
	state := filepath.Join(t.TempDir(), "gaps.json")
	b := net.addHubWith(t, "b", func(c *Config) { c.StateFile = state })
	counted := func() float64 { return counterValue(b.rep.metrics.gaps.WithLabelValues("e", "a")) }
	testutil.Eventually(t, "the gap is reported", func() bool { return counted() == 1 })
	// Reconnect: the origin announces it again.
	net.setCut("a", "b", true)
	time.Sleep(50 * time.Millisecond)
	net.setCut("a", "b", false)
	testutil.Eventually(t, "b follows a again", func() bool {
		for _, s := range b.rep.Status() {
			if s.Origin == "a" && s.State == "following" {
				return true
			}
		}
		return false
	})
	if n := counted(); n != 1 {
		t.Fatalf("gap counted %v times after a reconnect", n)
	}
	// Restart: a new process, the same state file.
	b.halt()
	net.start(t, b)
	testutil.Eventually(t, "b follows a after its restart", func() bool {
		for _, s := range b.rep.Status() {
			if s.Origin == "a" && s.State == "following" && s.Gaps == 1 && s.GapSeqs == 500 {
				return true
			}
		}
		return false
	})
	if n := counted(); n != 0 {
		t.Fatalf("the restarted hub counted the known gap %v times", n)
	}
}

// TestRelayAnnouncesRecordedGaps: b lost records of a to a's retention (a
// gap at b); c, cut off from a, pulls a's records from b and learns of the
// gap from b instead of skipping it silently.
func TestRelayAnnouncesRecordedGaps(t *testing.T) {
	net := newMemNet()
	a := net.addHub(t, "a")
	st, err := a.store.CreateStream(context.Background(), store.StreamConfig{Name: "g", Shards: 1, MaxBytes: 20 << 10,
		Meta: map[string]string{MetaPolicy: "all"}})
	if err != nil {
		t.Fatal(err)
	}
	produce(t, a, "g", 3000)
	if err := st.Enforce(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	first, _, _ := st.Bounds(0)
	b := net.addHub(t, "b")
	testutil.Eventually(t, "b reports the gap", func() bool { return counterValue(b.rep.metrics.gaps.WithLabelValues("g", "a")) == 1 })
	net.setCut("a", "c", true)
	c := net.addHub(t, "c")
	testutil.Eventually(t, "c holds what b holds", func() bool { return sameContent(content(t, b, "g"), content(t, c, "g")) })
	testutil.Eventually(t, "c reports the gap b announced", func() bool {
		return counterValue(c.rep.metrics.gaps.WithLabelValues("g", "a")) == 1 &&
			counterValue(c.rep.metrics.gapSeqs.WithLabelValues("g", "a")) == float64(first-1)
	})
	if s := c.rep.Status(); len(s) == 0 || s[0].Peer != "b" {
		t.Fatalf("c pulls from %+v, want b", s)
	}
}

// TestServeRelayHoles serves a foreign origin whose numbering has a hole
// (301..400: the origin's shard held other origins' records there) from a
// relay, before and after the relay's retention trimmed it, with and
// without recorded gaps.
func TestServeRelayHoles(t *testing.T) {
	cfg := store.DefaultConfig(t.TempDir())
	cfg.Logger = quietLogger()
	s, err := store.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	st, err := s.CreateStream(context.Background(), store.StreamConfig{Name: "h", Shards: 1, Meta: map[string]string{MetaPolicy: "all"}})
	if err != nil {
		t.Fatal(err)
	}
	k := store.OriginKey{Hub: "x"}
	for _, r := range [][2]uint64{{1, 100}, {101, 200}, {201, 300}, {401, 500}, {501, 600}, {601, 700}} {
		var recs []record.Record
		for seq := r[0]; seq <= r[1]; seq++ {
			recs = append(recs, record.Record{Value: make([]byte, 100), Origin: record.Origin{Hub: "x", Seq: seq}})
		}
		if _, err := st.Append(context.Background(), store.Batch{Shard: 0, Records: recs}); err != nil {
			t.Fatal(err)
		}
	}
	srv := &server{self: "relay", store: s, tags: func(string) ([]string, bool) { return nil, true },
		heartbeat: time.Second, maxBatch: 4 << 20, high: newHighCache(), gaps: &gapBook{entries: map[gapKey]*gapEntry{}},
		logger: quietLogger(), metrics: newMetrics()}
	// serve pulls once after `after` and summarises the answer: records
	// (first..last, count), gaps and trims, in order.
	serve := func(t *testing.T, after uint64) []string {
		t.Helper()
		var msgs []Msg
		if err := srv.serve(context.Background(), PullRequest{Requester: "p", Stream: "h", Origin: k, After: after}, collectSender{&msgs}); err != nil {
			t.Fatal(err)
		}
		var out []string
		var lo, hi, n uint64
		flush := func() {
			if n > 0 {
				out = append(out, fmtRange("records", lo, hi, n))
				n = 0
			}
		}
		for _, m := range msgs {
			switch m.Type {
			case FramePullRecords:
				recs, err := record.DecodeBatch(m.Records.Batch, nil)
				if err != nil {
					t.Fatal(err)
				}
				for _, r := range recs {
					if n == 0 {
						lo = r.Origin.Seq
					}
					hi = r.Origin.Seq
					n++
				}
			case FramePullGap:
				flush()
				out = append(out, fmtRange("gap", m.Gap.From, m.Gap.To, 0))
			case FramePullTrimmed:
				flush()
				out = append(out, fmtRange("trimmed", m.Trimmed, m.Trimmed, 0))
			}
		}
		flush()
		return out
	}
	check := func(t *testing.T, after uint64, want ...string) {
		t.Helper()
		if got := serve(t, after); !reflect.DeepEqual(got, want) {
			t.Fatalf("after %d: %q, want %q", after, got, want)
		}
	}
	t.Run("untrimmed: the numbering hole is served as is", func(t *testing.T) {
		check(t, 0, "records 1..700 (600)")
		check(t, 350, "records 401..700 (300)")
	})
	first := trimTo(t, s, st, 5*int64(100*120), k)
	t.Run("trimmed: refused below what is held", func(t *testing.T) {
		check(t, 0, fmtRange("trimmed", first, first, 0))
		check(t, first-2, fmtRange("trimmed", first, first, 0))
	})
	t.Run("trimmed: served from what is held, through the numbering hole", func(t *testing.T) {
		check(t, first-1, fmtRange("records", first, 700, 700-first+1-100))
		check(t, first+10, fmtRange("records", first+11, 700, 700-first-10-100))
	})
	t.Run("recorded gaps are announced where they fall", func(t *testing.T) {
		srv.gaps.add("h", k, 1, first-1, "test")
		srv.gaps.add("h", k, 301, 400, "test")
		check(t, 0, fmtRange("gap", 1, first-1, 0), fmtRange("records", first, 300, 300-first+1),
			fmtRange("gap", 301, 400, 0), "records 401..700 (300)")
		check(t, 350, fmtRange("gap", 351, 400, 0), "records 401..700 (300)")
	})
}

func fmtRange(what string, lo, hi, n uint64) string {
	if what == "records" {
		return fmt.Sprintf("records %d..%d (%d)", lo, hi, n)
	}
	return fmt.Sprintf("%s %d..%d", what, lo, hi)
}

// TestGapBookDropsDamagedEntries: entries that do not hold up are dropped
// and reported, the others kept. They used to be skipped silently, and
// unsorted or overlapping ranges were believed (reach would have let a
// puller skip records it could still fetch).
func TestGapBookDropsDamagedEntries(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gaps.json")
	data := `{"version":1,"streams":{"s":{
		"hub-a/0":{"ranges":[[1,5],[9,9]],"gaps":2,"sequences":6},
		"hub-a/1":{"ranges":[[9,9],[1,5]]},
		"hub-a/2":{"ranges":[[1,5],[6,7]]},
		"hub-a/3":{"ranges":[[0,5]]},
		"hub-a/x":{"ranges":[[1,2]]},
		"nohub":{"ranges":[[1,2]]},
		"hub-a/4":null}}}`
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := newGapBook(path)
	if err == nil || !strings.Contains(err.Error(), "dropped 6 damaged entries") {
		t.Fatalf("err = %v, want 6 entries reported dropped", err)
	}
	all := b.all()
	if len(all) != 1 || all[0].Stream != "s" || b.reach("s", store.OriginKey{Hub: "hub-a", Shard: 0}, 0) != 5 {
		t.Fatalf("kept %+v, want hub-a/0 alone", all)
	}
	if got := b.reach("s", store.OriginKey{Hub: "hub-a", Shard: 1}, 0); got != 0 {
		t.Fatalf("a dropped entry still moves reach: %d", got)
	}
}

// FuzzDecodeGapBook: any file decodes without panicking, and what it keeps
// obeys the book's invariants (sorted, merged, non-empty ranges), so reach
// and within can trust them.
func FuzzDecodeGapBook(f *testing.F) {
	f.Add([]byte(`{"version":1,"streams":{"s":{"h/0":{"ranges":[[1,5],[9,9]],"gaps":2,"sequences":6,"last":"x"}}}}`))
	f.Add([]byte(`{"version":1,"streams":{"s":{"h/0":{"ranges":[[9,9],[1,5]]},"h/1":null}}}`))
	f.Add([]byte(`{"version":2}`))
	f.Add([]byte(`{"version":1,"streams":{"s":{"h/18446744073709551615":{"ranges":[[18446744073709551615,18446744073709551615]]}}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, _ := decodeGapBook(data)
		for k, e := range entries {
			var prev uint64
			for j, r := range e.Ranges {
				if r[0] == 0 || r[1] < r[0] || j > 0 && r[0] <= prev+1 {
					t.Fatalf("%v kept ranges %v", k, e.Ranges)
				}
				prev = r[1]
			}
		}
	})
}

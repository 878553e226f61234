package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/internal/testutil"
)

// testClock is a settable clock for retention tests.
type testClock struct{ ns atomic.Int64 }

func (c *testClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *testClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func testConfig(tb testing.TB, dir string) Config {
	tb.Helper()
	cfg := DefaultConfig(dir)
	cfg.Logger = quietLogger()
	cfg.RetentionInterval = time.Hour // tests call Enforce themselves
	return cfg
}

func openStore(tb testing.TB, cfg Config) *Store {
	tb.Helper()
	s, err := Open(cfg)
	if err != nil {
		tb.Fatalf("open store: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

func newStream(tb testing.TB, s *Store, cfg StreamConfig) *Stream {
	tb.Helper()
	st, err := s.CreateStream(context.Background(), cfg)
	if err != nil {
		tb.Fatalf("create stream: %v", err)
	}
	return st
}

func appendValues(tb testing.TB, st *Stream, shard int, values ...string) Result {
	tb.Helper()
	recs := make([]record.Record, len(values))
	for i, v := range values {
		recs[i] = record.Record{Value: []byte(v)}
	}
	res, err := st.Append(context.Background(), Batch{Shard: shard, Records: recs})
	if err != nil {
		tb.Fatalf("append: %v", err)
	}
	return res
}

func readAll(tb testing.TB, st *Stream, shard int) []record.Record {
	tb.Helper()
	var out []record.Record
	for from := uint64(0); ; {
		recs, err := st.Read(shard, from, ReadOptions{MaxRecords: 100})
		if err != nil {
			tb.Fatalf("read shard %d from %d: %v", shard, from, err)
		}
		if len(recs) == 0 {
			return out
		}
		out = append(out, recs...)
		from = recs[len(recs)-1].Seq + 1
	}
}

func values(recs []record.Record) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = string(r.Value)
	}
	return out
}

func TestAppendAssignsDenseSequences(t *testing.T) {
	s := openStore(t, testConfig(t, t.TempDir()))
	st := newStream(t, s, StreamConfig{Name: "events", Shards: 2})
	r1 := appendValues(t, st, 0, "a", "b")
	r2 := appendValues(t, st, 0, "c")
	appendValues(t, st, 1, "x")
	want := []Position{{0, 1}, {0, 2}}
	if fmt.Sprint(r1.Positions) != fmt.Sprint(want) || r2.Positions[0] != (Position{0, 3}) {
		t.Fatalf("positions %v %v", r1.Positions, r2.Positions)
	}
	got := readAll(t, st, 0)
	if strings.Join(values(got), ",") != "a,b,c" {
		t.Fatalf("shard 0 = %v", values(got))
	}
	for i, r := range got {
		if r.Seq != uint64(i+1) {
			t.Fatalf("record %d has seq %d", i, r.Seq)
		}
		if i > 0 && r.IngestTime < got[i-1].IngestTime {
			t.Fatalf("ingest time went back at %d", i)
		}
	}
	if first, last, _ := st.Bounds(1); first != 1 || last != 1 {
		t.Fatalf("shard 1 bounds %d..%d", first, last)
	}
}

func TestKeyRoutingKeepsKeyOrder(t *testing.T) {
	s := openStore(t, testConfig(t, t.TempDir()))
	st := newStream(t, s, StreamConfig{Name: "routed", Shards: 8})
	var recs []record.Record
	for i := 0; i < 200; i++ {
		recs = append(recs, record.Record{Key: []byte(fmt.Sprintf("k%d", i%10)), Value: []byte(fmt.Sprint(i))})
	}
	res, err := st.Append(context.Background(), Batch{Shard: -1, Records: recs})
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range res.Positions {
		if want := record.ShardForKey(recs[i].Key, 8); int(p.Shard) != want {
			t.Fatalf("record %d in shard %d, key routes to %d", i, p.Shard, want)
		}
	}
	// Per key, values appear in append order.
	last := map[string]int{}
	for sh := 0; sh < 8; sh++ {
		for _, r := range readAll(t, st, sh) {
			var v int
			fmt.Sscan(string(r.Value), &v)
			if prev, ok := last[string(r.Key)]; ok && v <= prev {
				t.Fatalf("key %s: %d after %d", r.Key, v, prev)
			}
			last[string(r.Key)] = v
		}
	}
	if len(last) != 10 {
		t.Fatalf("saw %d keys", len(last))
	}
	// Keyless records spread over shards.
	res, err = st.Append(context.Background(), Batch{Shard: -1, Records: make([]record.Record, 16)})
	if err != nil {
		t.Fatal(err)
	}
	used := map[uint32]bool{}
	for _, p := range res.Positions {
		used[p.Shard] = true
	}
	if len(used) != 8 {
		t.Fatalf("16 keyless records used %d of 8 shards", len(used))
	}
}

func TestRecordFieldsRoundTrip(t *testing.T) {
	s := openStore(t, testConfig(t, t.TempDir()))
	st := newStream(t, s, StreamConfig{Name: "fields", Shards: 1})
	in := record.Record{
		Key: []byte("k"), Value: []byte("v"), Time: 12345,
		Headers: []record.Header{{Key: "content-type", Value: []byte("json")}},
	}
	if _, err := st.Append(context.Background(), Batch{Records: []record.Record{in}}); err != nil {
		t.Fatal(err)
	}
	got := readAll(t, st, 0)
	if len(got) != 1 || string(got[0].Key) != "k" || got[0].Time != 12345 || got[0].Headers[0].Key != "content-type" ||
		string(got[0].Headers[0].Value) != "json" || got[0].IngestTime == 0 || !got[0].Origin.IsLocal() {
		t.Fatalf("got %+v", got)
	}
}

func TestReopenKeepsEverything(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	st := newStream(t, s, StreamConfig{Name: "persist", Shards: 3, Retention: time.Hour, Compact: true})
	for i := 0; i < 50; i++ {
		appendValues(t, st, i%3, fmt.Sprint(i))
	}
	_, err = st.Append(context.Background(), Batch{Shard: 1, Records: []record.Record{{Value: []byte("r"), Origin: record.Origin{Hub: "peer", Shard: 2, Seq: 9}}}})
	if err != nil {
		t.Fatal(err)
	}
	before := st.Stats()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}

	s2 := openStore(t, cfg)
	st2, err := s2.Stream("persist")
	if err != nil {
		t.Fatal(err)
	}
	if c := st2.Config(); c.Shards != 3 || c.Retention != time.Hour || !c.Compact {
		t.Fatalf("config after reopen: %+v", c)
	}
	after := st2.Stats()
	if fmt.Sprint(before) != fmt.Sprint(after) {
		t.Fatalf("stats changed across reopen:\n%v\n%v", before, after)
	}
	if wm := st2.Watermark(OriginKey{"peer", 2}); wm != 9 {
		t.Fatalf("watermark after reopen = %d", wm)
	}
	// Sequences continue after reopen.
	res := appendValues(t, st2, 0, "next")
	if res.Positions[0].Seq != after[0].LastSeq+1 {
		t.Fatalf("seq after reopen %d, last was %d", res.Positions[0].Seq, after[0].LastSeq)
	}
}

func TestCreateStreamValidation(t *testing.T) {
	s := openStore(t, testConfig(t, t.TempDir()))
	ctx := context.Background()
	tests := []struct {
		name string
		cfg  StreamConfig
		want error
	}{
		{"empty name", StreamConfig{Name: "", Shards: 1}, ErrInvalidName},
		{"slash", StreamConfig{Name: "a/b", Shards: 1}, ErrInvalidName},
		{"dot start", StreamConfig{Name: ".hidden", Shards: 1}, ErrInvalidName},
		{"dotdot", StreamConfig{Name: "..", Shards: 1}, ErrInvalidName},
		{"space", StreamConfig{Name: "a b", Shards: 1}, ErrInvalidName},
		{"too long", StreamConfig{Name: strings.Repeat("a", 129), Shards: 1}, ErrInvalidName},
		{"too many shards", StreamConfig{Name: "ok", Shards: 1025}, ErrInvalidConfig},
		{"negative retention", StreamConfig{Name: "ok", Shards: 1, Retention: -1}, ErrInvalidConfig},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.CreateStream(ctx, tc.cfg)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
	if _, err := s.CreateStream(ctx, StreamConfig{Name: strings.Repeat("a", 128), Shards: 1}); err != nil {
		t.Fatalf("128-char name refused: %v", err)
	}
	newStream(t, s, StreamConfig{Name: "dup", Shards: 2})
	if _, err := s.CreateStream(ctx, StreamConfig{Name: "dup", Shards: 2}); err != nil {
		t.Fatalf("re-creating with the same config: %v", err)
	}
	if _, err := s.CreateStream(ctx, StreamConfig{Name: "dup", Shards: 3}); !errors.Is(err, ErrStreamExists) {
		t.Fatalf("shard change: err = %v", err)
	}
	if err := s.UpdateStream(ctx, StreamConfig{Name: "dup", Shards: 3}); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("update shard change: err = %v", err)
	}
	if err := s.UpdateStream(ctx, StreamConfig{Name: "dup", Shards: 2, Retention: time.Minute}); err != nil {
		t.Fatal(err)
	}
	st, _ := s.Stream("dup")
	if st.Config().Retention != time.Minute {
		t.Fatalf("update not applied: %+v", st.Config())
	}
}

func TestRecordTooLarge(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.MaxRecordBytes = 1000
	s := openStore(t, cfg)
	st := newStream(t, s, StreamConfig{Name: "big", Shards: 1})
	_, err := st.Append(context.Background(), Batch{Records: []record.Record{{Value: []byte("ok")}, {Value: make([]byte, 1001)}}})
	if !errors.Is(err, ErrRecordTooLarge) || !strings.Contains(err.Error(), "record 1") {
		t.Fatalf("err = %v", err)
	}
	if got := readAll(t, st, 0); len(got) != 0 {
		t.Fatalf("a refused batch stored %d records", len(got))
	}
	if _, err := st.Append(context.Background(), Batch{Shard: 5, Records: make([]record.Record, 1)}); !errors.Is(err, ErrInvalidShard) {
		t.Fatalf("bad shard: %v", err)
	}
}

func TestDeleteStream(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, testConfig(t, dir))
	st := newStream(t, s, StreamConfig{Name: "gone", Shards: 1})
	appendValues(t, st, 0, "x")
	if err := s.DeleteStream(context.Background(), "gone"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "streams", "gone.db")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("file still there: %v", err)
	}
	if _, err := s.Stream("gone"); !errors.Is(err, ErrStreamNotFound) {
		t.Fatalf("stream still listed: %v", err)
	}
	if _, err := st.Append(context.Background(), Batch{Records: make([]record.Record, 1)}); !errors.Is(err, ErrClosed) {
		t.Fatalf("append to deleted stream: %v", err)
	}
	if err := s.DeleteStream(context.Background(), "gone"); !errors.Is(err, ErrStreamNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	// The name can be reused, starting from scratch.
	st = newStream(t, s, StreamConfig{Name: "gone", Shards: 1})
	if res := appendValues(t, st, 0, "y"); res.Positions[0].Seq != 1 {
		t.Fatalf("recreated stream starts at %d", res.Positions[0].Seq)
	}
}

func TestSecondOpenFailsFast(t *testing.T) {
	dir := t.TempDir()
	openStore(t, testConfig(t, dir))
	_, err := Open(testConfig(t, dir))
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: %v", err)
	}
	if !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "pid") {
		t.Fatalf("message does not say which dir and who holds it: %v", err)
	}
}

func TestDamagedFileIsReported(t *testing.T) {
	tests := []struct {
		name   string
		damage func(path string) error
	}{
		{"garbage header", func(p string) error {
			f, err := os.OpenFile(p, os.O_WRONLY, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = f.WriteAt(bytes.Repeat([]byte{0xAB}, 8192), 0)
			return err
		}},
		{"truncated", func(p string) error { return os.Truncate(p, 100) }},
		{"not bbolt", func(p string) error { return os.WriteFile(p, []byte("hello, I am a text file\n"), 0o644) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := testConfig(t, dir)
			s, err := Open(cfg)
			if err != nil {
				t.Fatal(err)
			}
			st := newStream(t, s, StreamConfig{Name: "victim", Shards: 1})
			appendValues(t, st, 0, "precious")
			s.Close()
			path := filepath.Join(dir, "streams", "victim.db")
			if err := tc.damage(path); err != nil {
				t.Fatal(err)
			}
			before, _ := os.ReadFile(path)
			_, err = Open(cfg)
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) {
				t.Fatalf("open damaged store: %v", err)
			}
			after, _ := os.ReadFile(path)
			if !bytes.Equal(before, after) {
				t.Fatal("open modified the damaged file")
			}
			// The lock was released: a repaired directory opens.
			os.Remove(path)
			s2, err := Open(cfg)
			if err != nil {
				t.Fatalf("open after removing the damaged file: %v", err)
			}
			s2.Close()
		})
	}
}

func TestCorruptChunkNeverReturned(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	st := newStream(t, s, StreamConfig{Name: "bits", Shards: 1})
	appendValues(t, st, 0, "needle-aaaaaaaaaaaaaaaa")
	appendValues(t, st, 0, "second-chunk")
	s.Close()
	path := filepath.Join(dir, "streams", "bits.db")
	testutil.FlipAll(t, path, "needle")
	s2 := openStore(t, cfg) // the last chunk is fine, so open succeeds
	st2, _ := s2.Stream("bits")
	_, err = st2.Read(0, 1, ReadOptions{})
	var ce *CorruptError
	if !errors.As(err, &ce) || ce.Shard != 0 || ce.Seq != 1 {
		t.Fatalf("read of damaged chunk: %v", err)
	}
	// Reading past the damage still works.
	recs, err := st2.Read(0, 2, ReadOptions{})
	if err != nil || len(recs) != 1 || string(recs[0].Value) != "second-chunk" {
		t.Fatalf("read after damage: %v %v", recs, err)
	}
}

func TestIdempotentProducer(t *testing.T) {
	s := openStore(t, testConfig(t, t.TempDir()))
	st := newStream(t, s, StreamConfig{Name: "idem", Shards: 2})
	ctx := context.Background()
	send := func(seq uint64, vals ...string) (Result, error) {
		recs := make([]record.Record, len(vals))
		for i, v := range vals {
			recs[i] = record.Record{Value: []byte(v)}
		}
		return st.Append(ctx, Batch{Shard: 1, Records: recs, ProducerID: 42, ProducerSeq: seq})
	}
	r1, err := send(0, "a", "b")
	if err != nil || r1.Duplicate {
		t.Fatal(err, r1)
	}
	appendValues(t, st, 1, "other") // another writer interleaves
	r2, err := send(2, "c")
	if err != nil || r2.Duplicate {
		t.Fatal(err, r2)
	}
	// Retries of both batches are answered with the original positions.
	d1, err := send(0, "a", "b")
	if err != nil || !d1.Duplicate || fmt.Sprint(d1.Positions) != fmt.Sprint(r1.Positions) {
		t.Fatalf("retry 1: %v %v (want %v)", d1, err, r1.Positions)
	}
	d2, err := send(2, "c")
	if err != nil || !d2.Duplicate || d2.Positions[0] != r2.Positions[0] {
		t.Fatalf("retry 2: %v %v", d2, err)
	}
	if _, err := send(5, "gap"); !errors.Is(err, ErrSequenceGap) {
		t.Fatalf("gap: %v", err)
	}
	if got := values(readAll(t, st, 1)); strings.Join(got, ",") != "a,b,other,c" {
		t.Fatalf("stored %v", got)
	}
	// Same producer, other shard: independent sequence space.
	if _, err := st.Append(ctx, Batch{Shard: 0, Records: []record.Record{{Value: []byte("z")}}, ProducerID: 42, ProducerSeq: 100}); err != nil {
		t.Fatal(err)
	}
	// Duplicates inside one group commit are caught too.
	var wg sync.WaitGroup
	results := make([]Result, 8)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], _ = send(3, "d")
		}()
	}
	wg.Wait()
	stored := 0
	for _, r := range results {
		if !r.Duplicate {
			stored++
		}
		if r.Positions[0] != results[0].Positions[0] {
			t.Fatalf("concurrent retries answered differently: %v", results)
		}
	}
	if stored != 1 {
		t.Fatalf("%d of 8 concurrent sends stored", stored)
	}
	// Too old for the window.
	for i := uint64(4); i < 4+producerWindow; i++ {
		if _, err := send(i, "w"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := send(0, "a", "b"); !errors.Is(err, ErrDuplicateTooOld) {
		t.Fatalf("old retry: %v", err)
	}
	// Keyed idempotent appends need an explicit shard.
	if _, err := st.Append(ctx, Batch{Shard: -1, Records: make([]record.Record, 1), ProducerID: 1}); err == nil {
		t.Fatal("routed idempotent batch accepted")
	}
}

func TestIdempotentProducerSurvivesRestart(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	st := newStream(t, s, StreamConfig{Name: "idem", Shards: 1})
	batch := Batch{Records: []record.Record{{Value: []byte("once")}}, ProducerID: 7, ProducerSeq: 10}
	r1, err := st.Append(context.Background(), batch)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2 := openStore(t, cfg)
	st2, _ := s2.Stream("idem")
	r2, err := st2.Append(context.Background(), batch)
	if err != nil || !r2.Duplicate || r2.Positions[0] != r1.Positions[0] {
		t.Fatalf("retry after restart: %v %v", r2, err)
	}
	if n := len(readAll(t, st2, 0)); n != 1 {
		t.Fatalf("%d records stored", n)
	}
}

func TestOriginDeduplication(t *testing.T) {
	s := openStore(t, testConfig(t, t.TempDir()))
	st := newStream(t, s, StreamConfig{Name: "repl", Shards: 2})
	ctx := context.Background()
	foreign := func(hub string, shard uint32, seqs ...uint64) []record.Record {
		var out []record.Record
		for _, q := range seqs {
			out = append(out, record.Record{Value: []byte(fmt.Sprintf("%s/%d/%d", hub, shard, q)), Origin: record.Origin{Hub: hub, Shard: shard, Seq: q}})
		}
		return out
	}
	r, err := st.Append(ctx, Batch{Shard: 0, Records: foreign("A", 0, 1, 2, 3)})
	if err != nil {
		t.Fatal(err)
	}
	// Replay overlapping the applied range: only 4 and 5 are new.
	r, err = st.Append(ctx, Batch{Shard: 0, Records: foreign("A", 0, 2, 3, 4, 5)})
	if err != nil {
		t.Fatal(err)
	}
	var stored []uint64
	for _, p := range r.Positions {
		stored = append(stored, p.Seq)
	}
	if fmt.Sprint(stored) != "[0 0 4 5]" {
		t.Fatalf("positions of replay: %v", stored)
	}
	// Another origin shard is independent; duplicates inside one batch too.
	if _, err := st.Append(ctx, Batch{Shard: 1, Records: append(foreign("A", 1, 1, 2), foreign("A", 1, 2)...)}); err != nil {
		t.Fatal(err)
	}
	if got := len(readAll(t, st, 1)); got != 2 {
		t.Fatalf("shard 1 has %d records", got)
	}
	if wm := st.Watermarks(); wm[OriginKey{"A", 0}] != 5 || wm[OriginKey{"A", 1}] != 2 {
		t.Fatalf("watermarks %v", wm)
	}
	// The origin index serves a pull after a watermark, in origin order.
	recs, err := st.ReadOrigin(OriginKey{"A", 0}, 2, 10)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(values(recs), ",") != "A/0/3,A/0/4,A/0/5" {
		t.Fatalf("ReadOrigin = %v", values(recs))
	}
	for _, r := range recs {
		if r.Origin.Hub != "A" {
			t.Fatalf("origin lost: %+v", r.Origin)
		}
	}
	if recs, _ := st.ReadOrigin(OriginKey{"A", 0}, 5, 10); len(recs) != 0 {
		t.Fatalf("nothing after the watermark, got %v", values(recs))
	}
}

func TestWaitWakesOnCommit(t *testing.T) {
	s := openStore(t, testConfig(t, t.TempDir()))
	st := newStream(t, s, StreamConfig{Name: "w", Shards: 1})
	done := make(chan error, 1)
	go func() { done <- st.Wait(context.Background(), 0, 1) }()
	select {
	case err := <-done:
		t.Fatalf("Wait returned before any record: %v", err)
	case <-time.After(20 * time.Millisecond):
	}
	appendValues(t, st, 0, "x")
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := st.Wait(ctx, 0, 5); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait with cancelled ctx: %v", err)
	}
	go func() { done <- st.Wait(context.Background(), 0, 9) }()
	s.Close()
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Fatalf("Wait across close: %v", err)
	}
}

func TestSeqAtTime(t *testing.T) {
	clock := &testClock{}
	clock.ns.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	cfg := testConfig(t, t.TempDir())
	cfg.Now = clock.Now
	s := openStore(t, cfg)
	st := newStream(t, s, StreamConfig{Name: "ts", Shards: 1})
	start := clock.Now()
	for i := 0; i < 10; i++ {
		appendValues(t, st, 0, fmt.Sprint(i), fmt.Sprint(i)) // two records per chunk, same ingest time
		clock.Advance(time.Second)
	}
	tests := []struct {
		name string
		at   time.Time
		want uint64
	}{
		{"before everything", start.Add(-time.Hour), 1},
		{"exact first", start, 1},
		{"exact middle", start.Add(3 * time.Second), 7},
		{"between", start.Add(3*time.Second + time.Millisecond), 9},
		{"last", start.Add(9 * time.Second), 19},
		{"after everything", start.Add(time.Hour), 21},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := st.SeqAtTime(0, tc.at)
			if err != nil || got != tc.want {
				t.Fatalf("SeqAtTime = %d, %v; want %d", got, err, tc.want)
			}
		})
	}
}

func TestReadPositions(t *testing.T) {
	s := openStore(t, testConfig(t, t.TempDir()))
	st := newStream(t, s, StreamConfig{Name: "r", Shards: 1})
	for i := 0; i < 10; i++ {
		appendValues(t, st, 0, fmt.Sprint(i*3), fmt.Sprint(i*3+1), fmt.Sprint(i*3+2))
	}
	tests := []struct {
		name string
		from uint64
		max  int
		want string
	}{
		{"from zero", 0, 4, "0,1,2,3"},
		{"mid chunk", 5, 3, "4,5,6"},
		{"chunk start", 7, 2, "6,7"},
		{"last", 30, 5, "29"},
		{"past end", 31, 5, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			recs, err := st.Read(0, tc.from, ReadOptions{MaxRecords: tc.max})
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(values(recs), ","); got != tc.want {
				t.Fatalf("got %q want %q", got, tc.want)
			}
		})
	}
}

func TestRetentionByAge(t *testing.T) {
	clock := &testClock{}
	clock.ns.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	cfg := testConfig(t, t.TempDir())
	cfg.Now = clock.Now
	s := openStore(t, cfg)
	st := newStream(t, s, StreamConfig{Name: "age", Shards: 2, Retention: 10 * time.Minute})
	ctx := context.Background()
	for i := 0; i < 200; i++ { // 200 chunks per shard: more than one step
		appendValues(t, st, i%2, fmt.Sprint(i))
		if i == 99 {
			clock.Advance(30 * time.Minute)
		}
	}
	// Foreign records in the old part: their origin index entries go too.
	st.Append(ctx, Batch{Shard: 0, Records: []record.Record{{Value: []byte("f"), Origin: record.Origin{Hub: "X", Seq: 1}}}})
	clock.Advance(5 * time.Minute)
	if err := st.Enforce(ctx, false); err != nil {
		t.Fatal(err)
	}
	got := readAll(t, st, 0)
	if len(got) != 51 || string(got[0].Value) != "100" {
		t.Fatalf("after retention shard 0 has %d records starting %q", len(got), got[0].Value)
	}
	if first, last, _ := st.Bounds(0); first != 51 || last != 101 {
		t.Fatalf("bounds %d..%d", first, last)
	}
	clock.Advance(time.Hour)
	if err := st.Enforce(ctx, false); err != nil {
		t.Fatal(err)
	}
	stats := st.Stats()
	for _, sh := range stats {
		if sh.Records != 0 || sh.Bytes != 0 || sh.FirstSeq != sh.LastSeq+1 {
			t.Fatalf("after full expiry: %+v", sh)
		}
	}
	if recs, _ := st.ReadOrigin(OriginKey{"X", 0}, 0, 10); len(recs) != 0 {
		t.Fatalf("origin index still serves deleted records: %v", recs)
	}
	// Sequences are never reused after the head is gone.
	if res := appendValues(t, st, 0, "new"); res.Positions[0].Seq != 102 {
		t.Fatalf("seq after expiry = %d, want 102", res.Positions[0].Seq)
	}
}

func TestRetentionByBytes(t *testing.T) {
	clock := &testClock{}
	clock.ns.Store(1)
	cfg := testConfig(t, t.TempDir())
	cfg.Now = clock.Now
	s := openStore(t, cfg)
	st := newStream(t, s, StreamConfig{Name: "size", Shards: 2, MaxBytes: 20_000})
	val := strings.Repeat("x", 1000)
	for i := 0; i < 100; i++ {
		appendValues(t, st, i%2, val)
		clock.Advance(time.Millisecond)
	}
	if err := st.Enforce(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, sh := range st.Stats() {
		total += sh.Bytes
		// The newest records survive: each shard keeps its tail.
		if sh.LastSeq != 50 || sh.Records == 0 {
			t.Fatalf("shard %+v", sh)
		}
	}
	if total > 20_000 || total < 15_000 {
		t.Fatalf("live bytes %d after trimming to 20000", total)
	}
}

func TestCompaction(t *testing.T) {
	clock := &testClock{}
	clock.ns.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	cfg := testConfig(t, t.TempDir())
	cfg.Now = clock.Now
	s := openStore(t, cfg)
	st := newStream(t, s, StreamConfig{Name: "kv", Shards: 1, Compact: true, TombstoneRetention: time.Hour})
	ctx := context.Background()
	put := func(k, v string) {
		var val []byte
		if v != "<nil>" {
			val = []byte(v)
		}
		if _, err := st.Append(ctx, Batch{Records: []record.Record{{Key: []byte(k), Value: val}}}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 100; i++ {
		put(fmt.Sprintf("k%d", i%5), fmt.Sprint(i))
	}
	put("k0", "<nil>") // delete k0: seq 101
	appendValues(t, st, 0, "keyless")
	if err := st.Enforce(ctx, true); err != nil {
		t.Fatal(err)
	}
	got := readAll(t, st, 0)
	want := map[string]string{"k1": "96", "k2": "97", "k3": "98", "k4": "99", "k0": "<nil>"}
	var summary []string
	for _, r := range got {
		v := string(r.Value)
		if r.Value == nil {
			v = "<nil>"
		}
		summary = append(summary, fmt.Sprintf("%d:%s=%s", r.Seq, r.Key, v))
	}
	if len(got) != 6 {
		t.Fatalf("after compaction: %v", summary)
	}
	for _, r := range got[:5] {
		v := string(r.Value)
		if r.Value == nil {
			v = "<nil>"
		}
		if want[string(r.Key)] != v {
			t.Fatalf("after compaction: %v", summary)
		}
	}
	// Survivors keep their sequence numbers.
	if got[0].Seq != 97 || got[4].Seq != 101 || got[5].Seq != 102 {
		t.Fatalf("sequences changed: %v", summary)
	}
	if first, _, _ := st.Bounds(0); first != 97 {
		t.Fatalf("first seq %d", first)
	}
	if sh := st.Stats()[0]; sh.Records != 6 {
		t.Fatalf("record count %d", sh.Records)
	}
	// The tombstone expires after its retention.
	clock.Advance(2 * time.Hour)
	put("k9", "new")
	if err := st.Enforce(ctx, true); err != nil {
		t.Fatal(err)
	}
	for _, r := range readAll(t, st, 0) {
		if string(r.Key) == "k0" {
			t.Fatal("expired tombstone survived compaction")
		}
	}
	// Reads still find records by sequence after the rewrite.
	recs, err := st.Read(0, 98, ReadOptions{MaxRecords: 1})
	if err != nil || len(recs) != 1 || recs[0].Seq != 98 {
		t.Fatalf("read at 98: %v %v", recs, err)
	}
}

func TestConcurrentAppendsGroupCommit(t *testing.T) {
	s := openStore(t, testConfig(t, t.TempDir()))
	st := newStream(t, s, StreamConfig{Name: "conc", Shards: 4})
	const writers, each = 32, 50
	var wg sync.WaitGroup
	positions := make([][]Position, writers)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				res, err := st.Append(context.Background(), Batch{Shard: -1, Records: []record.Record{{Key: []byte(fmt.Sprintf("w%d", w)), Value: []byte(fmt.Sprintf("%d/%d", w, i))}}})
				if err != nil {
					t.Error(err)
					return
				}
				positions[w] = append(positions[w], res.Positions[0])
			}
		}()
	}
	wg.Wait()
	seen := map[Position]bool{}
	for w, ps := range positions {
		for i, p := range ps {
			if seen[p] {
				t.Fatalf("position %v assigned twice", p)
			}
			seen[p] = true
			if i > 0 && p.Seq <= ps[i-1].Seq {
				t.Fatalf("writer %d: seq went back", w)
			}
		}
	}
	total := 0
	for sh := 0; sh < 4; sh++ {
		recs := readAll(t, st, sh)
		for i, r := range recs {
			if r.Seq != uint64(i+1) {
				t.Fatalf("shard %d not dense at %d: seq %d", sh, i, r.Seq)
			}
		}
		total += len(recs)
	}
	if total != writers*each {
		t.Fatalf("stored %d, want %d", total, writers*each)
	}
}

func TestSyncIntervalMode(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.Sync = SyncInterval
	cfg.SyncInterval = 5 * time.Millisecond
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	st := newStream(t, s, StreamConfig{Name: "relaxed", Shards: 1})
	appendValues(t, st, 0, "a", "b")
	s.Close()
	s2 := openStore(t, cfg)
	st2, _ := s2.Stream("relaxed")
	if got := values(readAll(t, st2, 0)); strings.Join(got, ",") != "a,b" {
		t.Fatalf("after clean close: %v", got)
	}
}

func TestConfigValidate(t *testing.T) {
	bad := DefaultConfig("")
	bad.MaxRecordBytes = 0
	bad.Sync = SyncInterval
	bad.SyncInterval = 0
	err := bad.Validate()
	for _, want := range []string{"dir is empty", "max record bytes", "sync interval"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, missing %q", err, want)
		}
	}
	if err := DefaultConfig("x").Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestAppendAsyncKeepsQueueOrder(t *testing.T) {
	s := openStore(t, testConfig(t, t.TempDir()))
	st := newStream(t, s, StreamConfig{Name: "async", Shards: 1})
	ctx := context.Background()
	var pending []*Pending
	for i := 0; i < 50; i++ {
		p, err := st.AppendAsync(ctx, Batch{Shard: 0, Records: []record.Record{{Value: []byte(fmt.Sprint(i))}}, ProducerID: 9, ProducerSeq: uint64(i)})
		if err != nil {
			t.Fatal(err)
		}
		pending = append(pending, p)
	}
	for i, p := range pending {
		res, err := p.Wait()
		if err != nil {
			t.Fatalf("batch %d: %v", i, err)
		}
		if res.Positions[0].Seq != uint64(i+1) {
			t.Fatalf("batch %d stored at %d", i, res.Positions[0].Seq)
		}
	}
	if p, err := st.AppendAsync(ctx, Batch{}); err != nil || p == nil {
		t.Fatalf("empty batch: %v", err)
	} else if res, err := p.Wait(); err != nil || len(res.Positions) != 0 {
		t.Fatalf("empty batch result %v %v", res, err)
	}
}

func TestCreateNewStreamIsExclusive(t *testing.T) {
	s := openStore(t, testConfig(t, t.TempDir()))
	var wg sync.WaitGroup
	var created, exists atomic.Int32
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.CreateNewStream(context.Background(), StreamConfig{Name: "once", Shards: 2})
			switch {
			case err == nil:
				created.Add(1)
			case errors.Is(err, ErrStreamExists):
				exists.Add(1)
			default:
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if created.Load() != 1 || exists.Load() != 7 {
		t.Fatalf("%d creates succeeded, %d refused", created.Load(), exists.Load())
	}
}

// SeqAtTime over chunks with gaps left by compaction and retention.
func TestSeqAtTimeAfterCompaction(t *testing.T) {
	clock := &testClock{}
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock.ns.Store(base.UnixNano())
	cfg := testConfig(t, t.TempDir())
	cfg.Now = clock.Now
	s := openStore(t, cfg)
	st := newStream(t, s, StreamConfig{Name: "gaps", Shards: 1, Compact: true})
	ctx := context.Background()
	for i := 0; i < 200; i++ { // second i: a "hot" key, and every 20th a key of its own
		key := "hot"
		if i%20 == 0 {
			key = fmt.Sprintf("cold%d", i)
		}
		if _, err := st.Append(ctx, Batch{Records: []record.Record{{Key: []byte(key), Value: []byte("v")}}}); err != nil {
			t.Fatal(err)
		}
		clock.Advance(time.Second)
	}
	if err := st.Enforce(ctx, true); err != nil {
		t.Fatal(err)
	}
	survivors := readAll(t, st, 0)
	if len(survivors) != 11 { // ten cold keys and the last hot one, with gaps between
		t.Fatalf("%d survivors", len(survivors))
	}
	for i := 0; i < 200; i++ {
		at := base.Add(time.Duration(i) * time.Second)
		want := uint64(201) // none at or after: the next sequence
		for _, r := range survivors {
			if r.IngestTime >= at.UnixNano() {
				want = r.Seq
				break
			}
		}
		got, err := st.SeqAtTime(0, at)
		if err != nil || got != want {
			t.Fatalf("SeqAtTime(+%ds) = %d, %v; want %d", i, got, err, want)
		}
	}
}

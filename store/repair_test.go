package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/internal/testutil"
)

// mixedChunk appends one batch (one chunk) of own records and records of a
// foreign origin, interleaved: values "<tag>-<i>".
func mixedChunk(tb testing.TB, st *Stream, tag string, n int, originSeq *uint64) {
	tb.Helper()
	recs := make([]record.Record, n)
	for i := range recs {
		recs[i] = record.Record{Key: []byte(fmt.Sprintf("k%d", i%3)), Value: []byte(fmt.Sprintf("%s-%d", tag, i)), Time: int64(1000 + i),
			Headers: []record.Header{{Key: "h", Value: []byte(tag)}}}
		if i%2 == 1 {
			*originSeq++
			recs[i].Origin = record.Origin{Hub: "peer", Shard: 0, Seq: *originSeq}
		}
	}
	if _, err := st.Append(context.Background(), Batch{Shard: 0, Records: recs}); err != nil {
		tb.Fatal(err)
	}
}

func sameRecords(tb testing.TB, got, want []record.Record) {
	tb.Helper()
	if len(got) != len(want) {
		tb.Fatalf("%d records, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Seq != w.Seq || g.Origin != w.Origin || !bytes.Equal(g.Key, w.Key) || !bytes.Equal(g.Value, w.Value) ||
			g.Time != w.Time || len(g.Headers) != len(w.Headers) || g.IngestTime != w.IngestTime {
			tb.Fatalf("record %d: got %+v, want %+v", i, g, w)
		}
	}
}

func TestReplaceRepairsDamagedChunk(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	st := newStream(t, s, StreamConfig{Name: "rep", Shards: 1})
	var oseq uint64
	mixedChunk(t, st, "before", 4, &oseq)
	mixedChunk(t, st, "needle", 10, &oseq)
	mixedChunk(t, st, "after", 4, &oseq)
	want := readAll(t, st, 0)
	s.Close()
	path := filepath.Join(dir, "streams", "rep.db")
	testutil.FlipAll(t, path, "needle-7")

	s2 := openStore(t, cfg)
	st2, _ := s2.Stream("rep")
	_, err = st2.Read(0, 5, ReadOptions{})
	var ce *CorruptError
	if !errors.As(err, &ce) || ce.Seq != 5 || ce.File != path {
		t.Fatalf("read of damaged chunk: %v", err)
	}
	if n, err := st2.Scrub(context.Background()); err != nil || n != 1 {
		t.Fatalf("scrub found %d (%v), want 1", n, err)
	}
	dm := st2.Damaged()
	if len(dm) != 1 || dm[0].Shard != 0 || dm[0].From != 5 || dm[0].To != 14 {
		t.Fatalf("damaged: %+v", dm)
	}
	origins, err := st2.DamageOrigins(context.Background(), 0, 5, 14)
	if err != nil {
		t.Fatal(err)
	}
	ps := origins[OriginKey{Hub: "peer", Shard: 0}]
	if len(origins) != 1 || len(ps) != 5 || ps[0] != (OriginPos{OriginSeq: 3, Seq: 6}) || ps[4] != (OriginPos{OriginSeq: 7, Seq: 14}) {
		t.Fatalf("damage origins: %+v", origins)
	}

	// The copies a peer would send: the damaged range's records.
	var fix []record.Record
	for _, r := range want {
		if r.Seq >= 5 && r.Seq <= 14 {
			fix = append(fix, r.Clone())
		}
	}
	refusals := []struct {
		name string
		recs []record.Record
		is   error
	}{
		{"incomplete", fix[:9], ErrIncomplete},
		{"foreign record moved", func() []record.Record {
			r := slices2(fix)
			r[1], r[2] = r[2], r[1]
			r[1].Seq, r[2].Seq = 6, 7
			return r
		}(), nil},
		{"own record on a foreign sequence", func() []record.Record {
			r := slices2(fix)
			r[1].Origin = record.Origin{}
			return r
		}(), nil},
		{"outside the range", append(slices2(fix), record.Record{Seq: 15, Value: []byte("x")}), nil},
	}
	for _, tc := range refusals {
		err := st2.Replace(context.Background(), 0, 5, tc.recs)
		if err == nil || (tc.is != nil && !errors.Is(err, tc.is)) {
			t.Fatalf("%s: replace: %v", tc.name, err)
		}
		if _, err := st2.Read(0, 5, ReadOptions{}); !errors.As(err, &ce) {
			t.Fatalf("%s: damaged chunk served after a refused repair: %v", tc.name, err)
		}
	}
	if err := st2.Replace(context.Background(), 0, 5, fix); err != nil {
		t.Fatal(err)
	}
	if err := st2.Replace(context.Background(), 0, 5, fix); !errors.Is(err, ErrNotDamaged) {
		t.Fatalf("second replace: %v", err)
	}
	sameRecords(t, readAll(t, st2, 0), want)
	if dm := st2.Damaged(); len(dm) != 0 {
		t.Fatalf("still damaged: %+v", dm)
	}
	if got := st2.Stats()[0].Records; got != int64(len(want)) {
		t.Fatalf("shard counts %d records, want %d", got, len(want))
	}
	// Served by origin too, and kept across a restart.
	if recs, err := st2.ReadOrigin(OriginKey{Hub: "peer"}, 2, 100); err != nil || len(recs) != int(oseq)-2 {
		t.Fatalf("read origin: %d records, %v", len(recs), err)
	}
	s2.Close()
	s3 := openStore(t, cfg)
	st3, _ := s3.Stream("rep")
	sameRecords(t, readAll(t, st3, 0), want)
	if n, err := st3.Scrub(context.Background()); err != nil || n != 0 {
		t.Fatalf("scrub after repair found %d (%v)", n, err)
	}
}

func slices2(r []record.Record) []record.Record {
	out := make([]record.Record, len(r))
	for i := range r {
		out[i] = r[i].Clone()
	}
	return out
}

// A damaged last chunk used to stop the store from opening; now it is
// quarantined: the stream opens, serves the rest, takes appends, and
// reports the range until it is repaired.
func TestDamagedLastChunkIsQuarantined(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	st := newStream(t, s, StreamConfig{Name: "tail", Shards: 2})
	appendValues(t, st, 0, "first-a", "first-b")
	appendValues(t, st, 0, "needle-a", "needle-b", "needle-c")
	appendValues(t, st, 1, "other")
	want := readAll(t, st, 0)
	s.Close()
	path := filepath.Join(dir, "streams", "tail.db")
	testutil.FlipAll(t, path, "needle-b")

	s2, err := Open(cfg)
	if err != nil {
		t.Fatalf("open with a damaged last chunk: %v", err)
	}
	defer s2.Close()
	st2, _ := s2.Stream("tail")
	dm := st2.Damaged()
	if len(dm) != 1 || dm[0].Shard != 0 || dm[0].From != 3 || dm[0].To != 5 {
		t.Fatalf("damaged: %+v", dm)
	}
	var ce *CorruptError
	if _, err := st2.Read(0, 3, ReadOptions{}); !errors.As(err, &ce) || ce.Seq != 3 {
		t.Fatalf("read of damaged chunk: %v", err)
	}
	if recs, err := st2.Read(0, 1, ReadOptions{MaxRecords: 2}); err != nil || len(recs) != 2 {
		t.Fatalf("read before damage: %v %v", recs, err)
	}
	appendValues(t, st2, 0, "later")
	if recs, err := st2.Read(0, 6, ReadOptions{}); err != nil || len(recs) != 1 || string(recs[0].Value) != "later" {
		t.Fatalf("read after damage: %v %v", recs, err)
	}
	// The range still ends before the new chunk.
	if dm := st2.Damaged(); len(dm) != 1 || dm[0].To != 5 {
		t.Fatalf("damaged after an append: %+v", dm)
	}
	fix := slices2(want[2:])
	if err := st2.Replace(context.Background(), 0, 3, fix); err != nil {
		t.Fatal(err)
	}
	got := readAll(t, st2, 0)
	if len(got) != 6 || string(got[5].Value) != "later" {
		t.Fatalf("after repair: %v", values(got))
	}
	sameRecords(t, got[:5], want)
}

// A read whose transaction began before a Replace of the chunk it copied,
// and which verifies its copy after the Replace, reports the damage it
// read but does not list the repaired chunk as damaged again (it did, for
// good: every later Replace refused the chunk as not damaged, so the
// replicator's repair never ended; replicate:TestRepairRefetchesDamagedChunks
// hung). A stale entry, however it came, is dropped by the Replace that
// finds the chunk sound.
func TestReadRacingReplaceKeepsRepair(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	st := newStream(t, s, StreamConfig{Name: "rep", Shards: 1})
	var oseq uint64
	mixedChunk(t, st, "before", 4, &oseq)
	mixedChunk(t, st, "needle", 10, &oseq)
	mixedChunk(t, st, "after", 4, &oseq)
	want := readAll(t, st, 0)
	s.Close()
	testutil.FlipAll(t, filepath.Join(dir, "streams", "rep.db"), "needle-7")

	s2 := openStore(t, cfg)
	st2, _ := s2.Stream("rep")
	if n, err := st2.Scrub(context.Background()); err != nil || n != 1 {
		t.Fatalf("scrub found %d (%v), want 1", n, err)
	}
	var fix []record.Record
	for _, r := range want {
		if r.Seq >= 5 && r.Seq <= 14 {
			fix = append(fix, r.Clone())
		}
	}
	// The repair commits after the read's transaction ended, before the
	// read verifies what it copied.
	st2.damage.afterRead = func() {
		st2.damage.afterRead = nil
		if err := st2.Replace(context.Background(), 0, 5, fix); err != nil {
			t.Errorf("replace: %v", err)
		}
	}
	var ce *CorruptError
	if _, err := st2.Read(0, 5, ReadOptions{}); !errors.As(err, &ce) || ce.Seq != 5 {
		t.Fatalf("read of the copy taken before the repair: %v", err)
	}
	if dm := st2.Damaged(); len(dm) != 0 {
		t.Fatalf("repaired chunk listed as damaged again: %+v", dm)
	}
	sameRecords(t, readAll(t, st2, 0), want)

	// A stale entry (noted from a copy of before the repair) goes at the
	// next Replace, which refuses the sound chunk.
	st2.noteDamage(0, 5, errors.New("stale copy"))
	if err := st2.Replace(context.Background(), 0, 5, fix); !errors.Is(err, ErrNotDamaged) {
		t.Fatalf("replace of a sound chunk: %v", err)
	}
	if dm := st2.Damaged(); len(dm) != 0 {
		t.Fatalf("stale entry kept after Replace found the chunk sound: %+v", dm)
	}
}

package store

import (
	"context"
	"fmt"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/edgehub/edgehub/internal/record"
)

// A stream deleted and created again under its name gets a new incarnation;
// an incarnation survives reopening.
func TestIncarnationNewAtEachCreation(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, testConfig(t, dir))
	ctx := context.Background()
	first := newStream(t, s, StreamConfig{Name: "ev", Shards: 2}).Incarnation()
	if len(first) != 2*IncarnationLen || strings.Trim(first, "0123456789abcdef") != "" {
		t.Fatalf("incarnation %q is not %d hex digits", first, 2*IncarnationLen)
	}
	if err := s.DeleteStream(ctx, "ev"); err != nil {
		t.Fatal(err)
	}
	second := newStream(t, s, StreamConfig{Name: "ev", Shards: 2}).Incarnation()
	if second == first {
		t.Fatalf("recreated stream kept incarnation %s", first)
	}
	s.Close()
	s = openStore(t, testConfig(t, dir))
	st, err := s.Stream("ev")
	if err != nil {
		t.Fatal(err)
	}
	if st.Incarnation() != second {
		t.Fatalf("after reopen incarnation %s, want %s", st.Incarnation(), second)
	}
}

// A file written before incarnations existed gets one at open, once: the
// same at every later open.
func TestIncarnationMigratedAtOpen(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, testConfig(t, dir))
	appendValues(t, newStream(t, s, StreamConfig{Name: "old", Shards: 1}), 0, "a", "b")
	s.Close()
	db, err := bolt.Open(s.streamPath("old"), 0o644, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Delete(keyIncarnation) }); err != nil {
		t.Fatal(err)
	}
	db.Close()

	var incs []string
	for range 2 {
		s := openStore(t, testConfig(t, dir))
		st, err := s.Stream("old")
		if err != nil {
			t.Fatal(err)
		}
		if got := values(readAll(t, st, 0)); fmt.Sprint(got) != "[a b]" {
			t.Fatalf("records after migration: %v", got)
		}
		incs = append(incs, st.Incarnation())
		s.Close()
	}
	if incs[0] == "" || incs[0] != incs[1] {
		t.Fatalf("migrated incarnations %q", incs)
	}
}

// Forgetting an origin lets its new incarnation's records, whose origin
// sequences start again at 1, be stored instead of dropped as duplicates;
// the record survives a reopen, and retention of the old records leaves
// the new ones' index entries alone.
func TestSetOriginIncarnationForgets(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, testConfig(t, dir))
	st := newStream(t, s, StreamConfig{Name: "repl", Shards: 1})
	ctx := context.Background()
	foreign := func(hub string, shard uint32, tag string, seqs ...uint64) []record.Record {
		var out []record.Record
		for _, q := range seqs {
			out = append(out, record.Record{Value: []byte(fmt.Sprintf("%s%d", tag, q)), Origin: record.Origin{Hub: hub, Shard: shard, Seq: q}})
		}
		return out
	}
	mustAppend := func(recs []record.Record) {
		t.Helper()
		if _, err := st.Append(ctx, Batch{Shard: 0, Records: recs}); err != nil {
			t.Fatal(err)
		}
	}
	mustAppend(foreign("A", 0, "old", 1, 2, 3))
	mustAppend(foreign("A", 1, "old", 1, 2))
	mustAppend(foreign("AB", 0, "other", 1, 2)) // another origin: untouched
	incA := strings.Repeat("ab", IncarnationLen)
	if n, err := st.SetOriginIncarnation(ctx, "A", incA, false); err != nil || n != 0 {
		t.Fatalf("adopt: %d, %v", n, err)
	}
	if wm := st.Watermark(OriginKey{"A", 0}); wm != 3 {
		t.Fatalf("adopting must keep positions, watermark %d", wm)
	}
	// Without forgetting, the new incarnation's 1..4 would be dropped.
	newInc := strings.Repeat("cd", IncarnationLen)
	n, err := st.SetOriginIncarnation(ctx, "A", newInc, true)
	if err != nil || n != 2 {
		t.Fatalf("forget: %d shards, %v", n, err)
	}
	mustAppend(foreign("A", 0, "new", 1, 2, 3, 4))
	recs, err := st.ReadOrigin(OriginKey{"A", 0}, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(values(recs), ","); got != "new1,new2,new3,new4" {
		t.Fatalf("origin A/0 serves %s", got)
	}
	if wm := st.Watermarks(); wm[OriginKey{"A", 0}] != 4 || wm[OriginKey{"A", 1}] != 0 || wm[OriginKey{"AB", 0}] != 2 {
		t.Fatalf("watermarks %v", wm)
	}
	if got := len(readAll(t, st, 0)); got != 3+2+2+4 {
		t.Fatalf("stream holds %d records, want the old ones kept too", got)
	}
	// Retention removing the old records must not drop the new ones'
	// index entries (same origin keys).
	if err := st.updateTx(func(tx *bolt.Tx) error {
		c := tx.Bucket(chunkBucket(0)).Cursor()
		k, v := c.First()
		m := st.table()[0].meta
		return st.deleteChunk(tx, 0, k, v, &m)
	}); err != nil {
		t.Fatal(err)
	}
	recs, err = st.ReadOrigin(OriginKey{"A", 0}, 0, 10)
	if err != nil || len(recs) != 4 {
		t.Fatalf("after trimming the old chunk origin A/0 serves %d records (%v)", len(recs), err)
	}
	s.Close()
	s = openStore(t, testConfig(t, dir))
	st, err = s.Stream("repl")
	if err != nil {
		t.Fatal(err)
	}
	if got := st.OriginIncarnation("A"); got != newInc {
		t.Fatalf("origin incarnation after reopen %q", got)
	}
	if _, err := st.SetOriginIncarnation(ctx, "A", "xyz", false); err == nil {
		t.Fatal("a malformed incarnation was accepted")
	}
}

package store

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"

	"github.com/edgehub/edgehub/internal/record"
)

// splitLayout is a layout of origin shards 0 and 1 where 1 was split into
// 2 and 3 (ids and ranges as a split at the midpoint gives them).
func splitLayout(version, end uint64) Layout {
	return Layout{Version: version, Shards: []ShardLayout{
		{ID: 0, HashStart: 0, HashEnd: 1<<63 - 1},
		{ID: 1, State: ShardClosed, HashStart: 1 << 63, HashEnd: 1<<64 - 1, End: end, ClosedAt: 1e18, Children: []uint32{2, 3}},
		{ID: 2, HashStart: 1 << 63, HashEnd: 3<<62 - 1, Parents: []uint32{1}},
		{ID: 3, HashStart: 3 << 62, HashEnd: 1<<64 - 1, Parents: []uint32{1}},
	}}
}

// An origin's layout is recorded for the origin incarnation we follow: a
// higher version replaces it, a lower one does not, it survives a reopen,
// and a new incarnation of the origin's stream makes it stale.
func TestSetOriginLayout(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, testConfig(t, dir))
	st := newStream(t, s, StreamConfig{Name: "ev", Shards: 2})
	ctx := context.Background()
	const inc1, inc2 = "0192f3a4b5c6d7e8f901122334455667", "0192f3a4b5c6d7e8f901122334455668"
	if _, err := st.SetOriginIncarnation(ctx, "a", inc1, false); err != nil {
		t.Fatal(err)
	}
	for _, l := range []Layout{splitLayout(2, 10), splitLayout(1, 99), splitLayout(2, 98)} {
		if err := st.SetOriginLayout(ctx, "a", l); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.SetOriginLayout(ctx, "b", splitLayout(1, 5)); err != nil {
		t.Fatal(err)
	}
	got, err := st.OriginLayouts()
	if err != nil {
		t.Fatal(err)
	}
	if want := (map[string]Layout{"a": splitLayout(2, 10), "b": splitLayout(1, 5)}); !reflect.DeepEqual(got, want) {
		t.Fatalf("layouts %+v, want %+v", got, want)
	}
	if err := st.SetOriginLayout(ctx, "a", splitLayout(3, 11)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openStore(t, testConfig(t, dir))
	st, err = s.Stream("ev")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := st.OriginLayouts(); err != nil || !reflect.DeepEqual(got["a"], splitLayout(3, 11)) {
		t.Fatalf("after reopen: %+v, %v", got, err)
	}
	// The origin's stream was created again: its old layout no longer
	// describes it, and the new incarnation's version 1 is recorded.
	if _, err := st.SetOriginIncarnation(ctx, "a", inc2, true); err != nil {
		t.Fatal(err)
	}
	if got, _ := st.OriginLayouts(); len(got) != 1 || got["b"].Version != 1 {
		t.Fatalf("after a new incarnation of a: %+v", got)
	}
	if err := st.SetOriginLayout(ctx, "a", splitLayout(1, 7)); err != nil {
		t.Fatal(err)
	}
	if got, _ := st.OriginLayouts(); !reflect.DeepEqual(got["a"], splitLayout(1, 7)) {
		t.Fatalf("new incarnation's layout: %+v", got["a"])
	}
	bad := splitLayout(4, 1)
	bad.Shards[2].Parents = []uint32{0} // 0 is open and does not name it
	if err := st.SetOriginLayout(ctx, "a", bad); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("inconsistent layout: %v", err)
	}
	if err := st.SetOriginLayout(ctx, "", splitLayout(5, 1)); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("empty hub: %v", err)
	}
}

// AdvanceWatermark only raises, persists, and makes the store drop an
// origin's records at or below it.
func TestAdvanceWatermark(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, testConfig(t, dir))
	st := newStream(t, s, StreamConfig{Name: "repl", Shards: 1})
	ctx := context.Background()
	k := OriginKey{Hub: "A", Shard: 1}
	rec := func(seq uint64) record.Record {
		return record.Record{Value: []byte(fmt.Sprint(seq)), Origin: record.Origin{Hub: k.Hub, Shard: k.Shard, Seq: seq}}
	}
	if _, err := st.Append(ctx, Batch{Shard: 0, Records: []record.Record{rec(1), rec(3)}}); err != nil {
		t.Fatal(err)
	}
	for _, seq := range []uint64{7, 5} {
		if err := st.AdvanceWatermark(ctx, k, seq); err != nil {
			t.Fatal(err)
		}
	}
	if wm := st.Watermark(k); wm != 7 {
		t.Fatalf("watermark %d, want 7", wm)
	}
	r, err := st.Append(ctx, Batch{Shard: 0, Records: []record.Record{rec(6), rec(8)}})
	if err != nil {
		t.Fatal(err)
	}
	if r.Positions[0].Seq != 0 || r.Positions[1].Seq == 0 {
		t.Fatalf("positions %+v: 6 is below the watermark, 8 above", r.Positions)
	}
	if err := st.AdvanceWatermark(ctx, OriginKey{Hub: "B"}, 4); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openStore(t, testConfig(t, dir))
	st, err = s.Stream("repl")
	if err != nil {
		t.Fatal(err)
	}
	if wm := st.Watermarks(); wm[k] != 8 || wm[OriginKey{Hub: "B"}] != 4 {
		t.Fatalf("after reopen: %v", wm)
	}
	if err := st.AdvanceWatermark(ctx, OriginKey{}, 1); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("empty hub: %v", err)
	}
}

func TestDecodeOriginLayoutRejects(t *testing.T) {
	good := EncodeOriginLayout(splitLayout(2, 10))
	if l, err := DecodeOriginLayout(good); err != nil || !reflect.DeepEqual(l, splitLayout(2, 10)) {
		t.Fatalf("round trip: %+v, %v", l, err)
	}
	mutate := func(f func(*Layout)) []byte {
		l := splitLayout(2, 10)
		f(&l)
		return EncodeOriginLayout(l)
	}
	tests := []struct {
		name string
		b    []byte
	}{
		{name: "empty", b: nil},
		{name: "encoding version", b: append([]byte{2}, good[1:]...)},
		{name: "truncated", b: good[:len(good)-1]},
		{name: "trailing", b: append(append([]byte(nil), good...), 0)},
		{name: "huge count", b: []byte{1, 1, 0xff, 0xff, 0x03}},
		{name: "duplicate id", b: mutate(func(l *Layout) { l.Shards[3].ID = 2 })},
		{name: "unknown state", b: mutate(func(l *Layout) { l.Shards[0].State = 7 })},
		{name: "reversed range", b: mutate(func(l *Layout) { l.Shards[0].HashStart = 1 << 63 })},
		{name: "missing parent", b: mutate(func(l *Layout) { l.Shards[2].Parents = []uint32{9} })},
		{name: "open parent", b: mutate(func(l *Layout) { l.Shards[1].State = ShardOpen })},
		{name: "asymmetric child", b: mutate(func(l *Layout) { l.Shards[1].Children = []uint32{2} })},
		{name: "parent newer than child", b: mutate(func(l *Layout) {
			l.Shards[0].State, l.Shards[0].Children = ShardClosed, []uint32{0}
			l.Shards[0].Parents = []uint32{0}
		})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := DecodeOriginLayout(tt.b); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func FuzzDecodeOriginLayout(f *testing.F) {
	f.Add(EncodeOriginLayout(splitLayout(2, 10)))
	f.Add(EncodeOriginLayout(Layout{}))
	f.Add([]byte{1, 1, 1, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := DecodeOriginLayout(b)
		if err != nil {
			return
		}
		again, err := DecodeOriginLayout(EncodeOriginLayout(l))
		if err != nil || !reflect.DeepEqual(again, l) {
			t.Fatalf("re-decode: %+v %v, want %+v", again, err, l)
		}
	})
}

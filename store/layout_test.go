package store

import (
	"math/rand/v2"
	"testing"

	"github.com/edgehub/edgehub/internal/record"
)

// TestLayoutShardForUniform: for layout version 0 (a stream never
// resharded), routing by range equals today's record.ShardForHash, so
// clients routing either way agree.
func TestLayoutShardForUniform(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	ns := []int{1, 2, 3, 4, 7, 16, 63, 64, 100, 255, 256, 1000, 1023, 1024}
	for range 20 {
		ns = append(ns, 1+rng.IntN(1024))
	}
	for _, n := range ns {
		l := uniformLayout(n)
		if got := len(l.Open()); got != n {
			t.Fatalf("n=%d: %d open shards", n, got)
		}
		hashes := []uint64{0, ^uint64(0)}
		for i := 0; i < n; i++ {
			lo, hi := record.HashRange(i, n)
			hashes = append(hashes, lo, hi)
		}
		for range 2000 {
			hashes = append(hashes, rng.Uint64())
		}
		for _, h := range hashes {
			want := record.ShardForHash(h, n)
			if got := l.ShardFor(h); int(got) != want {
				t.Fatalf("n=%d hash %016x: ShardFor %d, ShardForHash %d", n, h, got, want)
			}
			if got := l.search(h); int(got) != want {
				t.Fatalf("n=%d hash %016x: range search %d, ShardForHash %d", n, h, got, want)
			}
		}
	}
}

func TestStreamLayoutVersion0(t *testing.T) {
	st := openStore(t, testConfig(t, t.TempDir()))
	s := newStream(t, st, StreamConfig{Name: "lay", Shards: 3})
	l := s.Layout()
	if l.Version != 0 || len(l.Shards) != 3 {
		t.Fatalf("layout %+v", l)
	}
	for i, sh := range l.Shards {
		lo, hi := record.HashRange(i, 3)
		if sh.ID != uint32(i) || sh.State != ShardOpen || sh.HashStart != lo || sh.HashEnd != hi {
			t.Fatalf("shard %d: %+v", i, sh)
		}
	}
	select {
	case <-s.LayoutChanged():
		t.Fatal("LayoutChanged closed without a reshard")
	default:
	}
	for i, ss := range s.Stats() {
		if ss.State != ShardOpen || ss.HashStart != l.Shards[i].HashStart || ss.HashEnd != l.Shards[i].HashEnd {
			t.Fatalf("stats %d: %+v", i, ss)
		}
	}
}

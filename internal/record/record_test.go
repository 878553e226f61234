package record

import (
	"math"
	"testing"
)

func TestShardRanges(t *testing.T) {
	for _, n := range []int{1, 2, 3, 7, 16, 1000, 1024} {
		var prevEnd uint64
		for i := 0; i < n; i++ {
			start, end := HashRange(i, n)
			if i == 0 && start != 0 {
				t.Fatalf("n=%d: shard 0 starts at %d", n, start)
			}
			if i > 0 && start != prevEnd+1 {
				t.Fatalf("n=%d shard %d: start %d, previous end %d", n, i, start, prevEnd)
			}
			if got := ShardForHash(start, n); got != i {
				t.Fatalf("n=%d: start of shard %d maps to %d", n, i, got)
			}
			if got := ShardForHash(end, n); got != i {
				t.Fatalf("n=%d: end of shard %d maps to %d", n, i, got)
			}
			if start > 0 && ShardForHash(start-1, n) != i-1 {
				t.Fatalf("n=%d: hash before shard %d's start is not in shard %d", n, i, i-1)
			}
			prevEnd = end
		}
		if prevEnd != math.MaxUint64 {
			t.Fatalf("n=%d: ranges end at %d", n, prevEnd)
		}
	}
}

func TestKeyHashStable(t *testing.T) {
	// Pinned values: the hash is part of the wire contract.
	if got := KeyHash([]byte("")); got != 0xef46db3751d8e999 {
		t.Errorf("KeyHash(\"\") = %#x", got)
	}
	if got := KeyHash([]byte("sensor-1")); got == 0 || got != KeyHash([]byte("sensor-1")) {
		t.Errorf("KeyHash unstable")
	}
}

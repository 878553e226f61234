package plugins

import (
	"testing"
	"time"
)

func TestCallTimeHistogram(t *testing.T) {
	var s runnerStats
	for _, d := range []time.Duration{0, 10 * time.Microsecond, 11 * time.Microsecond, time.Millisecond, 3 * time.Second, time.Hour} {
		s.callHist[callBucket(d)].Add(1)
	}
	got := s.callCounts()
	// Cumulative: ≤10µs 2, ≤40µs 3, ≤640µs 3, ≤2.56ms 4, ..., ≤2.62s 4, +Inf 6.
	want := []uint64{2, 3, 3, 3, 4, 4, 4, 4, 4, 4, 6}
	if len(got) != len(want) {
		t.Fatalf("counts %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("counts %v, want %v", got, want)
		}
	}
}

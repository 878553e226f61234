package backoff

import (
	"context"
	"math"
	"testing"
	"time"
)

func TestDelayBoundsAndJitter(t *testing.T) {
	const ms = time.Millisecond
	for _, c := range []struct {
		name       string
		lo, hi     time.Duration
		n          int
		from, to   time.Duration // every draw within
		wantSpread bool          // and not all draws equal
	}{
		{name: "first retry", lo: 100 * ms, hi: 30 * time.Second, n: 1, from: 100 * ms, to: 200 * ms, wantSpread: true},
		{name: "n below 1 is the first", lo: 100 * ms, hi: 30 * time.Second, n: 0, from: 100 * ms, to: 200 * ms, wantSpread: true},
		{name: "third retry", lo: 100 * ms, hi: 30 * time.Second, n: 3, from: 400 * ms, to: 800 * ms, wantSpread: true},
		{name: "at the cap", lo: 100 * ms, hi: time.Second, n: 10, from: 500 * ms, to: time.Second, wantSpread: true},
		{name: "cap below twice lo", lo: 100 * ms, hi: 150 * ms, n: 1, from: 100 * ms, to: 150 * ms, wantSpread: true},
		{name: "huge n does not overflow", lo: 50 * ms, hi: 5 * time.Second, n: math.MaxInt, from: 2500 * ms, to: 5 * time.Second, wantSpread: true},
		{name: "huge bounds do not overflow", lo: time.Duration(math.MaxInt64 / 3), hi: time.Duration(math.MaxInt64), n: 5, from: time.Duration(math.MaxInt64 / 2), to: time.Duration(math.MaxInt64), wantSpread: true},
		{name: "lo equals hi", lo: 10 * ms, hi: 10 * ms, n: 4, from: 10 * ms, to: 10 * ms},
		{name: "hi below lo counts as lo", lo: 10 * ms, hi: ms, n: 4, from: 10 * ms, to: 10 * ms},
		{name: "zero lo", lo: 0, hi: time.Second, n: 3, from: 0, to: 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			seen := map[time.Duration]bool{}
			for range 200 {
				d := Delay(c.lo, c.hi, c.n)
				if d < c.from || d > c.to {
					t.Fatalf("Delay(%v, %v, %d) = %v, want within [%v, %v]", c.lo, c.hi, c.n, d, c.from, c.to)
				}
				seen[d] = true
			}
			if c.wantSpread && len(seen) < 2 {
				t.Fatalf("200 draws of Delay(%v, %v, %d) all gave %v: no jitter", c.lo, c.hi, c.n, seen)
			}
		})
	}
}

func TestSleep(t *testing.T) {
	if !Sleep(context.Background(), 0) {
		t.Fatal("Sleep(0) reported an early end")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if Sleep(ctx, time.Hour) {
		t.Fatal("Sleep with an ended context reported the whole hour passed")
	}
}

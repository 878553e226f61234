package tokenbucket

import (
	"context"
	"errors"
	"testing"
	"time"
)

// The tests pass their own clock: they assert on token counts, not on how
// long anything took.

func TestAllow(t *testing.T) {
	b := New(10, 10)
	now := b.last
	for i := range 10 {
		if !b.Allow(now) {
			t.Fatalf("token %d of a full bucket of 10 refused", i+1)
		}
	}
	if b.Allow(now) {
		t.Fatal("an empty bucket allowed an 11th token")
	}
	if !b.Allow(now.Add(100*time.Millisecond)) || b.Allow(now.Add(100*time.Millisecond)) {
		t.Fatal("0.1s at 10/s should give exactly one token")
	}
	// A long pause refills to the burst, no further.
	later := now.Add(time.Hour)
	n := 0
	for b.Allow(later) {
		n++
	}
	if n != 10 {
		t.Fatalf("after an hour %d tokens, want the burst of 10", n)
	}
	// A clock that steps back takes nothing and gives nothing.
	if b.Allow(now) {
		t.Fatal("a clock step back refilled the bucket")
	}
	if z := New(0, 0); z.Allow(later) {
		t.Fatal("a bucket with rate 0 and burst 0 allowed a token")
	}
}

func TestTakeDebt(t *testing.T) {
	b := New(1000, 100)
	now := b.last
	if d := b.Take(now, 100); d != 0 {
		t.Fatalf("taking the burst waits %v, want 0", d)
	}
	// Larger than the bucket: let through, and the debt is the wait.
	if d := b.Take(now, 500); d != 500*time.Millisecond {
		t.Fatalf("500 tokens of debt at 1000/s wait %v, want 500ms", d)
	}
	if d := b.Take(now.Add(250*time.Millisecond), 0); d != 250*time.Millisecond {
		t.Fatalf("after 250ms the remaining debt waits %v, want 250ms", d)
	}
	if d := b.Take(now.Add(time.Second), 50); d != 0 {
		t.Fatalf("after the debt is paid 50 tokens wait %v, want 0", d)
	}
	if d := New(0, 10).Take(now, 11); d <= time.Duration(1<<62) {
		t.Fatalf("debt at rate 0 waits %v, want forever", d)
	}
}

func TestWait(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	b := New(1000, 100)
	if err := b.Wait(ctx, 100); err != nil {
		t.Fatalf("a wait within the bucket: %v", err)
	}
	if err := b.Wait(ctx, 1000); !errors.Is(err, context.Canceled) {
		t.Fatalf("a wait that must sleep returned %v under a cancelled context", err)
	}
	var unlimited *Bucket
	if err := unlimited.Wait(ctx, 1<<30); err != nil || !unlimited.Allow(time.Now()) {
		t.Fatalf("nil bucket limited: %v", err)
	}
}

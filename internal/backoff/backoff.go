package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Delay returns how long to wait before retry n (1 for the first retry):
// with d = lo·2^n, at most hi, a random duration in [max(lo, d/2), d]. n
// below 1 counts as 1; hi below lo counts as lo.
func Delay(lo, hi time.Duration, n int) time.Duration {
	if lo <= 0 {
		return 0
	}
	hi = max(hi, lo)
	d := lo
	for i := 0; i < max(n, 1) && d < hi; i++ {
		if d > hi/2 {
			d = hi
			break
		}
		d *= 2
	}
	low := max(lo, d/2)
	return low + rand.N(d-low+1)
}

// Sleep waits d, or until ctx ends; it reports whether the whole d passed.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

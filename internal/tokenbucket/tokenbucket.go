package tokenbucket

import (
	"context"
	"sync"
	"time"

	"github.com/edgehub/edgehub/internal/backoff"
)

// Bucket is a token bucket, safe for concurrent use.
type Bucket struct {
	rate, burst float64 // tokens a second; most tokens held

	mu     sync.Mutex
	tokens float64 // negative: debt
	last   time.Time
}

// New returns a full bucket of burst tokens that gains rate tokens a
// second. With rate 0 it never refills.
func New(rate, burst float64) *Bucket {
	return &Bucket{rate: max(rate, 0), burst: burst, tokens: burst, last: time.Now()}
}

// refill adds the tokens gained since the last call; b.mu is held.
func (b *Bucket) refill(now time.Time) {
	if now.After(b.last) {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
		b.last = now
	}
}

// Allow takes one token if the bucket holds a whole one.
func (b *Bucket) Allow(now time.Time) bool {
	if b == nil {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refill(now)
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// Take takes n tokens, going into debt if the bucket holds fewer, and
// returns how long the caller should wait for the debt to be paid back
// (0 when there is none). With rate 0 a debt is never paid: the wait is
// the largest duration.
func (b *Bucket) Take(now time.Time, n float64) time.Duration {
	if b == nil {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refill(now)
	b.tokens -= n
	switch {
	case b.tokens >= 0:
		return 0
	case b.rate == 0:
		return time.Duration(1<<63 - 1)
	}
	return time.Duration(-b.tokens / b.rate * float64(time.Second))
}

// Wait takes n tokens and sleeps until any debt is paid back, or until ctx
// ends (its error is returned; the tokens stay taken).
func (b *Bucket) Wait(ctx context.Context, n float64) error {
	if d := b.Take(time.Now(), n); d > 0 && !backoff.Sleep(ctx, d) {
		return ctx.Err()
	}
	return nil
}

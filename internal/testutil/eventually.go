package testutil

import (
	"testing"
	"time"
)

// Deadline is how long Eventually waits: generous, since a condition that
// holds at all holds well within it even on a loaded 2-core machine.
const Deadline = 90 * time.Second

// Eventually polls cond until it holds, failing tb after Deadline with
// "timed out waiting for what".
func Eventually(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	EventuallyWithin(tb, Deadline, what, cond)
}

// EventuallyWithin is Eventually with another deadline, for waits whose
// bound is part of what the test checks (a hub must come back within its
// restart budget, say).
func EventuallyWithin(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	// Poll fast at first, so quick conditions are seen at once, then back
	// off so that slow ones (an HTTP probe of a hub) cost little.
	pause := time.Millisecond
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(pause)
		pause = min(2*pause, 100*time.Millisecond)
	}
}

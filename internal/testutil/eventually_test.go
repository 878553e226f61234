package testutil

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// fakeTB records a Fatalf instead of stopping the test.
type fakeTB struct {
	testing.TB
	failed string
}

func (f *fakeTB) Helper()                           {}
func (f *fakeTB) Fatalf(format string, args ...any) { f.failed = fmt.Sprintf(format, args...) }

func TestEventuallyWaitsForTheCondition(t *testing.T) {
	n := 0
	Eventually(t, "the fifth call", func() bool { n++; return n == 5 })
	if n != 5 {
		t.Fatalf("cond called %d times, want 5 (until it held)", n)
	}
}

func TestEventuallyWithinFails(t *testing.T) {
	f := &fakeTB{TB: t}
	calls := 0
	// Fatalf on a fake does not stop the loop: the condition holds from the
	// call after the failure on, so the loop ends right after it.
	EventuallyWithin(f, time.Millisecond, "a condition that never holds", func() bool {
		calls++
		return f.failed != ""
	})
	if !strings.Contains(f.failed, "a condition that never holds") {
		t.Fatalf("failure %q does not name what was waited for", f.failed)
	}
	if calls < 2 {
		t.Fatalf("cond called %d times", calls)
	}
}

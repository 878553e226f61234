package hub

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine outlives them: every
// server, session and background loop started by a test must be stopped by
// its Close or context.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

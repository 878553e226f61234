package hub

import (
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/edgehub/edgehub/internal/testutil"
)

// TestMain fails the package's tests if any goroutine outlives them: every
// server, session and background loop started by a test must be stopped by
// its Close or context. Then it removes the hub binary the tests built.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		testutil.RemoveBinaries()
		os.Exit(code)
	}))
}

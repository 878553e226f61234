package plugins

import (
	"fmt"
	"os"

	"go.uber.org/goleak"
)

// leakCheck is called by TestMain after the tests ran and their fixtures are
// cleaned up: a goroutine that outlives them fails the run, since every
// server, session and background loop must be stopped by its Close or
// context.
func leakCheck(code int) int {
	if code != 0 {
		return code
	}
	if err := goleak.Find(); err != nil {
		fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
		return 1
	}
	return 0
}

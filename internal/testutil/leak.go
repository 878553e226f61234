package testutil

import (
	"fmt"
	"os"

	"go.uber.org/goleak"
)

// LeakCheck is called by a TestMain with m.Run's code, after the tests'
// fixtures are cleaned up: a goroutine that outlives them fails the run,
// since every server, session and background loop must be stopped by its
// Close or context. It returns the code to exit with.
func LeakCheck(code int, opts ...goleak.Option) int {
	if code != 0 {
		return code
	}
	if err := goleak.Find(opts...); err != nil {
		fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
		return 1
	}
	return 0
}

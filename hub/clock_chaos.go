//go:build chaos

package hub

import (
	"os"
	"strings"
	"sync"
	"time"
)

// EnvChaosClockFile names a file holding a Go duration ("720h", "-1h"): how
// far the hub's store clock is from the real wall clock. The file is read
// again at most every 50ms, so a test steps the clock of a running hub by
// rewriting it. Only builds with the chaos tag honour it.
const EnvChaosClockFile = "EDGEHUB_CHAOS_CLOCK_FILE"

func init() {
	path := os.Getenv(EnvChaosClockFile)
	if path == "" {
		return
	}
	var (
		mu     sync.Mutex
		offset time.Duration
		read   time.Time
	)
	chaosClock = func() time.Time {
		mu.Lock()
		if time.Since(read) >= 50*time.Millisecond {
			read = time.Now()
			if b, err := os.ReadFile(path); err == nil {
				if d, err := time.ParseDuration(strings.TrimSpace(string(b))); err == nil {
					offset = d
				}
			}
		}
		o := offset
		mu.Unlock()
		// A stepped wall clock has no monotonic reading to give it away.
		return time.Now().Add(o).Round(0)
	}
}

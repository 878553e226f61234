//go:build chaos

package hub

import (
	"os"
	"slices"
	"strings"
)

// EnvChaosSkipLineage lists, comma separated, the readers that skip the
// parent-finished check across a reshard ("group", "webhook"): a negative control, so
// that a lineage checker is shown able to see the reorder this causes.
// Only builds with the chaos tag honour it.
const EnvChaosSkipLineage = "EDGEHUB_CHAOS_SKIP_LINEAGE"

func init() {
	readers := strings.Split(os.Getenv(EnvChaosSkipLineage), ",")
	chaosSkipLineage = func(reader string) bool { return slices.Contains(readers, reader) }
}

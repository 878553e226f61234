//go:build chaos

package store

import (
	"os"
	"syscall"
)

// EnvChaosReshard names the edge of a reshard's transaction at which a
// chaos build kills its own process with SIGKILL: "before-commit" (inside
// the transaction, nothing committed) or "after-commit" (committed, the new
// layout not yet published in memory). Only builds with the chaos tag
// honour it.
const EnvChaosReshard = "EDGEHUB_CHAOS_RESHARD"

var chaosReshardAt = os.Getenv(EnvChaosReshard)

func chaosReshard(point string) {
	if chaosReshardAt == point {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is on its way
	}
}

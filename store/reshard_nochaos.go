//go:build !chaos

package store

// chaosReshard is a no-op outside chaos builds (reshard_chaos.go).
func chaosReshard(string) {}

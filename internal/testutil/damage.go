package testutil

import (
	"bytes"
	"os"
	"testing"
)

// FlipAll damages every copy of marker in the file at path by flipping the
// bits of its first byte (bbolt's copy-on-write leaves stale pages holding
// it too) and returns how many it flipped; none fails tb.
func FlipAll(tb testing.TB, path, marker string) int {
	tb.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	n := 0
	for i := bytes.Index(raw, []byte(marker)); i >= 0; i = bytes.Index(raw, []byte(marker)) {
		raw[i] ^= 0xFF
		n++
	}
	if n == 0 {
		tb.Fatalf("%q not found in %s", marker, path)
	}
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		tb.Fatal(err)
	}
	return n
}

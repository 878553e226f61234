package testutil

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFlipAll(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, []byte("a needle, a stale needle, hay"), 0o644); err != nil {
		t.Fatal(err)
	}
	if n := FlipAll(t, path, "needle"); n != 2 {
		t.Fatalf("flipped %d copies, want 2", n)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "needle") || !strings.Contains(string(b), "eedle") || !strings.HasSuffix(string(b), "hay") {
		t.Fatalf("file after FlipAll: %q", b)
	}
	f := &fakeTB{TB: t}
	FlipAll(f, path, "needle")
	if !strings.Contains(f.failed, "not found") {
		t.Fatalf("a marker that is not there: failure %q", f.failed)
	}
}

// Package plugintest builds Go plugins for tests: each package is built once
// per test binary (GOOS=wasip1 GOARCH=wasm, -buildmode=c-shared, with
// testutil.Build) into a temporary directory, since a build takes seconds on
// a small machine.
package plugintest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgehub/edgehub/internal/testutil"
)

// ModuleRoot returns the directory of the edgehub module.
func ModuleRoot(tb testing.TB) string {
	tb.Helper()
	// go test puts its own toolchain first in the tests' PATH.
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		tb.Fatalf("go env GOMOD: %v", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		tb.Fatal("not inside the edgehub module")
	}
	return filepath.Dir(mod)
}

// Build builds the Go plugin package pkg (a path relative to the module root,
// e.g. "examples/aggregate") and returns the path of the .wasm file. It skips
// the test under -short.
func Build(tb testing.TB, pkg string) string {
	tb.Helper()
	if testing.Short() {
		tb.Skip("building Go plugins is slow; skipped with -short")
	}
	return testutil.Build(tb, "github.com/edgehub/edgehub/"+pkg, []string{"GOOS=wasip1", "GOARCH=wasm"}, "-buildmode=c-shared")
}

// Wasm is Build followed by reading the file.
func Wasm(tb testing.TB, pkg string) []byte {
	tb.Helper()
	b, err := os.ReadFile(Build(tb, pkg))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// Cleanup removes the builds; call it from TestMain after m.Run.
func Cleanup() { testutil.RemoveBinaries() }

// Package plugintest builds Go plugins for tests: each package is built once
// per test binary (GOOS=wasip1 GOARCH=wasm, -buildmode=c-shared) into a
// temporary directory, since a build takes seconds on a small machine.
package plugintest

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

var (
	dirOnce sync.Once
	dir     string
	dirErr  error
	builds  sync.Map // package path → *build
)

type build struct {
	once sync.Once
	path string
	err  error
}

// ModuleRoot returns the directory of the edgehub module.
func ModuleRoot(tb testing.TB) string {
	tb.Helper()
	out, err := exec.Command(goTool(), "env", "GOMOD").Output()
	if err != nil {
		tb.Fatalf("go env GOMOD: %v", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		tb.Fatal("not inside the edgehub module")
	}
	return filepath.Dir(mod)
}

// goTool is the go command of the running toolchain: go test puts its own
// GOROOT/bin first in the tests' PATH.
func goTool() string { return "go" }

// Build builds the Go plugin package pkg (a path relative to the module root,
// e.g. "examples/aggregate") and returns the path of the .wasm file. It skips
// the test under -short.
func Build(tb testing.TB, pkg string) string {
	tb.Helper()
	if testing.Short() {
		tb.Skip("building Go plugins is slow; skipped with -short")
	}
	dirOnce.Do(func() { dir, dirErr = os.MkdirTemp("", "plugintest-") })
	if dirErr != nil {
		tb.Fatal(dirErr)
	}
	root := ModuleRoot(tb)
	v, _ := builds.LoadOrStore(pkg, &build{})
	b := v.(*build)
	b.once.Do(func() {
		b.path = filepath.Join(dir, strings.ReplaceAll(pkg, "/", "_")+".wasm")
		cmd := exec.Command(goTool(), "build", "-buildmode=c-shared", "-o", b.path, "./"+pkg)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = errors.New(strings.TrimSpace(string(out)))
		}
	})
	if b.err != nil {
		tb.Fatalf("build %s: %v", pkg, b.err)
	}
	return b.path
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

// Cleanup removes the build directory; call it from TestMain after m.Run.
func Cleanup() {
	if dir != "" {
		os.RemoveAll(dir)
	}
}

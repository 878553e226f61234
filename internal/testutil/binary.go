package testutil

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

var (
	binDirOnce sync.Once
	binDir     string
	binDirErr  error
	builds     sync.Map // build key → *build
)

type build struct {
	once sync.Once
	path string
	err  error
}

// Binary builds the main package pkg (an import path) with the given go
// build flags once per test binary and returns the executable's path; it
// skips the test under -short, since a build takes seconds.
func Binary(tb testing.TB, pkg string, flags ...string) string {
	tb.Helper()
	if testing.Short() {
		tb.Skip("builds " + pkg + "; skipped with -short")
	}
	return Build(tb, pkg, nil, flags...)
}

// Build runs go build for pkg (an import path) with env added to the
// environment (GOOS=wasip1, say) and the given flags, once per test binary
// for each such combination, and returns the output's path. RemoveBinaries
// removes the outputs: call it from TestMain after m.Run.
func Build(tb testing.TB, pkg string, env []string, flags ...string) string {
	tb.Helper()
	binDirOnce.Do(func() { binDir, binDirErr = os.MkdirTemp("", "edgehub-bin-") })
	if binDirErr != nil {
		tb.Fatal(binDirErr)
	}
	key := strings.Join(slices.Concat([]string{pkg}, env, []string{"--"}, flags), " ")
	v, _ := builds.LoadOrStore(key, &build{})
	b := v.(*build)
	b.once.Do(func() {
		dir, err := os.MkdirTemp(binDir, "")
		if err != nil {
			b.err = err
			return
		}
		b.path = filepath.Join(dir, filepath.Base(pkg))
		if slices.Contains(env, "GOARCH=wasm") {
			b.path += ".wasm"
		}
		// go test puts its own toolchain first in the tests' PATH.
		args := slices.Concat([]string{"build"}, flags, []string{"-o", b.path, pkg})
		cmd := exec.Command("go", args...)
		cmd.Env = append(os.Environ(), env...)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = errors.New(strings.Join(env, " ") + " go " + strings.Join(args, " ") + ": " + err.Error() + "\n" + strings.TrimSpace(string(out)))
		}
	})
	if b.err != nil {
		tb.Fatal(b.err)
	}
	return b.path
}

// RemoveBinaries removes what Binary and Build built.
func RemoveBinaries() {
	if binDir != "" {
		os.RemoveAll(binDir)
	}
}

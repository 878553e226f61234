package testutil

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
	binDirOnce sync.Once
	binDir     string
	binDirErr  error
	binaries   sync.Map // build key → *binary
)

type binary struct {
	once sync.Once
	path string
	err  error
}

// Binary builds the main package pkg (an import path) with the given go
// build flags once per test binary and returns the executable's path; it
// skips the test under -short, since a build takes seconds. RemoveBinaries
// removes the builds: call it from TestMain after m.Run.
func Binary(tb testing.TB, pkg string, flags ...string) string {
	tb.Helper()
	if testing.Short() {
		tb.Skip("builds " + pkg + "; skipped with -short")
	}
	binDirOnce.Do(func() { binDir, binDirErr = os.MkdirTemp("", "edgehub-bin-") })
	if binDirErr != nil {
		tb.Fatal(binDirErr)
	}
	key := strings.Join(append([]string{pkg}, flags...), " ")
	v, _ := binaries.LoadOrStore(key, &binary{})
	b := v.(*binary)
	b.once.Do(func() {
		dir, err := os.MkdirTemp(binDir, "")
		if err != nil {
			b.err = err
			return
		}
		b.path = filepath.Join(dir, filepath.Base(pkg))
		// go test puts its own toolchain first in the tests' PATH.
		args := append(append([]string{"build"}, flags...), "-o", b.path, pkg)
		if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
			b.err = errors.New("go " + strings.Join(args, " ") + ": " + err.Error() + "\n" + string(out))
		}
	})
	if b.err != nil {
		tb.Fatal(b.err)
	}
	return b.path
}

// RemoveBinaries removes what Binary built.
func RemoveBinaries() {
	if binDir != "" {
		os.RemoveAll(binDir)
	}
}

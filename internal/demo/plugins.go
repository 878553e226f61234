package demo

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

const module = "github.com/edgehub/edgehub"

// plugins returns the aggregate and alert .wasm files: from dir when given
// (prebuilt), else built from the edgehub source tree src (or, when empty,
// the module holding the current directory) into out.
func plugins(ctx context.Context, dir, src, out string) (aggregate, alert string, how string, err error) {
	if dir != "" {
		aggregate, alert = filepath.Join(dir, "aggregate.wasm"), filepath.Join(dir, "alert.wasm")
		for _, f := range []string{aggregate, alert} {
			if _, err := os.Stat(f); err != nil {
				return "", "", "", fmt.Errorf("demo: plugins: %w", err)
			}
		}
		return aggregate, alert, "prebuilt in " + dir, nil
	}
	if _, err := exec.LookPath("go"); err != nil {
		return "", "", "", errors.New("demo: plugins: the example plugins are built with the Go toolchain, which is not in PATH: install Go, or pass --plugins DIR with aggregate.wasm and alert.wasm")
	}
	root, err := sourceRoot(ctx, src)
	if err != nil {
		return "", "", "", err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return "", "", "", fmt.Errorf("demo: plugins: %w", err)
	}
	aggregate, alert = filepath.Join(out, "aggregate.wasm"), filepath.Join(out, "alert.wasm")
	for _, b := range []struct{ pkg, file string }{{"./examples/aggregate", aggregate}, {"./examples/alert", alert}} {
		cmd := exec.CommandContext(ctx, "go", "build", "-buildmode=c-shared", "-o", b.file, b.pkg)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
		if msg, err := cmd.CombinedOutput(); err != nil {
			return "", "", "", fmt.Errorf("demo: plugins: GOOS=wasip1 GOARCH=wasm go build %s (in %s): %w\n%s", b.pkg, root, err, bytes.TrimSpace(msg))
		}
	}
	return aggregate, alert, "built from " + filepath.Join(root, "examples"), nil
}

// sourceRoot finds the edgehub module: src, or the module holding the
// current directory.
func sourceRoot(ctx context.Context, src string) (string, error) {
	hint := "run hub demo inside a clone of the edgehub repository (go run ./cmd/hub demo), or pass --source DIR or --plugins DIR"
	gomod := filepath.Join(src, "go.mod")
	if src == "" {
		b, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
		if err != nil {
			return "", fmt.Errorf("demo: plugins: go env GOMOD: %w", err)
		}
		gomod = strings.TrimSpace(string(b))
		if gomod == "" || gomod == os.DevNull {
			return "", fmt.Errorf("demo: plugins: the current directory is in no Go module: %s", hint)
		}
	}
	f, err := os.Open(gomod)
	if err != nil {
		return "", fmt.Errorf("demo: plugins: %w: %s", err, hint)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if name, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "module "); ok {
			if strings.Trim(strings.TrimSpace(name), `"`) != module {
				return "", fmt.Errorf("demo: plugins: %s is module %s, not %s: %s", gomod, name, module, hint)
			}
			return filepath.Dir(gomod), nil
		}
	}
	return "", fmt.Errorf("demo: plugins: %s names no module: %s", gomod, hint)
}

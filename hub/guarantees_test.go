package hub

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestGuaranteesNameRealTests keeps docs/guarantees.md honest: every
// `pkg:TestName` it cites as proof must be a test function in that package
// (in any build-tagged file: chaos tests count).
func TestGuaranteesNameRealTests(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "docs", "guarantees.md"))
	if err != nil {
		t.Fatal(err)
	}
	dirs := map[string]string{
		"hub":        "hub",
		"store":      "store",
		"sdk":        "sdk",
		"quic":       "quic",
		"gossip":     "gossip",
		"plugins":    "plugins",
		"wasmhost":   "wasmhost",
		"chaos":      "internal/chaos",
		"replicate":  "internal/replicate",
		"groups":     "internal/groups",
		"cli":        "internal/cli",
		"record":     "internal/record",
		"boltcheck":  "internal/boltcheck",
		"atomicfile": "internal/atomicfile",
	}
	cited := regexp.MustCompile("`([a-z]+):((?:Test|Fuzz)[A-Za-z0-9_]+)`").FindAllStringSubmatch(string(doc), -1)
	if len(cited) < 40 {
		t.Fatalf("docs/guarantees.md cites %d tests; the pattern or the page is broken", len(cited))
	}
	defined := map[string]map[string]bool{}
	for _, c := range cited {
		pkg, name := c[1], c[2]
		dir, ok := dirs[pkg]
		if !ok {
			t.Errorf("docs/guarantees.md cites %s:%s: unknown package %q", pkg, name, pkg)
			continue
		}
		if defined[pkg] == nil {
			defined[pkg] = testFuncs(t, filepath.Join("..", dir))
		}
		if !defined[pkg][name] {
			t.Errorf("docs/guarantees.md cites %s:%s, which is not a test in %s", pkg, name, dir)
		}
	}
}

func testFuncs(t *testing.T, dir string) map[string]bool {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*_test.go"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no tests in %s (%v)", dir, err)
	}
	re := regexp.MustCompile(`(?m)^func ((?:Test|Fuzz)[A-Za-z0-9_]+)\(`)
	out := map[string]bool{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllStringSubmatch(string(b), -1) {
			out[m[1]] = true
		}
	}
	if strings.HasSuffix(dir, "chaos") && len(out) == 0 {
		t.Fatalf("no chaos tests found in %s", dir)
	}
	return out
}

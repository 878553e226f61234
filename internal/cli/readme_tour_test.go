package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/edgehub/edgehub/internal/plugintest"
)

// tourStep is one "$ command" of the README's CLI tour and the output the
// README shows under it.
type tourStep struct {
	line int // of the command in README.md
	cmd  string
	want string // expected stdout and stderr, as a terminal shows them
}

// parseTour returns the steps of the ```console blocks in the "## CLI tour"
// section of a README: each "$ " line is a command (a trailing backslash
// continues it on the next line), the lines up to the next command are its
// output, blank lines at the end of an output dropped.
func parseTour(readme string) ([]tourStep, error) {
	var steps []tourStep
	inSection, inBlock, cont := false, false, false
	var out []string
	flush := func() {
		if len(steps) == 0 {
			return
		}
		for len(out) > 0 && out[len(out)-1] == "" {
			out = out[:len(out)-1]
		}
		if len(out) > 0 {
			steps[len(steps)-1].want = strings.Join(out, "\n") + "\n"
		}
		out = nil
	}
	for i, line := range strings.Split(readme, "\n") {
		switch {
		case strings.HasPrefix(line, "## "):
			inSection = line == "## CLI tour"
			continue
		case !inSection:
			continue
		case strings.HasPrefix(line, "```"):
			if inBlock {
				flush()
				inBlock = false
			} else {
				inBlock = line == "```console"
			}
			continue
		case !inBlock:
			continue
		case cont:
			steps[len(steps)-1].cmd += "\n" + line
			cont = strings.HasSuffix(line, `\`)
		case strings.HasPrefix(line, "$ "):
			flush()
			steps = append(steps, tourStep{line: i + 1, cmd: strings.TrimPrefix(line, "$ ")})
			cont = strings.HasSuffix(line, `\`)
		case len(steps) == 0 && line != "":
			return nil, fmt.Errorf("README.md:%d: output %q before any \"$ \" command", i+1, line)
		default:
			out = append(out, line)
		}
	}
	return steps, nil
}

func TestParseTour(t *testing.T) {
	steps, err := parseTour("# x\n```console\n$ hub a\n```\n## CLI tour\n\n```\n$ not run\n```\n```console\n$ hub one \\\n  --two\nout 1\n\nout 2\n\n$ hub three\n$ hub four\nfour\n```\n## Next\n```console\n$ hub five\n```\n")
	if err != nil {
		t.Fatal(err)
	}
	want := []tourStep{{11, "hub one \\\n  --two", "out 1\n\nout 2\n"}, {17, "hub three", ""}, {18, "hub four", "four\n"}}
	if fmt.Sprint(steps) != fmt.Sprint(want) {
		t.Errorf("parseTour = %+v\nwant %+v", steps, want)
	}
	if _, err := parseTour("## CLI tour\n```console\nstray\n$ hub x\n```\n"); err == nil {
		t.Error("output before a command was accepted")
	}
}

// tourVariable masks what differs from one build to the next and so cannot
// be written in the README: the digest of the plugin module, which changes
// with the Go toolchain and the SDK. Nothing else is normalised.
var tourVariable = regexp.MustCompile(`sha256 [0-9a-f]{12}`)

// TestReadmeTour runs the README's CLI tour as a reader would: a fresh
// `hub serve` with no flags beyond free ports, started in a copy of the
// repository root (symbolic links, so go build works and ./hub-data is the
// test's), then every "$ " command in sh with the real hub binary first in
// PATH, in order, comparing stdout and stderr with the README exactly. The
// only differences from a reader's terminal are the ports (HUB_ADDR and
// HUB_ADMIN point the CLI at the test's hub) and the masked digest above.
func TestReadmeTour(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join(plugintest.ModuleRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	steps, err := parseTour(string(readme))
	if err != nil {
		t.Fatal(err)
	}
	if len(steps) < 10 {
		t.Fatalf("README.md: the CLI tour has %d commands in ```console blocks, want at least 10", len(steps))
	}
	runTour(t, "README.md", steps)
}

// runTour runs steps, the commands of doc (a path relative to the module
// root, for messages), as TestReadmeTour describes.
func runTour(t *testing.T, doc string, steps []tourStep) {
	t.Helper()
	bin := hubBin(t)
	root := plugintest.ModuleRoot(t)
	work := t.TempDir()
	entries, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		switch e.Name() {
		case ".git", "hub-data":
			continue
		}
		if strings.HasSuffix(e.Name(), ".wasm") {
			continue
		}
		if err := os.Symlink(filepath.Join(root, e.Name()), filepath.Join(work, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	s := startServerIn(t, work, "serve", "--quic-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0")

	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HUB_") && !strings.HasPrefix(kv, "PATH=") {
			env = append(env, kv)
		}
	}
	env = append(env, "PATH="+filepath.Dir(bin)+string(os.PathListSeparator)+os.Getenv("PATH"),
		"HUB_ADDR="+s.quicAddr(t), "HUB_ADMIN="+s.admin, "HUB_CONFIG_DIR="+filepath.Join(work, ".hub-config"))

	for _, st := range steps {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		cmd := exec.CommandContext(ctx, "sh", "-c", st.cmd)
		cmd.Dir, cmd.Env = work, env
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out // one pipe: the order a terminal shows
		err := cmd.Run()
		timedOut := ctx.Err() != nil
		cancel()
		got := out.String()
		var ee *exec.ExitError
		switch {
		case timedOut:
			t.Fatalf("%s:%d: $ %s\ndid not finish within 3 minutes; output so far:\n%s", doc, st.line, st.cmd, got)
		case errors.As(err, &ee):
			t.Fatalf("%s:%d: $ %s\nexited with %d, want 0; output:\n%s", doc, st.line, st.cmd, ee.ExitCode(), got)
		case err != nil:
			t.Fatalf("%s:%d: $ %s: %v", doc, st.line, st.cmd, err)
		}
		if g, w := tourVariable.ReplaceAllString(got, "sha256 ..."), tourVariable.ReplaceAllString(st.want, "sha256 ..."); g != w {
			t.Fatalf("%s:%d: $ %s\noutput differs from %s (- %s, + hub):\n%s", doc, st.line, st.cmd, doc, doc, lineDiff(w, g))
		}
		t.Logf("%s:%d: $ %s: as written", doc, st.line, st.cmd)
	}
}

// lineDiff shows want and got line by line: common lines indented, lines
// only in want with "-", lines only in got with "+" (a longest common
// subsequence, fine for outputs of a few dozen lines).
func lineDiff(want, got string) string {
	a, b := strings.Split(strings.TrimSuffix(want, "\n"), "\n"), strings.Split(strings.TrimSuffix(got, "\n"), "\n")
	if want == "" {
		a = nil
	}
	if got == "" {
		b = nil
	}
	lcs := make([][]int, len(a)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(b)+1)
	}
	for i := len(a) - 1; i >= 0; i-- {
		for j := len(b) - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var sb strings.Builder
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case i < len(a) && j < len(b) && a[i] == b[j]:
			fmt.Fprintf(&sb, "  %s\n", a[i])
			i, j = i+1, j+1
		case i < len(a) && (j == len(b) || lcs[i+1][j] >= lcs[i][j+1]):
			fmt.Fprintf(&sb, "- %s\n", a[i])
			i++
		default:
			fmt.Fprintf(&sb, "+ %s\n", b[j])
			j++
		}
	}
	if !strings.HasSuffix(got, "\n") && got != "" {
		sb.WriteString("(the output does not end in a newline)\n")
	}
	return sb.String()
}

func TestLineDiff(t *testing.T) {
	got := lineDiff("a\nb\nc\n", "a\nx\nc\n")
	if want := "  a\n- b\n+ x\n  c\n"; got != want {
		t.Errorf("lineDiff = %q, want %q", got, want)
	}
	if got := lineDiff("", "x\n"); got != "+ x\n" {
		t.Errorf("lineDiff from nothing = %q", got)
	}
}

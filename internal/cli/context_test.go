package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestEndToEndContexts saves a `hub serve` child's address, admin URL and
// CA as a context and drives it from a directory without hub-data (so the
// CA can only come from the context): selected by --context, HUB_CONTEXT or
// as the current one; flags and the environment still win.
func TestEndToEndContexts(t *testing.T) {
	base := t.TempDir()
	s := startServer(t, filepath.Join(base, "hub-data"))
	cfgDir := t.TempDir()
	elsewhere := t.TempDir()
	env := []string{"HUB_CONFIG_DIR=" + cfgDir}
	ca := filepath.Join(base, "hub-data", "tls", "cert.pem")
	quic := s.quicAddr(t)
	closed := "http://127.0.0.1:1" // nothing listens on port 1

	steps := []struct {
		name   string
		env    []string
		in     string
		args   []string
		code   int
		stdout string // exact, unless empty
		outHas string // in stdout
		stderr string // in stderr
	}{
		{name: "none yet", args: []string{"context", "list"}, stdout: fmt.Sprintf("no contexts (hub context add NAME ...; saved in %s)\n", filepath.Join(cfgDir, "contexts.json"))},
		{name: "add", args: []string{"context", "add", "e2e", "--addr", quic, "--ca", ca, "--admin", s.admin}, stdout: "saved context e2e\n"},
		{name: "add a second as current", args: []string{"context", "add", "other", "--admin", closed, "--token", "secret", "--use"}, stdout: "saved context other (current)\n"},
		{name: "add again", args: []string{"context", "add", "e2e", "--addr", quic}, code: 1, stderr: "hub context add: context e2e exists: pass --replace to overwrite it"},
		{name: "add nothing", args: []string{"context", "add", "empty"}, code: 2, stderr: "nothing to save"},
		{name: "add a missing CA", args: []string{"context", "add", "bad", "--ca", filepath.Join(base, "nope.pem")}, code: 1, stderr: "no such file"},
		{name: "the current one is used", args: []string{"stream", "list"}, code: 1, stderr: "cannot reach the hub admin API at " + closed},
		{name: "--context", args: []string{"stream", "create", "s", "--context", "e2e"}, stdout: "created stream s with 1 shard\n"},
		{name: "HUB_CONTEXT", env: []string{"HUB_CONTEXT=e2e"}, args: []string{"stream", "list"}, outHas: "\ns     1 "},
		{name: "use", args: []string{"context", "use", "e2e"}, stdout: "using context e2e\n"},
		{name: "produce with the context's address and CA", in: "v1\n", args: []string{"produce", "s"}, stderr: "acked 1 record\n"},
		{name: "consume too", args: []string{"consume", "s"}, stdout: "v1\n"},
		{name: "a flag wins", args: []string{"stream", "list", "--admin", closed}, code: 1, stderr: "cannot reach the hub admin API at " + closed},
		{name: "the environment wins", env: []string{"HUB_ADMIN=" + closed}, args: []string{"stream", "list"}, code: 1, stderr: "cannot reach the hub admin API at " + closed},
		{name: "a data-plane flag wins", args: []string{"consume", "s", "--ca", "nope.pem"}, code: 1, stderr: "nope.pem"},
		{name: "unknown context", args: []string{"stream", "list", "--context", "e2f"}, code: 1, stderr: `hub stream list: no context "e2f" (did you mean "e2e"?)`},
		{name: "unknown in env", env: []string{"HUB_CONTEXT=zzz"}, args: []string{"consume", "s"}, code: 1, stderr: `no context "zzz" (saved: e2e, other)`},
		{name: "use unknown", args: []string{"context", "use", "nope"}, code: 1, stderr: `no context "nope"`},
		{name: "remove", args: []string{"context", "remove", "e2e"}, stdout: "removed context e2e\n"},
		{name: "remove again", args: []string{"context", "rm", "e2e"}, code: 1, stderr: `no context "e2e"`},
	}
	for i, st := range steps {
		if st.name == "the current one is used" {
			// The table: the current context starred, secrets hidden.
			_, out, _ := runHubIn(t, elsewhere, env, "context", "list")
			var rows [][]string
			for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
				rows = append(rows, strings.Fields(l))
			}
			want := [][]string{{"CURRENT", "NAME", "ADDR", "ADMIN", "CA", "TOKEN", "ADMIN", "TOKEN"},
				{"e2e", quic, s.admin, ca, "-", "-"}, {"*", "other", "-", closed, "-", "(set)", "-"}}
			if fmt.Sprint(rows) != fmt.Sprint(want) || strings.Contains(out, "secret") {
				t.Errorf("context list (step %d):\n%s", i, out)
			}
		}
		t.Run(st.name, func(t *testing.T) {
			code, out, errOut := runHubStdin(t, elsewhere, st.in, append(env, st.env...), st.args...)
			if code != st.code || !strings.Contains(errOut, st.stderr) || (st.stdout != "" && out != st.stdout) || !strings.Contains(out, st.outHas) {
				t.Fatalf("exit %d, stdout %q, stderr %q\nwant exit %d, stdout %q, stderr with %q", code, out, errOut, st.code, st.stdout, st.stderr)
			}
		})
	}
	fi, err := os.Stat(filepath.Join(cfgDir, "contexts.json"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("contexts file: %v, mode %v; want 0600 (it holds tokens)", err, fi.Mode())
	}
	// After removing the current context, the defaults apply again.
	if _, out, _ := runHubIn(t, elsewhere, env, "context", "list"); strings.Contains(out, "*") {
		t.Errorf("a removed context is still current:\n%s", out)
	}
	// A broken file is an error naming it, not a silent fall back to the
	// default hub.
	writeFile(t, filepath.Join(cfgDir, "contexts.json"), "{broken")
	code, _, errOut := runHubIn(t, elsewhere, env, "stream", "list")
	if code != 1 || !strings.Contains(errOut, "contexts file "+filepath.Join(cfgDir, "contexts.json")) {
		t.Errorf("broken contexts file: exit %d, %s", code, errOut)
	}
}

package cli

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgehub/edgehub/hub"
	"github.com/edgehub/edgehub/internal/testutil"
)

// The end-to-end tests build the real hub binary and run `hub serve` as a
// child process on free loopback ports, then drive it with the CLI.

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.RemoveBinaries()
	os.Exit(code)
}

// hubBin is the hub binary, built once per test run.
func hubBin(tb testing.TB) string {
	tb.Helper()
	return testutil.Binary(tb, "github.com/edgehub/edgehub/cmd/hub")
}

// server is a `hub serve` child process.
type server struct {
	cmd   *exec.Cmd
	admin string // admin base URL
	mu    sync.Mutex
	log   bytes.Buffer // stderr so far
	done  chan error   // Wait's result
}

func (s *server) logs() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.log.String()
}

var adminRE = regexp.MustCompile(`msg="hub ready".* admin=(https?://\S+)`)

// startServer runs `hub serve --data dir` plus extra args on free ports and
// waits for it to log that it is ready. Cleanup kills it if still running.
func startServer(tb testing.TB, dir string, extra ...string) *server {
	tb.Helper()
	args := append([]string{"serve", "--data", dir, "--admin-listen", "127.0.0.1:0", "--quic-listen", "127.0.0.1:0", "--name", "e2e"}, extra...)
	return startServerIn(tb, tb.TempDir(), args...)
}

// startServerIn runs the hub binary with args (from "serve" on) in the
// working directory cwd and waits for it to log that it is ready.
func startServerIn(tb testing.TB, cwd string, args ...string) *server {
	tb.Helper()
	s := &server{cmd: exec.Command(hubBin(tb), args...), done: make(chan error, 1)}
	s.cmd.Dir = cwd
	stderrPipe, err := s.cmd.StderrPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderrPipe)
		for sc.Scan() {
			line := sc.Text()
			s.mu.Lock()
			s.log.WriteString(line + "\n")
			s.mu.Unlock()
			if m := adminRE.FindStringSubmatch(line); m != nil {
				ready <- m[1]
			}
		}
		s.done <- s.cmd.Wait()
	}()
	tb.Cleanup(func() {
		if s.cmd.ProcessState == nil {
			s.cmd.Process.Kill()
			<-s.done
		}
		if tb.Failed() {
			tb.Logf("hub serve log:\n%s", s.logs())
		}
	})
	select {
	case s.admin = <-ready:
	case err := <-s.done:
		tb.Fatalf("hub serve exited before ready: %v\n%s", err, s.logs())
	case <-time.After(30 * time.Second):
		tb.Fatalf("hub serve not ready:\n%s", s.logs())
	}
	return s
}

// stop sends sig and returns the exit error.
func (s *server) stop(tb testing.TB, sig os.Signal) error {
	tb.Helper()
	if err := s.cmd.Process.Signal(sig); err != nil {
		tb.Fatal(err)
	}
	select {
	case err := <-s.done:
		return err
	case <-time.After(30 * time.Second):
		tb.Fatalf("hub serve did not exit after %v:\n%s", sig, s.logs())
		return nil
	}
}

// runHub runs the CLI binary in a fresh directory and returns its exit code
// and output.
func runHub(tb testing.TB, env []string, args ...string) (code int, stdout, stderr string) {
	tb.Helper()
	return runHubIn(tb, tb.TempDir(), env, args...)
}

func runHubIn(tb testing.TB, dir string, env []string, args ...string) (code int, stdout, stderr string) {
	tb.Helper()
	return runHubStdin(tb, dir, "", env, args...)
}

// runHubStdin is runHubIn with stdin.
func runHubStdin(tb testing.TB, dir, in string, env []string, args ...string) (code int, stdout, stderr string) {
	tb.Helper()
	cmd := exec.Command(hubBin(tb), args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader(in)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		tb.Fatalf("hub %v: %v", args, err)
	}
	return code, o.String(), e.String()
}

func TestEndToEndStreams(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, dir)
	viaEnv := []string{"HUB_ADMIN=" + s.admin}
	admin := "--admin=" + s.admin

	steps := []struct {
		name   string
		env    []string
		args   []string
		code   int
		stdout []string // substrings, in order
		stderr string
	}{
		{name: "list empty", env: viaEnv, args: []string{"stream", "list"}, stdout: []string{"no streams"}},
		{name: "create with flags after the name", env: viaEnv,
			args:   []string{"stream", "create", "orders", "--shards", "4", "--retention", "168h", "--max-bytes", "10GiB"},
			stdout: []string{"created stream orders with 4 shards"}},
		{name: "create with --admin", args: []string{"stream", "create", admin, "--compact", "--replicate", "tag:eu", "events"},
			stdout: []string{"created stream events with 1 shard\n"}},
		{name: "create existing", env: viaEnv, args: []string{"stream", "create", "orders"}, code: 1, stderr: "already exists"},
		{name: "create bad name", env: viaEnv, args: []string{"stream", "create", "no good"}, code: 1, stderr: "invalid name"},
		{name: "create too many shards", env: viaEnv, args: []string{"stream", "create", "big", "--shards", "2000"}, code: 1, stderr: "outside 1..1024"},
		{name: "list", env: viaEnv, args: []string{"stream", "list"},
			stdout: []string{"NAME", "SHARDS", "RECORDS", "BYTES", "RETENTION", "MAX BYTES", "COMPACT", "REPLICATE", "\nevents", "forever", "tag:eu", "\norders", "168h", "10GiB", "local"}},
		{name: "describe", env: viaEnv, args: []string{"stream", "describe", "orders"},
			stdout: []string{"Name:", "orders", "Shards:", "4", "Retention:", "168h", "SHARD", "HASH START", "HASH END", "FIRST SEQ", "LAST SEQ",
				"0000000000000000", "3fffffffffffffff", "c000000000000000", "ffffffffffffffff"}},
		{name: "update", env: viaEnv, args: []string{"stream", "update", "orders", "--retention", "24h"}, stdout: []string{"updated stream orders"}},
		{name: "describe missing", env: viaEnv, args: []string{"stream", "describe", "nope"}, code: 1, stderr: "not found"},
		{name: "delete", env: viaEnv, args: []string{"stream", "delete", "events", "--yes"}, stdout: []string{"deleted stream events"}},
		{name: "delete again", env: viaEnv, args: []string{"stream", "delete", "events", "--yes"}, code: 1, stderr: "not found"},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			code, out, errOut := runHub(t, st.env, st.args...)
			if code != st.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, st.code, out, errOut)
			}
			rest := out
			for _, want := range st.stdout {
				i := strings.Index(rest, want)
				if i < 0 {
					t.Fatalf("stdout lacks %q (in order):\n%s", want, out)
				}
				rest = rest[i+len(want):]
			}
			if !strings.Contains(errOut, st.stderr) {
				t.Errorf("stderr %q does not contain %q", errOut, st.stderr)
			}
		})
	}

	// Tables are aligned: every row's columns start where the header's do.
	_, out, _ := runHub(t, viaEnv, "stream", "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	col := strings.Index(lines[0], "RECORDS")
	for _, l := range lines[1:] {
		if len(l) <= col || l[col-1] != ' ' || l[col] == ' ' {
			t.Errorf("row %q not aligned with header %q", l, lines[0])
		}
	}

	// --json is the API's StreamInfo.
	_, out, _ = runHub(t, viaEnv, "stream", "describe", "orders", "--json")
	var info hub.StreamInfo
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatalf("describe --json: %v\n%s", err, out)
	}
	if info.Name != "orders" || info.Config.Shards != 4 || len(info.Shards) != 4 || info.Config.Retention.String() != "24h" ||
		info.Config.MaxBytes != 10<<30 || info.Shards[2].HashStart != "8000000000000000" {
		t.Errorf("describe --json = %+v", info)
	}
	_, out, _ = runHub(t, viaEnv, "stream", "list", "--json")
	var list hub.StreamList
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list.Streams) != 1 {
		t.Errorf("list --json = %+v, %v", list, err)
	}

	// A second hub on the same data dir fails fast, naming the holder.
	code, _, errOut := runHub(t, nil, "serve", "--data", dir, "--admin-listen", "127.0.0.1:0", "--quic-listen", "127.0.0.1:0")
	if code != 1 || !strings.Contains(errOut, "is another hub running on this data directory?") ||
		!strings.Contains(errOut, fmt.Sprintf("held by pid %d", s.cmd.Process.Pid)) {
		t.Errorf("second serve: exit %d\n%s", code, errOut)
	}

	// SIGTERM stops the hub cleanly.
	if err := s.stop(t, syscall.SIGTERM); err != nil {
		t.Errorf("serve after SIGTERM: %v\n%s", err, s.logs())
	}
	if !strings.Contains(s.logs(), `msg="hub stopped"`) {
		t.Errorf("no clean shutdown in the log:\n%s", s.logs())
	}

	// Unreachable hub.
	code, _, errOut = runHub(t, viaEnv, "stream", "list")
	if code != 1 || !strings.Contains(errOut, "cannot reach the hub admin API at "+s.admin) {
		t.Errorf("list against a stopped hub: exit %d\n%s", code, errOut)
	}

	// The streams survive a restart, and a SIGKILL.
	s = startServer(t, dir)
	if err := s.stop(t, syscall.SIGKILL); err == nil {
		t.Error("SIGKILLed serve exited cleanly?")
	}
	s = startServer(t, dir)
	code, out, errOut = runHub(t, []string{"HUB_ADMIN=" + s.admin}, "stream", "describe", "orders")
	if code != 0 || !strings.Contains(out, "24h") {
		t.Errorf("after restart: exit %d\n%s%s", code, out, errOut)
	}
	s.stop(t, syscall.SIGINT)

	// A damaged stream file stops the hub with the file's name.
	path := filepath.Join(dir, "streams", "orders.db")
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(bytes.Repeat([]byte{0xff}, 8192), 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	code, _, errOut = runHub(t, nil, "serve", "--data", dir, "--admin-listen", "127.0.0.1:0", "--quic-listen", "127.0.0.1:0")
	if code != 1 || !strings.Contains(errOut, path) || !strings.Contains(errOut, "corrupt") {
		t.Errorf("serve on a damaged file: exit %d\n%s", code, errOut)
	}
}

func TestEndToEndConfig(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.toml")
	writeFile(t, good, fmt.Sprintf(`[hub]
name = "cfg-hub"
data_dir = %q

[[stream]]
name = "sensors"
shards = 3
retention = "72h"
replicate = ["tag:cloud"]
`, filepath.Join(dir, "data")))
	s := startServer(t, filepath.Join(dir, "data"), "--config", good)
	if !strings.Contains(s.logs(), "config="+good) || !strings.Contains(s.logs(), "streams=sensors") {
		t.Errorf("log does not say what was loaded:\n%s", s.logs())
	}
	code, out, errOut := runHub(t, []string{"HUB_ADMIN=" + s.admin}, "stream", "list")
	if code != 0 || !strings.Contains(out, "sensors") || !strings.Contains(out, "tag:cloud") || !strings.Contains(out, "72h") {
		t.Errorf("declared stream: exit %d\n%s%s", code, out, errOut)
	}
	s.stop(t, syscall.SIGINT)

	bad := filepath.Join(dir, "bad.toml")
	writeFile(t, bad, `[hub]
nmae = "x"

[[stream]]
name = "ok"
shards = "two"
retention = "1w"
`)
	cwd := t.TempDir()
	code, _, errOut = runHubIn(t, cwd, nil, "serve", "--config", bad)
	for _, want := range []string{
		"invalid configuration",
		bad + `:2: hub.nmae: unknown key (did you mean "name"?)`,
		bad + ":6: stream[0].shards: incompatible types",
		bad + `:7: stream[0].retention: invalid duration "1w"`,
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	if _, err := os.Stat(filepath.Join(cwd, "hub-data")); !errors.Is(err, os.ErrNotExist) {
		t.Error("a bad config created a data dir: the hub half-started")
	}
}

func writeFile(tb testing.TB, path, content string) {
	tb.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		tb.Fatal(err)
	}
}

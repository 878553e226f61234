//go:build chaos

package chaos

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgehub/edgehub/sdk"
)

// The fault tests run the real hub binary, built once per test run.
var (
	hubBinary string
	buildDir  string
)

func TestMain(m *testing.M) {
	if b := os.Getenv(envLabHub); b != "" {
		// A process started by a network-namespace test (netlab_test.go):
		// the outer test's binary serves.
		hubBinary = b
		os.Exit(m.Run())
	}
	var err error
	buildDir, err = os.MkdirTemp("", "edgehub-chaos-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(2)
	}
	hubBinary = filepath.Join(buildDir, "hub")
	out, err := exec.Command("go", "build", "-tags", "chaos", "-o", hubBinary, "github.com/edgehub/edgehub/cmd/hub").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "chaos: go build: %v\n%s", err, out)
		os.RemoveAll(buildDir)
		os.Exit(2)
	}
	code := m.Run()
	os.RemoveAll(buildDir)
	os.Exit(code)
}

// envDuration reads a duration from the environment (docs/chaos.md lists
// the variables), or def.
func envDuration(tb testing.TB, name string, def time.Duration) time.Duration {
	tb.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		tb.Fatalf("%s=%q: %v", name, v, err)
	}
	return d
}

// hubConfig is what a test hub runs with.
type hubConfig struct {
	Name         string
	DataDir      string
	QUIC         string // fixed, so clients find a restarted hub at the same address
	Sync         string // "always" or "interval"
	SyncInterval string
	Stream       string
	Shards       int
	Extra        string // more TOML, appended
}

func (c hubConfig) toml() string {
	sync := c.Sync
	if sync == "" {
		sync = "always"
	}
	si := c.SyncInterval
	if si == "" {
		si = "100ms"
	}
	s := fmt.Sprintf(`[hub]
name = %q
data_dir = %q
[listen]
quic = %q
admin = "127.0.0.1:0"
[store]
sync = %q
sync_interval = %q
`, c.Name, c.DataDir, c.QUIC, sync, si)
	if c.Stream != "" {
		s += fmt.Sprintf("[[stream]]\nname = %q\nshards = %d\n", c.Stream, c.Shards)
	}
	return s + c.Extra
}

// hubProc is a `hub serve` child process.
type hubProc struct {
	cmd   *exec.Cmd
	admin string
	pid   int
	mu    sync.Mutex
	log   []string // stderr lines (the last 2000)
	done  chan struct{}
	err   error // Wait's result, after done
}

var adminRE = regexp.MustCompile(`msg="hub ready".* admin=(http://\S+)`)

// startHub runs `hub serve --config cfgFile` and waits until it is ready. It
// returns an error (with the hub's log) if the hub exits first.
func startHub(tb testing.TB, cfgFile string) (*hubProc, error) {
	tb.Helper()
	h := &hubProc{cmd: exec.Command(hubBinary, "serve", "--config", cfgFile), done: make(chan struct{})}
	pipe, err := h.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := h.cmd.Start(); err != nil {
		return nil, err
	}
	h.pid = h.cmd.Process.Pid
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pipe)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if m := adminRE.FindStringSubmatch(line); m != nil {
				ready <- m[1]
			}
			h.mu.Lock()
			h.log = append(h.log, line)
			if len(h.log) > 2000 {
				h.log = h.log[len(h.log)-1000:]
			}
			h.mu.Unlock()
		}
		io.Copy(io.Discard, pipe)
		h.err = h.cmd.Wait()
		close(h.done)
	}()
	tb.Cleanup(func() { h.kill() })
	select {
	case h.admin = <-ready:
		return h, nil
	case <-h.done:
		return nil, fmt.Errorf("hub exited before ready: %v\n%s", h.err, h.logs())
	case <-time.After(60 * time.Second):
		h.kill()
		return nil, fmt.Errorf("hub not ready after 60s:\n%s", h.logs())
	}
}

func mustStartHub(tb testing.TB, cfgFile string) *hubProc {
	tb.Helper()
	h, err := startHub(tb, cfgFile)
	if err != nil {
		tb.Fatal(err)
	}
	return h
}

func (h *hubProc) logs() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return strings.Join(h.log, "\n")
}

// kill sends SIGKILL and waits for the process to be gone.
func (h *hubProc) kill() {
	select {
	case <-h.done:
		return
	default:
	}
	h.cmd.Process.Signal(syscall.SIGKILL)
	<-h.done
}

// stop sends SIGTERM and waits for a clean exit.
func (h *hubProc) stop(tb testing.TB) {
	tb.Helper()
	h.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-h.done:
	case <-time.After(60 * time.Second):
		h.kill()
		tb.Fatalf("hub did not stop on SIGTERM:\n%s", h.logs())
	}
	if h.err != nil {
		tb.Fatalf("hub exit after SIGTERM: %v\n%s", h.err, h.logs())
	}
}

// exited reports whether the process has ended.
func (h *hubProc) exited() bool {
	select {
	case <-h.done:
		return true
	default:
		return false
	}
}

func writeConfig(tb testing.TB, path string, c hubConfig) {
	tb.Helper()
	if err := os.WriteFile(path, []byte(c.toml()), 0o644); err != nil {
		tb.Fatal(err)
	}
}

// quietLogger keeps the SDK's reconnect chatter out of the test output.
func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// dial connects to addr, retrying for a minute while the hub restarts. It
// may run on any goroutine: it reports failure with Errorf and returns nil.
func dial(tb testing.TB, addr string) *sdk.Client {
	deadline := time.Now().Add(time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := sdk.Dial(ctx, addr, sdk.Options{Insecure: true, Logger: quietLogger(),
			ReconnectMin: 20 * time.Millisecond, ReconnectMax: 300 * time.Millisecond, DialTimeout: 2 * time.Second})
		cancel()
		if err == nil {
			tb.Cleanup(func() { c.Close() })
			return c
		}
		if time.Now().After(deadline) {
			tb.Errorf("dial %s: %v", addr, err)
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
}

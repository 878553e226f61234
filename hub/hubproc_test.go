package hub

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgehub/edgehub/internal/testutil"
	"github.com/edgehub/edgehub/quic"
	"github.com/edgehub/edgehub/sdk"
)

// Tests that need the hub's own process (its peak RSS, a crash) run `hub
// serve` from a binary built once per test run.

// hubBinary is the hub binary, built once per test run (skipped with
// -short).
func hubBinary(tb testing.TB) string {
	tb.Helper()
	return testutil.Binary(tb, "github.com/edgehub/edgehub/cmd/hub")
}

// hubProc is a `hub serve` child process.
type hubProc struct {
	cmd   *exec.Cmd
	addr  string // QUIC
	admin string // admin base URL
	ca    string
	mu    sync.Mutex
	log   bytes.Buffer
	done  chan struct{}
}

func (p *hubProc) logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

var (
	quicAddrRE  = regexp.MustCompile(`msg="data plane listening" addr=(\S+)`)
	adminAddrRE = regexp.MustCompile(`msg="hub ready".* admin=(http://\S+)`)
)

// startHubProc writes a hub.toml with the given extra sections (after
// [hub] and [listen]) and runs `hub serve` on free loopback ports.
func startHubProc(tb testing.TB, extra string) *hubProc {
	tb.Helper()
	bin := hubBinary(tb)
	dir := tb.TempDir()
	data := filepath.Join(dir, "data")
	conf := filepath.Join(dir, "hub.toml")
	toml := fmt.Sprintf("[hub]\nname = \"proc\"\ndata_dir = %q\n[listen]\nquic = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n%s", data, extra)
	if err := os.WriteFile(conf, []byte(toml), 0o644); err != nil {
		tb.Fatal(err)
	}
	p := &hubProc{cmd: exec.Command(bin, "serve", "--config", conf), done: make(chan struct{}), ca: filepath.Join(data, SelfSignedCertFile)}
	p.cmd.Dir = dir
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	ready := make(chan struct{})
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.log.WriteString(line + "\n")
			if m := quicAddrRE.FindStringSubmatch(line); m != nil {
				p.addr = m[1]
			}
			if m := adminAddrRE.FindStringSubmatch(line); m != nil && p.admin == "" {
				p.admin = m[1]
				close(ready)
			}
			p.mu.Unlock()
		}
		p.cmd.Wait()
	}()
	tb.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
		if tb.Failed() {
			tb.Logf("hub serve log (tail):\n%s", tail(p.logs(), 60))
		}
	})
	select {
	case <-ready:
	case <-p.done:
		tb.Fatalf("hub serve exited before ready:\n%s", p.logs())
	case <-time.After(60 * time.Second):
		tb.Fatalf("hub serve not ready after 60s:\n%s", p.logs())
	}
	return p
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// statusKB reads a field of /proc/PID/status in KiB (VmRSS, VmHWM).
func (p *hubProc) statusKB(tb testing.TB, field string) int64 {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		tb.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				tb.Fatal(err)
			}
			return n
		}
	}
	tb.Fatalf("no %s in /proc/%d/status", field, p.cmd.Process.Pid)
	return 0
}

// metric sums the samples of a metric on the hub's /metrics whose labels
// contain labels.
func (p *hubProc) metric(tb testing.TB, name, labels string) float64 {
	tb.Helper()
	return scrapeMetric(tb, p.admin, name, labels)
}

// scrapeMetric sums the samples of a metric on the /metrics of the hub
// whose admin base URL is admin, as hubProc.metric.
func scrapeMetric(tb testing.TB, admin, name, labels string) float64 {
	tb.Helper()
	resp, err := http.Get(admin + "/metrics")
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var total float64
	for _, line := range strings.Split(string(body), "\n") {
		if (strings.HasPrefix(line, name+"{") || strings.HasPrefix(line, name+" ")) && strings.Contains(line, labels) {
			var v float64
			fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v)
			total += v
		}
	}
	return total
}

func (p *hubProc) client(tb testing.TB, mod func(*sdk.Options)) *sdk.Client {
	tb.Helper()
	return (&dpHub{addr: p.addr, ca: p.ca}).client(tb, mod)
}

// raw dials a protocol-level connection with cfg (TLS and token filled in).
func (p *hubProc) raw(tb testing.TB, cfg quic.ClientConfig) *quic.Client {
	tb.Helper()
	pool, err := quic.CertPool(p.ca)
	if err != nil {
		tb.Fatal(err)
	}
	if cfg.TLS == nil {
		cfg.TLS = &tls.Config{RootCAs: pool}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := quic.Dial(ctx, p.addr, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

package demo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/edgehub/edgehub/internal/atomicfile"
)

// hubSpec is one hub of the demo's federation.
type hubSpec struct {
	name, site string
	edge       bool
	quic       string // data plane address
	admin      string // admin API address
	gossip     string // memberlist address (UDP and TCP)
}

func (h *hubSpec) adminURL() string { return "http://" + h.admin }

// dataDir is the hub's data dir under the demo's dir.
func (h *hubSpec) dataDir(demoDir string) string { return filepath.Join(demoDir, h.name, "data") }

// certFile is the self-signed certificate the hub makes on its first start:
// the demo's clients trust it as the CLI does on a hub's machine.
func (h *hubSpec) certFile(demoDir string) string {
	return filepath.Join(h.dataDir(demoDir), "tls", "cert.pem")
}

// topology is the federation: the region first (the others join it).
func topology() []*hubSpec {
	return []*hubSpec{
		{name: "region-eu", site: "frankfurt"},
		{name: "edge-berlin", site: "berlin", edge: true},
		{name: "edge-paris", site: "paris", edge: true},
	}
}

// pickPorts gives every hub free loopback ports: a QUIC (UDP) port, an admin
// (TCP) port and a gossip port free for both. They are picked, not bound
// by the hubs with port 0, so that each hub.toml names its addresses and
// can be started again by hand.
func pickPorts(hubs []*hubSpec) error { return pickPortsExcept(hubs, map[int]bool{}) }

func pickPortsExcept(hubs []*hubSpec, taken map[int]bool) error {
	for _, h := range hubs {
		for _, p := range []struct {
			dst *string
			udp bool
			tcp bool
		}{{&h.quic, true, false}, {&h.admin, false, true}, {&h.gossip, true, true}} {
			port, err := freePort(p.udp, p.tcp, taken)
			if err != nil {
				return err
			}
			taken[port] = true
			*p.dst = fmt.Sprintf("127.0.0.1:%d", port)
		}
	}
	return nil
}

// repickPorts gives h new ports, none of another hub's.
func repickPorts(h *hubSpec, hubs []*hubSpec) error {
	taken := map[int]bool{}
	for _, o := range hubs {
		for _, a := range []string{o.quic, o.admin, o.gossip} {
			if _, port, err := net.SplitHostPort(a); err == nil {
				n, _ := strconv.Atoi(port)
				taken[n] = true
			}
		}
	}
	return pickPortsExcept([]*hubSpec{h}, taken)
}

func freePort(udp, tcp bool, taken map[int]bool) (int, error) {
	for range 50 {
		var port int
		var closers []func() error
		if tcp {
			l, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				return 0, fmt.Errorf("demo: free port: %w", err)
			}
			port = l.Addr().(*net.TCPAddr).Port
			closers = append(closers, l.Close)
		}
		ok := true
		if udp {
			u, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
			if err == nil {
				port = u.LocalAddr().(*net.UDPAddr).Port
				closers = append(closers, u.Close)
			} else {
				ok = false
			}
		}
		for _, c := range closers {
			c()
		}
		if ok && !taken[port] {
			return port, nil
		}
	}
	return 0, errors.New("demo: no free loopback port")
}

// pluginSettings are the example plugins' settings at the edges.
type pluginSettings struct {
	aggregate, alert string // .wasm files
	window           time.Duration
}

// writeConfig writes the hub's hub.toml and returns its path. Paths are
// absolute so that the file works from any directory.
func (h *hubSpec) writeConfig(dir, gossipKey string, region *hubSpec, ps pluginSettings) (string, error) {
	var b bytes.Buffer
	fmt.Fprintf(&b, `# %s: written by hub demo. Start it alone (the demo stopped) with
#   hub serve --config %s
`, h.name, filepath.Join(dir, "hub.toml"))
	tags := `["region"]`
	if h.edge {
		tags = `["edge"]`
	}
	fmt.Fprintf(&b, `
[hub]
name = %q
site = %q
region = "eu"
tags = %s
data_dir = %q

[listen]
quic = %q
admin = %q

[gossip]
bind = %q
`, h.name, h.site, tags, filepath.Join(dir, "data"), h.quic, h.admin, h.gossip)
	if h != region {
		fmt.Fprintf(&b, "join = [%q]\n", region.gossip)
	}
	fmt.Fprintf(&b, `# The shared key encrypts gossip and authenticates the pin of each hub's
# self-signed certificate that it publishes there: pulls verify peers'
# certificates by their pins, with no CA and no copied certificates.
secret_key_file = %q
label = "edgehub-demo"
profile = "local"
`, gossipKey)
	if h.edge {
		fmt.Fprintf(&b, `
# Raw readings stay at the edge; what the plugins make of them goes to the
# hubs tagged "region", which create the streams from the gossiped
# definitions.
[[stream]]
name = "readings"
shards = 2
retention = "1h"
replicate = "local"

[[stream]]
name = "aggregates"
shards = 2
replicate = ["tag:region"]

[[stream]]
name = "alerts"
shards = 1
replicate = ["tag:region"]

[[plugin]]
name = "agg"
module = %q
inputs = ["readings"]
outputs = ["aggregates"]
start = "earliest"
timer_interval = "250ms"
[plugin.config]
window = %q
lateness = "500ms"

[[plugin]]
name = "alert"
module = %q
inputs = ["readings"]
outputs = ["alerts"]
start = "earliest"
[plugin.config]
threshold = "%g"
hysteresis = "2"
rate = "%g"
debounce = "5s"
`, ps.aggregate, ps.window.String(), ps.alert, alertThreshold, alertRate)
	}
	file := filepath.Join(dir, "hub.toml")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("demo: config of %s: %w", h.name, err)
	}
	if err := atomicfile.WriteFile(file, b.Bytes(), 0o644); err != nil {
		return "", fmt.Errorf("demo: config of %s: %w", h.name, err)
	}
	return file, nil
}

// proc is a running `hub serve` child process.
type proc struct {
	spec    *hubSpec
	cmd     *exec.Cmd
	logFile string
	done    chan struct{} // closed when the process has exited
	err     error         // Wait's result, set before done closes
}

// start runs `exe serve --config config` with its output in dir/hub.log.
func start(exe string, spec *hubSpec, dir, config string) (*proc, error) {
	logFile := filepath.Join(dir, "hub.log")
	f, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("demo: start %s: %w", spec.name, err)
	}
	defer f.Close() // the child has its own copy
	cmd := exec.Command(exe, "serve", "--config", config)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Dir = dir
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("demo: start %s: %w", spec.name, err)
	}
	p := &proc{spec: spec, cmd: cmd, logFile: logFile, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// failure describes an ended process with the end of its log.
func (p *proc) failure() error {
	return fmt.Errorf("demo: %s exited (%v); the end of %s:\n%s", p.spec.name, p.err, p.logFile, tail(p.logFile, 15))
}

// waitReady polls the hub's /healthz until it answers 200.
func (p *proc) waitReady(ctx context.Context, client *http.Client) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		if p.exited() {
			return p.failure()
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.spec.adminURL()+"/healthz", nil)
		if err != nil {
			return fmt.Errorf("demo: wait for %s: %w", p.spec.name, err)
		}
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("demo: %s not ready after 60s; the end of %s:\n%s", p.spec.name, p.logFile, tail(p.logFile, 15))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-p.done:
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// stop asks the hub to shut down (SIGTERM: it drains and closes its
// stores) and kills it if it has not exited within grace.
func (p *proc) stop(grace time.Duration) error {
	if p.exited() {
		return p.err
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		p.cmd.Process.Kill()
	}
	select {
	case <-p.done:
		return p.err
	case <-time.After(grace):
		p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("demo: %s did not stop within %s: killed", p.spec.name, grace)
	}
}

// tail returns the last n lines of a file.
func tail(file string, n int) string {
	b, err := os.ReadFile(file)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + strings.Join(lines, "\n  ")
}

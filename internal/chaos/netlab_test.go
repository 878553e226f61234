//go:build chaos

package chaos

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgehub/edgehub/internal/chaos/udpproxy"
)

// A netLab is three hub network namespaces (a, b, c) joined pairwise by veth
// pairs, and a client namespace (ctl) joined to each: the test itself runs
// in ctl, as a client at every site; hubs talk to each other only over the
// hub-to-hub links, which the test cuts (ip link down), rate-limits (tc tbf)
// and impairs (udpproxy, since this kernel has no netem).
//
// Addresses exist only inside these namespaces, in 10.200.0.0/16: hub i has
// 10.200.0.i on its loopback; link number L (ab=1, ac=2, bc=3, ctl-a=4,
// ctl-b=5, ctl-c=6) is 10.200.L.0/30, .1 on its first end and .2 on the
// second, with a /32 route to each hub address over the link that reaches it.
// No traffic leaves the namespaces: there is no route anywhere else.
//
// The outer test (in the root namespace) builds the lab, runs the test
// binary again inside ctl for the same test (envNetLab set) and removes the
// lab after it, killing whatever still runs inside.
const envNetLab = "EDGEHUB_NETLAB"

var labHubs = []string{"a", "b", "c"}

// labLinks lists the links in numbering order.
var labLinks = [][2]string{{"a", "b"}, {"a", "c"}, {"b", "c"}, {"ctl", "a"}, {"ctl", "b"}, {"ctl", "c"}}

type netLab struct {
	prefix string // namespace names are prefix + "-" + node
}

func (l *netLab) ns(node string) string { return l.prefix + "-" + node }

// hubIP is the address hub h ("a", "b", "c") serves on.
func hubIP(h string) string { return fmt.Sprintf("10.200.0.%d", strings.Index("abc", h)+1) }

func linkNo(x, y string) int {
	for i, l := range labLinks {
		if (l[0] == x && l[1] == y) || (l[0] == y && l[1] == x) {
			return i + 1
		}
	}
	panic("no link " + x + "-" + y)
}

// dev is the name, in x's namespace, of the veth towards y.
func dev(y string) string { return "to-" + y }

// linkIP is x's address on its link to y.
func linkIP(x, y string) string {
	l := labLinks[linkNo(x, y)-1]
	end := 1
	if l[1] == x {
		end = 2
	}
	return fmt.Sprintf("10.200.%d.%d", linkNo(x, y), end)
}

func ipCmd(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// canNetLab says why the lab cannot be built here, or "".
func canNetLab() string {
	if os.Geteuid() != 0 {
		return "needs root (network namespaces)"
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return "needs iproute2's ip"
	}
	if _, err := exec.LookPath("tc"); err != nil {
		return "needs iproute2's tc"
	}
	return ""
}

// cleanStaleLabs removes labs left by earlier runs whose process is gone
// (a killed test cannot remove its own).
func cleanStaleLabs() {
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		rest, ok := strings.CutPrefix(name, "ehnet")
		if !ok {
			continue
		}
		pidStr, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || syscall.Kill(pid, 0) == nil {
			continue
		}
		killNamespace(name)
		exec.Command("ip", "netns", "del", name).Run()
	}
}

// killNamespace kills the processes in namespace ns: only ours run there.
func killNamespace(ns string) {
	out, _ := exec.Command("ip", "netns", "pids", ns).Output()
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

func buildLab(prefix string) (*netLab, error) {
	l := &netLab{prefix: prefix}
	nodes := append([]string{"ctl"}, labHubs...)
	for _, n := range nodes {
		if err := ipCmd("netns", "add", l.ns(n)); err != nil {
			return l, err
		}
		if err := ipCmd("-n", l.ns(n), "link", "set", "lo", "up"); err != nil {
			return l, err
		}
	}
	for _, h := range labHubs {
		if err := ipCmd("-n", l.ns(h), "addr", "add", hubIP(h)+"/32", "dev", "lo"); err != nil {
			return l, err
		}
	}
	for _, lk := range labLinks {
		x, y := lk[0], lk[1]
		// Each end is created in its namespace under its final name.
		if err := ipCmd("link", "add", dev(y), "netns", l.ns(x), "type", "veth", "peer", "name", dev(x), "netns", l.ns(y)); err != nil {
			return l, err
		}
		for _, e := range [][2]string{{x, y}, {y, x}} {
			if err := ipCmd("-n", l.ns(e[0]), "addr", "add", linkIP(e[0], e[1])+"/30", "dev", dev(e[1])); err != nil {
				return l, err
			}
		}
		if err := l.setLink(x, y, true); err != nil {
			return l, err
		}
	}
	return l, nil
}

// setLink brings the link between x and y up (with its routes) or down.
// Down, neither end can send: a partition of that link. Routes over a link
// vanish when it goes down, so up adds them again.
func (l *netLab) setLink(x, y string, up bool) error {
	state := "down"
	if up {
		state = "up"
	}
	for _, e := range [][2]string{{x, y}, {y, x}} {
		if err := ipCmd("-n", l.ns(e[0]), "link", "set", dev(e[1]), state); err != nil {
			return err
		}
	}
	if !up {
		return nil
	}
	for _, e := range [][2]string{{x, y}, {y, x}} {
		from, to := e[0], e[1]
		if to == "ctl" {
			continue // ctl has no hub address; hubs answer it on the /30
		}
		args := []string{"-n", l.ns(from), "route", "replace", hubIP(to) + "/32", "via", linkIP(to, from)}
		if from != "ctl" {
			args = append(args, "src", hubIP(from))
		}
		if err := ipCmd(args...); err != nil {
			return err
		}
	}
	return nil
}

// isolate cuts (or heals) every hub-to-hub link of hub h.
func (l *netLab) isolate(h string, cut bool) error {
	for _, o := range labHubs {
		if o != h {
			if err := l.setLink(h, o, !cut); err != nil {
				return err
			}
		}
	}
	return nil
}

// rate limits what x sends to y with a token bucket (tc tbf); rate "" removes
// the limit.
func (l *netLab) rate(x, y, rate string) error {
	args := []string{"netns", "exec", l.ns(x), "tc", "qdisc"}
	if rate == "" {
		args = append(args, "del", "dev", dev(y), "root")
	} else {
		args = append(args, "replace", "dev", dev(y), "root", "tbf", "rate", rate, "burst", "32kbit", "latency", "400ms")
	}
	return ipCmd(args...)
}

func (l *netLab) destroy() {
	for _, n := range append([]string{"ctl"}, labHubs...) {
		killNamespace(l.ns(n))
	}
	for _, n := range append([]string{"ctl"}, labHubs...) {
		exec.Command("ip", "netns", "del", l.ns(n)).Run()
	}
}

// inNetLab runs body inside the lab. In the outer test it builds the lab
// and runs this test again in ctl; in that inner run it calls body.
func inNetLab(t *testing.T, body func(t *testing.T, lab *netLab)) {
	if prefix := os.Getenv(envNetLab); prefix != "" {
		body(t, &netLab{prefix: prefix})
		return
	}
	if why := canNetLab(); why != "" {
		t.Skip("network-namespace fault test: " + why)
	}
	cleanStaleLabs()
	prefix := fmt.Sprintf("ehnet%d-%s", os.Getpid(), strings.ToLower(t.Name()[4:min(len(t.Name()), 12)]))
	lab, err := buildLab(prefix)
	t.Cleanup(lab.destroy)
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"netns", "exec", lab.ns("ctl"), os.Args[0], "-test.run=^" + t.Name() + "$", "-test.v", "-test.count=1"}
	if testing.Short() {
		args = append(args, "-test.short")
	}
	if dl, ok := t.Deadline(); ok {
		args = append(args, "-test.timeout="+time.Until(dl).Round(time.Second).String())
	}
	cmd := exec.Command("ip", args...)
	cmd.Env = append(os.Environ(), envNetLab+"="+prefix)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "=== RUN") || strings.HasPrefix(line, "PASS") || line == "FAIL" || strings.HasPrefix(line, "ok ") {
			continue
		}
		t.Log("inner: " + line)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the test inside the lab failed (%v); its output is above", err)
	}
}

// labProxy is an udpproxy running inside a hub's namespace (the test binary
// again, as TestNetLabProxyChild), controlled over its stdin: each line sent
// is an Impairment as JSON, answered with the proxy's Stats as JSON.
type labProxy struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Scanner
	mu   sync.Mutex
	Addr string
}

const envProxyChild = "EDGEHUB_NETLAB_PROXY" // listen|target

func (l *netLab) startProxy(t testing.TB, hub, listen, target string, imp udpproxy.Impairment) *labProxy {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", l.ns(hub), os.Args[0], "-test.run=^TestNetLabProxyChild$")
	cmd.Env = append(os.Environ(), envProxyChild+"="+listen+"|"+target)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &labProxy{cmd: cmd, in: in, out: bufio.NewScanner(out), Addr: listen}
	t.Cleanup(func() { in.Close(); cmd.Process.Kill(); cmd.Wait() })
	if _, err := p.Set(imp); err != nil {
		t.Fatal(err)
	}
	return p
}

// Set changes the proxy's impairment and returns its counts.
func (p *labProxy) Set(imp udpproxy.Impairment) (udpproxy.Stats, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	b, _ := json.Marshal(imp)
	if _, err := fmt.Fprintf(p.in, "%s\n", b); err != nil {
		return udpproxy.Stats{}, fmt.Errorf("proxy: %w", err)
	}
	for p.out.Scan() {
		line := p.out.Text()
		rest, ok := strings.CutPrefix(line, "stats ")
		if !ok {
			continue // go test's own output
		}
		if e, bad := strings.CutPrefix(rest, "error "); bad {
			return udpproxy.Stats{}, fmt.Errorf("proxy: %s", e)
		}
		var st udpproxy.Stats
		err := json.Unmarshal([]byte(rest), &st)
		return st, err
	}
	return udpproxy.Stats{}, fmt.Errorf("proxy exited: %v", p.out.Err())
}

// TestNetLabProxyChild is not a test on its own: it is the proxy process of
// labProxy.
func TestNetLabProxyChild(t *testing.T) {
	spec := os.Getenv(envProxyChild)
	if spec == "" {
		t.Skip("the proxy child of the network-namespace tests")
	}
	listen, target, _ := strings.Cut(spec, "|")
	p, err := udpproxy.New(listen, target, udpproxy.Impairment{}, uint64(os.Getpid()))
	if err != nil {
		fmt.Printf("stats error %v\n", err)
		t.Fatal(err)
	}
	defer p.Close()
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		var imp udpproxy.Impairment
		if err := json.Unmarshal(sc.Bytes(), &imp); err != nil {
			fmt.Printf("stats error %v\n", err)
			continue
		}
		if err := p.Set(imp); err != nil {
			fmt.Printf("stats error %v\n", err)
			continue
		}
		b, _ := json.Marshal(p.Stats())
		fmt.Printf("stats %s\n", b)
	}
}

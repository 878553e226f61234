package hub

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/edgehub/edgehub/internal/chaos/udpproxy"
	"github.com/edgehub/edgehub/internal/testutil"
	"github.com/edgehub/edgehub/store"
)

// TestFederationImpairedLink replicates through a link with delay, jitter
// and loss: QUIC recovers, the pull converges.
func TestFederationImpairedLink(t *testing.T) {
	n := newFedNet(t)
	cfgA := n.config("far", "")
	// Bind the data plane first to learn its port, then advertise the proxy.
	a, _ := startHub(t, cfgA)
	proxy, err := udpproxy.New("127.0.0.1:0", a.QUICAddr().String(),
		udpproxy.Impairment{Delay: 10 * time.Millisecond, Jitter: 10 * time.Millisecond, Loss: 0.03}, 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	a.federation.gossip.SetMeta(context.Background(), metaWithQUIC(a, proxy.Addr().String()))
	b := n.start("near")
	createReplicated(t, a, "remote", 2, "all")
	total := 3000
	if testing.Short() {
		total = 600
	}
	for i := 0; i < 3; i++ {
		produceAt(t, a, "remote", total/3, 100)
	}
	converged(t, "remote", total, a, b)
	st := proxy.Stats()
	dropped, relayed := st.Dropped, st.Sent
	if dropped == 0 || relayed == 0 {
		t.Fatalf("the link was not exercised: %d relayed, %d dropped", relayed, dropped)
	}
	t.Logf("impaired link: %d datagrams relayed, %d dropped", relayed, dropped)
}

// TestFederationCrashRestart SIGKILLs a hub (a child process) while it
// replicates, restarts it on the same data directory, and checks that it
// catches up with nothing lost and nothing twice.
func TestFederationCrashRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test with child processes")
	}
	n := newFedNet(t)
	a := n.start("origin")
	createReplicated(t, a, "crash", 2, "all")
	dir := t.TempDir()
	// A fixed gossip port, as in production: the restarted hub comes back
	// at the same address and refutes its death.
	gossipPort := testutil.FreePort(t)
	child := func() (*exec.Cmd, string) {
		t.Helper()
		addrFile := filepath.Join(dir, "admin.addr")
		os.Remove(addrFile)
		toml := fmt.Sprintf(`[hub]
name = "replica"
data_dir = %q
[listen]
quic = "127.0.0.1:0"
admin = "127.0.0.1:0"
[gossip]
bind = "127.0.0.1:%d"
join = [%q]
label = "test-fed"
profile = "local"
peer_insecure_skip_verify = true
`, filepath.Join(dir, "data"), gossipPort, n.first)
		cfgFile := filepath.Join(dir, "hub.toml")
		if err := os.WriteFile(cfgFile, []byte(toml), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(os.Args[0], "-test.run=^TestFederationChildHub$")
		cmd.Env = append(os.Environ(), "EDGEHUB_FED_CHILD_CONFIG="+cfgFile, "EDGEHUB_FED_CHILD_ADDR="+addrFile)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var admin string
		testutil.Eventually(t, "child hub admin address", func() bool {
			b, err := os.ReadFile(addrFile)
			admin = string(b)
			return err == nil && len(b) > 0
		})
		return cmd, admin
	}
	records := func(admin string) int64 {
		resp, err := http.Get("http://" + admin + "/v1/streams/crash")
		if err != nil {
			return -1
		}
		defer resp.Body.Close()
		var s StreamInfo
		if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&s) != nil {
			return -1
		}
		return s.Records
	}

	// Keep producing at the origin through the crash.
	ctx, stop := context.WithCancel(context.Background())
	produced := make(chan int, 1)
	go func() {
		total := 0
		for ctx.Err() == nil && total < 60000 {
			produceAt(t, a, "crash", 500, 64)
			total += 500
			time.Sleep(2 * time.Millisecond)
		}
		produced <- total
	}()
	cmd, admin := child()
	testutil.Eventually(t, "replica pulling", func() bool { return records(admin) > 2000 })
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	time.Sleep(300 * time.Millisecond) // the origin writes on meanwhile
	cmd, admin = child()
	stop()
	total := <-produced
	progress := time.NewTicker(5 * time.Second) // log progress, for a slow machine's record
	defer progress.Stop()
	testutil.Eventually(t, "replica caught up after the crash", func() bool {
		got := records(admin)
		select {
		case <-progress.C:
			resp, err := http.Get("http://" + admin + "/v1/peers")
			if err == nil {
				var p Peers
				json.NewDecoder(resp.Body).Decode(&p)
				resp.Body.Close()
				t.Logf("replica holds %d of %d; peers: %+v", got, total, p)
			}
		default:
		}
		return got == int64(total)
	})
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("replica exit: %v", err)
	}
	scfg := store.DefaultConfig(filepath.Join(dir, "data"))
	scfg.Logger = quietTestLogger()
	rs, err := store.Open(scfg)
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	want := originContent(t, a.Store(), "origin", "crash")
	got := originContent(t, rs, "replica", "crash")
	if count(want) != total || !equalContent(want, got) {
		t.Fatalf("replica holds %d records, origin %d (produced %d); equal=%v", count(got), count(want), total, equalContent(want, got))
	}
}

// TestFederationChildHub is the child process of TestFederationCrashRestart:
// a hub from a hub.toml, until killed or terminated.
func TestFederationChildHub(t *testing.T) {
	cfgFile := os.Getenv("EDGEHUB_FED_CHILD_CONFIG")
	if cfgFile == "" {
		t.Skip("child process of TestFederationCrashRestart")
	}
	cfg, err := LoadConfig(cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Logger = quietTestLogger()
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(os.Getenv("EDGEHUB_FED_CHILD_ADDR"), []byte(h.AdminAddr().String()), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	sig := make(chan os.Signal, 1)
	signalNotify(sig)
	go func() { <-sig; cancel() }()
	if err := h.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
}

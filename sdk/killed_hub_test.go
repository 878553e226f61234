package sdk_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgehub/edgehub/sdk"
	"github.com/edgehub/edgehub/store"
)

// hubChildEnv makes the test binary a hub child process (runHubChild), so
// a test can SIGKILL a real hub process: its UDP socket vanishes and no
// CONNECTION_CLOSE reaches the clients, as in a crash or a power cut.
const hubChildEnv = "EDGEHUB_SDK_TEST_HUB_CHILD"

type hubChildSpec struct {
	Dir, Addr string
	Create    bool // create stream "s" (2 shards)
}

// runHubChild serves a hub until its stdin closes (the parent ended it or
// died) and returns the exit code.
func runHubChild(spec string) int {
	var s hubChildSpec
	if err := json.Unmarshal([]byte(spec), &s); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	var streams []store.StreamConfig
	if s.Create {
		streams = append(streams, store.StreamConfig{Name: "s", Shards: 2})
	}
	th, err := startHub(s.Dir, s.Addr, nil, streams...)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("ready %s\n", th.addr)
	io.Copy(io.Discard, os.Stdin)
	th.stop()
	return 0
}

// hubChild is a hub in a child process.
type hubChild struct {
	cmd  *exec.Cmd
	addr string
	ca   string
}

func startHubChild(t *testing.T, spec hubChildSpec) *hubChild {
	t.Helper()
	b, _ := json.Marshal(spec)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), hubChildEnv+"="+string(b))
	cmd.Stderr = os.Stderr
	if _, err := cmd.StdinPipe(); err != nil { // kept open: the child lives until we end it
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	hc := &hubChild{cmd: cmd, ca: filepath.Join(spec.Dir, "tls", "cert.pem")}
	t.Cleanup(hc.kill)
	ready := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		ready <- line
		io.Copy(io.Discard, out)
	}()
	select {
	case line := <-ready:
		addr, ok := strings.CutPrefix(strings.TrimSpace(line), "ready ")
		if !ok {
			t.Fatalf("hub child: %q", line)
		}
		hc.addr = addr
	case <-time.After(60 * time.Second):
		t.Fatal("hub child not ready after 60s")
	}
	return hc
}

// kill ends the hub with SIGKILL (idempotent).
func (hc *hubChild) kill() {
	if hc.cmd.ProcessState == nil {
		hc.cmd.Process.Kill()
		hc.cmd.Wait()
	}
}

// TestIdleClientsResumeAfterHubKilled: an idle subscriber and an idle group
// member, each on its own connection, see a hub killed (SIGKILL: no
// CONNECTION_CLOSE) and restarted on the same address, and receive what is
// produced after the restart. The restarted hub keeps its stateless reset
// key, but quic-go answers only packets above 42 bytes with a reset, and an
// idle client's keep-alives and heartbeats are smaller: only the client's
// idle timeout tells it the connection is dead. With the old 60 s idle
// timeout (and 20 s keep-alives) they stalled 60 to 80 s; the deadline of
// 30 s after the kill fails that and leaves room for the 10 s idle timeout
// now used plus the reconnect (docs/protocol.md, "Transport").
func TestIdleClientsResumeAfterHubKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the idle timeout; skipped with -short")
	}
	dir := t.TempDir()
	l, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.LocalAddr().String()
	l.Close()
	hc := startHubChild(t, hubChildSpec{Dir: dir, Addr: addr, Create: true})
	ctx := testCtx(t)
	client := func() *sdk.Client {
		t.Helper()
		c, err := sdk.Dial(ctx, addr, sdk.Options{CAFile: hc.ca, ReconnectMax: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	sub, err := client().Subscribe(ctx, "s", sdk.ConsumeOptions{From: sdk.FromEarliest()})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	// Commits only when asked: an automatic commit sent into the dead
	// connection would be retransmitted large enough to draw a reset.
	g, err := client().JoinGroup(ctx, "g", "s", sdk.GroupOptions{MemberID: "m", CommitInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		// Bounded: on failure the leave waits for a dead connection.
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		g.Close(cctx)
	}()
	// Records one at a time, each read by both, give their connections the
	// round trips to finish path MTU discovery, as a connection that has
	// been up a while has: a discovery probe (a full-sized PING) sent after
	// the restart would draw a reset that a settled idle connection never
	// gets. The producer has its own connection: the idle ones stay idle.
	pc := client()
	p, err := pc.Producer(ctx, "s", sdk.ProducerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		v := fmt.Sprintf("before-%d", i)
		if _, err := p.Send(ctx, sdk.Record{Key: []byte("k"), Value: []byte(v)}); err != nil {
			t.Fatal(err)
		}
		for _, next := range []func(context.Context) (sdk.Message, error){sub.Next, g.Next} {
			if m, err := next(ctx); err != nil || string(m.Record.Value) != v {
				t.Fatalf("before the kill: %q, %v; want %q", m.Record.Value, err, v)
			}
		}
	}
	if err := g.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	p.Close(ctx)
	pc.Close()

	hc.kill()
	// Below the old idle timeout: see the comment above.
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	start := time.Now()
	startHubChild(t, hubChildSpec{Dir: dir, Addr: addr})
	pc = client()
	if p, err = pc.Producer(rctx, "s", sdk.ProducerOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Send(rctx, sdk.Record{Key: []byte("k"), Value: []byte("after")}); err != nil {
		t.Fatal(err)
	}
	p.Close(rctx)
	type result struct {
		who string
		err error
	}
	done := make(chan result, 2)
	waitFor := func(who string, next func(context.Context) (sdk.Message, error)) {
		for {
			m, err := next(rctx)
			if err != nil {
				done <- result{who, err}
				return
			}
			if string(m.Record.Value) == "after" {
				done <- result{who, nil}
				return
			}
		}
	}
	go waitFor("subscriber", sub.Next)
	go waitFor("group member", g.Next)
	for range 2 {
		r := <-done
		if r.err != nil {
			t.Errorf("%s: no record produced after the restart: %v", r.who, r.err)
			continue
		}
		t.Logf("%s resumed %.1fs after the kill", r.who, time.Since(start).Seconds())
	}
}

package sdk_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgehub/edgehub/hub"
	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/internal/testutil"
	"github.com/edgehub/edgehub/sdk"
	"github.com/edgehub/edgehub/store"
)

// TestImports keeps device binaries small: the SDK must not pull in the
// store, bbolt, the plugin runtime or wazero.
func TestImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/edgehub/edgehub/sdk").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	forbidden := []string{
		"go.etcd.io/bbolt", "github.com/tetratelabs/wazero", "github.com/hashicorp/memberlist",
		"github.com/edgehub/edgehub/store", "github.com/edgehub/edgehub/hub",
		"github.com/edgehub/edgehub/wasmhost", "github.com/edgehub/edgehub/plugins",
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list -deps returned %d packages: %s", len(deps), out)
	}
	for _, d := range deps {
		for _, f := range forbidden {
			if d == f || strings.HasPrefix(d, f+"/") {
				t.Errorf("sdk depends on %s", d)
			}
		}
	}
}

// testHub is an in-process hub for the SDK's tests and examples.
type testHub struct {
	h      *hub.Hub
	addr   string
	ca     string
	dir    string
	cancel context.CancelFunc
	done   chan error
}

// startHub runs a hub in dir on addr ("127.0.0.1:0" for any port).
func startHub(dir, addr string, mod func(*hub.Config), streams ...store.StreamConfig) (*testHub, error) {
	cfg := hub.DefaultConfig()
	cfg.Hub.Name = "sdk-test"
	cfg.Hub.DataDir = dir
	cfg.Listen.QUIC, cfg.Listen.Admin = addr, "127.0.0.1:0"
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	if mod != nil {
		mod(&cfg)
	}
	h, err := hub.New(cfg)
	if err != nil {
		return nil, err
	}
	for _, sc := range streams {
		if _, err := h.Store().CreateStream(context.Background(), sc); err != nil {
			h.Close()
			return nil, err
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	th := &testHub{h: h, addr: h.QUICAddr().String(), ca: filepath.Join(dir, hub.SelfSignedCertFile), dir: dir,
		cancel: cancel, done: make(chan error, 1)}
	go func() { th.done <- h.Run(ctx) }()
	return th, nil
}

func (th *testHub) stop() error {
	th.cancel()
	err := <-th.done
	return errors.Join(err, th.h.Close())
}

func newHub(t testing.TB, mod func(*hub.Config), streams ...store.StreamConfig) *testHub {
	t.Helper()
	th, err := startHub(t.TempDir(), "127.0.0.1:0", mod, streams...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := th.stop(); err != nil {
			t.Error(err)
		}
	})
	return th
}

func dial(t testing.TB, th *testHub) *sdk.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := sdk.Dial(ctx, th.addr, sdk.Options{CAFile: th.ca, ReconnectMax: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// TestProducerRefusedRecord checks that a record above the hub's limit is
// refused at once and the others are stored in order. (A hub that does not
// announce its limit refuses it in the ACK: TestProducerRefusedBatch in
// the package's own tests.)
func TestProducerRefusedRecord(t *testing.T) {
	th := newHub(t, func(c *hub.Config) { c.Store.MaxRecordBytes = 1024 }, store.StreamConfig{Name: "s", Shards: 1})
	c := dial(t, th)
	ctx := testCtx(t)
	p, err := c.Producer(ctx, "s", sdk.ProducerOptions{BatchRecords: 1, MaxInFlight: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(ctx)
	values := []string{"a", strings.Repeat("x", 2048), "b", "c", strings.Repeat("y", 2048), "d"}
	var futures []*sdk.Future
	for i, v := range values {
		f, err := p.SendFuture(ctx, sdk.Record{Value: []byte(v)})
		if len(v) > 1024 {
			if sdk.CodeOf(err) != sdk.CodeRecordTooLarge || !strings.Contains(err.Error(), "max_record_bytes 1024") {
				t.Fatalf("record %d: %v, want record_too_large naming the limit", i, err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		futures = append(futures, f)
	}
	var stored []uint64
	for i, f := range futures {
		pos, err := f.Wait(ctx)
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		stored = append(stored, pos.Seq)
	}
	if fmt.Sprint(stored) != "[1 2 3 4]" {
		t.Fatalf("stored at %v, want [1 2 3 4]", stored)
	}
}

// TestSubscriptionResumes restarts the hub under a subscription: it
// reconnects and continues after the last record it returned.
func TestSubscriptionResumes(t *testing.T) {
	dir := t.TempDir()
	l, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.LocalAddr().String()
	l.Close()
	th, err := startHub(dir, addr, nil, store.StreamConfig{Name: "s", Shards: 2})
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	c := dial(t, th)
	p, err := c.Producer(ctx, "s", sdk.ProducerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if _, err := p.Send(ctx, sdk.Record{Key: fmt.Appendf(nil, "k%d", i), Value: fmt.Appendf(nil, "%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	p.Close(ctx)
	sub, err := c.Subscribe(ctx, "s", sdk.ConsumeOptions{Credit: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	seen := map[string]bool{}
	for range 5 {
		m, err := sub.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		seen[string(m.Record.Value)] = true
	}
	if err := th.stop(); err != nil {
		t.Fatal(err)
	}
	th, err = startHub(dir, addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer th.stop()
	p, err = c.Producer(ctx, "s", sdk.ProducerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Send(ctx, sdk.Record{Key: []byte("k0"), Value: []byte("after")}); err != nil {
		t.Fatal(err)
	}
	p.Close(ctx)
	for len(seen) < 11 {
		m, err := sub.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if seen[string(m.Record.Value)] {
			t.Fatalf("%q delivered twice", m.Record.Value)
		}
		seen[string(m.Record.Value)] = true
	}
	if !seen["after"] {
		t.Fatalf("seen %v", seen)
	}
}

func TestClientErrors(t *testing.T) {
	th := newHub(t, nil, store.StreamConfig{Name: "s", Shards: 1})
	ctx := testCtx(t)
	tests := []struct {
		name string
		opts sdk.Options
		ok   bool
	}{
		{"trusted CA", sdk.Options{CAFile: th.ca}, true},
		{"insecure", sdk.Options{Insecure: true}, true},
		{"untrusted", sdk.Options{}, false},
		{"missing CA file", sdk.Options{CAFile: filepath.Join(t.TempDir(), "none.pem")}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := sdk.Dial(ctx, th.addr, tc.opts)
			if (err == nil) != tc.ok {
				t.Fatalf("Dial: %v", err)
			}
			if c != nil {
				c.Close()
				if err := c.Close(); err != nil {
					t.Fatalf("second Close: %v", err)
				}
			}
		})
	}
	c := dial(t, th)
	if _, err := c.Producer(ctx, "missing", sdk.ProducerOptions{}); sdk.CodeOf(err) != sdk.CodeNotFound {
		t.Fatalf("producer on a missing stream: %v", err)
	}
	if _, err := c.Subscribe(ctx, "s", sdk.ConsumeOptions{Shards: []int{7}}); sdk.CodeOf(err) != sdk.CodeInvalidArgument {
		t.Fatalf("subscribe to shard 7 of 1: %v", err)
	}
	c.Close()
	if _, err := c.Info(ctx, "s"); !errors.Is(err, sdk.ErrClosed) {
		t.Fatalf("Info after Close: %v", err)
	}
}

func TestMain(m *testing.M) {
	if spec := os.Getenv(hubChildEnv); spec != "" {
		os.Exit(runHubChild(spec))
	}
	code := m.Run()
	if exampleHub != nil {
		exampleHub.stop()
		os.RemoveAll(exampleHub.dir)
	}
	os.Exit(testutil.LeakCheck(code))
}

// TestProducerFrameLimit runs a hub with a small frame limit: the producer
// keeps its batches within it, and refuses at once a record that cannot fit.
func TestProducerFrameLimit(t *testing.T) {
	th := newHub(t, func(c *hub.Config) {
		c.Limits.MaxFrameBytes = 64 << 10
		c.Store.MaxRecordBytes = 60 << 10 // the largest a 64 KiB frame carries is a little more
	}, store.StreamConfig{Name: "s", Shards: 1})
	c := dial(t, th)
	ctx := testCtx(t)
	p, err := c.Producer(ctx, "s", sdk.ProducerOptions{BatchBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	value := make([]byte, 1000)
	for range 500 { // 500 KB: several frames' worth
		if err := p.SendAsync(ctx, sdk.Record{Value: value}, func(_ sdk.Position, err error) {
			if err != nil {
				t.Error(err)
			}
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	p, err = c.Producer(ctx, "s", sdk.ProducerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(ctx)
	if _, err := p.Send(ctx, sdk.Record{Value: make([]byte, 100<<10)}); sdk.CodeOf(err) != sdk.CodeRecordTooLarge {
		t.Fatalf("oversized record: %v", err)
	}
	info, err := c.Info(ctx, "s")
	if err != nil {
		t.Fatal(err)
	}
	if info.Shards[0].Last != 500 {
		t.Fatalf("stored %d records, want 500", info.Shards[0].Last)
	}
}

// TestProducerRefusedSession: a producer without permission fails its
// records and further sends instead of retrying forever.
func TestProducerRefusedSession(t *testing.T) {
	th := newHub(t, func(c *hub.Config) {
		c.Auth.Tokens = []hub.TokenGrant{{Name: "r", Token: "reader-0123456789", Consume: []string{"*"}}}
	}, store.StreamConfig{Name: "s", Shards: 1})
	ctx := testCtx(t)
	c, err := sdk.Dial(ctx, th.addr, sdk.Options{CAFile: th.ca, Token: "reader-0123456789"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Producer(ctx, "s", sdk.ProducerOptions{}); sdk.CodeOf(err) != sdk.CodePermissionDenied {
		t.Fatalf("producer without permission: %v", err)
	}
}

func TestProducerExplicitShard(t *testing.T) {
	th := newHub(t, nil, store.StreamConfig{Name: "s", Shards: 3})
	c := dial(t, th)
	ctx := testCtx(t)
	p, err := c.Producer(ctx, "s", sdk.ProducerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(ctx)
	// A key that routes elsewhere than shard 0.
	elsewhere := "k0"
	for i := 0; record.ShardForKey([]byte(elsewhere), 3) == 0; i++ {
		elsewhere = fmt.Sprintf("k%d", i)
	}
	tests := []struct {
		name  string
		shard int
		key   string
		code  sdk.Code
	}{
		{"keyless to shard 2", 2, "", 0},
		{"key ignored", 0, elsewhere, 0},
		{"out of range", 3, "", sdk.CodeInvalidArgument},
		{"negative", -1, "", sdk.CodeInvalidArgument},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var key []byte
			if tc.key != "" {
				key = []byte(tc.key)
			}
			pos, err := p.SendTo(ctx, tc.shard, sdk.Record{Key: key, Value: []byte("v")})
			if sdk.CodeOf(err) != tc.code {
				t.Fatalf("SendTo: %v, want code %s", err, tc.code)
			}
			if err == nil && pos.Shard != tc.shard {
				t.Fatalf("stored in shard %d, want %d", pos.Shard, tc.shard)
			}
		})
	}
}

// A subscription broken while its stream is deleted and created again
// resumes at the new stream's beginning: its old positions would skip the
// new stream's first records.
func TestSubscriptionFollowsRecreatedStream(t *testing.T) {
	dir := t.TempDir()
	l, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.LocalAddr().String()
	l.Close()
	th, err := startHub(dir, addr, nil, store.StreamConfig{Name: "s", Shards: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	c := dial(t, th)
	send := func(prefix string, n int) {
		t.Helper()
		p, err := c.Producer(ctx, "s", sdk.ProducerOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			if _, err := p.Send(ctx, sdk.Record{Value: fmt.Appendf(nil, "%s%d", prefix, i)}); err != nil {
				t.Fatal(err)
			}
		}
		p.Close(ctx)
	}
	send("old", 5)
	sub, err := c.Subscribe(ctx, "s", sdk.ConsumeOptions{Credit: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	for range 5 {
		if _, err := sub.Next(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := th.stop(); err != nil {
		t.Fatal(err)
	}
	s, err := store.Open(store.DefaultConfig(dir))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteStream(ctx, "s"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateStream(ctx, store.StreamConfig{Name: "s", Shards: 1}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	th, err = startHub(dir, addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer th.stop()
	send("new", 8)
	for i := range 8 {
		m, err := sub.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("new%d", i); string(m.Record.Value) != want {
			t.Fatalf("record %d after the recreate is %q, want %q", i, m.Record.Value, want)
		}
	}
}

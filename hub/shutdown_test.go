package hub

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/internal/testutil"
	"github.com/edgehub/edgehub/sdk"
	"github.com/edgehub/edgehub/store"
)

// TestShutdownUnderLoad: a `hub serve` child with a plugin running takes
// records from four QUIC producers and two HTTP producers without pause and
// gets SIGTERM. It drains (the log says so) and exits with status 0 well
// within shutdown_timeout plus a generous margin; after a restart every
// record acknowledged to any producer, before or during the drain, is at
// its acknowledged position.
func TestShutdownUnderLoad(t *testing.T) {
	const bound = 5 * time.Second
	dir := t.TempDir()
	conf := writeHubToml(t, dir, fmt.Sprintf("shutdown_timeout = %q\n[[stream]]\nname = \"events\"\nshards = 3\n", bound))
	// writeHubToml puts extra sections after [listen]: move the key to [hub].
	b, _ := os.ReadFile(conf)
	toml := strings.Replace(string(b), fmt.Sprintf("shutdown_timeout = %q\n", bound), "", 1)
	toml = strings.Replace(toml, "[hub]\n", fmt.Sprintf("[hub]\nshutdown_timeout = %q\n", bound), 1)
	os.WriteFile(conf, []byte(toml), 0o644)
	c := startChild(t, conf)
	wasm, err := os.ReadFile(watPassThroughModule)
	if err != nil {
		t.Fatal(err)
	}
	def := PluginConfig{Name: "copy", Inputs: []string{"events"}, Outputs: []string{"copied"}, Start: "earliest",
		Config: PluginParams{"output": "copied"}, CallTimeout: Duration(time.Second)}
	if status, body := deployHTTP(t, "http://"+c.admin, def, wasm); status != http.StatusCreated {
		t.Fatalf("deploy: %d %s", status, body)
	}

	acks := newAckLog()
	var signalled atomic.Bool
	var afterSignal atomic.Int64 // acknowledgements that arrived after SIGTERM
	ack := func(p store.Position, v string) {
		acks.add(p, v)
		if signalled.Load() {
			afterSignal.Add(1)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	var prods []*sdk.Producer
	var clients []*sdk.Client
	for p := range 4 {
		cl := dialChild(t, c)
		clients = append(clients, cl)
		prod, err := cl.Producer(ctx, "events", sdk.ProducerOptions{})
		if err != nil {
			t.Fatal(err)
		}
		prods = append(prods, prod)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				v := fmt.Sprintf("q%d-%d", p, i)
				err := prod.SendAsync(ctx, record.Record{Key: fmt.Appendf(nil, "k%d", i%17), Value: []byte(v)}, func(pos sdk.Position, err error) {
					if err == nil {
						ack(store.Position{Shard: uint32(pos.Shard), Seq: pos.Seq}, v)
					}
				})
				if err != nil {
					return
				}
			}
		}()
	}
	url := "http://" + c.admin + "/v1/streams/events/records"
	for p := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Timeout: 30 * time.Second}
			for i := 0; ctx.Err() == nil; i++ {
				var body bytes.Buffer
				var values []string
				for j := range 5 {
					v := fmt.Sprintf("h%d-%d-%d", p, i, j)
					values = append(values, v)
					fmt.Fprintf(&body, "{\"key\":\"k%d\",\"value\":%q}\n", j, v)
				}
				resp, err := client.Post(url, ContentTypeNDJSON, &body)
				if err != nil {
					return
				}
				var res IngestResult
				err = json.NewDecoder(resp.Body).Decode(&res)
				resp.Body.Close()
				if err != nil || resp.StatusCode != http.StatusOK {
					return
				}
				for k, pos := range res.Records {
					ack(store.Position{Shard: pos.Shard, Seq: pos.Seq}, values[k])
				}
			}
		}()
	}
	testutil.Eventually(t, "acknowledged records under load", func() bool { return acks.len() >= 2000 })

	signalled.Store(true)
	sent := time.Now()
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(bound + 30*time.Second):
		t.Fatalf("hub still running %s after SIGTERM (shutdown_timeout %s):\n%s", time.Since(sent), bound, tail(c.log.String(), 40))
	}
	took := time.Since(sent)
	if c.err != nil {
		t.Fatalf("hub exited with %v after SIGTERM:\n%s", c.err, tail(c.log.String(), 40))
	}
	cancel()
	wg.Wait()
	// The hub is gone: what was not acknowledged fails.
	for _, cl := range clients {
		cl.Close()
	}
	var closing sync.WaitGroup
	for _, p := range prods {
		closing.Go(func() {
			cctx, ccancel := context.WithTimeout(context.Background(), time.Second)
			defer ccancel()
			p.Close(cctx)
		})
	}
	closing.Wait()
	t.Logf("SIGTERM to exit: %s; %d records acknowledged, %d of them after SIGTERM", took.Round(time.Millisecond), acks.len(), afterSignal.Load())
	if took > bound+20*time.Second {
		t.Errorf("exit took %s, bound %s", took, bound)
	}

	c = startChild(t, conf)
	admin := "http://" + c.admin
	cl := dialChild(t, c)
	checkAcks(t, acks, admin, cl, "events")

	// Negative control on the real read path: a hub that lost the stream
	// (deleted and created again, one new record) fails the check for
	// every acknowledged record.
	if status, body := call(t, http.MethodDelete, admin+"/v1/streams/events?force=true", ""); status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", status, body)
	}
	if status, body := call(t, http.MethodPost, admin+"/v1/streams", `{"name":"events","shards":3}`); status != http.StatusCreated {
		t.Fatalf("create: %d %s", status, body)
	}
	if status, body := post(t, admin+"/v1/streams/events/records?key=k1", "application/octet-stream", "new", nil); status != http.StatusOK {
		t.Fatalf("ingest: %d %s", status, body)
	}
	if l := acks.lost(hubRecords(t, admin, cl, "events")); len(l) != acks.len() {
		t.Fatalf("negative control: %d of %d acknowledged records reported lost from an emptied stream", len(l), acks.len())
	}
}

// stuck is a component that ignores its context until released, and whose
// Drain never finishes: a part that hangs at shutdown.
type stuck struct{ release chan struct{} }

func (s *stuck) Run(ctx context.Context) error {
	<-s.release
	return nil
}
func (s *stuck) Drain(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }
func (s *stuck) Close() error                    { return nil }

// TestShutdownBound: a part that does not stop keeps the hub from exiting
// no longer than shutdown_timeout: Run returns an error naming it (and logs
// it), and the hub's own parts have drained and stopped.
func TestShutdownBound(t *testing.T) {
	cfg := testConfig(t)
	cfg.Hub.ShutdownTimeout = Duration(300 * time.Millisecond)
	var log testutil.SyncBuffer
	cfg.Logger = slog.New(slog.NewTextHandler(&log, nil))
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := &stuck{release: make(chan struct{})}
	h.add(s)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	waitHealthy(t, "http://"+h.AdminAddr().String())
	cancel()
	select {
	case err = <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("Run did not return long after shutdown_timeout")
	}
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "stuck still running") {
		t.Errorf("Run = %v, want a deadline error naming stuck", err)
	}
	for _, want := range []string{"hub draining", "drain incomplete", "shutdown_timeout passed", "pending=stuck"} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, log.String())
		}
	}
	if strings.Contains(log.String(), "pending=stuck,") || strings.Contains(log.String(), ",stuck") {
		t.Errorf("parts other than stuck still running:\n%s", log.String())
	}
	close(s.release)
	if err := h.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

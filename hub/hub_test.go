package hub

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgehub/edgehub/store"
)

// testConfig returns a config for a hub in a fresh temporary data dir on
// free loopback ports.
func testConfig(tb testing.TB) Config {
	tb.Helper()
	c := DefaultConfig()
	c.Hub.Name = "test-hub"
	c.Hub.DataDir = tb.TempDir()
	c.Listen.Admin = "127.0.0.1:0"
	c.Listen.QUIC = "127.0.0.1:0"
	c.Logger = testLogger(tb)
	return c
}

// testLogger sends logs to the test log, so they show only on failure.
func testLogger(tb testing.TB) *slog.Logger {
	tb.Helper()
	return slog.New(slog.NewTextHandler(tbWriter{tb}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.tb.Helper()
	w.tb.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// startHub builds and runs a hub; cleanup stops it and checks Run's result.
// It returns the hub and the admin base URL.
func startHub(tb testing.TB, cfg Config) (*Hub, string) {
	tb.Helper()
	h, err := New(cfg)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("Run: %v", err)
		}
		if err := h.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	base := "http://" + h.AdminAddr().String()
	waitHealthy(tb, base)
	return h, base
}

// waitHealthy waits until /healthz answers 200 (readiness is asynchronous to
// Run's start); it fails the test after a generous bound.
func waitHealthy(tb testing.TB, base string) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("hub at %s not healthy: %v", base, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestNewDeclaresStreams(t *testing.T) {
	cfg := testConfig(t)
	cfg.Streams = []StreamConfig{
		{Name: "sensors", Shards: 4, Retention: Duration(time.Hour), MaxBytes: 1 << 30, TombstoneRetention: Duration(time.Hour), Replicate: ReplicateAll},
		{Name: "alerts", Shards: 1, Compact: true, Replicate: "tag:eu"},
	}
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	st, err := h.Store().Stream("sensors")
	if err != nil {
		t.Fatal(err)
	}
	got := st.Config()
	if got.Shards != 4 || got.Retention != time.Hour || got.MaxBytes != 1<<30 || got.Meta[MetaReplicate] != "all" {
		t.Errorf("sensors = %+v", got)
	}
	// Meta keys owned by other parts must survive a config reload.
	got.Meta["owner"] = "federation"
	if err := h.Store().UpdateStream(context.Background(), got); err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name   string
		change func(c *Config)
		check  func(t *testing.T, h *Hub)
		err    error
	}{
		{
			name:   "same declaration is a no-op",
			change: func(c *Config) {},
			check: func(t *testing.T, h *Hub) {
				c := mustStream(t, h, "sensors").Config()
				if c.Retention != time.Hour || c.Meta["owner"] != "federation" {
					t.Errorf("sensors = %+v", c)
				}
			},
		},
		{
			name: "mutable settings are updated, foreign meta kept",
			change: func(c *Config) {
				c.Streams[0].Retention = Duration(2 * time.Hour)
				c.Streams[0].Replicate = "tag:cloud"
				c.Streams[1].Compact = false
			},
			check: func(t *testing.T, h *Hub) {
				c := mustStream(t, h, "sensors").Config()
				if c.Retention != 2*time.Hour || c.Meta[MetaReplicate] != "tag:cloud" || c.Meta["owner"] != "federation" {
					t.Errorf("sensors = %+v", c)
				}
				if mustStream(t, h, "alerts").Config().Compact {
					t.Error("alerts still compacted")
				}
			},
		},
		{
			name:   "streams absent from the config are left alone",
			change: func(c *Config) { c.Streams = c.Streams[:1] },
			check:  func(t *testing.T, h *Hub) { mustStream(t, h, "alerts") },
		},
		{
			name:   "a shard count change is refused",
			change: func(c *Config) { c.Streams[0].Shards = 8 },
			err:    ErrShardsFixed,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := cfg
			c.Streams = append([]StreamConfig(nil), cfg.Streams...)
			tt.change(&c)
			h, err := New(c)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("New = %v, want %v", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close()
			tt.check(t, h)
		})
	}
}

func mustStream(tb testing.TB, h *Hub, name string) *store.Stream {
	tb.Helper()
	st, err := h.Store().Stream(name)
	if err != nil {
		tb.Fatal(err)
	}
	return st
}

func TestNewFailsCleanly(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()

	tests := []struct {
		name    string
		prepare func(t *testing.T, c *Config)
		is      error
		message []string
	}{
		{
			name: "invalid config",
			prepare: func(t *testing.T, c *Config) {
				c.Streams = []StreamConfig{{Name: "no good", Shards: 1}}
			},
			is:      store.ErrInvalidName,
			message: []string{"stream[0].name"},
		},
		{
			name: "admin port in use",
			prepare: func(t *testing.T, c *Config) {
				c.Listen.Admin = busy.Addr().String()
			},
			message: []string{"admin listen " + busy.Addr().String()},
		},
		{
			name: "data dir locked by another hub",
			prepare: func(t *testing.T, c *Config) {
				other, err := New(*c)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { other.Close() })
			},
			is:      store.ErrLocked,
			message: []string{"is another hub running on this data directory?"},
		},
		{
			name: "damaged stream file",
			prepare: func(t *testing.T, c *Config) {
				h, err := New(*c)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := h.Store().CreateStream(context.Background(), store.StreamConfig{Name: "orders", Shards: 2}); err != nil {
					t.Fatal(err)
				}
				if err := h.Close(); err != nil {
					t.Fatal(err)
				}
				damage(t, filepath.Join(c.Hub.DataDir, "streams", "orders.db"))
			},
			is:      store.ErrCorrupt,
			message: []string{filepath.Join("streams", "orders.db")},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testConfig(t)
			tt.prepare(t, &c)
			h, err := New(c)
			if err == nil {
				h.Close()
				t.Fatal("New succeeded")
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("New = %v, want it to wrap %v", err, tt.is)
			}
			for _, m := range tt.message {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("New = %q, want it to mention %q", err, m)
				}
			}
			// Never half-started: the failed New released the data dir
			// and the listeners, so a second attempt fails the same way
			// (not with ErrLocked, unless that was the cause).
			_, err2 := New(c)
			if err2 == nil || (tt.is != store.ErrLocked && errors.Is(err2, store.ErrLocked)) {
				t.Errorf("second New = %v; the first left the data dir locked or half-open", err2)
			}
		})
	}
}

// damage overwrites the bbolt meta pages of path, the way a torn write or a
// bad disk would.
func damage(tb testing.TB, path string) {
	tb.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	junk := []byte(strings.Repeat("\xde\xad\xbe\xef", 2048))
	if _, err := f.WriteAt(junk, 0); err != nil {
		tb.Fatal(err)
	}
}

func TestRunAndClose(t *testing.T) {
	h, err := New(testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + h.AdminAddr().String()
	// Built but not running: not ready. (Nothing serves the listener
	// before Run, so ask the handler directly.)
	rec := httptest.NewRecorder()
	h.healthz(rec, httptest.NewRequest("GET", "/healthz", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("healthz before Run = %d, want 503", rec.Code)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	waitHealthy(t, base)
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run after cancel = %v, want nil", err)
	}
	rec = httptest.NewRecorder()
	h.healthz(rec, httptest.NewRequest("GET", "/healthz", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("healthz after Run = %d, want 503", rec.Code)
	}
	for i := range 2 {
		if err := h.Close(); err != nil {
			t.Errorf("Close #%d = %v", i+1, err)
		}
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Error("admin API still answers after Close")
	}
	// The data dir is free again.
	c := h.Config()
	h2, err := New(c)
	if err != nil {
		t.Fatalf("New after Close: %v", err)
	}
	h2.Close()
}

// failing is a component whose Run fails at once.
type failing struct{ closed int }

func (f *failing) Run(ctx context.Context) error { return errors.New("component broke") }
func (f *failing) Close() error                  { f.closed++; return nil }

func TestRunReturnsComponentError(t *testing.T) {
	h, err := New(testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	f := &failing{}
	h.add(f)
	if err := h.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "component broke") {
		t.Errorf("Run = %v, want the component's error", err)
	}
	if err := h.Close(); err != nil {
		t.Error(err)
	}
	if f.closed != 1 {
		t.Errorf("component closed %d times, want 1", f.closed)
	}
}

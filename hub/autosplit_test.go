package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgehub/edgehub"
	"github.com/edgehub/edgehub/internal/replicate"
	"github.com/edgehub/edgehub/internal/testutil"
	"github.com/edgehub/edgehub/store"
)

// runTestHub builds a hub from cfg, lets tweak adjust it before it runs
// (the controller's interval and clock), and runs it. stop stops and closes
// it (also at cleanup; a second call does nothing).
func runTestHub(tb testing.TB, cfg Config, tweak func(*Hub)) (h *Hub, base string, stop func()) {
	tb.Helper()
	h, err := New(cfg)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	if tweak != nil {
		tweak(h)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				tb.Errorf("Run: %v", err)
			}
			if err := h.Close(); err != nil {
				tb.Errorf("Close: %v", err)
			}
		})
	}
	tb.Cleanup(stop)
	base = "http://" + h.AdminAddr().String()
	waitHealthy(tb, base)
	return h, base, stop
}

// manualSamples makes the controller's own goroutine idle: the test takes
// the samples itself, with the clock it chooses.
func manualSamples(h *Hub) { h.autosplit.interval = time.Hour }

// autosplitPolicy is a policy with a tiny bytes threshold: a shard that
// holds any record qualifies.
func autosplitPolicy(maxShards int, cooldown time.Duration) *AutosplitConfig {
	return &AutosplitConfig{Bytes: 1, For: Duration(time.Minute), MaxShards: maxShards, Cooldown: Duration(cooldown)}
}

// appendKeys appends one batch of n records routed by key; key(i) names
// record i's key.
func appendKeys(tb testing.TB, st *store.Stream, n int, key func(i int) string) {
	tb.Helper()
	recs := make([]edgehub.Record, n)
	for i := range recs {
		recs[i] = edgehub.Record{Key: []byte(key(i)), Value: []byte("value")}
	}
	if _, err := st.Append(testCtx(tb), store.Batch{Shard: -1, Records: recs}); err != nil {
		tb.Fatal(err)
	}
}

var keySeq atomic.Uint64

// freshKey spreads records over the whole hash space.
func freshKey(int) string { return fmt.Sprintf("key-%d", keySeq.Add(1)) }

// seriesValue returns the value of one series as /metrics writes it
// (labels in name order), 0 if it is absent.
func seriesValue(tb testing.TB, h *Hub, series string) float64 {
	tb.Helper()
	resp, err := http.Get("http://" + h.AdminAddr().String() + "/metrics")
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			var f float64
			fmt.Sscan(v, &f)
			return f
		}
	}
	return 0
}

// TestAutosplitSplitsToMaxShards: a stream with a tiny bytes threshold,
// written to all along, splits by itself (the controller's goroutine, on a
// clock that moves 10 s per sample) until it has max_shards open shards,
// and no further however many samples follow.
func TestAutosplitSplitsToMaxShards(t *testing.T) {
	cfg := testConfig(t)
	cfg.Streams = []StreamConfig{{Name: "s", Shards: 1, TombstoneRetention: Duration(time.Hour), Replicate: ReplicateLocal,
		Autosplit: autosplitPolicy(4, time.Minute)}}
	var ticks atomic.Int64
	start := time.Now()
	h, _, _ := runTestHub(t, cfg, func(h *Hub) {
		h.autosplit.interval = time.Millisecond
		h.autosplit.now = func() time.Time { return start.Add(time.Duration(ticks.Add(1)) * autosplitInterval) }
	})
	st, err := h.Store().Stream("s")
	if err != nil {
		t.Fatal(err)
	}
	// Keep every shard, the children included, holding records.
	writing := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-writing:
				return
			default:
			}
			appendKeys(t, st, 64, freshKey)
		}
	}()
	defer func() { close(writing); wg.Wait() }()

	waitFor(t, "4 open shards", func() bool { return len(st.Layout().Open()) == 4 })
	// 100 more samples: 1000 s on the controller's clock, many times For
	// and Cooldown, with every shard qualifying.
	from := h.autosplit.sampleCount()
	waitFor(t, "100 more samples", func() bool { return h.autosplit.sampleCount() >= from+100 })
	if open := len(st.Layout().Open()); open != 4 {
		t.Fatalf("%d open shards after 100 more samples, want max_shards 4", open)
	}
	if v := st.Layout().Version; v != 3 {
		t.Fatalf("layout version %d, want 3 splits", v)
	}
	if n := counterValue(t, h, "edgehub_reshards_total"); n != 3 {
		t.Fatalf("edgehub_reshards_total %v, want 3", n)
	}
	if n := seriesValue(t, h, `edgehub_reshards_total{kind="split",stream="s",trigger="auto"}`); n != 3 {
		t.Fatalf(`edgehub_reshards_total{trigger="auto"} %v, want 3`, n)
	}
}

// waitFor polls cond until it holds; it fails the test after a generous
// bound (a hung controller), never on speed.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestAutosplitCooldown: with for = 1m and cooldown = 10m, samples every
// 10 s and every shard qualifying, the second automatic split waits for the
// cooldown: counted in splits per run of samples, not in time.
func TestAutosplitCooldown(t *testing.T) {
	cfg := testConfig(t)
	cfg.Streams = []StreamConfig{{Name: "s", Shards: 1, TombstoneRetention: Duration(time.Hour), Replicate: ReplicateLocal,
		Autosplit: autosplitPolicy(8, 10*time.Minute)}}
	h, _, _ := runTestHub(t, cfg, manualSamples)
	st, err := h.Store().Stream("s")
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	run := func(from, to int) {
		for i := from; i <= to; i++ {
			appendKeys(t, st, 64, freshKey)
			h.autosplit.sample(testCtx(t), t0.Add(time.Duration(i)*autosplitInterval))
		}
	}
	// Sample 0 qualifies, sample 6 (60 s later) splits; the cooldown
	// allows the next at sample 66.
	run(0, 65)
	if v := st.Layout().Version; v != 1 {
		t.Fatalf("after samples 0..65: %d splits, want 1 (for 1m, then a 10m cooldown)", v)
	}
	run(66, 125)
	if v := st.Layout().Version; v != 2 {
		t.Fatalf("after samples 66..125: %d splits, want 2", v)
	}
	if n := seriesValue(t, h, `edgehub_reshards_total{kind="split",stream="s",trigger="auto"}`); n != 2 {
		t.Fatalf(`edgehub_reshards_total{trigger="auto"} %v, want 2`, n)
	}
}

// TestAutosplitHotKey: when every record has the same key, the first
// automatic split sends all of them to one child; the controller logs "hot
// key range" once and splits that range no more for 4 × cooldown. The
// control, many keys under the same policy, keeps splitting.
func TestAutosplitHotKey(t *testing.T) {
	for _, tc := range []struct {
		name   string
		key    func(int) string
		splits int // by sample 36; with many keys, at least
		hot    int // "hot key range" lines
	}{
		{name: "one key", key: func(int) string { return "the-only-key" }, splits: 1, hot: 1},
		{name: "many keys", key: freshKey, splits: 3, hot: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			var logs testutil.SyncBuffer
			cfg.Logger = slog.New(slog.NewTextHandler(io.MultiWriter(&logs, tbWriter{t}), nil))
			cfg.Streams = []StreamConfig{{Name: "s", Shards: 1, TombstoneRetention: Duration(time.Hour), Replicate: ReplicateLocal,
				Autosplit: autosplitPolicy(16, time.Minute)}}
			h, _, _ := runTestHub(t, cfg, manualSamples)
			st, err := h.Store().Stream("s")
			if err != nil {
				t.Fatal(err)
			}
			t0 := time.Now()
			run := func(from, to int) {
				for i := from; i <= to; i++ {
					appendKeys(t, st, 16, tc.key)
					h.autosplit.sample(testCtx(t), t0.Add(time.Duration(i)*autosplitInterval))
				}
			}
			// Split at sample 6; the hot child has held for 1m at 13,
			// where the rule sets the range aside until 13 + 24.
			run(0, 36)
			if v := int(st.Layout().Version); v != tc.splits && (tc.hot > 0 || v < tc.splits) {
				t.Fatalf("after samples 0..36: %d splits, want %d", v, tc.splits)
			}
			if n := strings.Count(logs.String(), "hot key range"); n != tc.hot {
				t.Fatalf("%d \"hot key range\" lines, want %d:\n%s", n, tc.hot, logs.String())
			}
			if tc.hot == 0 {
				return
			}
			// The range is tried again once 4 × cooldown has passed.
			run(37, 37)
			if v := st.Layout().Version; v != 2 {
				t.Fatalf("after sample 37: %d splits, want 2 (the set-aside ended)", v)
			}
		})
	}
}

// TestAutosplitAPIPolicySurvivesRestart: a policy set with PUT
// /v1/streams/{name}/autosplit is shown by describe, refused when invalid,
// kept across a restart (also when hub.toml declares the stream without
// one), acted on after it, not part of the replicated definition, and
// removed by DELETE. A policy from hub.toml goes away with its declaration.
func TestAutosplitAPIPolicySurvivesRestart(t *testing.T) {
	cfg := testConfig(t)
	h, base, stop := runTestHub(t, cfg, manualSamples)
	if code, b := call(t, "POST", base+"/v1/streams", `{"name":"s","shards":1}`); code != 201 {
		t.Fatalf("create: %d %s", code, b)
	}
	for _, bad := range []struct{ body, want string }{
		{`{"bytes":"1KiB","for":"10s","max_shards":4}`, "for: 10s is below the minimum 1m"},
		{`{"for":"5m","max_shards":4}`, "at least one threshold"},
		{`{"bytes":1,"max_shards":1}`, "max_shards: 1 is not above the stream's 1 shards"},
		{`{"rate":"8MiB","max_shards":4}`, `invalid rate`},
		{`{"bytes":1,"max_shards":4,"colour":"red"}`, "unknown field"},
	} {
		code, b := call(t, "PUT", base+"/v1/streams/s/autosplit", bad.body)
		if code != 400 || !strings.Contains(string(b), bad.want) || !strings.Contains(string(b), CodeInvalid) {
			t.Fatalf("PUT %s: %d %s, want 400 naming %q", bad.body, code, b, bad.want)
		}
	}
	if code, b := call(t, "PUT", base+"/v1/streams/nope/autosplit", `{"bytes":1,"max_shards":4}`); code != 404 {
		t.Fatalf("PUT on a missing stream: %d %s", code, b)
	}
	code, b := call(t, "PUT", base+"/v1/streams/s/autosplit", `{"bytes":1,"rate":"8MiB/s","max_shards":4,"for":"1m","cooldown":"1m"}`)
	if code != 200 {
		t.Fatalf("PUT: %d %s", code, b)
	}
	want := AutosplitConfig{Bytes: 1, Rate: 8 << 20, For: Duration(time.Minute), MaxShards: 4, Cooldown: Duration(time.Minute)}
	checkPolicy := func(step string, base string, want *AutosplitConfig, from string) {
		t.Helper()
		_, b := call(t, "GET", base+"/v1/streams/s", "")
		var info StreamInfo
		if err := json.Unmarshal(b, &info); err != nil {
			t.Fatal(err)
		}
		got := info.Config.Autosplit
		if (got == nil) != (want == nil) || got != nil && (*got != *want || info.Config.AutosplitFrom != from) {
			t.Fatalf("%s: autosplit %+v from %q, want %+v from %q: %s", step, got, info.Config.AutosplitFrom, want, from, b)
		}
		if _, ok := info.Config.Meta[MetaAutosplit]; ok {
			t.Fatalf("%s: the policy is shown in meta too: %s", step, b)
		}
	}
	checkPolicy("after PUT", base, &want, "api")
	st, _ := h.Store().Stream("s")
	if def := string(replicate.EncodeDef(st.Config())); strings.Contains(def, "autosplit") {
		t.Fatalf("the replicated definition carries the policy: %s", def)
	}
	stop()

	// Restart, with hub.toml declaring the stream without a policy.
	cfg.Streams = []StreamConfig{{Name: "s", Shards: 1, TombstoneRetention: Duration(DefaultTombstoneRet), Replicate: ReplicateLocal}}
	h, base, stop = runTestHub(t, cfg, manualSamples)
	checkPolicy("after a restart", base, &want, "api")
	st, err := h.Store().Stream("s")
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	for i := 0; i <= 6; i++ {
		appendKeys(t, st, 16, freshKey)
		h.autosplit.sample(testCtx(t), t0.Add(time.Duration(i)*autosplitInterval))
	}
	if v := st.Layout().Version; v != 1 {
		t.Fatalf("after a restart: %d automatic splits by sample 6, want 1", v)
	}

	if code, b := call(t, "DELETE", base+"/v1/streams/s/autosplit", ""); code != 200 {
		t.Fatalf("DELETE: %d %s", code, b)
	}
	checkPolicy("after DELETE", base, nil, "")
	stop()

	// A policy from hub.toml replaces the stored one, and leaves with its
	// declaration.
	fromConfig := autosplitPolicy(6, time.Hour)
	cfg.Streams[0].Autosplit = fromConfig
	_, base, stop = runTestHub(t, cfg, manualSamples)
	checkPolicy("declared in hub.toml", base, fromConfig, "config")
	stop()
	cfg.Streams[0].Autosplit = nil
	_, base, _ = runTestHub(t, cfg, manualSamples)
	checkPolicy("declaration removed", base, nil, "")
}

// TestAutosplitConfig: [stream.autosplit] is decoded strictly and
// validated with the rest, each problem with file, line and key.
func TestAutosplitConfig(t *testing.T) {
	const head = "[[stream]]\nname = \"s\"\nshards = 2\n[stream.autosplit]\n"
	c, err := ParseConfig("hub.toml", []byte(head+"bytes = \"4GiB\"\nrate = \"8MiB/s\"\nrecords_rate = 50000\nfor = \"10m\"\nmax_shards = 32\ncooldown = \"30m\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := AutosplitConfig{Bytes: 4 << 30, Rate: 8 << 20, RecordsRate: 50000, For: Duration(10 * time.Minute), MaxShards: 32, Cooldown: Duration(30 * time.Minute)}
	if got := c.Streams[0].Autosplit; got == nil || *got != want {
		t.Fatalf("decoded %+v, want %+v", got, want)
	}
	c, err = ParseConfig("hub.toml", []byte(head+"rate = 1048576\nmax_shards = 4\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Streams[0].Autosplit; got.Rate != 1<<20 || got.For != Duration(DefaultAutosplitFor) || got.Cooldown != Duration(DefaultAutosplitCooldown) {
		t.Fatalf("defaults: %+v", got)
	}
	if c, err := ParseConfig("hub.toml", []byte("[[stream]]\nname = \"s\"\n")); err != nil || c.Streams[0].Autosplit != nil {
		t.Fatalf("no [stream.autosplit]: %+v, %v; want none", c.Streams, err)
	}

	for _, tt := range []struct {
		name, body string
		want       []string
	}{
		{"for below a minute", "bytes = 1\nmax_shards = 4\nfor = \"30s\"\n", []string{`hub.toml:7: stream[0].autosplit.for: 30s is below the minimum 1m`}},
		{"cooldown below a minute", "bytes = 1\nmax_shards = 4\ncooldown = \"1s\"\n", []string{`hub.toml:7: stream[0].autosplit.cooldown: 1s is below the minimum 1m`}},
		{"unknown key", "byts = 1\nmax_shards = 4\n", []string{`hub.toml:4: stream[0].autosplit: give at least one threshold`, `hub.toml:5: stream[0].autosplit.byts: unknown key (did you mean "bytes"?)`}},
		{"no threshold, no max_shards", "for = \"5m\"\n", []string{`hub.toml:4: stream[0].autosplit: give at least one threshold`, `hub.toml:4: stream[0].autosplit.max_shards: required`}},
		{"max_shards not above shards", "bytes = 1\nmax_shards = 2\n", []string{`hub.toml:6: stream[0].autosplit.max_shards: 2 is not above the stream's 2 shards`}},
		{"max_shards above the cap", "bytes = 1\nmax_shards = 257\n", []string{`hub.toml:6: stream[0].autosplit.max_shards: 257 is above the store's cap of 256`}},
		{"rate without /s", "rate = \"8MiB\"\nmax_shards = 4\n", []string{`hub.toml:4: stream[0].autosplit: give at least one threshold`, `hub.toml:5: stream[0].autosplit.rate: invalid rate "8MiB"`}},
		{"negative records_rate", "records_rate = -5\nmax_shards = 4\n", []string{`hub.toml:4: stream[0].autosplit: give at least one threshold`, `hub.toml:5: stream[0].autosplit.records_rate: -5 is negative`}},
		{"not a table", "", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			doc := head + tt.body
			if tt.want == nil {
				doc = "[[stream]]\nname = \"s\"\nautosplit = 5\n"
				tt.want = []string{`hub.toml:3: stream[0].autosplit: expected a table, found an integer`}
			}
			_, err := ParseConfig("hub.toml", []byte(doc))
			if err == nil {
				t.Fatal("ParseConfig succeeded, want errors")
			}
			got := flatten(err)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d problems, want %d:\n%v", len(got), len(tt.want), err)
			}
			for i, w := range tt.want {
				if !strings.Contains(got[i].Error(), w) {
					t.Errorf("problem %d = %q, want it to contain %q", i, got[i], w)
				}
			}
		})
	}
}

// TestAutosplitMaxShardsCap: the cap max_shards is validated against is the
// store's: a stream of one shard can be resharded to 256 open shards, not
// 257.
func TestAutosplitMaxShardsCap(t *testing.T) {
	h, _ := startHub(t, testConfig(t))
	st, err := h.Store().CreateStream(testCtx(t), store.StreamConfig{Name: "cap", Shards: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Reshard(testCtx(t), maxAutosplitOpen+1); !errors.Is(err, store.ErrTooManyShards) {
		t.Fatalf("reshard to %d: %v, want ErrTooManyShards", maxAutosplitOpen+1, err)
	}
	if _, err := st.Reshard(testCtx(t), maxAutosplitOpen); err != nil {
		t.Fatalf("reshard to %d: %v", maxAutosplitOpen, err)
	}
}

// TestAutosplitCloseIdempotent: Close may be called twice, and stops a Run
// that had not begun (the hub closes components that never ran when New
// fails).
func TestAutosplitCloseIdempotent(t *testing.T) {
	a := &autosplitter{interval: time.Hour, now: time.Now, streams: map[string]*autosplitStream{}, quit: make(chan struct{})}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Run(context.Background()); err != nil {
		t.Fatalf("Run after Close: %v", err)
	}
}

// TestAutosplitRateThresholds: rate and records_rate are measured per
// second of the samples' clock: a shard written below the threshold is not
// split however long it is watched, and is split once its writes hold
// above the threshold for `for`.
func TestAutosplitRateThresholds(t *testing.T) {
	for _, tc := range []struct {
		name   string
		policy AutosplitConfig
	}{
		// Per 10 s sample: slow is 10 records of ~120 bytes (1/s, ~120 B/s),
		// fast 200 (20/s, ~2.4 KB/s).
		{"rate", AutosplitConfig{Rate: 1 << 10, For: Duration(time.Minute), MaxShards: 8, Cooldown: Duration(time.Minute)}},
		{"records_rate", AutosplitConfig{RecordsRate: 5, For: Duration(time.Minute), MaxShards: 8, Cooldown: Duration(time.Minute)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.Streams = []StreamConfig{{Name: "s", Shards: 1, TombstoneRetention: Duration(time.Hour), Replicate: ReplicateLocal, Autosplit: &tc.policy}}
			h, _, _ := runTestHub(t, cfg, manualSamples)
			st, err := h.Store().Stream("s")
			if err != nil {
				t.Fatal(err)
			}
			t0 := time.Now()
			value := strings.Repeat("v", 100)
			run := func(from, to, n int) {
				for i := from; i <= to; i++ {
					recs := make([]edgehub.Record, n)
					for j := range recs {
						recs[j] = edgehub.Record{Key: []byte(freshKey(j)), Value: []byte(value)}
					}
					if _, err := st.Append(testCtx(t), store.Batch{Shard: -1, Records: recs}); err != nil {
						t.Fatal(err)
					}
					h.autosplit.sample(testCtx(t), t0.Add(time.Duration(i)*autosplitInterval))
				}
			}
			run(0, 30, 10)
			if v := st.Layout().Version; v != 0 {
				t.Fatalf("%d splits below the threshold, want none", v)
			}
			// The rate first shows at sample 31 and has held 1m at 37.
			run(31, 36, 200)
			if v := st.Layout().Version; v != 0 {
				t.Fatalf("%d splits before the rate held for 1m, want none", v)
			}
			run(37, 37, 200)
			if v := st.Layout().Version; v != 1 {
				t.Fatalf("%d splits once the rate held for 1m, want 1", v)
			}
		})
	}
}

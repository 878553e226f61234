package plugins

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgehub/edgehub/internal/plugintest"
	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/internal/testutil"
	"github.com/edgehub/edgehub/store"
)

// testLogger shows warnings and errors only: the tests provoke many.
var testLogger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

func TestMain(m *testing.M) {
	code := m.Run()
	plugintest.Cleanup()
	os.Exit(testutil.LeakCheck(code))
}

// env is a store and a running manager in one data directory.
type env struct {
	tb     testing.TB
	dir    string
	st     *store.Store
	m      *Manager
	cancel context.CancelFunc
	done   chan error
	tune   func(*Config) // adjusts the manager's config at each start
}

func newEnv(tb testing.TB) *env {
	tb.Helper()
	return newEnvTuned(tb, nil)
}

// newEnvTuned is newEnv with the manager's config adjusted by tune.
func newEnvTuned(tb testing.TB, tune func(*Config)) *env {
	tb.Helper()
	e := &env{tb: tb, dir: tb.TempDir(), tune: tune}
	scfg := store.DefaultConfig(e.dir)
	scfg.Logger = testLogger
	st, err := store.Open(scfg)
	if err != nil {
		tb.Fatal(err)
	}
	e.st = st
	e.start()
	tb.Cleanup(func() {
		e.stop()
		e.st.Close()
	})
	return e
}

func (e *env) start() {
	e.tb.Helper()
	cfg := DefaultConfig(e.dir)
	cfg.Store = e.st
	cfg.HubName = "test"
	cfg.Logger = testLogger
	if e.tune != nil {
		e.tune(&cfg)
	}
	m, err := New(cfg)
	if err != nil {
		e.tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.m, e.cancel, e.done = m, cancel, make(chan error, 1)
	go func() { e.done <- m.Run(ctx) }()
}

func (e *env) stop() {
	if e.m == nil {
		return
	}
	e.cancel()
	if err := <-e.done; err != nil {
		e.tb.Errorf("Run: %v", err)
	}
	if err := e.m.Close(); err != nil {
		e.tb.Errorf("Close: %v", err)
	}
	e.m = nil
}

func (e *env) stream(name string, shards int) *store.Stream {
	e.tb.Helper()
	s, err := e.st.CreateStream(context.Background(), store.StreamConfig{Name: name, Shards: shards})
	if err != nil {
		e.tb.Fatal(err)
	}
	return s
}

func (e *env) produce(s *store.Stream, recs ...record.Record) {
	e.tb.Helper()
	if _, err := s.Append(context.Background(), store.Batch{Shard: -1, Records: recs}); err != nil {
		e.tb.Fatal(err)
	}
}

func (e *env) deploy(def Definition, wasm []byte) Info {
	e.tb.Helper()
	info, err := e.m.Deploy(context.Background(), def, wasm)
	if err != nil {
		e.tb.Fatal(err)
	}
	return info
}

// readAll waits until stream holds at least n records (over all shards) and
// returns them, per shard in order. The bound is generous: it only stops a
// broken test from hanging.
func readAll(tb testing.TB, s *store.Stream, n int) []record.Record {
	tb.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var out []record.Record
		for shard := 0; shard < s.Shards(); shard++ {
			recs, err := s.Read(shard, 1, store.ReadOptions{MaxRecords: 1 << 20, MaxBytes: 1 << 30})
			if err != nil {
				tb.Fatal(err)
			}
			for _, r := range recs {
				out = append(out, r.Clone())
			}
		}
		if len(out) >= n {
			return out
		}
		if time.Now().After(deadline) {
			tb.Fatalf("stream %s holds %d records, want %d", s.Name(), len(out), n)
		}
		waitAny(s, 200*time.Millisecond)
	}
}

// waitAny blocks until any shard of s commits, or d passes.
func waitAny(s *store.Stream, d time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	done := make(chan struct{}, s.Shards())
	for shard := 0; shard < s.Shards(); shard++ {
		ch := s.Changed(shard)
		go func() {
			select {
			case <-ch:
			case <-ctx.Done():
			}
			done <- struct{}{}
		}()
	}
	<-done
}

func rec(key, value string) record.Record {
	return record.Record{Key: []byte(key), Value: []byte(value), Time: 1}
}

func readTestdata(tb testing.TB, path string) []byte {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

const (
	watPassThrough = "../examples/wat-passthrough/passthrough.wasm"
	watHostile     = "../wasmhost/testdata/hostile.wasm"
)

func TestPassThroughOrderAndOrigins(t *testing.T) {
	e := newEnv(t)
	in := e.stream("in", 2)
	e.produce(in, rec("a", "before-deploy"))
	info := e.deploy(Definition{Name: "copy", Inputs: []string{"in"}, Outputs: []string{"out"},
		Config: map[string]string{"output": "out"}, Start: StartEarliest}, readTestdata(t, watPassThrough))
	if info.Version != 1 || info.SHA256 == "" || len(info.Shards) != 2 {
		t.Fatalf("deploy info %+v", info)
	}
	var want []record.Record
	want = append(want, rec("a", "before-deploy"))
	for i := 0; i < 500; i++ {
		r := rec("k"+strconv.Itoa(i%7), strconv.Itoa(i))
		r.Headers = []record.Header{{Key: "i", Value: []byte(strconv.Itoa(i))}}
		want = append(want, r)
	}
	e.produce(in, want[1:]...)
	out, err := e.st.Stream("out")
	if err != nil {
		t.Fatal(err)
	}
	got := readAll(t, out, len(want))
	if len(got) != len(want) {
		t.Fatalf("%d outputs, want %d", len(got), len(want))
	}
	// Per key, outputs keep input order; origins name the input record.
	byKey := map[string][]string{}
	for _, r := range got {
		byKey[string(r.Key)] = append(byKey[string(r.Key)], string(r.Value))
		hub := OriginHub("test", "copy", "in")
		if r.Origin.Hub != hub || r.Origin.Seq&0xFFFF != 0 {
			t.Fatalf("origin %+v, want hub %q index 0", r.Origin, hub)
		}
		src, err := in.Read(int(r.Origin.Shard), r.Origin.Seq>>16, store.ReadOptions{MaxRecords: 1})
		if err != nil || len(src) != 1 || string(src[0].Value) != string(r.Value) {
			t.Fatalf("origin %+v does not point at the input record (%v)", r.Origin, err)
		}
	}
	wantByKey := map[string][]string{}
	for _, r := range want {
		wantByKey[string(r.Key)] = append(wantByKey[string(r.Key)], string(r.Value))
	}
	for k, v := range wantByKey {
		if !slices.Equal(byKey[k], v) {
			t.Errorf("key %s: outputs %v, want %v", k, byKey[k], v)
		}
	}
	testutil.Eventually(t, "lag 0", func() bool {
		i, _ := e.m.Describe("copy")
		return i.Lag == 0 && i.RecordsIn == uint64(len(want)) && i.RecordsOut == uint64(len(want))
	})
}

func TestStartLatestSkipsHistory(t *testing.T) {
	e := newEnv(t)
	in := e.stream("in", 1)
	e.produce(in, rec("old", "1"), rec("old", "2"))
	e.deploy(Definition{Name: "copy", Inputs: []string{"in"}, Outputs: []string{"out"},
		Config: map[string]string{"output": "out"}, Start: StartLatest}, readTestdata(t, watPassThrough))
	testutil.Eventually(t, "checkpoint", func() bool { i, _ := e.m.Describe("copy"); return i.Shards[0].Checkpoint == 3 })
	e.produce(in, rec("new", "3"))
	out, _ := e.st.Stream("out")
	got := readAll(t, out, 1)
	if len(got) != 1 || string(got[0].Value) != "3" {
		t.Fatalf("got %d records, first %q: want only the record produced after deploy", len(got), got[0].Value)
	}
}

func counterValues(recs []record.Record) map[string][]int {
	m := map[string][]int{}
	for _, r := range recs {
		n, _ := strconv.Atoi(string(r.Value))
		m[string(r.Key)] = append(m[string(r.Key)], n)
	}
	return m
}

func TestStateSurvivesRestartAndUpgrade(t *testing.T) {
	wasm := plugintest.Wasm(t, "wasmhost/testdata/counter")
	e := newEnv(t)
	in := e.stream("in", 2)
	def := Definition{Name: "count", Inputs: []string{"in"}, Outputs: []string{"counts"}, Start: StartEarliest,
		Config: map[string]string{"output": "counts"}, TimerInterval: time.Hour}
	e.deploy(def, wasm)
	for i := 0; i < 30; i++ {
		e.produce(in, rec("k"+strconv.Itoa(i%3), "x"))
	}
	out, _ := e.st.Stream("counts")
	readAll(t, out, 30)

	// Restart: state and checkpoint come back from plugins.db.
	e.stop()
	e.start()
	for i := 0; i < 30; i++ {
		e.produce(in, rec("k"+strconv.Itoa(i%3), "x"))
	}
	readAll(t, out, 60)

	// Upgrade in place (new version, new config): checkpoint and state kept.
	def.Config = map[string]string{"output": "counts", "unused": "1"}
	info := e.deploy(def, wasm)
	if info.Version != 2 {
		t.Fatalf("version %d after upgrade", info.Version)
	}
	for i := 0; i < 30; i++ {
		e.produce(in, rec("k"+strconv.Itoa(i%3), "x"))
	}
	got := readAll(t, out, 90)
	if len(got) != 90 {
		t.Fatalf("%d outputs, want 90 (duplicates?)", len(got))
	}
	for k, counts := range counterValues(got) {
		for i, n := range counts {
			if n != i+1 {
				t.Fatalf("key %s: counts %v, want 1..30 in order", k, counts)
			}
		}
	}
	info, _ = e.m.Describe("count")
	if info.StateKeys != 3 || info.StateBytes == 0 {
		t.Errorf("state keys %d bytes %d, want 3 keys", info.StateKeys, info.StateBytes)
	}
}

func TestTimerOutputsHaveTheirOwnOrigin(t *testing.T) {
	wasm := plugintest.Wasm(t, "wasmhost/testdata/counter")
	e := newEnv(t)
	in := e.stream("in", 1)
	e.deploy(Definition{Name: "count", Inputs: []string{"in"}, Outputs: []string{"counts"}, Start: StartEarliest,
		Config: map[string]string{"output": "counts"}, TimerInterval: 20 * time.Millisecond}, wasm)
	e.produce(in, rec("a", "x"), rec("b", "x"), rec("a", "x"))
	out, _ := e.st.Stream("counts")
	got := readAll(t, out, 5)
	var totals []string
	for _, r := range got {
		if strings.HasPrefix(string(r.Value), "total=") {
			totals = append(totals, string(r.Key)+":"+string(r.Value))
			if r.Origin.Hub != OriginHub("test", "count", "in")+"/timer" || r.Origin.Seq>>32 == 0 {
				t.Errorf("timer output origin %+v", r.Origin)
			}
		}
	}
	if !slices.Equal(totals, []string{"a:total=2", "b:total=1"}) {
		t.Fatalf("timer outputs %v", totals)
	}
	// The timer cleared the state: it is committed with the firing.
	testutil.Eventually(t, "state cleared", func() bool { i, _ := e.m.Describe("count"); return i.StateKeys == 0 })
}

func TestHostileModulesFollowPolicy(t *testing.T) {
	e := newEnv(t)
	in := e.stream("in", 1)
	other := e.stream("other", 1)
	hostile := readTestdata(t, watHostile)
	e.deploy(Definition{Name: "hostile", Inputs: []string{"in"}, Outputs: []string{"out"}, Start: StartEarliest,
		OnError: PolicyDeadLetter, DeadLetter: "dlq", CallTimeout: 200 * time.Millisecond, MemoryPages: 32}, hostile)
	// A well-behaved plugin next to it keeps going.
	e.deploy(Definition{Name: "copy", Inputs: []string{"other"}, Outputs: []string{"copied"},
		Config: map[string]string{"output": "copied"}, Start: StartEarliest}, readTestdata(t, watPassThrough))

	values := []string{"ok1", "L", "ok2", "M", "T", "U", "B", "O", "E", "ok3"}
	for _, v := range values {
		e.produce(in, rec("k", v))
		e.produce(other, rec("k", v)) // ingest is never blocked
	}
	// A trap storm: many failing records in a row.
	for i := 0; i < 20; i++ {
		e.produce(in, rec("k", "T"))
	}
	e.produce(in, rec("k", "ok4"))

	outS, _ := e.st.Stream("out")
	dlq, _ := e.st.Stream("dlq")
	copied, _ := e.st.Stream("copied")
	got := readAll(t, outS, 4)
	dead := readAll(t, dlq, len(values)-3+20)
	readAll(t, copied, len(values))
	var okVals []string
	for _, r := range got {
		okVals = append(okVals, string(r.Value))
	}
	if !slices.Equal(okVals, []string{"ok1", "ok2", "ok3", "ok4"}) {
		t.Fatalf("outputs %v", okVals)
	}
	reasons := map[string]string{}
	for _, r := range dead {
		var reason, source string
		for _, h := range r.Headers {
			switch h.Key {
			case HeaderError:
				reason = string(h.Value)
			case HeaderSource:
				source = string(h.Value)
			}
		}
		if !strings.HasPrefix(source, "in/0/") || reason == "" {
			t.Fatalf("dead letter %q: source %q reason %q", r.Value, source, reason)
		}
		reasons[string(r.Value)] = reason
	}
	for v, want := range map[string]string{
		"L": "deadline exceeded", "M": "of 32 pages", "T": "unreachable", "U": "undeclared stream",
		"B": "ABI violation", "O": "ABI violation", "E": "asked to fail",
	} {
		if !strings.Contains(reasons[v], want) {
			t.Errorf("dead letter %s: reason %q, want it to mention %q", v, reasons[v], want)
		}
	}
	info, _ := e.m.Describe("hostile")
	// Its last calls failed: it runs on in the quarantine slot.
	if info.Status != StatusQuarantined || info.QuarantineReason == "" || info.DeadLettered != uint64(len(dead)) || info.Errors == 0 {
		t.Errorf("hostile plugin: status %s, dead %d (want %d), errors %d", info.Status, info.DeadLettered, len(dead), info.Errors)
	}
	logs, _ := e.m.Logs("hostile", 0)
	if len(logs) == 0 {
		t.Error("no plugin logs")
	}
}

func TestPolicyPauseAndRetry(t *testing.T) {
	tests := []struct {
		name   string
		def    Definition
		reason string
	}{
		{name: "pause", def: Definition{OnError: PolicyPause}, reason: "unreachable"},
		{name: "retry then pause", def: Definition{OnError: PolicyRetry, MaxAttempts: 3, BackoffMin: time.Millisecond, BackoffMax: 5 * time.Millisecond}, reason: "failed 3 times"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			in := e.stream("in", 1)
			def := tt.def
			def.Name, def.Inputs, def.Outputs, def.Start = "h", []string{"in"}, []string{"out"}, StartEarliest
			e.deploy(def, readTestdata(t, watHostile))
			e.produce(in, rec("k", "ok"), rec("k", "T"), rec("k", "after"))
			testutil.Eventually(t, "pause", func() bool { i, _ := e.m.Describe("h"); return i.Status == StatusPaused })
			info, _ := e.m.Describe("h")
			if !strings.Contains(info.PauseReason, tt.reason) || info.Shards[0].Checkpoint != 2 {
				t.Fatalf("paused with reason %q at checkpoint %d", info.PauseReason, info.Shards[0].Checkpoint)
			}
			if tt.def.OnError == PolicyRetry && info.Shards[0].Retries == 0 {
				t.Errorf("no retries counted")
			}
			// The pause is durable.
			e.stop()
			e.start()
			if info, _ := e.m.Describe("h"); info.Status != StatusPaused {
				t.Fatalf("status after restart %s", info.Status)
			}
			// An upgrade (here: a module that passes everything) resumes
			// from the checkpoint: the failing record is processed.
			def.Config = map[string]string{"output": "out"}
			e.deploy(def, readTestdata(t, watPassThrough))
			out, _ := e.st.Stream("out")
			got := readAll(t, out, 3)
			var vals []string
			for _, r := range got {
				vals = append(vals, string(r.Value))
			}
			if !slices.Equal(vals, []string{"ok", "T", "after"}) {
				t.Fatalf("outputs %v", vals)
			}
		})
	}
}

func TestChainAndDelete(t *testing.T) {
	e := newEnv(t)
	in := e.stream("in", 1)
	pass := readTestdata(t, watPassThrough)
	e.deploy(Definition{Name: "first", Inputs: []string{"in"}, Outputs: []string{"mid"}, Config: map[string]string{"output": "mid"}, Start: StartEarliest}, pass)
	e.deploy(Definition{Name: "second", Inputs: []string{"mid"}, Outputs: []string{"end"}, Config: map[string]string{"output": "end"}, Start: StartEarliest}, pass)
	e.produce(in, rec("a", "1"), rec("b", "2"))
	end, _ := e.st.Stream("end")
	got := readAll(t, end, 2)
	if got[0].Origin.Hub != OriginHub("test", "second", "mid") {
		t.Fatalf("chained output origin %+v", got[0].Origin)
	}
	if err := e.m.Delete(context.Background(), "first"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.Describe("first"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("describe after delete: %v", err)
	}
	if n := len(e.m.List()); n != 1 {
		t.Fatalf("%d plugins listed", n)
	}
	// Redeploying starts from scratch (no checkpoint was kept).
	e.deploy(Definition{Name: "first", Inputs: []string{"in"}, Outputs: []string{"mid"}, Config: map[string]string{"output": "mid"}, Start: StartEarliest}, pass)
	// mid already holds those origins: nothing is duplicated downstream.
	e.produce(in, rec("c", "3"))
	readAll(t, end, 3) // until they are all there
	// Both caught up, in chain order: nothing more can arrive.
	for _, name := range []string{"first", "second"} {
		testutil.Eventually(t, name+" caught up", func() bool { i, _ := e.m.Describe(name); return i.Lag == 0 })
	}
	if got = readAll(t, end, 3); len(got) != 3 {
		t.Fatalf("end holds %d records, want 3", len(got))
	}
}

func TestDeployRejects(t *testing.T) {
	e := newEnv(t)
	e.stream("in", 1)
	good := Definition{Name: "p", Inputs: []string{"in"}, Outputs: []string{"out"}, Config: map[string]string{"output": "out"}}
	tests := []struct {
		name string
		mod  func(*Definition)
		wasm []byte
		want string
	}{
		{name: "missing input", mod: func(d *Definition) { d.Inputs = []string{"nope"} }, want: "stream not found"},
		{name: "output is input", mod: func(d *Definition) { d.Outputs = []string{"in"} }, want: "both input and output"},
		{name: "bad policy", mod: func(d *Definition) { d.OnError = "shrug" }, want: "on_error"},
		{name: "dead letter without stream", mod: func(d *Definition) { d.OnError = PolicyDeadLetter }, want: "needs a dead_letter"},
		{name: "bad name", mod: func(d *Definition) { d.Name = "a/b" }, want: "invalid name"},
		{name: "not wasm", wasm: []byte("nope"), want: "invalid module"},
		// The hub fills "output" from the declared outputs unless the config
		// sets it: an explicit empty one is kept, and the module refuses it.
		{name: "init rejects config", mod: func(d *Definition) { d.Config = map[string]string{"output": ""} }, want: "needs output=STREAM"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := good.clone()
			if tt.mod != nil {
				tt.mod(&d)
			}
			wasm := tt.wasm
			if wasm == nil {
				wasm = readTestdata(t, watPassThrough)
			}
			_, err := e.m.Deploy(context.Background(), d, wasm)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.want)
			}
		})
	}
	if n := len(e.m.List()); n != 0 {
		t.Fatalf("%d plugins after failed deploys", n)
	}
	// A refused deploy stores nothing: its output stream was created
	// before the module was compiled and initialised.
	if _, err := e.st.Stream("out"); !errors.Is(err, store.ErrStreamNotFound) {
		t.Fatalf("output stream of refused deploys: %v, want it never created", err)
	}
}

// TestExamples runs the three Go examples against a real store.
func TestExamples(t *testing.T) {
	e := newEnv(t)
	in := e.stream("readings", 2)
	e.deploy(Definition{Name: "derive", Inputs: []string{"readings"}, Outputs: []string{"fahrenheit"}, Start: StartEarliest,
		Config: map[string]string{"scale": "1.8", "offset": "32", "unit": "F", "min": "-50", "site.s1": "north"}},
		plugintest.Wasm(t, "examples/derive"))
	e.deploy(Definition{Name: "alert", Inputs: []string{"readings"}, Outputs: []string{"alerts"}, Start: StartEarliest,
		Config: map[string]string{"threshold": "30", "hysteresis": "2", "rate": "5", "debounce": "10s"}},
		plugintest.Wasm(t, "examples/alert"))
	e.deploy(Definition{Name: "agg", Inputs: []string{"readings"}, Outputs: []string{"aggregates"}, Start: StartEarliest,
		Config: map[string]string{"window": "10s", "lateness": "0s", "idle": "1h"}, TimerInterval: 20 * time.Millisecond},
		plugintest.Wasm(t, "examples/aggregate"))

	base := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC).UnixNano()
	reading := func(sensor string, sec int, v float64) record.Record {
		return record.Record{Key: []byte(sensor), Value: fmt.Appendf(nil, `{"value":%g}`, v), Time: base + int64(sec)*1e9}
	}
	// s1: 20, 25, 35 (threshold, rate 10/s), 36, 27 (re-arm), 33 (debounced:
	// 2s after the last threshold alert), in window [0,10); then 12s → closes it.
	e.produce(in,
		reading("s1", 0, 20), reading("s1", 1, 25), reading("s1", 2, 35), reading("s1", 3, 36),
		reading("s1", 4, 27), reading("s1", 5, 33), reading("s2", 1, -100), reading("s2", 2, 10),
		reading("s1", 12, 21), reading("s2", 12, 11),
		record.Record{Key: []byte("s3"), Value: []byte("not json")})

	der, _ := e.st.Stream("fahrenheit")
	got := readAll(t, der, 9)
	if len(got) != 9 {
		t.Fatalf("derive: %d outputs, want 9 (s2's -100 filtered, bad JSON skipped)", len(got))
	}
	for _, r := range got {
		var m map[string]any
		if err := json.Unmarshal(r.Value, &m); err != nil || m["unit"] != "F" {
			t.Fatalf("derived %s: %v", r.Value, err)
		}
		if string(r.Key) == "s1" && m["site"] != "north" {
			t.Fatalf("derived %s: no site", r.Value)
		}
		if r.Headers[0].Key != "derived-from" {
			t.Fatalf("derived headers %+v", r.Headers)
		}
	}

	al, _ := e.st.Stream("alerts")
	alerts := readAll(t, al, 2)
	var kinds []string
	for _, r := range alerts {
		var m map[string]any
		json.Unmarshal(r.Value, &m)
		kinds = append(kinds, fmt.Sprintf("%s:%s:%v", m["sensor"], m["kind"], m["value"]))
	}
	slices.Sort(kinds)
	// s1 crosses 30 once (the second crossing is within the debounce),
	// jumps 10/s once; s2 jumps 110/s.
	want := []string{"s1:rate:35", "s1:threshold:35", "s2:rate:10"}
	slices.Sort(want)
	time.Sleep(50 * time.Millisecond)
	if alerts = readAll(t, al, 2); len(alerts) != 3 || !slices.Equal(kinds, want) {
		t.Fatalf("alerts %v, want %v", kinds, want)
	}

	ag, _ := e.st.Stream("aggregates")
	aggs := readAll(t, ag, 2)
	stats := map[string]map[string]any{}
	for _, r := range aggs {
		var m map[string]any
		json.Unmarshal(r.Value, &m)
		stats[string(r.Key)] = m
	}
	s1, s2 := stats["s1"], stats["s2"]
	if s1["count"] != 6.0 || s1["min"] != 20.0 || s1["max"] != 36.0 || s1["mean"] != 176.0/6 {
		t.Errorf("s1 window: %v", s1)
	}
	if s2["count"] != 2.0 || s2["min"] != -100.0 || s2["max"] != 10.0 {
		t.Errorf("s2 window: %v", s2)
	}
}

func TestDefinitionDurable(t *testing.T) {
	e := newEnv(t)
	e.stream("in", 1)
	e.deploy(Definition{Name: "copy", Inputs: []string{"in"}, Outputs: []string{"out"}, Config: map[string]string{"output": "out"}},
		readTestdata(t, watPassThrough))
	e.stop()
	e.start()
	testutil.Eventually(t, "running", func() bool { i, _ := e.m.Describe("copy"); return i.Status == StatusRunning })
	info, err := e.m.Describe("copy")
	if err != nil || info.Status != StatusRunning || info.Config["output"] != "out" {
		t.Fatalf("after restart: %+v, %v", info, err)
	}
	wasm, err := e.m.Module("copy")
	if err != nil || !slices.Equal(wasm, readTestdata(t, watPassThrough)) {
		t.Fatalf("module bytes not restored: %v", err)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "wasmcache")); err != nil {
		t.Fatalf("no compilation cache: %v", err)
	}
}

// TestStartLatestIsPinnedAtDeploy: "latest" is the end of the input when
// Deploy returns, not when the runner first runs. The manager here is not
// running yet, so the record produced after the deploy is stored before
// any runner exists; it was skipped when the runner chose its start.
func TestStartLatestIsPinnedAtDeploy(t *testing.T) {
	e := newEnv(t)
	in := e.stream("in", 1)
	e.produce(in, rec("old", "1"))
	e.stop()
	cfg := DefaultConfig(e.dir)
	cfg.Store, cfg.HubName, cfg.Logger = e.st, "test", testLogger
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Deploy(context.Background(), Definition{Name: "copy", Inputs: []string{"in"}, Outputs: []string{"out"},
		Config: map[string]string{"output": "out"}}, readTestdata(t, watPassThrough)); err != nil {
		t.Fatal(err)
	}
	e.produce(in, rec("new", "2"))
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	e.start()
	out, _ := e.st.Stream("out")
	readAll(t, out, 1) // until it is there
	testutil.Eventually(t, "caught up", func() bool { i, _ := e.m.Describe("copy"); return i.Lag == 0 })
	if got := readAll(t, out, 1); len(got) != 1 || string(got[0].Value) != "2" {
		t.Fatalf("outputs %d, first %q: want exactly the record produced after the deploy", len(got), got[0].Value)
	}
}

package wasmhost

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/edgehub/edgehub/internal/plugintest"
	"github.com/edgehub/edgehub/internal/testutil"
)

// memHost is an in-memory Host recording what the guest does.
type memHost struct {
	declared map[string]bool
	state    map[string][]byte
	emits    []emitted
	logs     []string
	now      int64
}

type emitted struct {
	stream        string
	rec           OutputRecord
	input, output int
}

func newMemHost(streams ...string) *memHost {
	h := &memHost{declared: map[string]bool{}, state: map[string][]byte{}, now: 1_700_000_000_000_000_000}
	for _, s := range streams {
		h.declared[s] = true
	}
	return h
}

var errUndeclared = errors.New("undeclared stream")

func (h *memHost) Emit(stream []byte, rec OutputRecord, input, index int) error {
	if !h.declared[string(stream)] {
		return errUndeclared
	}
	c := OutputRecord{Time: rec.Time, Key: bytes.Clone(rec.Key), Value: bytes.Clone(rec.Value)}
	for _, hd := range rec.Headers {
		c.Headers = append(c.Headers, Header{Key: bytes.Clone(hd.Key), Value: bytes.Clone(hd.Value)})
	}
	h.emits = append(h.emits, emitted{string(stream), c, input, index})
	return nil
}

func (h *memHost) StateGet(key []byte) ([]byte, bool, error) {
	v, ok := h.state[string(key)]
	return v, ok, nil
}
func (h *memHost) StateSet(key, value []byte) error {
	h.state[string(key)] = bytes.Clone(value)
	return nil
}
func (h *memHost) StateDelete(key []byte) error { delete(h.state, string(key)); return nil }
func (h *memHost) StateNext(prefix, after []byte) ([]byte, bool, error) {
	keys := make([]string, 0, len(h.state))
	for k := range h.state {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if strings.HasPrefix(k, string(prefix)) && k > string(after) {
			return []byte(k), true, nil
		}
	}
	return nil, false, nil
}
func (h *memHost) Log(level Level, msg []byte)          { h.logs = append(h.logs, string(msg)) }
func (h *memHost) Now() int64                           { return h.now }
func (h *memHost) Input() (stream string, shard uint32) { return "in", 7 }

func newEngine(tb testing.TB) *Engine {
	tb.Helper()
	cfg := DefaultConfig()
	cfg.CacheDir = filepath.Join(tb.TempDir(), "cache")
	e, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { e.Close() })
	return e
}

func compile(tb testing.TB, e *Engine, wasm []byte, lim Limits) *Module {
	tb.Helper()
	m, err := e.Compile(context.Background(), wasm, lim)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { m.Close() })
	return m
}

func readTestdata(tb testing.TB, name string) []byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func TestMain(m *testing.M) {
	code := m.Run()
	plugintest.Cleanup()
	os.Exit(testutil.LeakCheck(code))
}

func inputs(values ...string) []InputRecord {
	recs := make([]InputRecord, len(values))
	for i, v := range values {
		recs[i] = InputRecord{Seq: uint64(i + 1), IngestTime: int64(1000 + i), Time: int64(500 + i),
			Key: []byte("k" + v), Value: []byte(v), Headers: []Header{{Key: []byte("h"), Value: []byte(v)}}}
	}
	return recs
}

func TestWATPassThrough(t *testing.T) {
	e := newEngine(t)
	m := compile(t, e, readTestdata(t, "../../examples/wat-passthrough/passthrough.wasm"), Limits{})
	if m.HasTimer() || !m.HasInit() {
		t.Fatalf("HasTimer %v HasInit %v", m.HasTimer(), m.HasInit())
	}
	tests := []struct {
		name    string
		config  map[string]string
		values  []string
		wantErr error
	}{
		{name: "copies records", config: map[string]string{"a": "b", "output": "copy"}, values: []string{"x", "yy", "zzz"}},
		{name: "empty value and nil key", config: map[string]string{"output": "copy"}, values: []string{""}},
		{name: "missing output config", config: map[string]string{"other": "x"}, wantErr: ErrGuest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newMemHost("copy")
			inst, err := m.Instantiate(context.Background(), h)
			if err != nil {
				t.Fatal(err)
			}
			defer inst.Close()
			err = inst.Init(context.Background(), AppendConfig(nil, tt.config))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Init: %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				if !strings.Contains(err.Error(), "needs output=STREAM") {
					t.Errorf("error %q does not carry the guest's log line", err)
				}
				return
			}
			recs := inputs(tt.values...)
			if len(tt.values) == 1 && tt.values[0] == "" {
				recs[0].Key = nil
			}
			if err := inst.OnBatch(context.Background(), AppendBatch(nil, "in", 3, recs), len(recs)); err != nil {
				t.Fatal(err)
			}
			if len(h.emits) != len(recs) {
				t.Fatalf("%d emits, want %d", len(h.emits), len(recs))
			}
			for i, em := range h.emits {
				r := recs[i]
				if em.stream != "copy" || em.input != i || em.output != 0 || em.rec.Time != r.Time ||
					!bytes.Equal(em.rec.Key, r.Key) || (em.rec.Key == nil) != (r.Key == nil) ||
					!bytes.Equal(em.rec.Value, r.Value) || len(em.rec.Headers) != 1 || !bytes.Equal(em.rec.Headers[0].Value, r.Headers[0].Value) {
					t.Errorf("emit %d = %+v, want copy of %+v", i, em, r)
				}
			}
		})
	}
}

func TestGoGuestStateAndTimer(t *testing.T) {
	e := newEngine(t)
	m := compile(t, e, plugintest.Wasm(t, "wasmhost/testdata/counter"), Limits{})
	if !m.HasTimer() {
		t.Fatal("Go SDK module should export eh_on_timer")
	}
	h := newMemHost("counts")
	inst, err := m.Instantiate(context.Background(), h)
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Close()
	if err := inst.Init(context.Background(), AppendConfig(nil, map[string]string{"output": "counts"})); err != nil {
		t.Fatal(err)
	}
	if len(h.logs) != 1 || !strings.Contains(h.logs[0], "host time 1700000000") {
		t.Errorf("logs %q: the guest should see the host clock", h.logs)
	}
	recs := []InputRecord{
		{Seq: 10, Key: []byte("a"), Value: []byte("1")},
		{Seq: 11, Key: []byte("b"), Value: []byte("1")},
		{Seq: 12, Key: []byte("a"), Value: []byte("1")},
	}
	for round := 0; round < 2; round++ {
		if err := inst.OnBatch(context.Background(), AppendBatch(nil, "in", 0, recs), len(recs)); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	for _, em := range h.emits {
		got = append(got, string(em.rec.Key)+"="+string(em.rec.Value)+"@"+string(em.rec.Headers[0].Value))
	}
	want := []string{"a=1@10", "b=1@11", "a=2@12", "a=3@10", "b=2@11", "a=4@12"}
	if !slices.Equal(got, want) {
		t.Fatalf("emits %v, want %v", got, want)
	}
	h.emits = nil
	if err := inst.OnTimer(context.Background(), 42); err != nil {
		t.Fatal(err)
	}
	got = got[:0]
	for _, em := range h.emits {
		got = append(got, string(em.rec.Key)+":"+string(em.rec.Value))
		if em.rec.Time != 42 || em.input != 0 {
			t.Errorf("timer emit %+v: want time 42, input 0", em)
		}
	}
	if !slices.Equal(got, []string{"a:total=4", "b:total=2"}) || len(h.state) != 0 {
		t.Fatalf("timer emitted %v, state left %v", got, h.state)
	}
	if mem := inst.MemoryBytes(); mem > 5<<20 {
		t.Errorf("Go plugin instance uses %d bytes of linear memory, budget 5 MiB", mem)
	}
}

func TestFailures(t *testing.T) {
	e := newEngine(t)
	lim := Limits{MemoryPages: 64, CallTimeout: 200 * time.Millisecond}
	hostile := compile(t, e, readTestdata(t, "hostile.wasm"), lim)
	var counter *Module
	if !testing.Short() {
		counter = compile(t, e, plugintest.Wasm(t, "wasmhost/testdata/counter"), lim)
	}
	tests := []struct {
		name    string
		go_     bool
		value   string
		want    error
		wantMsg string
		broken  bool
	}{
		{name: "infinite loop", value: "L", want: ErrTimeout, broken: true},
		{name: "memory bomb", value: "M", want: ErrTrap, wantMsg: "of 64 pages", broken: true},
		{name: "trap", value: "T", want: ErrTrap, wantMsg: "unreachable", broken: true},
		{name: "undeclared stream", value: "U", want: errUndeclared, broken: true},
		{name: "malformed output", value: "B", want: ErrABI, broken: true},
		{name: "output for a record past the batch", value: "O", want: ErrABI, broken: true},
		{name: "failure status", value: "E", want: ErrGuest, wantMsg: "asked to fail"},
		{name: "go panic", go_: true, value: "panic", want: ErrTrap, wantMsg: "asked to panic at seq 1", broken: true},
		{name: "go out of memory", go_: true, value: "oom", want: ErrTrap, wantMsg: "of 64 pages; stderr: ", broken: true},
		{name: "go handler error", go_: true, value: "fail", want: ErrGuest, wantMsg: "asked to fail"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := hostile
			if tt.go_ {
				if counter == nil {
					t.Skip("-short")
				}
				m = counter
			}
			h := newMemHost("out")
			inst, err := m.Instantiate(context.Background(), h)
			if err != nil {
				t.Fatal(err)
			}
			defer inst.Close()
			if err := inst.Init(context.Background(), AppendConfig(nil, map[string]string{"output": "out"})); err != nil {
				t.Fatal(err)
			}
			recs := []InputRecord{{Seq: 1, Key: []byte("k"), Value: []byte(tt.value)}}
			err = inst.OnBatch(context.Background(), AppendBatch(nil, "in", 0, recs), 1)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if tt.wantMsg != "" && !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("err = %q, want it to mention %q", err, tt.wantMsg)
			}
			if inst.Broken() != tt.broken {
				t.Errorf("Broken() = %v, want %v", inst.Broken(), tt.broken)
			}
			if tt.broken {
				if err := inst.OnBatch(context.Background(), AppendBatch(nil, "in", 0, inputs("x")), 1); !errors.Is(err, ErrBroken) {
					t.Errorf("call on broken instance: %v, want ErrBroken", err)
				}
			}
			// A fresh instance of the same module works.
			h2 := newMemHost("out")
			fresh, err := m.Instantiate(context.Background(), h2)
			if err != nil {
				t.Fatal(err)
			}
			defer fresh.Close()
			if err := fresh.Init(context.Background(), AppendConfig(nil, map[string]string{"output": "out"})); err != nil {
				t.Fatal(err)
			}
			if err := fresh.OnBatch(context.Background(), AppendBatch(nil, "in", 0, inputs("ok")), 1); err != nil || len(h2.emits) != 1 {
				t.Fatalf("fresh instance: %v, %d emits", err, len(h2.emits))
			}
		})
	}
}

func TestCancelledParentIsNotTheGuestsFault(t *testing.T) {
	e := newEngine(t)
	m := compile(t, e, readTestdata(t, "hostile.wasm"), Limits{CallTimeout: time.Minute})
	inst, err := m.Instantiate(context.Background(), newMemHost("out"))
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Close()
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(50 * time.Millisecond); cancel() }()
	err = inst.OnBatch(ctx, AppendBatch(nil, "in", 0, []InputRecord{{Seq: 1, Value: []byte("L")}}), 1)
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrTimeout) || errors.Is(err, ErrTrap) {
		t.Fatalf("err = %v, want context.Canceled only", err)
	}
}

func TestCompileRejects(t *testing.T) {
	e := newEngine(t)
	wat := func(body string) []byte { return watModule(t, body) }
	tests := []struct {
		name string
		wasm []byte
		lim  Limits
		want error
		msg  string
	}{
		{name: "not wasm", wasm: []byte("hello"), want: ErrInvalidModule},
		{name: "missing exports", wasm: wat(`(memory (export "memory") 1)`), want: ErrABI, msg: "missing export \"eh_on_batch\""},
		{name: "no memory", wasm: wat(`(func (export "eh_alloc") (param i32) (result i32) i32.const 0)
			(func (export "eh_on_batch") (param i32 i32) (result i32) i32.const 0)`), want: ErrABI, msg: "no exported memory"},
		{name: "wrong type", wasm: wat(`(memory (export "memory") 1)
			(func (export "eh_alloc") (param i64) (result i32) i32.const 0)
			(func (export "eh_on_batch") (param i32 i32) (result i32) i32.const 0)`), want: ErrABI, msg: "has type (i64) -> (i32)"},
		{name: "newer import", wasm: wat(`(import "edgehub_v1" "teleport" (func))
			(memory (export "memory") 1)
			(func (export "eh_alloc") (param i32) (result i32) i32.const 0)
			(func (export "eh_on_batch") (param i32 i32) (result i32) i32.const 0)`), want: ErrABI, msg: "unknown import edgehub_v1.teleport"},
		{name: "foreign import", wasm: wat(`(import "env" "socket" (func))
			(memory (export "memory") 1)
			(func (export "eh_alloc") (param i32) (result i32) i32.const 0)
			(func (export "eh_on_batch") (param i32 i32) (result i32) i32.const 0)`), want: ErrABI, msg: "unknown module \"env\""},
		{name: "memory above limit", wasm: wat(`(memory (export "memory") 100)
			(func (export "eh_alloc") (param i32) (result i32) i32.const 0)
			(func (export "eh_on_batch") (param i32 i32) (result i32) i32.const 0)`), lim: Limits{MemoryPages: 10}, want: ErrInvalidModule},
		// A declared maximum above the cap is lowered to the cap: growing
		// past it returns -1 (the batch handler fails unless it does).
		{name: "declared maximum above limit is capped", wasm: wat(`(memory (export "memory") 1 100)
			(func (export "eh_alloc") (param i32) (result i32) i32.const 1024)
			(func (export "eh_on_batch") (param i32 i32) (result i32)
				(i32.ne (memory.grow (i32.const 10)) (i32.const -1)))`), lim: Limits{MemoryPages: 10}},
		{name: "no imports at all is valid", wasm: wat(`(memory (export "memory") 1)
			(func (export "eh_alloc") (param i32) (result i32) i32.const 1024)
			(func (export "eh_on_batch") (param i32 i32) (result i32) i32.const 0)`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.wasm == nil {
				t.Skip("wat2wasm not installed")
			}
			m, err := e.Compile(context.Background(), tt.wasm, tt.lim)
			if err == nil {
				defer m.Close()
			}
			if tt.want == nil {
				if err != nil {
					t.Fatalf("err = %v, want the module accepted", err)
				}
				inst, err := m.Instantiate(context.Background(), newMemHost())
				if err != nil {
					t.Fatal(err)
				}
				defer inst.Close()
				if err := inst.OnBatch(context.Background(), AppendBatch(nil, "in", 0, inputs("x")), 1); err != nil {
					t.Fatalf("OnBatch: %v", err)
				}
				return
			}
			if !errors.Is(err, tt.want) || (tt.msg != "" && !strings.Contains(err.Error(), tt.msg)) {
				t.Fatalf("err = %v, want %v mentioning %q", err, tt.want, tt.msg)
			}
		})
	}
}

// watModule assembles a module body with wat2wasm, or returns nil when the
// tool is missing.
func watModule(tb testing.TB, body string) []byte {
	tb.Helper()
	path, err := exec.LookPath("wat2wasm")
	if err != nil {
		return nil
	}
	dir := tb.TempDir()
	src := filepath.Join(dir, "m.wat")
	if err := os.WriteFile(src, []byte("(module "+body+")"), 0o644); err != nil {
		tb.Fatal(err)
	}
	out := filepath.Join(dir, "m.wasm")
	if b, err := exec.Command(path, src, "-o", out).CombinedOutput(); err != nil {
		tb.Fatalf("wat2wasm: %v: %s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// TestCommittedWasmMatchesSource rebuilds every committed .wat with wat2wasm
// (when installed) and compares it with the committed .wasm beside it.
func TestCommittedWasmMatchesSource(t *testing.T) {
	path, err := exec.LookPath("wat2wasm")
	if err != nil {
		t.Skip("wat2wasm not installed (Debian package wabt)")
	}
	srcs, _ := filepath.Glob("testdata/*.wat")
	more, _ := filepath.Glob("../examples/*/*.wat")
	srcs = append(srcs, more...)
	if len(srcs) < 2 {
		t.Fatalf("found only %v", srcs)
	}
	for _, src := range srcs {
		t.Run(filepath.Base(src), func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out.wasm")
			if b, err := exec.Command(path, src, "-o", out).CombinedOutput(); err != nil {
				t.Fatalf("wat2wasm: %v: %s", err, b)
			}
			want, err := os.ReadFile(strings.TrimSuffix(src, ".wat") + ".wasm")
			if err != nil {
				t.Fatal(err)
			}
			got, _ := os.ReadFile(out)
			if !bytes.Equal(got, want) {
				t.Fatalf("%s is stale: rebuild with wat2wasm", strings.TrimSuffix(src, ".wat")+".wasm")
			}
		})
	}
}

func TestCompilationCacheSurvivesEngines(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	dir := t.TempDir()
	wasm := plugintest.Wasm(t, "wasmhost/testdata/counter")
	for i := 0; i < 2; i++ {
		e, err := New(Config{CacheDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		m, err := e.Compile(context.Background(), wasm, Limits{})
		if err != nil {
			t.Fatal(err)
		}
		m.Close()
		e.Close()
	}
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) == 0 {
		t.Fatalf("cache dir holds %d entries (%v): compiled code was not cached", len(entries), err)
	}
}

// TestGoGuestCollectsGarbage makes a guest capped at 16 MiB allocate far
// more short-lived garbage than that: the Go collector must complete its
// cycles between host calls (the SDK yields to the scheduler after each
// call; without it this guest runs out of memory).
func TestGoGuestCollectsGarbage(t *testing.T) {
	e := newEngine(t)
	m := compile(t, e, plugintest.Wasm(t, "wasmhost/testdata/counter"), Limits{MemoryPages: 256, CallTimeout: 5 * time.Minute})
	inst, err := m.Instantiate(context.Background(), newMemHost("out"))
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Close()
	if err := inst.Init(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	recs := make([]InputRecord, 1000)
	for i := range recs {
		recs[i] = InputRecord{Seq: uint64(i + 1), Value: []byte("garbage")}
	}
	batch := AppendBatch(nil, "in", 0, recs)
	// Each call makes about 20 MiB of garbage, more than the cap; without
	// the SDK's yields the guest runs out of memory within a dozen calls.
	for i := 0; i < 12; i++ {
		if err := inst.OnBatch(context.Background(), batch, len(recs)); err != nil {
			t.Fatalf("batch %d: %v", i, err)
		}
	}
	if mem := inst.MemoryBytes(); mem > 8<<20 {
		t.Errorf("memory grew to %d bytes", mem)
	}
}

// TestInputImports: input_shard and input_stream tell any call, a timer
// included, which input shard the instance serves.
func TestInputImports(t *testing.T) {
	wasm := watModule(t, `
		(import "edgehub_v1" "input_shard" (func $shard (result i32)))
		(import "edgehub_v1" "input_stream" (func $stream (param i32 i32) (result i32)))
		(import "edgehub_v1" "state_set" (func $set (param i32 i32 i32 i32)))
		(memory (export "memory") 1)
		(data (i32.const 0) "s")
		(func (export "eh_alloc") (param i32) (result i32) i32.const 1024)
		(func (export "eh_on_batch") (param i32 i32) (result i32) i32.const 0)
		;; state "s" = u32 shard ‖ stream name; a 1-byte buffer first, to
		;; check the length-only answer when the name does not fit.
		(func (export "eh_on_timer") (param i64) (result i32)
			(local $n i32)
			(i32.store (i32.const 100) (call $shard))
			(local.set $n (call $stream (i32.const 104) (i32.const 1)))
			(if (i32.ne (local.get $n) (i32.const 2)) (then (return (i32.const 1))))
			(drop (call $stream (i32.const 104) (i32.const 64)))
			(call $set (i32.const 0) (i32.const 1) (i32.const 100) (i32.add (i32.const 4) (local.get $n)))
			(i32.const 0))`)
	if wasm == nil {
		t.Skip("wat2wasm not installed")
	}
	m := compile(t, newEngine(t), wasm, Limits{})
	h := newMemHost()
	inst, err := m.Instantiate(context.Background(), h)
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Close()
	if err := inst.OnTimer(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	if got := h.state["s"]; !bytes.Equal(got, []byte{7, 0, 0, 0, 'i', 'n'}) {
		t.Fatalf("state %q, want shard 7 and stream \"in\"", got)
	}
}

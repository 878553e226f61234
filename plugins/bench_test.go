package plugins

import (
	"context"
	"runtime"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/edgehub/edgehub/internal/plugintest"
	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/store"
	"github.com/edgehub/edgehub/wasmhost"
)

// benchBatch is n records with 128-byte values and 8-byte keys.
func benchBatch(n int) []record.Record {
	recs := make([]record.Record, n)
	val := make([]byte, 128)
	for i := range val {
		val[i] = 'a' + byte(i%26)
	}
	for i := range recs {
		recs[i] = record.Record{Seq: uint64(i + 1), Key: []byte("key-" + strconv.Itoa(i%1000)), Value: val, Time: int64(i), IngestTime: int64(i)}
	}
	return recs
}

// benchEnv is an env holding def's streams, for HostBenchmark.
func benchEnv(b *testing.B, def Definition) *env {
	e := newEnv(b)
	for _, s := range append(slices.Clone(def.Inputs), def.Outputs...) {
		e.stream(s, 1)
	}
	return e
}

// BenchmarkHostPassThrough measures a pass-through plugin through the host
// (encode batch, call, decode and copy each output, assign origins), per
// input record, for the Go SDK example and the hand-written WAT module.
func BenchmarkHostPassThrough(b *testing.B) {
	for _, mod := range []struct {
		name string
		wasm func(testing.TB) []byte
	}{
		{"go", func(tb testing.TB) []byte { return plugintest.Wasm(tb, "examples/passthrough") }},
		{"wat", func(tb testing.TB) []byte { return readTestdata(tb, watPassThrough) }},
	} {
		for _, batch := range []int{100, 1000} {
			b.Run(mod.name+"/batch="+strconv.Itoa(batch), func(b *testing.B) {
				recs := benchBatch(batch)
				def := Definition{Name: "bench", Inputs: []string{"in"}, Outputs: []string{"out"}, Config: map[string]string{"output": "out"}}
				wasm := mod.wasm(b)
				e := benchEnv(b, def)
				b.ResetTimer()
				res, err := e.m.HostBenchmark(context.Background(), def, wasm, recs, (b.N+batch-1)/batch)
				if err != nil {
					b.Fatal(err)
				}
				if res.Outputs != res.Records {
					b.Fatalf("%d outputs for %d records", res.Outputs, res.Records)
				}
				b.ReportMetric(res.PerSecond(), "records/s")
				b.ReportMetric(float64(res.MemoryBytes)/(1<<20), "MiB-memory")
			})
		}
	}
}

// BenchmarkHostDecodeOnly measures crossing the ABI without outputs.
func BenchmarkHostDecodeOnly(b *testing.B) {
	recs := benchBatch(1000)
	def := Definition{Name: "bench", Inputs: []string{"in"}}
	wasm := plugintest.Wasm(b, "plugins/testdata/noemit")
	res, err := benchEnv(b, def).m.HostBenchmark(context.Background(), def, wasm, recs, (b.N+999)/1000)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(res.PerSecond(), "records/s")
}

// BenchmarkHostAggregate runs the aggregate example (JSON parsing, keyed
// state per record) through the host; its state changes stay in each
// round's delta.
func BenchmarkHostAggregate(b *testing.B) {
	recs := make([]record.Record, 1000)
	for i := range recs {
		recs[i] = record.Record{Seq: uint64(i + 1), Key: []byte("sensor-" + strconv.Itoa(i%50)),
			Value: []byte(`{"value":` + strconv.Itoa(i%100) + `.5,"unit":"C"}`), Time: int64(i) * 1e6}
	}
	def := Definition{Name: "agg", Inputs: []string{"in"}, Outputs: []string{"aggregates"}}
	wasm := plugintest.Wasm(b, "examples/aggregate")
	res, err := benchEnv(b, def).m.HostBenchmark(context.Background(), def, wasm, recs, (b.N+999)/1000)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(res.PerSecond(), "records/s")
	b.ReportMetric(float64(res.MemoryBytes)/(1<<20), "MiB-memory")
}

// BenchmarkFirstRecordAfterDeploy measures from the start of Deploy to the
// first output in the store, for the aggregate-sized derive example: "cold"
// compiles the module (empty compilation cache), "cached" redeploys it
// after a delete, with the compiled code in the data directory's cache.
func BenchmarkFirstRecordAfterDeploy(b *testing.B) {
	wasm := plugintest.Wasm(b, "examples/derive")
	for _, mode := range []string{"cold", "cached"} {
		b.Run(mode, func(b *testing.B) {
			var total time.Duration
			for i := 0; i < b.N; i++ {
				e := newEnv(b)
				in := e.stream("in", 1)
				e.produce(in, record.Record{Key: []byte("s1"), Value: []byte(`{"value":1}`)})
				def := Definition{Name: "d", Inputs: []string{"in"}, Outputs: []string{"out"}, Start: StartEarliest,
					Config: map[string]string{"output": "out"}}
				if mode == "cached" {
					e.deploy(def, wasm)
					if err := e.m.Delete(context.Background(), "d"); err != nil {
						b.Fatal(err)
					}
				}
				out, _ := e.st.CreateStream(context.Background(), store.StreamConfig{Name: "out", Shards: 1})
				before := out.Stats()[0].LastSeq
				t0 := time.Now()
				e.deploy(def, wasm)
				if err := out.Wait(context.Background(), 0, before+1); err != nil {
					b.Fatal(err)
				}
				total += time.Since(t0)
				e.stop()
			}
			b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/first-output")
		})
	}
}

// BenchmarkInstanceMemory reports the memory one more instance of a Go
// plugin costs the hub process: its linear memory after init and one batch,
// and the Go heap growth (linear memory included, compiled code shared).
func BenchmarkInstanceMemory(b *testing.B) {
	for _, pkg := range []string{"examples/passthrough", "examples/aggregate"} {
		b.Run(pkg, func(b *testing.B) {
			wasm := plugintest.Wasm(b, pkg)
			engine, err := wasmhost.New(wasmhost.DefaultConfig())
			if err != nil {
				b.Fatal(err)
			}
			defer engine.Close()
			mod, err := engine.Compile(context.Background(), wasm, wasmhost.Limits{})
			if err != nil {
				b.Fatal(err)
			}
			defer mod.Close()
			batch := wasmhost.AppendBatch(nil, "in", 0, []wasmhost.InputRecord{{Seq: 1, Key: []byte("k"), Value: []byte(`{"value":1}`)}})
			const n = 20
			var ms runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&ms)
			before := ms.HeapAlloc
			var insts []*wasmhost.Instance
			linear := 0
			for i := 0; i < n; i++ {
				inst, err := mod.Instantiate(context.Background(), initHost{})
				if err != nil {
					b.Fatal(err)
				}
				if err := inst.Init(context.Background(), wasmhost.AppendConfig(nil, map[string]string{"output": "out"})); err != nil {
					b.Fatal(err)
				}
				if err := inst.OnBatch(context.Background(), batch, 1); err != nil {
					b.Fatal(err)
				}
				linear += inst.MemoryBytes()
				insts = append(insts, inst)
			}
			runtime.GC()
			runtime.ReadMemStats(&ms)
			for _, inst := range insts {
				inst.Close()
			}
			b.ReportMetric(float64(linear)/n/(1<<20), "MiB-linear/instance")
			b.ReportMetric(float64(ms.HeapAlloc-before)/n/(1<<20), "MiB-heap/instance")
		})
	}
}

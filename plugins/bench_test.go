package plugins

import (
	"context"
	"strconv"
	"testing"

	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/plugins/plugintest"
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
				b.ResetTimer()
				res, err := HostBenchmark(context.Background(), wasm, def, recs, (b.N+batch-1)/batch)
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
	res, err := HostBenchmark(context.Background(), wasm, def, recs, (b.N+999)/1000)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(res.PerSecond(), "records/s")
}

// BenchmarkHostAggregate runs the aggregate example (JSON parsing, keyed
// state per record) through the host, state in the in-memory delta.
func BenchmarkHostAggregate(b *testing.B) {
	recs := make([]record.Record, 1000)
	for i := range recs {
		recs[i] = record.Record{Seq: uint64(i + 1), Key: []byte("sensor-" + strconv.Itoa(i%50)),
			Value: []byte(`{"value":` + strconv.Itoa(i%100) + `.5,"unit":"C"}`), Time: int64(i) * 1e6}
	}
	def := Definition{Name: "agg", Inputs: []string{"in"}, Outputs: []string{"aggregates"}}
	res, err := HostBenchmark(context.Background(), plugintest.Wasm(b, "examples/aggregate"), def, recs, (b.N+999)/1000)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(res.PerSecond(), "records/s")
	b.ReportMetric(float64(res.MemoryBytes)/(1<<20), "MiB-memory")
}

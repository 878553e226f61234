package plugins

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/plugins/plugintest"
	"github.com/edgehub/edgehub/store"
)

// BenchmarkIngestWithPlugins measures store ingest (4 producers, batches of
// 100 records of 128 bytes, 4 shards) with n pass-through plugins attached
// and reports it as records/s; n=0 is the baseline. The plugins run while
// the records are produced; the benchmark ends when they have caught up.
func BenchmarkIngestWithPlugins(b *testing.B) {
	wasm := plugintest.Wasm(b, "examples/passthrough")
	for _, c := range []struct {
		n    int
		wait time.Duration
	}{{0, 0}, {3, 10 * time.Millisecond}, {3, 50 * time.Millisecond}, {3, 200 * time.Millisecond}} {
		n := c.n
		b.Run(fmt.Sprintf("plugins=%d/max_wait=%s", n, c.wait), func(b *testing.B) {
			e := newEnv(b)
			in := e.stream("in", 4)
			for i := 0; i < n; i++ {
				out := fmt.Sprintf("out%d", i)
				e.deploy(Definition{Name: fmt.Sprintf("p%d", i), Inputs: []string{"in"}, Outputs: []string{out},
					Config: map[string]string{"output": out}, Start: StartEarliest, MaxWait: c.wait}, wasm)
			}
			recs := benchBatch(100)
			for i := range recs {
				recs[i].Seq = 0
			}
			const producers = 4
			b.ResetTimer()
			t0 := time.Now()
			var wg sync.WaitGroup
			for p := 0; p < producers; p++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := p * 100; i < b.N; i += producers * 100 {
						if _, err := in.Append(context.Background(), store.Batch{Shard: -1, Records: recs[:min(100, b.N-i)]}); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			ingest := time.Since(t0)
			b.ReportMetric(float64(b.N)/ingest.Seconds(), "ingest-records/s")
			for _, info := range e.m.List() {
				for info.RecordsIn < uint64(b.N) {
					time.Sleep(5 * time.Millisecond)
					info, _ = e.m.Describe(info.Name)
				}
			}
			b.ReportMetric(float64(b.N)/time.Since(t0).Seconds(), "end-to-end-records/s")
			_ = record.Record{}
		})
	}
}

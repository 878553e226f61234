package plugins

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/edgehub/edgehub/internal/plugintest"
	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/store"
)

// BenchmarkIngestWithPlugins measures store ingest (4 producers, batches of
// 100 JSON readings of about 128 bytes, 4 shards) with plugins attached, as
// ingest-records/s; "none" is the baseline. The plugins run while the records
// are produced; end-to-end-records/s counts until they have caught up.
func BenchmarkIngestWithPlugins(b *testing.B) {
	sets := []struct {
		name string
		pkgs []string
		cfg  map[string]string
	}{
		{"none", nil, nil},
		{"examples", []string{"examples/aggregate", "examples/alert", "examples/derive"}, map[string]string{"threshold": "99", "debounce": "1m"}},
		{"passthrough-x3", []string{"examples/passthrough", "examples/passthrough", "examples/passthrough"}, nil},
	}
	for _, set := range sets {
		b.Run(set.name, func(b *testing.B) {
			e := newEnv(b)
			in := e.stream("in", 4)
			for i, pkg := range set.pkgs {
				out := fmt.Sprintf("out%d", i)
				cfg := map[string]string{"output": out}
				for k, v := range set.cfg {
					cfg[k] = v
				}
				e.deploy(Definition{Name: fmt.Sprintf("p%d", i), Inputs: []string{"in"}, Outputs: []string{out},
					Config: cfg, Start: StartEarliest}, plugintest.Wasm(b, pkg))
			}
			recs := make([]record.Record, 100)
			for i := range recs {
				recs[i] = record.Record{Key: []byte("sensor-" + strconv.Itoa(i%50)), Time: time.Now().UnixNano(),
					Value: fmt.Appendf(nil, `{"value":%d.5,"unit":"C","note":"%0100d"}`, i, 0)}
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
		})
	}
}

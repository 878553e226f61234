package gossip

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgehub/edgehub/internal/testutil"
)

// BenchmarkDefConvergenceLAN5 measures how long a new stream definition
// published at one of 5 members takes to reach all of them, with the LAN
// profile's timings (gossip every 200 ms to 3 members), encrypted, on
// loopback. ms/def is the figure; each iteration publishes a new stream.
func BenchmarkDefConvergenceLAN5(b *testing.B) {
	ctx := context.Background()
	keyFile := filepath.Join(b.TempDir(), "keys")
	writeKeys(b, keyFile, newKey(b))
	var ms []*Gossip
	for i := range 5 {
		ms = append(ms, newMember(b, fmt.Sprintf("hub-%d", i), memberOpts{label: "bench", profile: ProfileLAN, keyFile: keyFile}))
	}
	for _, g := range ms[1:] {
		if _, err := g.Join(ctx, ms[0].Addr()); err != nil {
			b.Fatal(err)
		}
	}
	for _, g := range ms {
		testutil.Eventually(b, "5 members", func() bool { return len(aliveNames(g)) == 5 })
	}
	var total time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		name := fmt.Sprintf("stream-%d", i)
		src := ms[i%len(ms)]
		start := time.Now()
		src.PublishDef(name, Def{Version: uint64(i + 1), Spec: []byte(`{"name":"` + name + `","shards":4}`)})
		for _, g := range ms {
			for {
				if _, ok := g.Streams()[name].Def(); ok {
					break
				}
				time.Sleep(time.Millisecond)
			}
		}
		total += time.Since(start)
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/def")
}

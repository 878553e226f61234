package hub

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgehub/edgehub/sdk"
	"github.com/edgehub/edgehub/store"
)

// The figures of docs/store.md "Figures" (resharding) measured through the
// hub's data plane with the SDK. They run only when EDGEHUB_FIGURES is set:
//
//	EDGEHUB_FIGURES=1 go test -count=1 -timeout 10m -run '^TestFigure' -v ./hub

func figuresOnly(tb testing.TB) {
	tb.Helper()
	if os.Getenv("EDGEHUB_FIGURES") == "" {
		tb.Skip("a figure, not a test: set EDGEHUB_FIGURES=1 (docs/store.md, \"Figures\")")
	}
}

func quietFigureHub(tb testing.TB, streams ...store.StreamConfig) (*dpHub, *sdk.Client) {
	tb.Helper()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	d := startDataPlane(tb, func(c *Config) { c.Logger = quiet }, streams...)
	return d, d.client(tb, func(o *sdk.Options) { o.Logger = quiet })
}

// produceFor sends keyed 100-byte records as fast as the producer takes
// them for d, calling during (if not nil) from another goroutine meanwhile,
// and returns the records acknowledged per second.
func produceFor(tb testing.TB, p *sdk.Producer, d time.Duration, tag string, during func(stop <-chan struct{})) float64 {
	tb.Helper()
	ctx := context.Background()
	var acked, failed atomic.Int64
	value := make([]byte, 100)
	stop := make(chan struct{})
	done := make(chan struct{})
	if during != nil {
		go func() { defer close(done); during(stop) }()
	} else {
		close(done)
	}
	t0 := time.Now()
	for i := 0; time.Since(t0) < d; i++ {
		err := p.SendAsync(ctx, sdk.Record{Key: []byte(fmt.Sprintf("%s-%d", tag, i%1000)), Value: value}, func(_ sdk.Position, err error) {
			if err != nil {
				failed.Add(1)
				return
			}
			acked.Add(1)
		})
		if err != nil {
			tb.Fatal(err)
		}
	}
	if err := p.Flush(ctx); err != nil {
		tb.Fatal(err)
	}
	el := time.Since(t0)
	close(stop)
	<-done
	if failed.Load() > 0 {
		tb.Fatalf("%d sends failed", failed.Load())
	}
	return float64(acked.Load()) / el.Seconds()
}

// TestFigureProduceDuringReshards: an SDK producer's throughput while the
// stream is resharded every EDGEHUB_FIGURE_RESHARD_EVERY (default 1 s;
// alternately 4 → 8 and 8 → 4 open shards), as a share of the same
// producer's steady throughput, 10 s each.
func TestFigureProduceDuringReshards(t *testing.T) {
	figuresOnly(t)
	every := time.Second
	if v := os.Getenv("EDGEHUB_FIGURE_RESHARD_EVERY"); v != "" {
		var err error
		if every, err = time.ParseDuration(v); err != nil {
			t.Fatal(err)
		}
	}
	d, c := quietFigureHub(t, store.StreamConfig{Name: "tp", Shards: 4})
	st, err := d.h.Store().Stream("tp")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	p, err := c.Producer(ctx, "tp", sdk.ProducerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(ctx)
	produceFor(t, p, 2*time.Second, "warm", nil)
	steady := produceFor(t, p, 10*time.Second, "steady", nil)
	reshards := 0
	during := produceFor(t, p, 10*time.Second, "during", func(stop <-chan struct{}) {
		tick := time.NewTicker(every)
		defer tick.Stop()
		for n := 8; ; n = 12 - n {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if _, err := st.Reshard(ctx, n); err != nil {
				t.Error(err)
				return
			}
			reshards++
		}
	})
	t.Logf("FIGURE produce: steady %.0f records/s; with a reshard every %s (%d reshards) %.0f records/s, %.0f%% of steady",
		steady, every, reshards, during, 100*during/steady)
}

// TestFigureLineageCatchUp: a fresh SDK subscription reading, from the
// start, a stream resharded 10 times with records between each reshard,
// against an un-resharded stream of the same records.
func TestFigureLineageCatchUp(t *testing.T) {
	figuresOnly(t)
	const total, phases = 1_000_000, 11
	d, c := quietFigureHub(t, store.StreamConfig{Name: "flat", Shards: 4}, store.StreamConfig{Name: "lineage", Shards: 4})
	ctx := context.Background()
	lin, err := d.h.Store().Stream("lineage")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"flat", "lineage"} {
		p, err := c.Producer(ctx, name, sdk.ProducerOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for ph := range phases {
			for i := range total / phases {
				if err := p.SendAsync(ctx, sdk.Record{Key: []byte(fmt.Sprintf("k%d", i%1000)), Value: make([]byte, 100)}, func(sdk.Position, error) {}); err != nil {
					t.Fatal(err)
				}
			}
			if err := p.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if name == "lineage" && ph < phases-1 {
				// 4 → 5 → 6 → ... shards and back: every reshard
				// closes shards that hold records.
				if _, err := lin.Reshard(ctx, 4+[]int{1, 2, 3, 2, 1, 0, 1, 2, 1, 3}[ph]); err != nil {
					t.Fatal(err)
				}
			}
		}
		p.Close(ctx)
	}
	n := (total / phases) * phases
	rate := map[string]float64{}
	for _, name := range []string{"flat", "lineage"} {
		t0 := time.Now()
		sub, err := c.Subscribe(ctx, name, sdk.ConsumeOptions{From: sdk.FromEarliest()})
		if err != nil {
			t.Fatal(err)
		}
		for range n {
			if _, err := sub.Next(ctx); err != nil {
				t.Fatal(err)
			}
		}
		rate[name] = float64(n) / time.Since(t0).Seconds()
		sub.Close()
	}
	t.Logf("FIGURE catch-up of %d records: un-resharded %.0f records/s; across a lineage of 10 reshards (layout version %d, %d shard ids) %.0f records/s, %.0f%%",
		n, rate["flat"], lin.Layout().Version, len(lin.Layout().Shards), rate["lineage"], 100*rate["lineage"]/rate["flat"])
}

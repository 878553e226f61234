package pluginbench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/edgehub/edgehub"
	"github.com/edgehub/edgehub/plugins"
	"github.com/edgehub/edgehub/store"
)

// Plugin is one plugin under test.
type Plugin struct {
	File string // names it in the report
	Wasm []byte
	// Host: measure it through the host too (each module once; further
	// copies are only attached for Ingest).
	Host bool
}

// Config is what to measure.
type Config struct {
	// Plugins are deployed as bench0, bench1, ... on input "in", each
	// writing to its own output (out0, out1, ...), which its config's
	// "output" key names.
	Plugins []Plugin
	// Config is passed to every plugin's init (with "output" set).
	Config map[string]string
	// Records is the number of input records (host: rounded up to whole
	// batches), Batch the records per call, ValueSize the bytes of each
	// value; JSON values are readings {"value":N,...} padded to ValueSize
	// (what the examples parse).
	Records, Batch, ValueSize int
	JSON                      bool
	// Ingest also measures ingest into the store, Rounds times without and
	// with the plugins, from Producers concurrent producers.
	Ingest            bool
	Producers, Rounds int
}

// HostResult is one module's throughput through the host.
type HostResult struct {
	File        string
	Records     int           // input records passed to the plugin
	Outputs     int           // outputs it emitted
	Calls       int           // eh_on_batch calls
	Elapsed     time.Duration // wall time of the calls, encoding and output copying
	MemoryBytes int           // the instance's linear memory at the end
}

// PerSecond is the input records processed per second.
func (r HostResult) PerSecond() float64 { return float64(r.Records) / r.Elapsed.Seconds() }

// Round is one ingest round.
type Round struct {
	Round int
	// Base and With are ingest rates (records/s) without and with the
	// plugins attached.
	Base, With float64
	// CatchUp is from the start of the produce with plugins until every
	// plugin has processed it, CatchUpRate the records/s of each plugin
	// over that time.
	CatchUp     time.Duration
	CatchUpRate float64
}

// Report receives the measurements as they are made; nil funcs are skipped.
type Report struct {
	Host  func(HostResult)
	Round func(Round)
}

// Summary sums up the ingest rounds.
type Summary struct {
	// MedianRatio is the median over the rounds of With/Base.
	MedianRatio float64
}

// Run measures cfg's plugins (see the package doc).
func Run(ctx context.Context, cfg Config, rep Report) (Summary, error) {
	if len(cfg.Plugins) == 0 || cfg.Records < 1 || cfg.Batch < 1 || cfg.ValueSize < 0 || (cfg.Ingest && (cfg.Producers < 1 || cfg.Rounds < 1)) {
		return Summary{}, fmt.Errorf("pluginbench: nothing to measure: %d plugins, %d records of %d bytes, batches of %d, %d producers, %d rounds",
			len(cfg.Plugins), cfg.Records, cfg.ValueSize, cfg.Batch, cfg.Producers, cfg.Rounds)
	}
	dir, err := os.MkdirTemp("", "hub-plugin-bench-")
	if err != nil {
		return Summary{}, fmt.Errorf("pluginbench: %w", err)
	}
	defer os.RemoveAll(dir)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	scfg := store.DefaultConfig(dir)
	scfg.Logger = quiet
	st, err := store.Open(scfg)
	if err != nil {
		return Summary{}, fmt.Errorf("pluginbench: %w", err)
	}
	defer st.Close()
	pcfg := plugins.DefaultConfig(dir)
	pcfg.Store, pcfg.Logger = st, quiet
	m, err := plugins.New(pcfg)
	if err != nil {
		return Summary{}, fmt.Errorf("pluginbench: %w", err)
	}
	defer m.Close()

	const shards = 4
	if _, err := st.CreateStream(ctx, store.StreamConfig{Name: "in", Shards: shards}); err != nil {
		return Summary{}, fmt.Errorf("pluginbench: %w", err)
	}
	defs := make([]plugins.Definition, len(cfg.Plugins))
	for i := range cfg.Plugins {
		out := fmt.Sprintf("out%d", i)
		c := maps.Clone(cfg.Config)
		if c == nil {
			c = map[string]string{}
		}
		c["output"] = out
		defs[i] = plugins.Definition{Name: fmt.Sprintf("bench%d", i), Inputs: []string{"in"}, Outputs: []string{out},
			Config: c, BatchRecords: cfg.Batch, Start: plugins.StartEarliest}
		if _, err := st.CreateStream(ctx, store.StreamConfig{Name: out, Shards: shards}); err != nil {
			return Summary{}, fmt.Errorf("pluginbench: %w", err)
		}
	}

	batch := records(cfg.Batch, cfg.ValueSize, cfg.JSON)
	calls := (cfg.Records + cfg.Batch - 1) / cfg.Batch
	for i, p := range cfg.Plugins {
		if !p.Host {
			continue
		}
		res, err := m.HostBenchmark(ctx, defs[i], p.Wasm, batch, calls)
		if err != nil {
			return Summary{}, fmt.Errorf("%s: %w", p.File, err)
		}
		if rep.Host != nil {
			rep.Host(HostResult{File: p.File, Records: res.Records, Outputs: res.Outputs, Calls: res.Calls,
				Elapsed: res.Elapsed, MemoryBytes: res.MemoryBytes})
		}
	}
	if !cfg.Ingest {
		return Summary{}, nil
	}
	return ingest(ctx, st, m, cfg, defs, rep)
}

// ingest measures ingest into st without plugins, then with defs attached,
// and how long the plugins take to catch up.
func ingest(ctx context.Context, st *store.Store, m *plugins.Manager, cfg Config, defs []plugins.Definition, rep Report) (Summary, error) {
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	runDone := make(chan error, 1)
	go func() { runDone <- m.Run(rctx) }()
	defer func() {
		cancel()
		<-runDone
	}()

	produce := func(stream string) (time.Duration, error) {
		s, err := st.CreateStream(ctx, store.StreamConfig{Name: stream, Shards: 4})
		if err != nil {
			return 0, err
		}
		const per = 100
		recs := records(per, cfg.ValueSize, cfg.JSON)
		var wg sync.WaitGroup
		errc := make(chan error, cfg.Producers)
		t0 := time.Now()
		for p := 0; p < cfg.Producers; p++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := p * per; i < cfg.Records; i += cfg.Producers * per {
					if _, err := s.Append(ctx, store.Batch{Shard: -1, Records: recs[:min(per, cfg.Records-i)]}); err != nil {
						errc <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errc)
		return time.Since(t0), <-errc
	}
	rate := func(d time.Duration) float64 { return float64(cfg.Records) / d.Seconds() }
	for i, d := range defs {
		if _, err := m.Deploy(ctx, d, cfg.Plugins[i].Wasm); err != nil {
			return Summary{}, fmt.Errorf("pluginbench: %s: %w", cfg.Plugins[i].File, err)
		}
	}
	// Alternate rounds without and with the plugins (waiting for them to
	// catch up in between), so a noisy machine skews both alike; report the
	// median ratio.
	var ratios []float64
	for round := 1; round <= cfg.Rounds; round++ {
		base, err := produce(fmt.Sprintf("base%d", round))
		if err != nil {
			return Summary{}, fmt.Errorf("pluginbench: %w", err)
		}
		t0 := time.Now()
		with, err := produce("in")
		if err != nil {
			return Summary{}, fmt.Errorf("pluginbench: %w", err)
		}
		for caught := false; !caught; {
			caught = true
			for _, info := range m.List() {
				if info.Lag > 0 || info.RecordsIn < uint64(round*cfg.Records) {
					caught = false
				}
			}
			if !caught {
				select {
				case <-ctx.Done():
					return Summary{}, ctx.Err()
				case <-time.After(10 * time.Millisecond):
				}
			}
		}
		all := time.Since(t0)
		ratios = append(ratios, rate(with)/rate(base))
		if rep.Round != nil {
			rep.Round(Round{Round: round, Base: rate(base), With: rate(with), CatchUp: all, CatchUpRate: rate(all)})
		}
	}
	slices.Sort(ratios)
	return Summary{MedianRatio: ratios[len(ratios)/2]}, nil
}

// records is n input records: keys sensor-0000 to sensor-0999, values of
// valueSize bytes (JSON readings with asJSON), event times a millisecond
// apart.
func records(n, valueSize int, asJSON bool) []edgehub.Record {
	recs := make([]edgehub.Record, n)
	now := time.Now()
	for i := range recs {
		var val []byte
		if asJSON {
			val = fmt.Appendf(nil, `{"value":%d.%d,"unit":"C","pad":"`, i%100, i%10)
			for len(val) < valueSize-2 {
				val = append(val, 'x')
			}
			val = append(val, '"', '}')
		} else {
			val = make([]byte, valueSize)
			for j := range val {
				val[j] = 'a' + byte(j%26)
			}
		}
		recs[i] = edgehub.Record{Seq: uint64(i + 1), Key: fmt.Appendf(nil, "sensor-%04d", i%1000), Value: val,
			Time: now.Add(time.Duration(i) * time.Millisecond).UnixNano()}
	}
	return recs
}

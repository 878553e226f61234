package plugins

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/edgehub/edgehub"
	"github.com/edgehub/edgehub/wasmhost"
)

// HostResult is what HostBenchmark measured.
type HostResult struct {
	Records     int           // input records passed to the plugin
	Outputs     int           // outputs it emitted
	Calls       int           // eh_on_batch calls
	Elapsed     time.Duration // wall time of the calls, encoding and output copying
	MemoryBytes int           // the instance's linear memory at the end
}

// PerSecond is the input records processed per second.
func (r HostResult) PerSecond() float64 { return float64(r.Records) / r.Elapsed.Seconds() }

// HostBenchmark measures a module's throughput through the host: the batch
// is encoded, passed to eh_on_batch, and every output is copied out of the
// guest and given its origin exactly as a runner does, rounds times. The
// store is left out (its cost is measured by the store's own benchmarks), as
// is keyed state unless the module uses it (it then works on an in-memory
// delta). Outputs go to def.Outputs, which must all be named.
func HostBenchmark(ctx context.Context, wasm []byte, def Definition, batch []edgehub.Record, rounds int) (HostResult, error) {
	def = def.clone().WithDefaults()
	engine, err := wasmhost.New(wasmhost.DefaultConfig())
	if err != nil {
		return HostResult{}, err
	}
	defer engine.Close()
	mod, err := engine.Compile(ctx, wasm, def.limits())
	if err != nil {
		return HostResult{}, err
	}
	defer mod.Close()
	p := &plugin{name: def.Name, def: def, logs: newLogRing(100), logger: slog.New(slog.DiscardHandler), lim: &limiter{}}
	r := &runner{p: p, def: def, mod: mod, logger: p.logger, delta: newDelta(), outIdx: map[string]int{},
		maxRecord: 64 << 20, now: time.Now, originHub: "bench/plugin/" + def.Name + "/in", input: nil}
	for _, o := range def.Outputs {
		r.outIdx[o] = len(r.outs)
		r.outs = append(r.outs, &outBuf{})
	}
	inst, err := mod.Instantiate(ctx, r)
	if err != nil {
		return HostResult{}, err
	}
	defer inst.Close()
	if err := inst.Init(ctx, wasmhost.AppendConfig(nil, def.Config)); err != nil {
		return HostResult{}, err
	}
	r.inst = inst
	res := HostResult{}
	t0 := time.Now()
	for i := 0; i < rounds; i++ {
		if err := r.callBatchNamed(ctx, "in", batch); err != nil {
			return res, fmt.Errorf("round %d: %w", i, err)
		}
		res.Outputs += r.nOut
		res.Records += len(batch)
		res.Calls++
		r.discard()
	}
	res.Elapsed = time.Since(t0)
	res.MemoryBytes = inst.MemoryBytes()
	return res, nil
}

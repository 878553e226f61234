package plugins

import (
	"context"
	"fmt"
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

// HostBenchmark measures a module's throughput through the host, on a runner
// of m exactly as one runs a deployed plugin: batch is encoded, passed to
// eh_on_batch, and every output is copied out of the guest and given its
// origin, rounds times. Nothing is stored: each round's outputs and state
// changes are dropped, so the store's cost is left out (its own benchmarks
// measure it) and keyed state reads find the uncommitted changes of the
// round, then the committed state of a plugin named def.Name on def.Inputs[0]
// shard 0 (none, unless one was deployed). def.Inputs[0] and def.Outputs
// must be streams of m's store. The plugin is not deployed.
func (m *Manager) HostBenchmark(ctx context.Context, def Definition, wasm []byte, batch []edgehub.Record, rounds int) (HostResult, error) {
	def = def.clone().WithDefaults()
	if err := def.Validate(); err != nil {
		return HostResult{}, fmt.Errorf("plugins: benchmark %q: %w", def.Name, err)
	}
	if m.isClosed() {
		return HostResult{}, ErrClosed
	}
	in, err := m.st.Stream(def.Inputs[0])
	if err != nil {
		return HostResult{}, fmt.Errorf("plugins: benchmark %q: input: %w", def.Name, err)
	}
	for _, out := range def.Outputs {
		if _, err := m.st.Stream(out); err != nil {
			return HostResult{}, fmt.Errorf("plugins: benchmark %q: output: %w", def.Name, err)
		}
	}
	mod, err := m.engine.Compile(ctx, wasm, def.limits())
	if err != nil {
		return HostResult{}, fmt.Errorf("plugins: benchmark %q: %w", def.Name, err)
	}
	defer mod.Close()
	r := newRunner(m, m.newPlugin(def, mod), def, mod, in, 0)
	defer r.closeInstance()
	inst, err := mod.Instantiate(ctx, r)
	if err != nil {
		return HostResult{}, fmt.Errorf("plugins: benchmark %q: %w", def.Name, err)
	}
	r.inst = inst
	if err := inst.Init(ctx, wasmhost.AppendConfig(nil, def.guestConfig())); err != nil {
		return HostResult{}, fmt.Errorf("plugins: benchmark %q: %w", def.Name, err)
	}
	res := HostResult{}
	t0 := time.Now()
	for i := 0; i < rounds; i++ {
		if err := r.callBatch(ctx, batch); err != nil {
			return res, fmt.Errorf("plugins: benchmark %q: round %d: %w", def.Name, i, err)
		}
		res.Outputs += r.nOut
		res.Records += len(batch)
		res.Calls++
		r.discard()
	}
	res.Elapsed = time.Since(t0)
	if r.inst != nil {
		res.MemoryBytes = r.inst.MemoryBytes()
	}
	return res, nil
}

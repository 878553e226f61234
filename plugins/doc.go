// Package plugins deploys and runs WebAssembly consumer plugins (ABI v1, see
// docs/plugin-abi.md) against the store: stateful, sandboxed, exactly-once.
//
// # Basics
//
// A Manager keeps definitions, module bytes (content-addressed by SHA-256),
// checkpoints and keyed state in one bbolt file, Dir/plugins.db, and compiled
// code in Dir/wasmcache. Deploy installs or upgrades a plugin; Run starts one
// runner per plugin and input shard. A runner follows its shard with
// store.Stream.Changed (commits wake it; it never polls), reads a batch,
// calls the guest once for the whole batch, and commits.
//
// # Exactly-once
//
// Per batch, a runner (1) appends the outputs, each with the origin
// (hub/plugin/name/input, input shard, inputSeq<<16 | outputIndex), then (2)
// commits the keyed-state changes and the input checkpoint in one
// transaction. A crash between the two replays the batch from the
// checkpoint with the state as of that checkpoint; the replayed outputs
// carry the same origins and the store drops them. Timer firings get their
// own origin (…/timer, firing<<32 | index); a firing with outputs is
// recorded in the checkpoint before its outputs are appended, and replayed
// with the same time at restart.
//
// # Failures
//
// A failed call (trap, timeout, memory limit, ABI violation, error status)
// discards its effects; the batch is re-run one record at a time to find the
// failing record, which the plugin's policy retries with backoff,
// dead-letters (with the reason in headers) or answers by pausing the plugin.
// Runners are independent goroutines: a stuck or failing plugin never blocks
// ingest, and delays other plugins by at most the slot lease (below).
//
// # Sharing the machine
//
// Compiled wasm is not preempted until a call returns, so runners take an
// execution slot (Config.MaxConcurrentCalls, half the CPUs) for each step
// (read, call, commit), keep a duty cycle (Config.BusyDutyCycle, 1/3) while their
// input is being written to, and move to a quarantine slot while their calls
// fail. A call in a shared slot has a lease (Config.SlotLease): one that runs
// longer moves to the quarantine slot, or is cancelled and made again there,
// so a looping plugin holds up healthy ones for at most the lease. The
// quarantine is stored with the checkpoint and survives restarts. Plugins
// thus lag behind an ingest burst and catch up after it. See
// docs/plugins.md and docs/performance.md.
package plugins

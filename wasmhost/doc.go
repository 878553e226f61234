// Package wasmhost runs WebAssembly plugin modules under edgehub's plugin ABI
// v1 (docs/plugin-abi.md) with wazero.
//
// # Basics
//
// An Engine owns the compilation cache (in the data directory, so restarts
// and redeploys skip compilation). Engine.Compile checks a module against the
// ABI and compiles it into a Module with its Limits; each Module has its own
// wazero runtime, because the memory cap is a runtime setting, while the
// machine code is shared through the cache. Module.Instantiate creates an
// Instance wired to a Host, the caller's implementation of the imports
// (emit, keyed state, log, time). Instance.OnBatch and Instance.OnTimer call
// the guest's handlers.
//
// # Sandbox
//
// A module sees no filesystem, no network, no arguments, no environment and
// no real clock: WASI is offered only so that language runtimes start, with
// wazero's fake clocks and deterministic randomness. The time import is the
// only real clock. Linear memory is capped per module; each call runs under a
// deadline enforced by wazero's CloseOnContextDone, which stops even a guest
// in a tight loop.
//
// # Caveats
//
// An instance whose call failed (trap, timeout, ABI violation) is broken and
// must be replaced: the guest was stopped at an arbitrary point. Keeping all
// durable state in the host (the keyed-state imports) is what makes replacing
// an instance cheap and safe.
package wasmhost

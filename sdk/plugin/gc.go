package plugin

import "runtime/debug"

// DefaultGCPercent is the GOGC the SDK sets at start. Go's collector lets
// the heap reach at least 4 MiB × GOGC/100 before collecting, and a wasm
// memory never shrinks, so the default of 100 costs a plugin instance 8 MiB
// or more; at 25 a typical plugin stays under 5 MiB. Plugins that allocate
// heavily and prefer speed can call debug.SetGCPercent from their init.
const DefaultGCPercent = 25

func init() { debug.SetGCPercent(DefaultGCPercent) }

// Package plugin is the Go SDK for edgehub Wasm plugins (ABI v1, see
// docs/plugin-abi.md). It uses only the standard library and builds with
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o plugin.wasm .
//
// A plugin registers its handlers from an init function; main stays empty
// (a c-shared module is a WASI reactor: the host calls _initialize, which runs
// package initialisers, then calls the handlers).
//
//	package main
//
//	import "github.com/edgehub/edgehub/sdk/plugin"
//
//	func init() {
//		plugin.OnRecord(func(r *plugin.Record) error {
//			return plugin.Emit("out", plugin.Output{Key: r.Key, Value: r.Value, Time: r.Time})
//		})
//	}
//
//	func main() {}
//
// # Exactly-once
//
// The hub gives every output an origin derived from the input record it is
// attributed to (Emit attributes to the record being handled), and commits
// State together with the input checkpoint. A deterministic handler therefore
// never double-counts after a crash: on replay it sees the state as of the
// checkpoint and re-emits the same outputs, which the store drops as
// duplicates. Handlers must not keep state in Go variables across calls (the
// host may replace the instance at any time); use State. time.Now inside the
// guest is a fake clock: use Now, and prefer record timestamps for windows.
//
// # Caveats
//
// Record byte slices alias the host's batch buffer and are valid only during
// the handler call: copy what you keep.
package plugin

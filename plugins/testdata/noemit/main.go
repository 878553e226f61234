// Command noemit is a benchmark plugin: it receives records and does nothing,
// so BenchmarkHostDecodeOnly measures the cost of crossing the ABI (batch
// encoding, copy into the guest, the SDK's decoding and dispatch).
package main

import "github.com/edgehub/edgehub/sdk/plugin"

var n int

func init() {
	plugin.OnRecord(func(r *plugin.Record) error { n += len(r.Value); return nil })
}

func main() {}

// Command passthrough is the smallest useful edgehub plugin: it copies every
// input record (key, value, headers, timestamp) to the stream named by its
// "output" config key, which the hub fills with the first declared output.
// It is the baseline of the plugin benchmarks. Build:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o passthrough.wasm .
package main

import (
	"errors"

	"github.com/edgehub/edgehub/sdk/plugin"
)

var output string

func init() {
	plugin.OnInit(func(c plugin.Config) error {
		output = c.String("output", "")
		if output == "" {
			return errors.New("no output: deploy with --output STREAM")
		}
		return nil
	})
	plugin.OnRecord(func(r *plugin.Record) error {
		return plugin.Emit(output, plugin.Output{Key: r.Key, Value: r.Value, Headers: r.Headers, Time: r.Time})
	})
}

func main() {}

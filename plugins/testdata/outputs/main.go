// Command outputs is a test plugin: it logs the "output" and "outputs" keys
// its init receives and copies every record to each declared output
// (plugin.Config.Outputs), so a test sees what the hub told it.
package main

import (
	"fmt"

	"github.com/edgehub/edgehub/sdk/plugin"
)

var outputs []string

func init() {
	plugin.OnInit(func(c plugin.Config) error {
		outputs = c.Outputs()
		plugin.Log(plugin.LevelInfo, "init "+show(c, "output")+" "+show(c, "outputs"))
		return nil
	})
	plugin.OnRecord(func(r *plugin.Record) error {
		for _, s := range outputs {
			if err := plugin.EmitFor(r, s, plugin.Output{Key: r.Key, Value: r.Value, Time: r.Time}); err != nil {
				return err
			}
		}
		return nil
	})
}

func show(c plugin.Config, key string) string {
	if v, ok := c[key]; ok {
		return fmt.Sprintf("%s=%q", key, v)
	}
	return key + " unset"
}

func main() {}

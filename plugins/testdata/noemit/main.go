package main

import "github.com/edgehub/edgehub/sdk/plugin"

var n int

func init() {
	plugin.OnRecord(func(r *plugin.Record) error { n += len(r.Value); return nil })
}

func main() {}

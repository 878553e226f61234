// Command derive is an edgehub plugin: it filters JSON sensor readings,
// transforms the value (a linear unit conversion) and enriches each record
// with site metadata from its config, into a derived stream. Build it with
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o derive.wasm .
//
// See README.md for its config and output.
package main

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"

	"github.com/edgehub/edgehub/sdk/plugin"
)

var (
	output   = "derived"
	field    = "value"
	minValue = math.Inf(-1)
	maxValue = math.Inf(1)
	scale    = 1.0
	offset   = 0.0
	unit     = ""
	sites    = map[string]string{} // sensor prefix → site, from "site.<prefix>" keys
)

func site(sensor string) string {
	best, bestLen := "", -1
	for prefix, s := range sites {
		if strings.HasPrefix(sensor, prefix) && len(prefix) > bestLen {
			best, bestLen = s, len(prefix)
		}
	}
	return best
}

func onRecord(r *plugin.Record) error {
	if r.Value == nil {
		return nil
	}
	var m map[string]any
	if err := json.Unmarshal(r.Value, &m); err != nil {
		plugin.Logf(plugin.LevelDebug, "skipping record %d: %v", r.Seq, err)
		return nil
	}
	x, ok := m[field].(float64)
	if !ok || x < minValue || x > maxValue {
		return nil // filtered out
	}
	m[field] = x*scale + offset
	if unit != "" {
		m["unit"] = unit
	}
	if s := site(string(r.Key)); s != "" {
		m["site"] = s
	}
	m["source"] = fmt.Sprintf("%s/%d/%d", r.Stream, r.Shard, r.Seq)
	out, err := json.Marshal(m)
	if err != nil {
		return err
	}
	hdrs := append([]plugin.Header{{Key: "derived-from", Value: []byte(r.Stream)}}, r.Headers...)
	return plugin.Emit(output, plugin.Output{Key: r.Key, Value: out, Time: r.Time, Headers: hdrs})
}

func onInit(c plugin.Config) error {
	var err error
	output = c.String("output", output)
	field = c.String("field", field)
	unit = c.String("unit", unit)
	if minValue, err = c.Float("min", minValue); err != nil {
		return err
	}
	if maxValue, err = c.Float("max", maxValue); err != nil {
		return err
	}
	if scale, err = c.Float("scale", scale); err != nil {
		return err
	}
	if offset, err = c.Float("offset", offset); err != nil {
		return err
	}
	sites = map[string]string{}
	for k, v := range c {
		if prefix, ok := strings.CutPrefix(k, "site."); ok {
			sites[prefix] = v
		}
	}
	return nil
}

func init() {
	plugin.OnInit(onInit)
	plugin.OnRecord(onRecord)
}

func main() {}

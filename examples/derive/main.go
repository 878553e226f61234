// Command derive is an edgehub plugin: it filters JSON sensor readings,
// transforms the value (a linear unit conversion) and enriches each record
// with site metadata from its config, into a derived stream. Build it with
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o derive.wasm .
//
// See README.md for its config and output. It edits the JSON in place rather
// than decoding and re-encoding it: reflection and allocation are what cost
// most in a Go guest, and this way a record costs a few microseconds.
package main

import (
	"bytes"
	"encoding/json"
	"math"
	"slices"
	"strconv"
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
	unitJSON []byte     // the unit as a JSON string, nil for none
	sites    []siteRule // from "site.<prefix>" keys, longest prefix first
)

// Reused buffers: a record allocates nothing. Each edit writes into the
// buffer that does not hold the current document.
var (
	bufs        [2][]byte
	num, source []byte
	hdrs        []plugin.Header
	streamName  string
	streamBytes []byte
)

type siteRule struct {
	prefix string
	json   []byte // the site as a JSON string
}

func site(sensor []byte) []byte {
	for _, s := range sites {
		if len(sensor) >= len(s.prefix) && string(sensor[:len(s.prefix)]) == s.prefix {
			return s.json
		}
	}
	return nil
}

// setField returns doc (a JSON object) with name set to the JSON value v,
// replacing an existing top-level field or adding one, written into dst.
func setField(dst, doc []byte, name string, v []byte) []byte {
	if old, ok := plugin.Field(doc, name); ok {
		start := cap(doc) - cap(old) // old is a sub-slice of doc
		dst = append(dst[:0], doc[:start]...)
		dst = append(dst, v...)
		return append(dst, doc[start+len(old):]...)
	}
	end := bytes.LastIndexByte(doc, '}')
	dst = append(dst[:0], doc[:end]...)
	if len(bytes.TrimSpace(doc[bytes.IndexByte(doc, '{')+1:end])) > 0 {
		dst = append(dst, ',')
	}
	dst = strconv.AppendQuote(dst, name)
	dst = append(dst, ':')
	dst = append(dst, v...)
	return append(dst, doc[end:]...)
}

func onRecord(r *plugin.Record) error {
	if r.Value == nil {
		return nil
	}
	x, ok := plugin.NumberField(r.Value, field)
	if !ok || x < minValue || x > maxValue {
		return nil // filtered out
	}
	num = strconv.AppendFloat(num[:0], x*scale+offset, 'g', -1, 64)
	source = append(source[:0], '"')
	source = append(source, r.Stream...)
	source = append(source, '/')
	source = strconv.AppendUint(source, uint64(r.Shard), 10)
	source = append(source, '/')
	source = strconv.AppendUint(source, r.Seq, 10)
	source = append(source, '"')
	edits := [4]struct {
		name  string
		value []byte
	}{{field, num}, {"unit", unitJSON}, {"site", site(r.Key)}, {"source", source}}
	doc, cur := r.Value, 0
	for _, e := range edits {
		if e.value == nil {
			continue
		}
		cur ^= 1
		// setField needs doc's capacity to equal its length.
		bufs[cur] = setField(bufs[cur], doc[:len(doc):len(doc)], e.name, e.value)
		doc = bufs[cur]
	}
	if r.Stream != streamName {
		streamName, streamBytes = r.Stream, []byte(r.Stream)
	}
	hdrs = append(append(hdrs[:0], plugin.Header{Key: "derived-from", Value: streamBytes}), r.Headers...)
	return plugin.Emit(output, plugin.Output{Key: r.Key, Value: doc, Time: r.Time, Headers: hdrs})
}

func onInit(c plugin.Config) error {
	var err error
	output = c.String("output", output)
	field = c.String("field", field)
	unitJSON = nil
	if u := c.String("unit", ""); u != "" {
		unitJSON, _ = json.Marshal(u)
	}
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
	sites = sites[:0]
	for k, v := range c {
		if prefix, ok := strings.CutPrefix(k, "site."); ok {
			j, _ := json.Marshal(v)
			sites = append(sites, siteRule{prefix, j})
		}
	}
	slices.SortFunc(sites, func(a, b siteRule) int { return len(b.prefix) - len(a.prefix) })
	return nil
}

func init() {
	plugin.OnInit(onInit)
	plugin.OnRecord(onRecord)
}

func main() {}

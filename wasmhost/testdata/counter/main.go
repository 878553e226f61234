// Command counter is a test plugin built by the wasmhost and plugins tests.
// It counts records per key in keyed state and emits the running count; its
// timer emits and clears every counter. Values "panic" and "oom" make it
// panic or allocate without bound; "fail" returns an error; "garbage"
// allocates memory that is garbage at once.
package main

import (
	"encoding/json"
	"errors"
	"strconv"
	"time"

	"github.com/edgehub/edgehub/sdk/plugin"
)

var (
	output = "out"
	hoard  [][]byte
	sink   []byte
)

func onRecord(r *plugin.Record) error {
	switch string(r.Value) {
	case "panic":
		panic("counter: asked to panic at seq " + strconv.FormatUint(r.Seq, 10))
	case "oom":
		for {
			hoard = append(hoard, make([]byte, 1<<20))
		}
	case "fail":
		return errors.New("asked to fail")
	case "garbage":
		// Short-lived maps and buffers, as encoding/json makes them: the
		// collector must finish its cycles between calls.
		for i := 0; i < 20; i++ {
			sink, _ = json.Marshal(map[string]any{"i": i, "s": "some text", "f": 1.5, "seq": r.Seq})
		}
		return nil
	}
	key := append([]byte("c/"), r.Key...)
	n := 0
	if v, ok := plugin.State.Get(key); ok {
		n, _ = strconv.Atoi(string(v))
	}
	n++
	plugin.State.Set(key, []byte(strconv.Itoa(n)))
	return plugin.Emit(output, plugin.Output{
		Key:     r.Key,
		Value:   []byte(strconv.Itoa(n)),
		Time:    r.Time,
		Headers: []plugin.Header{{Key: "seq", Value: []byte(strconv.FormatUint(r.Seq, 10))}},
	})
}

func onTimer(now time.Time) error {
	for k := range plugin.State.Keys([]byte("c/")) {
		v, _ := plugin.State.Get(k)
		if err := plugin.Emit(output, plugin.Output{Key: k[2:], Value: append([]byte("total="), v...), Time: now.UnixNano()}); err != nil {
			return err
		}
		plugin.State.Delete(k)
	}
	return nil
}

func init() {
	plugin.OnInit(func(c plugin.Config) error {
		output = c.String("output", output)
		plugin.Logf(plugin.LevelInfo, "counter: output %s, host time %d", output, plugin.Now().Unix())
		return nil
	})
	plugin.OnRecord(onRecord)
	plugin.OnTimer(onTimer)
}

func main() {}

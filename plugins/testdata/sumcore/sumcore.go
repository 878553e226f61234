// Package sumcore is the logic of the sum test plugins (sum, summerge),
// built by the plugins tests: per record key, the running sum of the
// records' integer values, kept in keyed state under the record key
// itself (so state_by_key holds) and emitted on every record. With config
// total=true it also keeps a sum of everything under "total", state that
// is not per key.
package sumcore

import (
	"strconv"
	"time"

	"github.com/edgehub/edgehub/sdk/plugin"
)

var (
	output = "out"
	total  bool
	flush  bool
	// MergeMode is config merge_mode: how summerge's eh_state_merge
	// misbehaves ("" answers max(a, b)), for the ABI tests.
	MergeMode string
)

func onRecord(r *plugin.Record) error {
	n, _ := strconv.ParseInt(string(r.Value), 10, 64)
	var sum int64
	if v, ok := plugin.State.Get(r.Key); ok {
		sum, _ = strconv.ParseInt(string(v), 10, 64)
	}
	sum += n
	plugin.State.Set(r.Key, []byte(strconv.FormatInt(sum, 10)))
	if total {
		var t int64
		if v, ok := plugin.State.Get([]byte("total")); ok {
			t, _ = strconv.ParseInt(string(v), 10, 64)
		}
		plugin.State.Set([]byte("total"), []byte(strconv.FormatInt(t+n, 10)))
	}
	return plugin.Emit(output, plugin.Output{Key: r.Key, Value: []byte(strconv.FormatInt(sum, 10)), Time: r.Time})
}

// onTimer (config flush=true) emits each key's sum as "total=N" and
// deletes it: the totals of a key add up to its produced sum once every
// shard's state is flushed.
func onTimer(now time.Time) error {
	if !flush {
		return nil
	}
	var keys [][]byte
	for k := range plugin.State.Keys(nil) {
		keys = append(keys, append([]byte(nil), k...))
	}
	for _, k := range keys {
		v, _ := plugin.State.Get(k)
		if err := plugin.Emit(output, plugin.Output{Key: k, Value: append([]byte("total="), v...), Time: now.UnixNano()}); err != nil {
			return err
		}
		plugin.State.Delete(k)
	}
	return nil
}

// Register installs the handlers.
func Register() {
	plugin.OnInit(func(c plugin.Config) error {
		output = c.String("output", output)
		total = c.String("total", "") == "true"
		MergeMode = c.String("merge_mode", "")
		flush = c.String("flush", "") == "true"
		return nil
	})
	plugin.OnRecord(onRecord)
	plugin.OnTimer(onTimer)
}

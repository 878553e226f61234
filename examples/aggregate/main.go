// Command aggregate is an edgehub plugin: per-key tumbling-window statistics
// (count, min, max, mean) over JSON sensor readings, emitted when a window
// closes. Build it with
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o aggregate.wasm .
//
// See README.md for its config and output.
package main

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"time"

	"github.com/edgehub/edgehub/sdk/plugin"
)

var (
	output   = "aggregates"
	field    = "value"
	window   = time.Minute
	lateness = 2 * time.Second
	idle     = time.Minute
)

// State layout (all per input shard):
//
//	"w" ‖ BE uint64 window end ‖ key → stats (32 bytes)
//	"m"                              → BE int64 max event time, BE int64 last ingest time
//
// Window keys sort by end time, so the timer closes windows with one ordered
// scan and stops at the first one still open.
var metaKey = []byte("m")

type stats struct {
	count         uint64
	sum, min, max float64
}

// Scratch buffers: per-record work allocates nothing (allocation is what
// costs most in a Go guest).
var keyBuf, valBuf, metaBuf []byte

func (s *stats) encode() []byte {
	b := binary.BigEndian.AppendUint64(valBuf[:0], s.count)
	b = binary.BigEndian.AppendUint64(b, math.Float64bits(s.sum))
	b = binary.BigEndian.AppendUint64(b, math.Float64bits(s.min))
	valBuf = binary.BigEndian.AppendUint64(b, math.Float64bits(s.max))
	return valBuf
}

func decodeStats(b []byte) (stats, bool) {
	if len(b) != 32 {
		return stats{}, false
	}
	return stats{
		count: binary.BigEndian.Uint64(b),
		sum:   math.Float64frombits(binary.BigEndian.Uint64(b[8:])),
		min:   math.Float64frombits(binary.BigEndian.Uint64(b[16:])),
		max:   math.Float64frombits(binary.BigEndian.Uint64(b[24:])),
	}, true
}

func windowKey(end int64, key []byte) []byte {
	keyBuf = append(keyBuf[:0], 'w')
	keyBuf = binary.BigEndian.AppendUint64(keyBuf, uint64(end))
	keyBuf = append(keyBuf, key...)
	return keyBuf
}

// noEvent is the max event time of a shard that has seen no reading yet.
const noEvent = math.MinInt64

func loadMeta() (maxEvent, lastIngest int64) {
	var ok bool
	if metaBuf, ok = plugin.State.AppendValue(metaBuf[:0], metaKey); ok && len(metaBuf) == 16 {
		return int64(binary.BigEndian.Uint64(metaBuf)), int64(binary.BigEndian.Uint64(metaBuf[8:]))
	}
	return noEvent, 0
}

// watermark is the event time up to which windows are closed: the largest
// timestamp seen minus the allowed lateness. It saturates instead of
// wrapping: with no reading yet (noEvent) nothing is closed, and a
// subtraction that wrapped to a huge positive value would close every
// window and drop every reading as late.
func watermark(maxEvent int64) int64 {
	if maxEvent < math.MinInt64+int64(lateness) {
		return math.MinInt64
	}
	return maxEvent - int64(lateness)
}

// windowEnd is the end of the window holding event time t, saturated at
// math.MaxInt64 for timestamps in the last window before it.
func windowEnd(t int64) int64 {
	size := int64(window)
	start := t - mod(t, size)
	if start > math.MaxInt64-size {
		return math.MaxInt64
	}
	return start + size
}

func storeMeta(maxEvent, lastIngest int64) {
	metaBuf = binary.BigEndian.AppendUint64(metaBuf[:0], uint64(maxEvent))
	metaBuf = binary.BigEndian.AppendUint64(metaBuf, uint64(lastIngest))
	plugin.State.Set(metaKey, metaBuf)
}

// reading extracts the numeric field of a JSON reading without decoding
// the whole document (allocation dominates a Go guest's cost).
func reading(v []byte) (float64, error) {
	x, ok := plugin.NumberField(v, field)
	if !ok {
		return 0, fmt.Errorf("no numeric %q field", field)
	}
	return x, nil
}

func onRecord(r *plugin.Record) error {
	if r.Key == nil || r.Value == nil {
		return nil // keyless readings and tombstones carry no sensor
	}
	x, err := reading(r.Value)
	if err != nil {
		plugin.Logf(plugin.LevelDebug, "skipping record %d: %v", r.Seq, err)
		return nil
	}
	t := r.Time
	if t == 0 {
		t = r.IngestTime
	}
	maxEvent, _ := loadMeta()
	end := windowEnd(t)
	if end <= watermark(maxEvent) {
		// Its window has closed already: counting it would change an
		// aggregate that was published.
		plugin.Logf(plugin.LevelDebug, "late reading for %s at %d dropped", r.Key, t)
		storeMeta(maxEvent, r.IngestTime)
		return nil
	}
	k := windowKey(end, r.Key)
	s, ok := stats{}, false
	var found bool
	if valBuf, found = plugin.State.AppendValue(valBuf[:0], k); found {
		s, ok = decodeStats(valBuf)
	}
	if !ok {
		s = stats{min: x, max: x}
	}
	s.count++
	s.sum += x
	s.min = math.Min(s.min, x)
	s.max = math.Max(s.max, x)
	plugin.State.Set(k, s.encode())
	storeMeta(max(maxEvent, t), r.IngestTime)
	return nil
}

// satAdd is a+b (b >= 0) saturated at math.MaxInt64.
func satAdd(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

func mod(a, b int64) int64 {
	m := a % b
	if m < 0 {
		m += b
	}
	return m
}

// onTimer closes windows: those whose end the event-time watermark (the
// largest timestamp seen, minus the allowed lateness) has passed, and every
// open window once the input has been idle for the idle period (by the
// firing time against the last record's ingest time, both replay-stable).
func onTimer(now time.Time) error {
	maxEvent, lastIngest := loadMeta()
	if lastIngest == 0 {
		return nil
	}
	wm := watermark(maxEvent)
	flushAll := now.UnixNano()-lastIngest >= int64(idle)
	closedEnd := int64(math.MinInt64)
	for k := range plugin.State.Keys([]byte{'w'}) {
		end := int64(binary.BigEndian.Uint64(k[1:9]))
		if end > wm && !flushAll {
			break
		}
		closedEnd = max(closedEnd, end)
		b, _ := plugin.State.Get(k)
		s, ok := decodeStats(b)
		plugin.State.Delete(k)
		if !ok {
			continue
		}
		key := k[9:]
		out, _ := json.Marshal(map[string]any{
			"key":          string(key),
			"window_start": time.Unix(0, end-int64(window)).UTC().Format(time.RFC3339Nano),
			"window_end":   time.Unix(0, end).UTC().Format(time.RFC3339Nano),
			"count":        s.count,
			"min":          s.min,
			"max":          s.max,
			"mean":         s.sum / float64(s.count),
		})
		if err := plugin.Emit(output, plugin.Output{Key: key, Value: out, Time: end}); err != nil {
			return err
		}
	}
	if closedEnd > wm {
		// Windows flushed early (idle input): readings that still belong
		// to them are late from now on, or they would be published twice.
		storeMeta(satAdd(closedEnd, int64(lateness)), lastIngest)
	}
	return nil
}

func onInit(c plugin.Config) error {
	var err error
	output = c.String("output", output)
	field = c.String("field", field)
	if window, err = c.Duration("window", window); err != nil {
		return err
	}
	if lateness, err = c.Duration("lateness", lateness); err != nil {
		return err
	}
	if idle, err = c.Duration("idle", window); err != nil {
		return err
	}
	if window <= 0 || lateness < 0 || idle <= 0 {
		return fmt.Errorf("window (%s) and idle (%s) must be positive, lateness (%s) not negative", window, idle, lateness)
	}
	return nil
}

func init() {
	plugin.OnInit(onInit)
	plugin.OnRecord(onRecord)
	plugin.OnTimer(onTimer)
}

func main() {}

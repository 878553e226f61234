// Command alert is an edgehub plugin: threshold and rate-of-change alerts
// over JSON sensor readings, de-bounced per sensor, written to an alerts
// stream. Build it with
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o alert.wasm .
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
	output     = "alerts"
	field      = "value"
	threshold  = math.Inf(1)
	hysteresis = 0.0
	rate       = math.Inf(1) // units per second
	debounce   = 30 * time.Second
)

// Per-sensor state, key "s" ‖ sensor:
//
//	f64 last value, i64 last time, i64 last threshold alert, i64 last rate alert, u8 above
type sensor struct {
	last      float64
	lastTime  int64
	thrAlert  int64
	rateAlert int64
	above     bool
	seen      bool
}

func load(key []byte) sensor {
	b, ok := plugin.State.Get(append([]byte{'s'}, key...))
	if !ok || len(b) != 33 {
		return sensor{}
	}
	return sensor{
		last:      math.Float64frombits(binary.BigEndian.Uint64(b)),
		lastTime:  int64(binary.BigEndian.Uint64(b[8:])),
		thrAlert:  int64(binary.BigEndian.Uint64(b[16:])),
		rateAlert: int64(binary.BigEndian.Uint64(b[24:])),
		above:     b[32] == 1,
		seen:      true,
	}
}

func (s *sensor) store(key []byte) {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 33), math.Float64bits(s.last))
	b = binary.BigEndian.AppendUint64(b, uint64(s.lastTime))
	b = binary.BigEndian.AppendUint64(b, uint64(s.thrAlert))
	b = binary.BigEndian.AppendUint64(b, uint64(s.rateAlert))
	if s.above {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	plugin.State.Set(append([]byte{'s'}, key...), b)
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

func alert(r *plugin.Record, kind string, x float64, t int64, detail map[string]any) error {
	a := map[string]any{
		"sensor": string(r.Key),
		"kind":   kind,
		"value":  x,
		"time":   time.Unix(0, t).UTC().Format(time.RFC3339Nano),
		"stream": r.Stream,
		"seq":    r.Seq,
	}
	for k, v := range detail {
		a[k] = v
	}
	out, _ := json.Marshal(a)
	return plugin.Emit(output, plugin.Output{
		Key:     r.Key,
		Value:   out,
		Time:    t,
		Headers: []plugin.Header{{Key: "alert", Value: []byte(kind)}},
	})
}

func onRecord(r *plugin.Record) error {
	if r.Key == nil || r.Value == nil {
		return nil
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
	s := load(r.Key)
	db := int64(debounce)
	// Threshold with hysteresis: alert on the upward crossing, re-arm only
	// once the value falls below threshold-hysteresis, and never alert more
	// often than the debounce period.
	if x > threshold && !s.above {
		s.above = true
		if s.thrAlert == 0 || t-s.thrAlert >= db {
			s.thrAlert = t
			if err := alert(r, "threshold", x, t, map[string]any{"threshold": threshold}); err != nil {
				return err
			}
		}
	} else if x <= threshold-hysteresis {
		s.above = false
	}
	// Rate of change between consecutive readings (event time).
	if s.seen && t > s.lastTime {
		perSec := (x - s.last) / (float64(t-s.lastTime) / 1e9)
		if math.Abs(perSec) > rate && (s.rateAlert == 0 || t-s.rateAlert >= db) {
			s.rateAlert = t
			if err := alert(r, "rate", x, t, map[string]any{"rate_per_second": perSec, "previous": s.last}); err != nil {
				return err
			}
		}
	}
	if !s.seen || t >= s.lastTime {
		s.last, s.lastTime = x, t
	}
	s.seen = true
	s.store(r.Key)
	return nil
}

func onInit(c plugin.Config) error {
	var err error
	output = c.String("output", output)
	field = c.String("field", field)
	if threshold, err = c.Float("threshold", threshold); err != nil {
		return err
	}
	if hysteresis, err = c.Float("hysteresis", hysteresis); err != nil {
		return err
	}
	if rate, err = c.Float("rate", rate); err != nil {
		return err
	}
	if debounce, err = c.Duration("debounce", debounce); err != nil {
		return err
	}
	if hysteresis < 0 || rate <= 0 || debounce < 0 {
		return fmt.Errorf("hysteresis (%g) and debounce (%s) must not be negative, rate (%g) must be positive", hysteresis, debounce, rate)
	}
	return nil
}

func init() {
	plugin.OnInit(onInit)
	plugin.OnRecord(onRecord)
}

func main() {}

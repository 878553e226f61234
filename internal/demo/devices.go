package demo

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgehub/edgehub/sdk"
)

// The alert plugin's settings, and the sensors' spikes that cross them.
const (
	alertThreshold = 30.0 // °C
	alertRate      = 40.0 // °C per second
	spikeEvery     = 20 * time.Second
	spikeLength    = time.Second
)

// sensor is a simulated device: its own QUIC connection to its edge hub,
// producing a JSON reading `{"value": 21.4, "unit": "C"}` keyed by its id
// (what the aggregate and alert plugins read) rate times a second.
type sensor struct {
	id     string // "berlin/temp-1"
	edge   *hubSpec
	index  int // spikes are staggered by index
	rate   int
	caFile string // the edge's certificate

	sent, failed atomic.Int64
	lastErr      atomic.Value // string
}

// value is the reading at elapsed time since the demo started: about 21 °C
// with a slow wave and noise, and a spike above the alert threshold for
// spikeLength every spikeEvery, the first one a few seconds in.
func (s *sensor) value(elapsed time.Duration, rng *rand.Rand) float64 {
	phase := float64(s.index) * 1.3
	v := 21 + 1.5*math.Sin(2*math.Pi*elapsed.Seconds()/60+phase) + rng.NormFloat64()*0.2
	offset := 2*time.Second + time.Duration(s.index)*1500*time.Millisecond
	if elapsed >= offset && (elapsed-offset)%spikeEvery < spikeLength {
		v = alertThreshold + 3 + rng.Float64()*3
	}
	return math.Round(v*100) / 100
}

// run produces until ctx ends, then flushes what is in flight.
func (s *sensor) run(ctx context.Context, t0 time.Time) error {
	c, err := sdk.Dial(ctx, s.edge.quic, sdk.Options{CAFile: s.caFile})
	if err != nil {
		return fmt.Errorf("demo: sensor %s: %w", s.id, err)
	}
	defer c.Close()
	p, err := c.Producer(ctx, "readings", sdk.ProducerOptions{})
	if err != nil {
		return fmt.Errorf("demo: sensor %s: %w", s.id, err)
	}
	rng := rand.New(rand.NewPCG(uint64(s.index), uint64(len(s.id))))
	key := []byte(s.id)
	tick := time.NewTicker(time.Second / time.Duration(s.rate))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			// Flush with a bound of its own: ctx is done.
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if err := p.Close(fctx); err != nil {
				return fmt.Errorf("demo: sensor %s: close: %w", s.id, err)
			}
			return nil
		case now := <-tick.C:
			v := strconv.AppendFloat([]byte(`{"value":`), s.value(now.Sub(t0), rng), 'f', -1, 64)
			rec := sdk.Record{Key: key, Value: append(v, `,"unit":"C"}`...), Time: now.UnixNano()}
			err := p.SendAsync(ctx, rec, func(_ sdk.Position, err error) {
				if err != nil {
					s.failed.Add(1)
					s.lastErr.Store(err.Error())
					return
				}
				s.sent.Add(1)
			})
			if err != nil && ctx.Err() == nil {
				s.failed.Add(1)
				s.lastErr.Store(err.Error())
			}
		}
	}
}

// fleet is every sensor of the demo.
type fleet []*sensor

// newFleet makes perEdge sensors for each edge; they trust their edge's
// self-signed certificate in demoDir.
func newFleet(edges []*hubSpec, perEdge, rate int, demoDir string) fleet {
	var f fleet
	for _, e := range edges {
		for i := range perEdge {
			f = append(f, &sensor{id: fmt.Sprintf("%s/temp-%d", e.site, i+1), edge: e, index: len(f), rate: rate, caFile: e.certFile(demoDir)})
		}
	}
	return f
}

// run runs every sensor until ctx ends; errors are reported through report
// (a sensor that cannot connect is retried by the SDK meanwhile).
func (f fleet) run(ctx context.Context, t0 time.Time, report func(error)) *sync.WaitGroup {
	var wg sync.WaitGroup
	for _, s := range f {
		wg.Go(func() {
			if err := s.run(ctx, t0); err != nil && ctx.Err() == nil {
				report(err)
			}
		})
	}
	return &wg
}

func (f fleet) totals() (sent, failed int64, lastErr string) {
	for _, s := range f {
		sent += s.sent.Load()
		failed += s.failed.Load()
		if e, ok := s.lastErr.Load().(string); ok {
			lastErr = e
		}
	}
	return sent, failed, lastErr
}

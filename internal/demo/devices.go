package demo

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
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

// sensor is a simulated device producing a JSON reading
// `{"value": 21.4, "unit": "C"}` keyed by its id (what the aggregate and
// alert plugins read) rate times a second: with its own QUIC connection to
// its edge hub (SDK producer), or, as the simplest devices do, with one
// HTTP POST per reading to the edge's HTTP ingest (docs/http.md).
type sensor struct {
	id     string // "berlin/temp-1"
	edge   *hubSpec
	index  int // spikes are staggered by index
	rate   int
	caFile string // the edge's certificate
	http   bool

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

func (s *sensor) reading(now, t0 time.Time, rng *rand.Rand) []byte {
	v := strconv.AppendFloat([]byte(`{"value":`), s.value(now.Sub(t0), rng), 'f', -1, 64)
	return append(v, `,"unit":"C"}`...)
}

func (s *sensor) fail(err error) {
	s.failed.Add(1)
	s.lastErr.Store(err.Error())
}

// run produces until ctx ends, then flushes what is in flight.
func (s *sensor) run(ctx context.Context, t0 time.Time) error {
	if s.http {
		return s.runHTTP(ctx, t0)
	}
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
			rec := sdk.Record{Key: key, Value: s.reading(now, t0, rng), Time: now.UnixNano()}
			err := p.SendAsync(ctx, rec, func(_ sdk.Position, err error) {
				if err != nil {
					s.fail(err)
					return
				}
				s.sent.Add(1)
			})
			if err != nil && ctx.Err() == nil {
				s.fail(err)
			}
		}
	}
}

// runHTTP posts each reading as the raw body of one record; the hub
// answers after the durable commit.
func (s *sensor) runHTTP(ctx context.Context, t0 time.Time) error {
	client := &http.Client{Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	rng := rand.New(rand.NewPCG(uint64(s.index), uint64(len(s.id))))
	tick := time.NewTicker(time.Second / time.Duration(s.rate))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-tick.C:
			q := url.Values{"key": {s.id}, "time": {now.UTC().Format(time.RFC3339Nano)}}
			u := s.edge.adminURL() + "/v1/streams/readings/records?" + q.Encode()
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(s.reading(now, t0, rng)))
			if err != nil {
				return fmt.Errorf("demo: sensor %s: %w", s.id, err)
			}
			req.Header.Set("Content-Type", "application/json")
			resp, err := client.Do(req)
			if err != nil {
				if ctx.Err() == nil {
					s.fail(err)
				}
				continue
			}
			msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				s.fail(fmt.Errorf("POST %s: %s: %s", u, resp.Status, bytes.TrimSpace(msg)))
				continue
			}
			s.sent.Add(1)
		}
	}
}

// fleet is every sensor of the demo.
type fleet []*sensor

// newFleet makes perEdge sensors for each edge, the last of several over
// HTTP; the others trust their edge's self-signed certificate in demoDir.
func newFleet(edges []*hubSpec, perEdge, rate int, demoDir string) fleet {
	var f fleet
	for _, e := range edges {
		for i := range perEdge {
			f = append(f, &sensor{id: fmt.Sprintf("%s/temp-%d", e.site, i+1), edge: e, index: len(f), rate: rate,
				caFile: e.certFile(demoDir), http: perEdge > 1 && i == perEdge-1})
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

// overHTTP counts the HTTP sensors.
func (f fleet) overHTTP() int {
	n := 0
	for _, s := range f {
		if s.http {
			n++
		}
	}
	return n
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

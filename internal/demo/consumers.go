package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/edgehub/edgehub/sdk"
)

// groupName is the consumer group reading the aggregates at the region.
const groupName = "analytics"

// aggregate is the aggregate plugin's output (examples/aggregate/README.md).
type aggregate struct {
	Key         string    `json:"key"`
	WindowStart time.Time `json:"window_start"`
	WindowEnd   time.Time `json:"window_end"`
	Count       int64     `json:"count"`
	Min         float64   `json:"min"`
	Max         float64   `json:"max"`
	Mean        float64   `json:"mean"`
	origin      string
}

// alert is the alert plugin's output (examples/alert/README.md).
type alert struct {
	Sensor    string    `json:"sensor"`
	Kind      string    `json:"kind"`
	Value     float64   `json:"value"`
	Time      time.Time `json:"time"`
	Threshold float64   `json:"threshold"`
	Rate      float64   `json:"rate_per_second"`
	origin    string
}

// region is what the demo's applications at the region have read: a
// consumer group over the aggregates, a subscription to the alerts.
type region struct {
	mu       sync.Mutex
	latest   map[string]aggregate // by sensor
	consumed int64                // aggregates the group has read
	alerts   []alert              // every alert of this run read, in order
	nAlerts  int64
	// since is when this run started: windows and alerts from before
	// (a demo run again on the same --data) are not shown.
	since time.Time
}

func newRegion(since time.Time) *region {
	return &region{latest: map[string]aggregate{}, since: since}
}

// member runs one member of the group until ctx ends, then commits and
// leaves.
func (r *region) member(ctx context.Context, addr, caFile, id string) error {
	c, err := sdk.Dial(ctx, addr, sdk.Options{CAFile: caFile})
	if err != nil {
		return fmt.Errorf("demo: group member %s: %w", id, err)
	}
	defer c.Close()
	g, err := c.JoinGroup(ctx, groupName, "aggregates", sdk.GroupOptions{MemberID: id, SessionTimeout: 3 * time.Second})
	if err != nil {
		return fmt.Errorf("demo: group member %s: %w", id, err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		g.Close(cctx)
	}()
	for {
		m, err := g.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("demo: group member %s: %w", id, err)
		}
		var a aggregate
		if json.Unmarshal(m.Record.Value, &a) != nil {
			continue
		}
		a.origin = originHub(m.Record.Origin.Hub)
		r.mu.Lock()
		r.consumed++
		if a.WindowEnd.After(r.since) && a.WindowEnd.After(r.latest[a.Key].WindowEnd) {
			r.latest[a.Key] = a
		}
		r.mu.Unlock()
	}
}

// watchAlerts follows the alerts stream until ctx ends.
func (r *region) watchAlerts(ctx context.Context, addr, caFile string) error {
	c, err := sdk.Dial(ctx, addr, sdk.Options{CAFile: caFile})
	if err != nil {
		return fmt.Errorf("demo: alerts: %w", err)
	}
	defer c.Close()
	sub, err := c.Subscribe(ctx, "alerts", sdk.ConsumeOptions{From: sdk.FromEarliest()})
	if err != nil {
		return fmt.Errorf("demo: alerts: %w", err)
	}
	defer sub.Close()
	for {
		m, err := sub.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("demo: alerts: %w", err)
		}
		var a alert
		if json.Unmarshal(m.Record.Value, &a) != nil {
			continue
		}
		if a.Time.Before(r.since) {
			continue // an earlier run's
		}
		a.origin = originHub(m.Record.Origin.Hub)
		r.mu.Lock()
		r.nAlerts++
		r.alerts = append(r.alerts, a)
		r.mu.Unlock()
	}
}

// originHub is the hub of a record's origin: a plugin's output is from
// "HUB/plugin/NAME/...".
func originHub(origin string) string {
	hub, _, _ := strings.Cut(origin, "/")
	return hub
}

package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"
)

// The admin API's answers the summary reads (docs/admin-api.md).
type streamsResp struct {
	Streams []struct {
		Name    string `json:"name"`
		Records int64  `json:"records"`
	} `json:"streams"`
}

type peersResp struct {
	Members []struct {
		Name     string `json:"name"`
		State    string `json:"state"`
		TLSError string `json:"tls_error"`
	} `json:"members"`
	Pulls []struct {
		State string `json:"state"`
	} `json:"pulls"`
}

type groupResp struct {
	Lag     int64 `json:"lag"`
	Members []struct {
		ID string `json:"id"`
	} `json:"members"`
}

// getJSON GETs an admin API path into v.
func getJSON(ctx context.Context, client *http.Client, base, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
	if err != nil {
		return fmt.Errorf("demo: GET %s%s: %w", base, path, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("demo: GET %s%s: %w", base, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("demo: GET %s%s: %s: %s", base, path, resp.Status, strings.TrimSpace(string(b)))
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("demo: GET %s%s: %w", base, path, err)
	}
	return nil
}

// records returns a hub's record count per stream.
func records(ctx context.Context, client *http.Client, h *hubSpec) (map[string]int64, error) {
	var s streamsResp
	if err := getJSON(ctx, client, h.adminURL(), "/v1/streams", &s); err != nil {
		return nil, err
	}
	m := make(map[string]int64, len(s.Streams))
	for _, st := range s.Streams {
		m[st.Name] = st.Records
	}
	return m, nil
}

// summary prints the live summary, one block per tick.
type summary struct {
	w      io.Writer
	client *http.Client
	hubs   []*hubSpec // region first
	t0     time.Time
	prev   map[string]int64 // readings per edge at prevT
	prevT  time.Time
	// base is the readings per edge when this run started: a demo run
	// again on the same --data finds the last run's records.
	base   map[string]int64
	fleet  fleet
	region *region
	// shownAlerts counts region.alerts printed already.
	shownAlerts int
}

// baseline samples the edges' readings before the sensors send, so the
// first rate counts only this run's records.
func (s *summary) baseline(ctx context.Context) {
	s.base = map[string]int64{}
	for _, e := range s.hubs[1:] {
		if c, err := records(ctx, s.client, e); err == nil {
			s.base[e.name], s.prev[e.name] = c["readings"], c["readings"]
		}
	}
	s.prevT = time.Now()
}

func (s *summary) print(ctx context.Context, now time.Time) {
	var b strings.Builder
	el := now.Sub(s.t0).Round(time.Second)
	prefix := fmt.Sprintf("[%2d:%02d] ", int(el.Minutes()), int(el.Seconds())%60)
	indent := strings.Repeat(" ", len(prefix))
	line := func(format string, args ...any) {
		b.WriteString(prefix)
		fmt.Fprintf(&b, format, args...)
		b.WriteByte('\n')
		prefix = indent
	}
	counts := map[string]map[string]int64{}
	for _, h := range s.hubs {
		if c, err := records(ctx, s.client, h); err == nil {
			counts[h.name] = c
		} else {
			line("%s: %v", h.name, err)
		}
	}
	region, edges := s.hubs[0], s.hubs[1:]

	var rd []string
	for _, e := range edges {
		n := counts[e.name]["readings"]
		prevN, prevT := s.prev[e.name], s.prevT
		if prevT.IsZero() {
			prevT = s.t0
		}
		rate := float64(n-prevN) / now.Sub(prevT).Seconds()
		if b := s.base[e.name]; b > 0 {
			rd = append(rd, fmt.Sprintf("%s %.0f/s (%d, %d from earlier runs)", e.name, rate, n, b))
		} else {
			rd = append(rd, fmt.Sprintf("%s %.0f/s (%d)", e.name, rate, n))
		}
		s.prev[e.name] = n
	}
	s.prevT = now
	sent, failed, lastErr := s.fleet.totals()
	devices := fmt.Sprintf("%d sensors, %d sent", len(s.fleet), sent)
	if n := s.fleet.overHTTP(); n > 0 {
		devices = fmt.Sprintf("%d sensors, %d over HTTP, %d sent", len(s.fleet), n, sent)
	}
	if failed > 0 {
		devices += fmt.Sprintf(", %d failed (%s)", failed, lastErr)
	}
	line("readings    %s  (%s)", strings.Join(rd, "  "), devices)
	// Replication lag as the region sees it: what the edges hold of the
	// replicated streams that it does not yet (the counts are read a few
	// milliseconds apart, so a record in flight shows as lag).
	var lag []string
	for _, st := range []string{"aggregates", "alerts"} {
		var parts []string
		var sum int64
		for _, h := range edges {
			parts = append(parts, fmt.Sprintf("%s %d", h.name, counts[h.name][st]))
			sum += counts[h.name][st]
		}
		line("%-11s %s  -> %s %d", st, strings.Join(parts, " + "), region.name, counts[region.name][st])
		lag = append(lag, fmt.Sprintf("%d %s", max(sum-counts[region.name][st], 0), st))
	}
	var p peersResp
	if err := getJSON(ctx, s.client, region.adminURL(), "/v1/peers", &p); err == nil {
		states := map[string]int{}
		for _, pl := range p.Pulls {
			states[pl.State]++
		}
		var st []string
		for _, k := range slices.Sorted(maps.Keys(states)) {
			st = append(st, fmt.Sprintf("%d %s", states[k], k))
		}
		alive := 0
		for _, m := range p.Members {
			if m.State == "alive" {
				alive++
			}
			if m.TLSError != "" {
				line("! %s: TLS: %s", m.Name, m.TLSError)
			}
		}
		pulls := "none yet"
		if len(st) > 0 {
			pulls = strings.Join(st, ", ")
		}
		line("federation  %d/%d members alive, pulls to %s: %s; lag %s", alive, len(s.hubs), region.name, pulls, strings.Join(lag, ", "))
	}
	var g groupResp
	s.region.mu.Lock()
	consumed := s.region.consumed
	s.region.mu.Unlock()
	if err := getJSON(ctx, s.client, region.adminURL(), "/v1/groups/"+groupName, &g); err == nil {
		line("group       %s at %s: %d members, %d aggregates consumed, lag %d", groupName, region.name, len(g.Members), consumed, g.Lag)
	} else {
		line("group       %s at %s: waiting for the aggregates to arrive", groupName, region.name)
	}

	s.region.mu.Lock()
	latest := make([]aggregate, 0, len(s.region.latest))
	for _, a := range s.region.latest {
		latest = append(latest, a)
	}
	alerts := slices.Clone(s.region.alerts[min(s.shownAlerts, len(s.region.alerts)):])
	nAlerts := s.region.nAlerts
	s.region.mu.Unlock()
	s.shownAlerts += len(alerts)
	// The latest window of each sensor, one line per site.
	slices.SortFunc(latest, func(a, b aggregate) int { return strings.Compare(a.Key, b.Key) })
	for i := 0; i < len(latest); {
		site, _, _ := strings.Cut(latest[i].Key, "/")
		var parts []string
		j := i
		for ; j < len(latest) && strings.HasPrefix(latest[j].Key, site+"/"); j++ {
			a := latest[j]
			parts = append(parts, fmt.Sprintf("%s %.1f [%.1f..%.1f]", a.Key, a.Mean, a.Min, a.Max))
		}
		line("window      %s-%s  %s", latest[i].WindowStart.Local().Format("15:04:05"),
			latest[i].WindowEnd.Local().Format("15:04:05"), strings.Join(parts, "  "))
		i = j
	}
	const maxAlerts = 4
	for i, a := range alerts {
		if i == maxAlerts {
			line("alert       ... and %d more (%d in all)", len(alerts)-maxAlerts, nAlerts)
			break
		}
		what := fmt.Sprintf("%.2f above %g", a.Value, a.Threshold)
		if a.Kind == "rate" {
			what = fmt.Sprintf("%.2f, changing %+.0f/s", a.Value, a.Rate)
		}
		line("alert       %s %s: %s at %s (from %s)", a.Sensor, a.Kind, what, a.Time.Local().Format("15:04:05.000"), a.origin)
	}
	if ctx.Err() != nil {
		return // stopping: the requests failed half-way
	}
	io.WriteString(s.w, b.String())
}

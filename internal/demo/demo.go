package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Config configures Run.
type Config struct {
	// DataDir holds everything the demo writes; "" makes a fresh directory
	// under os.TempDir. It is kept when the demo ends.
	DataDir string
	// Duration stops the demo after this long; 0 runs until ctx ends.
	Duration time.Duration
	// Interval between two summaries (default 2s).
	Interval time.Duration
	// Window is the aggregate plugin's window (default 5s).
	Window time.Duration
	// Sensors per edge hub (default 3) and readings per second each
	// (default 10).
	Sensors, Rate int
	// Plugins is a directory with a prebuilt aggregate.wasm and alert.wasm;
	// "" builds them from Source.
	Plugins string
	// Source is the edgehub source tree the example plugins are built
	// from; "" means the module holding the current directory.
	Source string
	// Executable is the hub binary the hubs run (`hub serve`); "" means
	// this process's executable.
	Executable string
	// Out receives the demo's output (default os.Stdout).
	Out io.Writer
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{Interval: 2 * time.Second, Window: 5 * time.Second, Sensors: 3, Rate: 10, Out: os.Stdout}
}

// Validate reports every invalid setting at once.
func (c Config) Validate() error {
	var errs []error
	if c.Duration < 0 {
		errs = append(errs, fmt.Errorf("duration %s is negative", c.Duration))
	}
	if c.Interval < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("interval %s is below 100ms", c.Interval))
	}
	if c.Window < time.Second {
		errs = append(errs, fmt.Errorf("window %s is below 1s", c.Window))
	}
	if c.Sensors < 1 || c.Sensors > 100 {
		errs = append(errs, fmt.Errorf("sensors %d is not within 1..100", c.Sensors))
	}
	if c.Rate < 1 || c.Rate > 1000 {
		errs = append(errs, fmt.Errorf("rate %d is not within 1..1000", c.Rate))
	}
	if c.Out == nil {
		errs = append(errs, errors.New("no output"))
	}
	return errors.Join(errs...)
}

// stopGrace bounds each hub's shutdown before it is killed.
const stopGrace = 20 * time.Second

// Run runs the demo until ctx ends or cfg.Duration has passed, then stops
// everything it started and returns nil. It fails if a hub cannot start
// or exits while the demo runs.
func Run(ctx context.Context, cfg Config) (err error) {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	out := cfg.Out
	exe := cfg.Executable
	if exe == "" {
		if exe, err = os.Executable(); err != nil {
			return fmt.Errorf("demo: hub executable: %w", err)
		}
	}
	dir := cfg.DataDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "hub-demo-"); err != nil {
			return fmt.Errorf("demo: data dir: %w", err)
		}
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("demo: data dir: %w", err)
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return fmt.Errorf("demo: data dir: %w", err)
	}
	fmt.Fprintf(out, "hub demo: three federated hubs on loopback, simulated sensors, the aggregate and alert plugins\n")
	fmt.Fprintf(out, "  data dir    %s\n", dir)
	defer func() {
		fmt.Fprintf(out, "hub demo: stopped; hub configs, logs and data are kept in %s\n", dir)
	}()

	hubs := topology()
	region, edges := hubs[0], hubs[1:]
	if err := pickPorts(hubs); err != nil {
		return err
	}
	gossipKey := filepath.Join(dir, "gossip.keys")
	if err := ensureGossipKey(gossipKey); err != nil {
		return err
	}
	fmt.Fprintf(out, "  plugins     building examples/aggregate and examples/alert for wasip1 ...")
	agg, alrt, how, err := plugins(ctx, cfg.Plugins, cfg.Source, filepath.Join(dir, "plugins"))
	if err != nil {
		fmt.Fprintln(out)
		if ctx.Err() != nil {
			return nil // interrupted while building
		}
		return err
	}
	fmt.Fprintf(out, " done (%s)\n", how)

	client := &http.Client{Timeout: 3 * time.Second}
	var procs []*proc
	defer func() {
		// The edges at once, each with its own bound, then the region
		// (the edges' leave reaches it; its own then waits for no one).
		errs := make([]error, len(procs))
		for _, last := range []bool{false, true} {
			var wg sync.WaitGroup
			for i, p := range procs {
				if (p.spec == region) != last {
					continue
				}
				wg.Go(func() {
					if err := p.stop(stopGrace); err != nil {
						errs[i] = fmt.Errorf("demo: stop %s: %w", p.spec.name, err)
					}
				})
			}
			wg.Wait()
		}
		if e := errors.Join(errs...); e != nil && err == nil {
			err = e
		}
	}()
	ps := pluginSettings{aggregate: agg, alert: alrt, window: cfg.Window}
	// The region first: the edges join it.
	for _, h := range hubs {
		p, err := startHub(ctx, exe, h, hubs, filepath.Join(dir, h.name), gossipKey, ps, client)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		procs = append(procs, p)
	}
	for _, h := range hubs {
		role := "edge, plugins agg and alert"
		if h == region {
			role = "region, group " + groupName
		}
		fmt.Fprintf(out, "  %-11s quic %s  admin %s  (%s; %s)\n", h.name, h.quic, h.adminURL(), role, filepath.Join(h.name, "hub.log"))
	}
	fmt.Fprintf(out, "  dashboard   %s/\n", region.adminURL())
	fmt.Fprintf(out, "  federation  TLS verified by certificate pins in encrypted gossip (gossip.keys, no CA); try: hub peers --admin %s\n", region.adminURL())
	how = "over QUIC"
	if cfg.Sensors > 1 {
		how = fmt.Sprintf("over QUIC, temp-%d over HTTP", cfg.Sensors)
	}
	fmt.Fprintf(out, "  sensors     %d per edge, %d JSON readings/s each %s; windows of %s (mean [min..max]), alerts above %g\n",
		cfg.Sensors, cfg.Rate, how, cfg.Window, alertThreshold)
	if cfg.Duration > 0 {
		fmt.Fprintf(out, "Running for %s (Ctrl-C stops it sooner).\n", cfg.Duration)
	} else {
		fmt.Fprintf(out, "Ctrl-C stops the demo.\n")
	}

	work, stop := context.WithCancel(ctx)
	defer stop()
	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		work, cancel = context.WithTimeout(work, cfg.Duration)
		defer cancel()
	}
	problems := make(chan error, 16)
	report := func(err error) {
		select {
		case problems <- err:
		default:
		}
	}
	t0 := time.Now()
	sum := &summary{w: out, client: client, hubs: hubs, t0: t0, prev: map[string]int64{}}
	sum.baseline(work)
	sensors := newFleet(edges, cfg.Sensors, cfg.Rate, dir)
	var wg sync.WaitGroup
	defer wg.Wait() // before the hubs stop (deferred earlier, runs later)
	defer stop()
	sensorsDone := sensors.run(work, t0, report)
	wg.Go(sensorsDone.Wait)
	reg := newRegion(t0)
	wg.Go(func() {
		// The region creates the streams from the edges' gossiped
		// definitions: wait for them before joining.
		for {
			c, err := records(work, client, region)
			if err == nil {
				if _, ok := c["aggregates"]; ok {
					if _, ok := c["alerts"]; ok {
						break
					}
				}
			}
			select {
			case <-work.Done():
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
		var inner sync.WaitGroup
		for i := range 2 {
			inner.Go(func() {
				if err := reg.member(work, region.quic, region.certFile(dir), fmt.Sprintf("%s-%d", groupName, i+1)); err != nil {
					report(err)
				}
			})
		}
		inner.Go(func() {
			if err := reg.watchAlerts(work, region.quic, region.certFile(dir)); err != nil {
				report(err)
			}
		})
		inner.Wait()
	})

	sum.fleet, sum.region = sensors, reg
	tick := time.NewTicker(cfg.Interval)
	defer tick.Stop()
	for {
		select {
		case <-work.Done():
			fmt.Fprintf(out, "hub demo: stopping (sensors, consumers, then the hubs) ...\n")
			return nil
		case err := <-problems:
			fmt.Fprintf(out, "! %v\n", err)
		case now := <-tick.C:
			if work.Err() != nil {
				continue // stopping: the next round returns
			}
			for _, p := range procs {
				if p.exited() {
					return p.failure()
				}
			}
			sum.print(work, now)
		}
	}
}

// startHub writes h's hub.toml, starts it and waits until it is ready. A
// port taken since pickPorts (by anyone) fails the start: the hub is then
// given other ports and started again, a few times.
func startHub(ctx context.Context, exe string, h *hubSpec, hubs []*hubSpec, dir, gossipKey string, ps pluginSettings, client *http.Client) (*proc, error) {
	region := hubs[0]
	for attempt := 1; ; attempt++ {
		file, err := h.writeConfig(dir, gossipKey, region, ps)
		if err != nil {
			return nil, err
		}
		p, err := start(exe, h, dir, file)
		if err != nil {
			return nil, err
		}
		err = p.waitReady(ctx, client)
		if err == nil {
			return p, nil
		}
		p.stop(stopGrace)
		if attempt == 3 || !p.exited() || !strings.Contains(tail(p.logFile, 15), "address already in use") {
			return nil, err
		}
		if err := repickPorts(h, hubs); err != nil {
			return nil, err
		}
	}
}

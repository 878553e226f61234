package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/edgehub/edgehub/store"
)

// Hub is a running edgehub server: the store plus the parts built on it.
//
// Parts plug in from their own files: New calls one builder per part (see
// the list in New); a builder may add routes to h.mux, register collectors
// on h.metrics, and append long-running components with h.add.
type Hub struct {
	cfg     Config
	logger  *slog.Logger
	store   *store.Store
	mux     *http.ServeMux       // admin API routes; patterns "METHOD /v1/..."
	metrics *prometheus.Registry // served at /metrics

	components  []component
	userListers []func(stream string) []string // see addStreamUsers
	admin       *adminServer
	dataPlane   *dataPlane             // QUIC server; see dataplane.go
	federation  *federation            // gossip and replication, nil alone; see federation.go
	reshards    *prometheus.CounterVec // see reshard.go
	autosplit   *autosplitter          // see autosplit.go
	ready       atomic.Bool
	stopBy      atomic.Pointer[time.Time] // the shutdown's deadline, once Run began it

	closeOnce sync.Once
	closeErr  error
}

// component is a long-running part of the hub. Run blocks until ctx ends (or
// the part fails) and must return promptly after; Close releases what the
// part holds and must be idempotent. Close is called after Run returned, or
// without Run if the hub failed to start.
type component interface {
	Run(ctx context.Context) error
	Close() error
}

// New builds a hub from cfg: it validates cfg, opens the store, declares the
// configured streams and binds the listeners. On any error it releases what
// it had opened and returns the error: a hub never half-starts.
func New(cfg Config) (*Hub, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("hub: invalid config:\n%w", err)
	}
	h := &Hub{
		cfg:     cfg,
		logger:  cfg.Logger,
		mux:     http.NewServeMux(),
		metrics: prometheus.NewRegistry(),
	}
	for _, build := range []func() error{
		h.openStore,
		h.checkIdentity,
		h.declareStreams,
		h.addMetrics,
		h.addAdmin,
		h.addResharding,
		h.addAutosplit,
		h.addPlugins,
		h.addDataPlane,
		h.addHTTPIngest,
		h.addGroups,
		h.addFederation,
		// Parts plug in here, one line each (e.g. h.addDataPlane).
	} {
		if err := build(); err != nil {
			h.Close()
			return nil, err
		}
	}
	return h, nil
}

// add registers a long-running component; Run runs it and Close closes it
// (in reverse order of registration).
func (h *Hub) add(c component) { h.components = append(h.components, c) }

// Config returns the configuration the hub runs with.
func (h *Hub) Config() Config { return h.cfg }

// Store returns the hub's store.
func (h *Hub) Store() *store.Store { return h.store }

// ReloadKeys re-reads the gossip secret key file now instead of at the next
// check (every 10 s; hub serve calls it on SIGHUP). It fails when
// the hub is not federated or gossip is not encrypted, and a bad file
// leaves the keys in use unchanged.
func (h *Hub) ReloadKeys() error {
	if h.federation == nil {
		return errors.New("hub: reload keys: the hub is not federated")
	}
	return h.federation.gossip.ReloadKeys()
}

// AdminAddr returns the address the admin API listens on (useful with port 0).
func (h *Hub) AdminAddr() net.Addr { return h.admin.ln.Addr() }

// drainer is a component with a graceful stop: Drain stops taking new work,
// finishes what it has begun (acknowledging it) and returns, or returns
// ctx's error when ctx ends first. Run calls it, before Run's context ends,
// when the hub is asked to stop; a component that failed gets no drain.
type drainer interface {
	Drain(ctx context.Context) error
}

// Run serves until ctx ends or a component fails, then stops every
// component and returns. It returns nil when ctx ended.
//
// When ctx ends (SIGTERM), the hub drains before the components' contexts
// end: listeners stop accepting, produce sessions and HTTP ingest
// acknowledge what they had read, plugins commit the call they are in; then
// everything else stops (gossip is left). [hub] shutdown_timeout bounds it
// all: the drain gets half, stopping a quarter, Close the rest. Past its
// share Run logs what was still running and returns an error wrapping
// context.DeadlineExceeded.
func (h *Hub) Run(ctx context.Context) error {
	runCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	g, gctx := errgroup.WithContext(runCtx)
	running := newRunningSet()
	for _, c := range h.components {
		name := running.add(c)
		g.Go(func() error {
			defer running.done(name)
			return c.Run(gctx)
		})
	}
	h.ready.Store(true)
	h.logger.Info("hub ready", "name", h.cfg.Hub.Name, "admin", h.AdminURL(),
		"data_dir", h.cfg.Hub.DataDir, "streams", len(h.store.Streams()))
	select {
	case <-ctx.Done():
	case <-gctx.Done(): // a component failed
	}
	h.ready.Store(false)
	// The bound is shared out: the drain may take half of it, stopping the
	// parts a quarter, closing them and the store (Close) the rest.
	timeout := h.shutdownTimeout()
	start := time.Now()
	deadline := start.Add(timeout)
	h.stopBy.Store(&deadline)
	sctx, cancel := context.WithDeadline(context.Background(), start.Add(timeout*3/4))
	defer cancel()
	if ctx.Err() != nil && gctx.Err() == nil {
		h.logger.Info("hub draining", "shutdown_timeout", timeout.String())
		dctx, cancel := context.WithDeadline(sctx, start.Add(timeout/2))
		err := h.drain(dctx)
		cancel()
		if err != nil {
			h.logger.Error("hub: drain incomplete at shutdown_timeout; stopping anyway", "err", err)
		} else {
			h.logger.Info("hub drained", "took", time.Since(start).Round(time.Millisecond).String())
		}
	}
	stop()
	done := make(chan error, 1)
	go func() { done <- g.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-sctx.Done():
		pending := running.list()
		h.logger.Error("hub: shutdown_timeout passed; exiting with parts still running",
			"shutdown_timeout", timeout.String(), "pending", strings.Join(pending, ","))
		return fmt.Errorf("hub: shutdown: %s passed with %s still running: %w", timeout, strings.Join(pending, ", "), context.DeadlineExceeded)
	}
	if ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled)) {
		return nil
	}
	return err
}

// drain runs every component's Drain at once, within ctx.
func (h *Hub) drain(ctx context.Context) error {
	var g errgroup.Group
	for _, c := range h.components {
		if d, ok := c.(drainer); ok {
			g.Go(func() error { return d.Drain(ctx) })
		}
	}
	return g.Wait()
}

func (h *Hub) shutdownTimeout() time.Duration {
	if h.cfg.Hub.ShutdownTimeout > 0 {
		return time.Duration(h.cfg.Hub.ShutdownTimeout)
	}
	return DefaultShutdownTimeout
}

// runningSet names the components whose Run has not returned, for the log
// line of a shutdown past its bound.
type runningSet struct {
	mu    sync.Mutex
	names map[string]int
}

func newRunningSet() *runningSet { return &runningSet{names: map[string]int{}} }

// componentName names c in logs: its type, without the hub's package
// ("dataPlane", "federation", "plugins.Manager").
func componentName(c component) string {
	return strings.TrimPrefix(strings.TrimPrefix(fmt.Sprintf("%T", c), "*"), "hub.")
}

// add counts c in and returns its name.
func (s *runningSet) add(c component) string {
	name := componentName(c)
	s.mu.Lock()
	s.names[name]++
	s.mu.Unlock()
	return name
}

func (s *runningSet) done(name string) {
	s.mu.Lock()
	if s.names[name]--; s.names[name] == 0 {
		delete(s.names, name)
	}
	s.mu.Unlock()
}

func (s *runningSet) list() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for n, k := range s.names {
		if k > 1 {
			n = fmt.Sprintf("%s (%d)", n, k)
		}
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// Close stops the hub and releases its resources: components in reverse
// order, then the store. It is idempotent. After a shutdown that Run began,
// Close waits only until the shutdown_timeout's deadline: past it, it logs
// and returns an error while the rest closes in the background (the store's
// files are crash-safe; acknowledged records are already durable).
func (h *Hub) Close() error {
	h.closeOnce.Do(func() {
		done := make(chan error, 1)
		step := atomic.Pointer[string]{}
		go func() {
			h.ready.Store(false)
			var errs []error
			for i := len(h.components) - 1; i >= 0; i-- {
				name := componentName(h.components[i])
				step.Store(&name)
				errs = append(errs, h.components[i].Close())
			}
			if h.store != nil {
				name := "store"
				step.Store(&name)
				errs = append(errs, h.store.Close())
			}
			done <- errors.Join(errs...)
		}()
		var bound <-chan time.Time
		if d := h.stopBy.Load(); d != nil {
			t := time.NewTimer(max(time.Until(*d), 100*time.Millisecond))
			defer t.Stop()
			bound = t.C
		}
		select {
		case h.closeErr = <-done:
		case <-bound:
			pending := "?"
			if p := step.Load(); p != nil {
				pending = *p
			}
			h.logger.Error("hub: shutdown_timeout passed while closing; exiting", "pending", pending)
			h.closeErr = fmt.Errorf("hub: close: shutdown_timeout passed while closing %s: %w", pending, context.DeadlineExceeded)
		}
	})
	return h.closeErr
}

func (h *Hub) openStore() error {
	st, err := store.Open(h.cfg.StoreOptions())
	if err != nil {
		return fmt.Errorf("hub: open store: %w", err)
	}
	h.store = st
	return nil
}

// declareStreams creates the streams of the config; an existing stream gets
// its mutable settings updated, and a different shard count is an error.
func (h *Hub) declareStreams() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var errs []error
	for _, sc := range h.cfg.Streams {
		want := sc.StoreStreamConfig()
		st, err := h.store.Stream(sc.Name)
		if errors.Is(err, store.ErrStreamNotFound) {
			if _, err := h.store.CreateStream(ctx, want); err != nil {
				errs = append(errs, fmt.Errorf("hub: declare stream %q: %w", sc.Name, err))
			}
			continue
		} else if err != nil {
			errs = append(errs, fmt.Errorf("hub: declare stream %q: %w", sc.Name, err))
			continue
		}
		have := st.Config()
		if have.Shards != want.Shards {
			errs = append(errs, fmt.Errorf("hub: declare stream %q: config says %d shards but the stream has %d: %w",
				sc.Name, want.Shards, have.Shards, ErrShardsFixed))
			continue
		}
		// Keep meta set by other parts; the config owns the replication
		// and autosplit policies.
		// A copy: have must keep the stored meta for the comparison below
		// (sharing the map made a change of replicate or autosplit alone
		// look like no change).
		meta := make(map[string]string, len(have.Meta)+len(want.Meta))
		for k, v := range have.Meta {
			meta[k] = v
		}
		for k, v := range want.Meta {
			meta[k] = v
		}
		// A policy the config declared goes with its declaration; one set
		// through the API stays.
		if _, from, _, _ := decodeAutosplit(meta[MetaAutosplit]); sc.Autosplit == nil && from == autosplitFromConfig {
			delete(meta, MetaAutosplit)
		}
		// The config owns copies as it owns replicate: one copy (the
		// default) stores nothing.
		if _, ok := want.Meta[MetaCopies]; !ok {
			delete(meta, MetaCopies)
		}
		want.Meta = meta
		if streamConfigEqual(have, want) {
			continue
		}
		if err := h.store.UpdateStream(ctx, want); err != nil {
			errs = append(errs, fmt.Errorf("hub: declare stream %q: %w", sc.Name, err))
			continue
		}
		h.logger.Info("stream updated from config", "stream", sc.Name)
	}
	return errors.Join(errs...)
}

func streamConfigEqual(a, b store.StreamConfig) bool {
	if a.Name != b.Name || a.Shards != b.Shards || a.Retention != b.Retention || a.MaxBytes != b.MaxBytes ||
		a.Compact != b.Compact || a.TombstoneRetention != b.TombstoneRetention || len(a.Meta) != len(b.Meta) {
		return false
	}
	for k, v := range a.Meta {
		if bv, ok := b.Meta[k]; !ok || bv != v {
			return false
		}
	}
	return true
}

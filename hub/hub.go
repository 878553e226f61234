package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
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
	dataPlane   *dataPlane  // QUIC server; see dataplane.go
	federation  *federation // gossip and replication, nil alone; see federation.go
	ready       atomic.Bool

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

// AdminAddr returns the address the admin API listens on (useful with port 0).
func (h *Hub) AdminAddr() net.Addr { return h.admin.ln.Addr() }

// Run serves until ctx ends or a component fails, then stops every
// component and returns. It returns nil when ctx ended.
func (h *Hub) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	for _, c := range h.components {
		g.Go(func() error { return c.Run(gctx) })
	}
	h.ready.Store(true)
	h.logger.Info("hub ready", "name", h.cfg.Hub.Name, "admin", h.AdminURL(),
		"data_dir", h.cfg.Hub.DataDir, "streams", len(h.store.Streams()))
	<-gctx.Done()
	h.ready.Store(false)
	err := g.Wait()
	if ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled)) {
		return nil
	}
	return err
}

// Close stops the hub and releases its resources: components in reverse
// order, then the store. It is idempotent.
func (h *Hub) Close() error {
	h.closeOnce.Do(func() {
		h.ready.Store(false)
		var errs []error
		for i := len(h.components) - 1; i >= 0; i-- {
			errs = append(errs, h.components[i].Close())
		}
		if h.store != nil {
			errs = append(errs, h.store.Close())
		}
		h.closeErr = errors.Join(errs...)
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
		// Keep meta set by other parts; the config owns only the policy.
		meta := have.Meta
		if meta == nil {
			meta = map[string]string{}
		}
		for k, v := range want.Meta {
			meta[k] = v
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

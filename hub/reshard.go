package hub

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgehub/edgehub/store"
)

// addResharding adds the admin routes that split and merge shards
// (docs/resharding.md, docs/admin-api.md "Resharding") and their metrics.
// The store does the work in one transaction of the stream's file; the
// readers (subscriptions, groups, plugins, webhooks, replication) follow the
// new layout from store.Stream.LayoutChanged.
func (h *Hub) addResharding() error {
	h.reshards = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "edgehub_reshards_total",
		Help: "Reshards of a stream that took effect, by kind (split, merge, reshard) and trigger (api, auto).",
	}, []string{"stream", "kind", "trigger"})
	h.metrics.MustRegister(h.reshards)
	h.route("POST /v1/streams/{name}/split", h.splitStream)
	h.route("POST /v1/streams/{name}/merge", h.mergeStream)
	h.route("POST /v1/streams/{name}/reshard", h.reshardStream)
	return nil
}

// SplitRequest is the body of POST /v1/streams/{name}/split: split open
// shard Shard at hash At (16 hex digits, the first hash of the upper
// child; empty: the range's midpoint).
type SplitRequest struct {
	Shard uint32 `json:"shard"`
	At    string `json:"at,omitempty"`
}

// MergeRequest is the body of POST /v1/streams/{name}/merge: two open shards
// whose hash ranges are adjacent.
type MergeRequest struct {
	Shards []uint32 `json:"shards"`
}

// ReshardRequest is the body of POST /v1/streams/{name}/reshard: reach
// Shards open shards of even ranges in one step.
type ReshardRequest struct {
	Shards int `json:"shards"`
}

// reshardRetries bounds re-planning after store.ErrReshardBusy (another
// reshard of the stream ran between planning and committing).
const reshardRetries = 1

func (h *Hub) splitStream(w http.ResponseWriter, r *http.Request) error {
	var req SplitRequest
	if err := readJSON(w, r, &req); err != nil {
		return err
	}
	var at uint64
	if req.At != "" {
		v, err := strconv.ParseUint(req.At, 16, 64)
		if err != nil {
			return badRequest("split stream %q: at %q: want up to 16 hex digits", r.PathValue("name"), req.At)
		}
		if v == 0 {
			return badRequest("split stream %q: at 0: the upper child must start above the shard's first hash", r.PathValue("name"))
		}
		at = v
	}
	return h.reshard(w, r, "split", func(ctx context.Context, st *store.Stream) error {
		_, err := st.Split(ctx, req.Shard, at)
		return err
	})
}

func (h *Hub) mergeStream(w http.ResponseWriter, r *http.Request) error {
	var req MergeRequest
	if err := readJSON(w, r, &req); err != nil {
		return err
	}
	if len(req.Shards) != 2 {
		return badRequest("merge stream %q: %d shards given, want two adjacent open shards", r.PathValue("name"), len(req.Shards))
	}
	return h.reshard(w, r, "merge", func(ctx context.Context, st *store.Stream) error {
		_, err := st.Merge(ctx, req.Shards[0], req.Shards[1])
		return err
	})
}

func (h *Hub) reshardStream(w http.ResponseWriter, r *http.Request) error {
	var req ReshardRequest
	if err := readJSON(w, r, &req); err != nil {
		return err
	}
	if req.Shards < 1 {
		return badRequest("reshard stream %q: %d shards: want at least 1", r.PathValue("name"), req.Shards)
	}
	return h.reshard(w, r, "reshard", func(ctx context.Context, st *store.Stream) error {
		_, err := st.Reshard(ctx, req.Shards)
		return err
	})
}

// reshard runs one reshard of the named stream, re-planning once if another
// ran in between, and answers the stream with its new layout, which is
// durable when the store returns.
func (h *Hub) reshard(w http.ResponseWriter, r *http.Request, kind string, do func(context.Context, *store.Stream) error) error {
	name := r.PathValue("name")
	st, err := h.store.Stream(name)
	if err != nil {
		return err
	}
	for try := 0; ; try++ {
		if err = do(r.Context(), st); err == nil || try == reshardRetries || !errors.Is(err, store.ErrReshardBusy) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("%s stream %q: %w", kind, name, err)
	}
	h.reshards.WithLabelValues(name, kind, "api").Inc() // the store logs the reshard
	writeJSON(w, http.StatusOK, streamInfo(st, true, false))
	return nil
}

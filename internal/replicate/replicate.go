package replicate

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgehub/edgehub/internal/backoff"
	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/internal/tokenbucket"
	"github.com/edgehub/edgehub/quic"
	"github.com/edgehub/edgehub/store"
)

// Peer is another hub as membership sees it.
type Peer struct {
	Name  string
	Addr  string // QUIC data plane host:port
	Alive bool
	Tags  []string
	// Streams maps stream name → what the peer publishes about it.
	Streams map[string]PeerStream
}

// PeerStream is a peer's published state of one stream.
type PeerStream struct {
	// Def is the peer's definition; nil if it publishes none.
	Def *Def
	// Vector maps origin shard → highest contiguous origin sequence the
	// peer holds.
	Vector map[store.OriginKey]uint64
	// Incarnations maps origin hub → the incarnation of that origin's
	// stream the peer's Vector entries count in ("" or absent: unknown, a
	// peer from before incarnations). For the peer's own records it is its
	// stream's incarnation.
	Incarnations map[string]string
	// Deleted is the peer's tombstone of the stream (it deleted its copy,
	// or applied another hub's deletion); nil if none.
	Deleted *Def
	// Layouts maps origin hub → the highest version of that hub's shard
	// layout the peer knows (its own included), for origins resharded at
	// least once: a hub never resharded publishes none (version 0 is its
	// definition's shard count).
	Layouts map[string]OriginLayout
}

// Def is a replicated stream's definition as hubs publish it. Shards,
// compaction and the policy travel; retention and size limits are copied at
// creation and are each hub's own afterwards (an edge hub may keep less).
type Def struct {
	Config  store.StreamConfig
	Version uint64
}

// Membership tells the replicator who its peers are. The hub adapts gossip
// to it. Implementations must be safe for concurrent use and cheap: Peers
// is called at every reconciliation.
type Membership interface {
	// Peers returns every other hub known, alive or not.
	Peers() []Peer
	// Changed returns a channel closed at the next change.
	Changed() <-chan struct{}
}

// Publisher spreads this hub's definitions and vectors (gossip). Calls
// with unchanged values must be cheap no-ops.
type Publisher interface {
	PublishDef(stream string, d Def)
	// PublishDeleted replaces this hub's definition of stream with a
	// tombstone: the stream is deleted up to definition version d.Version.
	PublishDeleted(stream string, d Def)
	// PublishVector publishes v with, per origin hub, the incarnation of
	// its stream v counts in (incs may name hubs v has no entry for yet),
	// and the highest version of each origin's layout this hub knows
	// (only resharded origins: layouts may be empty).
	PublishVector(stream string, v map[store.OriginKey]uint64, incs map[string]string, layouts map[string]OriginLayout)
}

// Authorizer checks that the peer behind req (its principal), which says it
// is hub requester, may pull stream.
type Authorizer func(ctx context.Context, req *quic.Request, requester, stream string) error

// MetaDef is the store.StreamConfig.Meta key where the replicator keeps a
// stream's definition version and the hash of the content it versioned:
// "<version>:<hash>". A content change made locally (hub.toml, admin API)
// no longer matches the hash and gets a new version, so it wins over older
// definitions everywhere; a definition adopted from a peer keeps the peer's
// version.
const MetaDef = "federation.def"

// Config configures a Replicator. Fill defaults with DefaultConfig.
type Config struct {
	// Self is this hub's name, the origin name of its records.
	Self string
	// Tags are this hub's tags, matched by tag-scoped policies.
	Tags       []string
	Store      *store.Store
	Transport  Transport
	Membership Membership
	// Publisher may be nil (nothing is published).
	Publisher Publisher
	// Authorize, if set, is asked before a peer's pull of a stream is
	// served over QUIC (every follow of a session); a non-nil error
	// (best a *quic.Error) refuses that pull. The stream's policy is
	// checked afterwards by the replicator itself.
	Authorize Authorizer
	// RateLimit bounds the bytes per second pulled from one peer, so a
	// catch-up never starves local ingest of disk bandwidth; 0 is
	// unlimited.
	RateLimit float64
	// MaxBatchBytes bounds one pulled batch.
	MaxBatchBytes int
	// Heartbeat is how often an idle following pull reports progress.
	Heartbeat time.Duration
	// Interval is how often definitions and vectors are published and pulls
	// reconciled (membership changes also trigger it).
	Interval time.Duration
	// RetryMin and RetryMax bound the backoff after a failed pull (with
	// jitter, internal/backoff).
	RetryMin, RetryMax time.Duration
	// GapAfter is how long an origin must have been unreachable (not alive
	// in membership) before records of it that no live peer can serve any
	// more (every peer holding more of it trimmed them) are declared a
	// gap, so that its later records, which relays hold, flow again. Until
	// then the origin may come back with them, and its lag shows.
	GapAfter time.Duration
	// RepairInterval is how often damaged chunks of replicated streams are
	// fetched again from peers (repair.go); 0 is 10s.
	RepairInterval time.Duration
	// StateFile, if set, keeps the gaps this hub reported (see gapBook)
	// across restarts, so a gap is counted once and relayed to peers.
	StateFile string
	// TombstoneTTL is how long this hub keeps publishing a stream
	// deletion (its own or one it applied); gossip drops tombstones after
	// it too. 0 is forever.
	TombstoneTTL time.Duration
	// OriginSeqShift, if set, says how many low bits of an origin's
	// sequence numbers number something else than its records (a plugin
	// origin's output index): lag in records counts sequences shifted
	// right by it. Nil counts sequences.
	OriginSeqShift func(origin string) uint
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Registerer, if set, receives the replication metrics.
	Registerer prometheus.Registerer
}

// DefaultConfig returns the defaults for hub self.
func DefaultConfig(self string) Config {
	return Config{
		Self:          self,
		RateLimit:     256 << 20,
		MaxBatchBytes: 4 << 20,
		Heartbeat:     time.Second,
		Interval:      250 * time.Millisecond,
		RetryMin:      100 * time.Millisecond,
		RetryMax:      5 * time.Second,
		GapAfter:      10 * time.Minute,
	}
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...))
	}
	if store.ValidateName(c.Self) != nil {
		bad("hub name %q", c.Self)
	}
	if c.Store == nil || c.Transport == nil || c.Membership == nil {
		bad("store, transport and membership are required")
	}
	if c.RateLimit < 0 {
		bad("rate limit %g is negative", c.RateLimit)
	}
	if c.MaxBatchBytes < 4<<10 {
		bad("max batch bytes %d below 4KiB", c.MaxBatchBytes)
	}
	if c.Heartbeat <= 0 || c.Interval <= 0 || c.RetryMin <= 0 || c.RetryMax < c.RetryMin || c.GapAfter <= 0 {
		bad("intervals must be positive (heartbeat %s, interval %s, retry %s..%s, gap after %s)",
			c.Heartbeat, c.Interval, c.RetryMin, c.RetryMax, c.GapAfter)
	}
	return errors.Join(errs...)
}

// Replicator keeps this hub's replicated streams converged with its
// peers: it publishes definitions and vectors, creates streams that peers
// define and our tags admit, and runs one pull task per (stream, origin
// shard) that appends the origin's records in order. It also serves peers'
// pulls (Handler).
//
// Lock order: Replicator.mu, then task.mu; limiter locks are leaves.
type Replicator struct {
	cfg     Config
	logger  *slog.Logger
	metrics *metrics
	high    *highCache
	gaps    *gapBook
	srv     *server
	repair  repairState
	started time.Time

	// defMu serialises syncDefs and StreamDeleted; it is taken before mu.
	defMu sync.Mutex

	mu        sync.Mutex
	tasks     map[taskKey]*task
	limiters  map[string]*tokenbucket.Bucket
	streamInc map[string]string                  // stream → its incarnation when last reconciled
	warned    map[string]bool                    // one-time warnings (shard mismatch)
	lastAlive map[taskKey]time.Time              // when membership last showed a hub alive with a stream (origin shard unused)
	tombs     map[string]tomb                    // deletions this hub made or applied, republished until their TTL
	layouts   map[string]map[string]OriginLayout // stream → origin hub → its layout we know (not ours)

	wg        sync.WaitGroup
	closeOnce sync.Once
	closed    chan struct{}
}

type taskKey struct {
	stream string
	origin store.OriginKey
}

// New returns a replicator; Run starts it.
func New(cfg Config) (*Replicator, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := &Replicator{
		cfg:       cfg,
		logger:    cfg.Logger.With("component", "replicate"),
		metrics:   newMetrics(),
		high:      newHighCache(),
		started:   time.Now(),
		tasks:     map[taskKey]*task{},
		limiters:  map[string]*tokenbucket.Bucket{},
		streamInc: map[string]string{},
		warned:    map[string]bool{},
		lastAlive: map[taskKey]time.Time{},
		tombs:     map[string]tomb{},
		layouts:   map[string]map[string]OriginLayout{},
		closed:    make(chan struct{}),
	}
	r.repair = repairState{attempts: map[repairKey]RepairStatus{}, repaired: prometheus.NewCounter(prometheus.CounterOpts{
		Name: "edgehub_replication_repaired_chunks_total",
		Help: "Damaged chunks of replicated streams written back from records fetched from peers.",
	})}
	gaps, err := newGapBook(cfg.StateFile)
	if err != nil {
		r.logger.Warn("replicate: gaps not loaded are forgotten; they are counted again if announced again", "err", err)
	}
	r.gaps = gaps
	r.srv = &server{
		self: cfg.Self, store: cfg.Store, tags: r.peerTags, heartbeat: cfg.Heartbeat,
		maxBatch: cfg.MaxBatchBytes, high: r.high, gaps: gaps, logger: r.logger, metrics: r.metrics,
		authorize: cfg.Authorize, layout: r.knownLayout, copies: newCopies(),
	}
	if cfg.Registerer != nil {
		if err := r.metrics.register(cfg.Registerer, r); err != nil {
			return nil, fmt.Errorf("replicate: register metrics: %w", err)
		}
	}
	return r, nil
}

// Handler serves peers' pulls; register it for quic.OpReplicate.
func (r *Replicator) Handler() quic.Handler { return r.srv }

// Serve serves one pull on out (transports other than QUIC, tests).
func (r *Replicator) Serve(ctx context.Context, req PullRequest, out Sender) error {
	return r.srv.serve(ctx, req, out)
}

func (r *Replicator) peerTags(hub string) ([]string, bool) {
	for _, p := range r.cfg.Membership.Peers() {
		if p.Name == hub {
			return p.Tags, true
		}
	}
	return nil, false
}

// Run reconciles until ctx ends, then stops every pull and returns nil.
func (r *Replicator) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer func() {
		cancel()
		r.wg.Wait()
	}()
	go func() {
		select {
		case <-r.closed:
			cancel()
		case <-ctx.Done():
		}
	}()
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.runRepair(ctx)
	}()
	tick := time.NewTicker(r.cfg.Interval)
	defer tick.Stop()
	for {
		changed := r.cfg.Membership.Changed()
		r.reconcile(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-changed:
			// Gossip changes come in bursts; let a few settle.
			select {
			case <-time.After(20 * time.Millisecond):
			case <-ctx.Done():
				return nil
			}
		}
	}
}

// Close stops Run's pulls; it is idempotent.
func (r *Replicator) Close() error {
	r.closeOnce.Do(func() { close(r.closed) })
	return nil
}

// reconcile publishes our state, adopts peers' definitions, and makes the
// set of pull tasks match what peers hold.
func (r *Replicator) reconcile(ctx context.Context) {
	peers := withImpliedVectors(r.cfg.Membership.Peers())
	now := time.Now()
	r.mu.Lock()
	for _, p := range peers {
		if p.Alive {
			for name := range p.Streams {
				r.lastAlive[taskKey{name, store.OriginKey{Hub: p.Name}}] = now
			}
		}
	}
	r.mu.Unlock()
	r.syncDefs(ctx, peers)
	streams := r.cfg.Store.Streams()
	want := map[taskKey]bool{}
	seen := map[taskKey]uint64{} // the most of an origin shard a live peer's vector holds
	for _, st := range streams {
		cfg := st.Config()
		pol := policyOf(cfg)
		if pol.Local() {
			continue
		}
		r.noticeRecreated(st)
		if pol.Admits(r.cfg.Tags) {
			if err := r.syncIncarnations(ctx, st, peers); err != nil {
				r.logger.Warn("replicate: following a peer's stream incarnation", "stream", st.Name(), "err", err)
				continue
			}
		}
		var known map[string]OriginLayout
		if pol.Admits(r.cfg.Tags) {
			known = r.syncLayouts(ctx, st, peers)
		}
		ours, err := localVector(r.cfg.Self, st, r.high)
		if err != nil {
			r.logger.Warn("replicate: computing our vector", "stream", st.Name(), "err", err)
			continue
		}
		incs := localIncarnations(r.cfg.Self, st)
		if r.cfg.Publisher != nil {
			pub := publishedLayouts(r.cfg.Self, st, known)
			r.cfg.Publisher.PublishVector(st.Name(), pruneClosed(st.Name(), ours, pub, peers), incs, pub)
		}
		if !pol.Admits(r.cfg.Tags) {
			continue // we serve our records of it but do not collect others'
		}
		for _, p := range peers {
			// Any peer holding the stream may be a source: the policy
			// says where records go, not where they come from (a tag-scoped
			// stream's creator need not carry the tag).
			ps, ok := p.Streams[st.Name()]
			if !ok || !p.Alive {
				continue
			}
			// Follow every peer's own shards and the origins it writes
			// (its plugins'), so new records arrive as they commit; pull
			// other origins a peer holds more of (in the incarnation we
			// hold: a peer still holding an older one of an origin is no
			// source of it).
			for k, seq := range ps.Vector {
				if k.Hub != r.cfg.Self && (OwnerOf(k.Hub) == p.Name || seq > ours[k]) && sameIncarnation(ps, k.Hub, incs[k.Hub]) {
					tk := taskKey{st.Name(), k}
					want[tk] = true
					seen[tk] = max(seen[tk], seq)
				}
			}
			if ps.Def != nil {
				for s := 0; s < ps.Def.Config.Shards; s++ {
					want[taskKey{st.Name(), store.OriginKey{Hub: p.Name, Shard: uint32(s)}}] = true
				}
			}
			// A resharded peer's shards are its layout's: closed ones are
			// completed (and then hold no pull), children wait for them.
			if ol, ok := known[p.Name]; ok {
				for _, sh := range ol.Layout.Shards {
					want[taskKey{st.Name(), store.OriginKey{Hub: p.Name, Shard: sh.ID}}] = true
				}
			}
		}
	}
	r.high.forget(func(st *store.Stream) bool { return slices.Contains(streams, st) })
	if err := r.gaps.forget(func(name string) bool {
		return slices.ContainsFunc(streams, func(st *store.Stream) bool { return st.Name() == name })
	}); err != nil {
		r.logger.Warn("replicate: forgetting the gaps of deleted streams", "err", err)
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	for k, t := range r.tasks {
		if !want[k] {
			t.cancel()
			delete(r.tasks, k)
		} else {
			t.sawHigh(seen[k])
			t.poke()
		}
	}
	if ctx.Err() != nil {
		return
	}
	for k := range want {
		if _, ok := r.tasks[k]; ok {
			continue
		}
		tctx, cancel := context.WithCancel(ctx)
		t := &task{key: k, cancel: cancel, wake: make(chan struct{}, 1), done: make(chan struct{}),
			status: TaskStatus{Stream: k.stream, Origin: k.origin.Hub, Shard: k.origin.Shard, State: "starting"}}
		if r.cfg.OriginSeqShift != nil {
			t.shift = min(r.cfg.OriginSeqShift(k.origin.Hub), 63)
		}
		t.sawHigh(seen[k])
		r.tasks[k] = t
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			defer close(t.done)
			r.runTask(tctx, t)
		}()
	}
}

// defContent is what a definition versions: the settings that must agree
// across hubs.
func defContent(c store.StreamConfig) string {
	return fmt.Sprintf("shards=%d compact=%t replicate=%s", c.Shards, c.Compact, policyOf(c))
}

func contentHash(c store.StreamConfig) string {
	h := sha256.Sum256([]byte(defContent(c)))
	return hex.EncodeToString(h[:8])
}

// defVersion returns the stream's definition version and whether the
// stored version is stale (the content changed locally since).
func defVersion(c store.StreamConfig) (version uint64, stale bool) {
	v, hash, ok := strings.Cut(c.Meta[MetaDef], ":")
	if !ok {
		return 0, true
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, true
	}
	return n, hash != contentHash(c)
}

func withDef(c store.StreamConfig, version uint64) store.StreamConfig {
	meta := make(map[string]string, len(c.Meta)+1)
	for k, v := range c.Meta {
		meta[k] = v
	}
	meta[MetaDef] = strconv.FormatUint(version, 10) + ":" + contentHash(c)
	c.Meta = meta
	return c
}

// syncDefs publishes our replicated streams' definitions and adopts newer
// ones from peers (last writer wins by version).
func (r *Replicator) syncDefs(ctx context.Context, peers []Peer) {
	r.defMu.Lock()
	defer r.defMu.Unlock()
	local := map[string]store.StreamConfig{}
	tombs := r.tombstones(peers, time.Now())
	for _, st := range r.cfg.Store.Streams() {
		c := st.Config()
		if r.applyTombstone(ctx, c, tombs) {
			continue
		}
		v, stale := defVersion(c)
		if stale && (!policyOf(c).Local() || c.Meta[MetaDef] != "") {
			// A local change (or a stream never versioned): version it now,
			// after anything we published or adopted before, and after
			// any deletion of the name (a stream created again).
			nv := max(uint64(time.Now().UnixNano()), v+1)
			if t, ok := tombs[c.Name]; ok {
				nv = max(nv, t.Version+1)
			}
			nc := withDef(c, nv)
			if err := r.cfg.Store.UpdateStream(ctx, nc); err != nil {
				r.logger.Warn("replicate: recording definition version", "stream", c.Name, "err", err)
				continue
			}
			c = nc
		}
		local[c.Name] = c
		if r.cfg.Publisher != nil && c.Meta[MetaDef] != "" {
			v, _ := defVersion(c)
			r.cfg.Publisher.PublishDef(c.Name, Def{Config: publishable(c), Version: v})
		}
	}
	r.publishTombstones(local)
	// The newest definition of every stream any peer publishes.
	best := map[string]Def{}
	for _, p := range peers {
		for name, ps := range p.Streams {
			if ps.Def == nil || ps.Def.Config.Name != name {
				continue
			}
			if b, ok := best[name]; !ok || ps.Def.Version > b.Version ||
				(ps.Def.Version == b.Version && defContent(ps.Def.Config) > defContent(b.Config)) {
				best[name] = *ps.Def
			}
		}
	}
	for name, d := range best {
		if store.ValidateName(name) != nil || d.Config.Validate() != nil {
			continue
		}
		if t, ok := tombs[name]; ok && t.Version >= d.Version {
			continue // deleted after that definition
		}
		c, have := local[name]
		if !have {
			if !policyOf(d.Config).Admits(r.cfg.Tags) {
				continue
			}
			nc := withDef(publishable(d.Config), d.Version)
			if _, err := r.cfg.Store.CreateStream(ctx, nc); err != nil {
				r.logger.Warn("replicate: creating stream defined by a peer", "stream", name, "err", err)
				continue
			}
			r.logger.Info("replicate: stream created from the federation's definition", "stream", name,
				"shards", nc.Shards, "replicate", policyOf(nc).String())
			continue
		}
		v, _ := defVersion(c)
		if d.Version <= v || defContent(d.Config) == defContent(c) {
			continue
		}
		if d.Config.Shards != c.Shards {
			key := "shards/" + name
			r.mu.Lock()
			warn := !r.warned[key]
			r.warned[key] = true
			r.mu.Unlock()
			if warn {
				r.logger.Warn("replicate: a peer defines the stream with another shard count; records of its origins are routed by key",
					"stream", name, "ours", c.Shards, "theirs", d.Config.Shards)
			}
		}
		nc := c
		nc.Compact = d.Config.Compact
		nc.Meta = make(map[string]string, len(c.Meta))
		for k, v := range c.Meta {
			nc.Meta[k] = v
		}
		nc.Meta[MetaPolicy] = d.Config.Meta[MetaPolicy]
		nc = withDef(nc, d.Version)
		if err := r.cfg.Store.UpdateStream(ctx, nc); err != nil {
			r.logger.Warn("replicate: adopting a peer's definition", "stream", name, "err", err)
			continue
		}
		r.logger.Info("replicate: stream definition updated from the federation", "stream", name,
			"replicate", policyOf(nc).String(), "compact", nc.Compact)
	}
}

// publishable strips meta owned by other parts of the hub: only the policy
// travels.
func publishable(c store.StreamConfig) store.StreamConfig {
	c.Meta = map[string]string{MetaPolicy: c.Meta[MetaPolicy]}
	return c
}

// EncodeDef and DecodeDef are the gossip encoding of a definition's config
// (JSON of store.StreamConfig).
func EncodeDef(c store.StreamConfig) []byte {
	b, _ := json.Marshal(publishable(c))
	return b
}

// DecodeDef parses EncodeDef's output.
func DecodeDef(b []byte) (store.StreamConfig, error) {
	var c store.StreamConfig
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("replicate: decode definition: %w", err)
	}
	return c, nil
}

// TaskStatus describes one pull task: one origin shard of one stream.
type TaskStatus struct {
	Stream string `json:"stream"`
	Origin string `json:"origin"`
	Shard  uint32 `json:"origin_shard"`
	// Peer is the hub we pull from (the origin itself when reachable).
	Peer string `json:"peer"`
	// State is "starting", "catching-up", "following", "waiting" (no peer
	// has more, or the origin shard's parents are not applied here yet:
	// LastError says which), "retrying" (after an error) or "complete" (the
	// origin shard was closed by a reshard and is held here to its end).
	State     string `json:"state"`
	Watermark uint64 `json:"watermark"`
	// High is the highest origin sequence the peer reported holding, or
	// a live peer's gossiped vector shows (so lag shows while pulls fail).
	High       uint64  `json:"high"`
	LagRecords uint64  `json:"lag_records"`
	LagSeconds float64 `json:"lag_seconds"`
	Records    uint64  `json:"records_pulled"`
	Gaps       uint64  `json:"gaps"`
	GapSeqs    uint64  `json:"gap_sequences"`
	LastGap    string  `json:"last_gap,omitempty"`
	LastError  string  `json:"last_error,omitempty"`
}

// Status returns every pull task's state, sorted by stream, origin, shard.
func (r *Replicator) Status() []TaskStatus {
	r.mu.Lock()
	ts := make([]*task, 0, len(r.tasks))
	for _, t := range r.tasks {
		ts = append(ts, t)
	}
	r.mu.Unlock()
	out := make([]TaskStatus, 0, len(ts))
	for _, t := range ts {
		s := t.snapshot()
		if e, ok := r.gaps.entry(t.key.stream, t.key.origin); ok {
			s.Gaps, s.GapSeqs, s.LastGap = e.Gaps, e.Seqs, e.Last
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b TaskStatus) int {
		if c := strings.Compare(a.Stream, b.Stream); c != 0 {
			return c
		}
		if c := strings.Compare(a.Origin, b.Origin); c != 0 {
			return c
		}
		return int(a.Shard) - int(b.Shard)
	})
	return out
}

// Gaps lists what this hub lost, per stream and origin shard: records it
// will never hold (deleted by retention before it pulled them, or that no
// live peer could serve any more).
func (r *Replicator) Gaps() []GapStatus { return r.gaps.all() }

// Lag is replication lag for one origin hub of one stream, summed over its
// shards, against the peer we pull it from.
type Lag struct {
	Stream  string  `json:"stream"`
	Origin  string  `json:"origin"`
	Peer    string  `json:"peer"`
	Records uint64  `json:"records"`
	Seconds float64 `json:"seconds"`
	Gaps    uint64  `json:"gaps"`
}

// Lag aggregates Status per (stream, origin, peer).
func (r *Replicator) Lag() []Lag {
	idx := map[[3]string]int{}
	var out []Lag
	for _, s := range r.Status() {
		k := [3]string{s.Stream, s.Origin, s.Peer}
		i, ok := idx[k]
		if !ok {
			i = len(out)
			idx[k] = i
			out = append(out, Lag{Stream: s.Stream, Origin: s.Origin, Peer: s.Peer})
		}
		out[i].Records += s.LagRecords
		out[i].Seconds = max(out[i].Seconds, s.LagSeconds)
		out[i].Gaps += s.Gaps
	}
	return out
}

// OwnerOf returns the hub that writes origin's records: origin itself, or,
// for an origin a hub derives from its own name (a plugin's outputs,
// "HUB/plugin/NAME/INPUT[/timer]"; hub names never contain '/'), that hub.
// Pulls follow an origin's records from its owner, as they commit.
func OwnerOf(origin string) string {
	hub, _, _ := strings.Cut(origin, "/")
	return hub
}

// task pulls one origin shard of one stream. One goroutine per task is what
// keeps an origin's records applied in order and once.
type task struct {
	key    taskKey
	shift  uint // Config.OriginSeqShift of the origin
	cancel context.CancelFunc
	wake   chan struct{}
	done   chan struct{} // closed when runTask returns

	mu       sync.Mutex
	status   TaskStatus
	lastAge  time.Duration // age of the newest record received, while behind
	excluded map[string]time.Time
	// parentsWait: the task waits for the parents of its origin shard.
	parentsWait bool
	// trims are the first sequences peers answered they still hold
	// (PULL_TRIMMED), valid while our watermark is trimsAt.
	trims   map[string]uint64
	trimsAt uint64
}

func (t *task) poke() {
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

func (t *task) snapshot() TaskStatus {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.status
	if s.High > s.Watermark {
		// At least 1: shifted, the last sequences may number the same
		// input record.
		s.LagRecords = max(s.High>>t.shift-s.Watermark>>t.shift, 1)
		s.LagSeconds = t.lastAge.Seconds()
	} else {
		s.LagRecords, s.LagSeconds = 0, 0
	}
	return s
}

// sawHigh raises the task's high to what a live peer's gossiped vector
// holds of its origin, so lag shows while pulls fail or have not started.
func (t *task) sawHigh(seq uint64) {
	t.mu.Lock()
	t.status.High = max(t.status.High, seq)
	t.mu.Unlock()
}

func (t *task) set(f func(s *TaskStatus)) {
	t.mu.Lock()
	f(&t.status)
	t.mu.Unlock()
}

// errReconsider ends a pull from a relay when the origin becomes reachable.
var errReconsider = errors.New("replicate: a better peer is available")

// trimmedError is a relay's PULL_TRIMMED.
type trimmedError struct {
	peer        string
	k           store.OriginKey
	first, need uint64
}

func (e *trimmedError) Error() string {
	return fmt.Sprintf("%v: %s holds %s/%d only from %d, we need %d", ErrTrimmed, e.peer, e.k.Hub, e.k.Shard, e.first, e.need)
}

func (e *trimmedError) Unwrap() error { return ErrTrimmed }

// source is where a task pulls from next.
type source struct {
	Peer
	// gapTo, if set, declares origin sequences after our watermark up to
	// gapTo lost: no live peer holds them (see chooseSource).
	gapTo  uint64
	reason string
}

func (r *Replicator) runTask(ctx context.Context, t *task) {
	failures := 0 // since the last progress
	t.mu.Lock()
	t.excluded = map[string]time.Time{}
	t.trims = map[string]uint64{}
	t.mu.Unlock()
	for ctx.Err() == nil {
		if st, err := r.cfg.Store.Stream(t.key.stream); err == nil {
			gate, why, parents := r.lineageGate(st, t)
			t.mu.Lock()
			t.parentsWait = parents
			t.mu.Unlock()
			if gate != gateOpen {
				t.set(func(s *TaskStatus) {
					s.Peer = ""
					if gate == gateComplete {
						s.State, s.LastError = "complete", ""
						s.Watermark = r.position(st, t.key)
						s.High = max(s.High, s.Watermark)
					} else {
						s.State, s.LastError = "waiting", why
					}
				})
				select {
				case <-ctx.Done():
					return
				case <-t.wake:
				}
				continue
			}
		}
		src, ok, why := r.chooseSource(t)
		if !ok {
			t.set(func(s *TaskStatus) {
				s.State, s.Peer = "waiting", ""
				if why != "" {
					s.LastError = why
				}
			})
			select {
			case <-ctx.Done():
				return
			case <-t.wake:
			}
			continue
		}
		progressed, err := r.pull(ctx, t, src)
		if ctx.Err() != nil {
			return
		}
		if progressed {
			failures = 0
		}
		if errors.Is(err, errReconsider) {
			continue
		}
		if errors.Is(err, errShardComplete) {
			failures = 0
			continue
		}
		if err == nil || errors.Is(err, io.EOF) {
			err = errors.New("peer ended the pull")
		}
		r.metrics.pullErrors.WithLabelValues(src.Name).Inc()
		failures++
		wait := backoff.Delay(r.cfg.RetryMin, r.cfg.RetryMax, failures)
		level := slog.LevelWarn
		if errors.Is(err, ErrTrimmed) || quic.CodeOf(err).Retryable() {
			level = slog.LevelInfo
		}
		r.logger.Log(ctx, level, "replicate: pull failed; retrying", "stream", t.key.stream,
			"origin", t.key.origin.Hub, "shard", t.key.origin.Shard, "peer", src.Name, "err", err, "backoff", wait)
		t.set(func(s *TaskStatus) { s.State, s.LastError = "retrying", err.Error() })
		t.mu.Lock()
		var te *trimmedError
		if errors.As(err, &te) {
			// It cannot serve us until we hold more: ask the others, and
			// remember what it holds in case nobody can.
			if t.trimsAt != te.need-1 {
				clear(t.trims)
				t.trimsAt = te.need - 1
			}
			t.trims[src.Name] = te.first
		} else {
			// Try another peer next time, if there is one.
			t.excluded[src.Name] = time.Now().Add(wait)
		}
		t.mu.Unlock()
		if !backoff.Sleep(ctx, wait) {
			return
		}
	}
}

// chooseSource picks the peer to pull t's origin from: the origin itself
// when it is alive, else the peer holding the most of it beyond our
// watermark. Peers that failed recently are skipped while another candidate
// exists; peers that answered PULL_TRIMMED at our watermark are skipped.
//
// When every live peer holding more of the origin has trimmed the records
// right after our watermark and the origin has been unreachable for
// GapAfter, nobody can serve them: the source is then the peer that lost
// the fewest, with a gap up to the first record it holds. Before GapAfter
// the task waits (why says for what), and the origin's lag shows.
func (r *Replicator) chooseSource(t *task) (src source, ok bool, why string) {
	st, err := r.cfg.Store.Stream(t.key.stream)
	if err != nil {
		return source{}, false, ""
	}
	k := t.key.origin
	ours := r.position(st, t.key)
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.trimsAt != ours {
		clear(t.trims)
		t.trimsAt = ours
	}
	excluded := func(name string) bool { return now.Before(t.excluded[name]) }
	var best, fallback, trimmedBest Peer
	var bestSeq uint64
	found, haveFallback, haveTrimmed := false, false, false
	for _, p := range withImpliedVectors(r.cfg.Membership.Peers()) {
		ps, ok := p.Streams[t.key.stream]
		if !ok || !p.Alive {
			continue
		}
		seq := ps.Vector[k]
		isOrigin := p.Name == k.Hub
		// The hub that writes the origin (itself, or the hub of a plugin
		// origin) serves what it has and follows the rest.
		isOwner := p.Name == OwnerOf(k.Hub)
		if !isOwner && seq <= ours {
			continue
		}
		if !sameIncarnation(ps, k.Hub, st.OriginIncarnation(k.Hub)) {
			continue // it holds another incarnation of the origin's stream
		}
		if first, ok := t.trims[p.Name]; ok && !isOrigin {
			if !haveTrimmed || first < t.trims[trimmedBest.Name] || (first == t.trims[trimmedBest.Name] && p.Name < trimmedBest.Name) {
				trimmedBest, haveTrimmed = p, true
			}
			continue
		}
		if excluded(p.Name) {
			if !haveFallback {
				fallback, haveFallback = p, true
			}
			continue
		}
		if isOwner {
			return source{Peer: p}, true, ""
		}
		if !found || seq > bestSeq || (seq == bestSeq && p.Name < best.Name) {
			best, bestSeq, found = p, seq, true
		}
	}
	switch {
	case found:
		return source{Peer: best}, true, ""
	case haveFallback:
		return source{Peer: fallback}, true, ""
	case !haveTrimmed:
		return source{}, false, ""
	}
	// The origin is not alive with the stream (it would have been chosen),
	// and every live peer holding more of it trimmed what we need next.
	first := t.trims[trimmedBest.Name]
	r.mu.Lock()
	down := r.started // not seen alive since we started
	if seen := r.lastAlive[taskKey{t.key.stream, store.OriginKey{Hub: k.Hub}}]; seen.After(down) {
		down = seen
	}
	r.mu.Unlock()
	if wait := down.Add(r.cfg.GapAfter).Sub(now); wait > 0 {
		return source{}, false, fmt.Sprintf("origin %s unreachable and every live peer holding more of it trimmed %d..%d "+
			"(%s holds from %d): declaring them a gap in %s unless it returns", k.Hub, ours+1, first-1, trimmedBest.Name, first, wait.Round(time.Second))
	}
	return source{Peer: trimmedBest, gapTo: first - 1,
		reason: fmt.Sprintf("origin %s unreachable since %s and every live peer holding more of it trimmed them", k.Hub, down.UTC().Format(time.RFC3339))}, true, ""
}

// position is where t's pulls resume: after the watermark, and after the
// gaps recorded right above it (those records are lost for good; asking
// past them spares the origin announcing them again).
func (r *Replicator) position(st *store.Stream, k taskKey) uint64 {
	return r.gaps.reach(k.stream, k.origin, st.Watermark(k.origin))
}

// recordGap records that origin sequences from..to of t's origin are lost
// here: counted, logged and shown in hub peers once, however often
// announced.
func (r *Replicator) recordGap(t *task, from, to uint64, peer, reason string) {
	k := t.key.origin
	desc := fmt.Sprintf("%d..%d at %s from %s: %s", from, to, time.Now().UTC().Format(time.RFC3339), peer, reason)
	fresh, err := r.gaps.add(t.key.stream, k, from, to, desc)
	if err != nil {
		r.logger.Warn("replicate: recording a gap", "stream", t.key.stream, "origin", k.Hub, "shard", k.Shard, "err", err)
	}
	if fresh == 0 {
		return
	}
	r.metrics.gaps.WithLabelValues(t.key.stream, k.Hub).Inc()
	r.metrics.gapSeqs.WithLabelValues(t.key.stream, k.Hub).Add(float64(fresh))
	r.logger.Warn("replicate: gap: records of an origin this hub will never hold", "stream", t.key.stream,
		"origin", k.Hub, "shard", k.Shard, "from", from, "to", to, "peer", peer, "reason", reason)
}

// limiter is the byte bucket of pulls from peer, nil (unlimited) without a
// rate limit. It may go into debt: a batch larger than the bucket is let
// through and paid for by the next waits, so a large record is never stuck.
func (r *Replicator) limiter(peer string) *tokenbucket.Bucket {
	if r.cfg.RateLimit <= 0 {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	l := r.limiters[peer]
	if l == nil {
		l = tokenbucket.New(r.cfg.RateLimit, float64(4*r.cfg.MaxBatchBytes))
		r.limiters[peer] = l
	}
	return l
}

// targetShard is where records of origin k go here: the origin shard when
// the stream's shard counts agree and neither hub resharded it (layouts are
// per hub: once either did, shard ids name different ranges), else routing
// by key (in the store's writer, with its layout at the commit).
func (r *Replicator) targetShard(st *store.Stream, k store.OriginKey) int {
	if int(k.Shard) >= st.Shards() || st.Layout().Version != 0 {
		return -1
	}
	if _, resharded := r.knownLayout(st, OwnerOf(k.Hub)); resharded {
		return -1
	}
	for _, p := range r.cfg.Membership.Peers() {
		if p.Name == k.Hub {
			if ps, ok := p.Streams[st.Name()]; ok && ps.Def != nil && ps.Def.Config.Shards != st.Shards() {
				return -1
			}
		}
	}
	return int(k.Shard)
}

// pull runs one pull from src until it fails or a better source appears.
// It reports whether any record was applied.
func (r *Replicator) pull(ctx context.Context, t *task, src source) (progressed bool, err error) {
	st, err := r.cfg.Store.Stream(t.key.stream)
	if err != nil {
		return false, err
	}
	k := t.key.origin
	after := r.position(st, t.key)
	if src.gapTo > after {
		r.recordGap(t, after+1, src.gapTo, src.Name, src.reason)
		after = src.gapTo
	}
	t.set(func(s *TaskStatus) {
		s.Peer, s.State, s.Watermark = src.Name, "catching-up", after
	})
	pctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// The transport receives ahead of applying (up to the pull's credit),
	// so the network and the next batches overlap the current fsync.
	ps, err := r.cfg.Transport.Pull(pctx, src.Peer, PullRequest{
		Requester: r.cfg.Self, Stream: t.key.stream, Origin: k, After: after,
		Follow: true, MaxBatchBytes: uint64(r.cfg.MaxBatchBytes),
		Incarnation: st.OriginIncarnation(k.Hub), Lineage: true,
	})
	if err != nil {
		return false, err
	}
	defer ps.Close()
	if owner := OwnerOf(k.Hub); src.Name != owner {
		// Pulling from a relay: switch back to the origin's hub when it
		// is reachable again (reconciliation pokes the task).
		watched := make(chan struct{})
		defer func() { <-watched }()
		go func() {
			defer close(watched)
			for {
				select {
				case <-t.wake:
					if p, ok, _ := r.chooseSource(t); ok && p.Name != src.Name && p.Name == owner {
						cancel(errReconsider)
						return
					}
				case <-pctx.Done():
					return
				}
			}
		}()
		defer cancel(nil) // runs before the wait above
	}
	recv := func() (Msg, error) {
		m, err := ps.Recv(pctx)
		if err != nil && pctx.Err() != nil && ctx.Err() == nil {
			err = context.Cause(pctx)
		}
		return m, err
	}
	target := r.targetShard(st, k)
	lim := r.limiter(src.Name)
	var pending *Msg
	wm := after
	for {
		var in Msg
		if pending != nil {
			in, pending = *pending, nil
		} else if in, err = recv(); err != nil {
			return progressed, err
		}
		switch in.Type {
		case FramePullRecords:
			// Coalesce the batches already received into one append: one
			// fsync for all of them.
			var recs []record.Record
			high, size := in.Records.High, 0
			cur := in
			for {
				before := len(recs)
				recs, err = record.DecodeBatch(cur.Records.Batch, recs)
				if err != nil {
					return progressed, fmt.Errorf("replicate: batch from %s: %w", src.Name, err)
				}
				size += len(cur.Records.Batch)
				high = max(high, cur.Records.High)
				if err := checkOrder(recs, before, k); err != nil {
					return progressed, fmt.Errorf("replicate: batch from %s: %w", src.Name, err)
				}
				if len(recs) >= 64<<10 {
					break
				}
				next, ok := ps.TryRecv()
				if !ok {
					break
				}
				if next.Type != FramePullRecords {
					pending = &next
					break
				}
				cur = next
			}
			if err := lim.Wait(ctx, float64(size)); err != nil {
				return progressed, err
			}
			r.metrics.appliedBytes.WithLabelValues(src.Name).Add(float64(size))
			// Skip what is already applied (a relay may resend what the
			// origin gave us meanwhile); the store would drop it anyway,
			// but counting it here keeps the metrics honest.
			fresh := recs[:0]
			for _, rec := range recs {
				if rec.Origin.Seq > wm {
					fresh = append(fresh, rec)
				}
			}
			skipped := len(recs) - len(fresh)
			if len(fresh) > 0 {
				// The store assigns our sequence and ingest time; keep the
				// peer's ingest times to measure the delay.
				srcIngest := make([]int64, len(fresh))
				for i := range fresh {
					srcIngest[i] = fresh[i].IngestTime
					fresh[i].Seq = 0
				}
				res, err := st.Append(ctx, store.Batch{Shard: target, Records: fresh})
				if err != nil {
					return progressed, fmt.Errorf("replicate: append %d records of %s/%d: %w", len(fresh), k.Hub, k.Shard, err)
				}
				now := time.Now()
				stored := 0
				for i, p := range res.Positions {
					if p.Seq == 0 {
						skipped++
						continue
					}
					stored++
					r.metrics.delay.Observe(now.Sub(time.Unix(0, srcIngest[i])).Seconds())
				}
				r.metrics.applied.WithLabelValues(t.key.stream, k.Hub, src.Name).Add(float64(stored))
				wm = fresh[len(fresh)-1].Origin.Seq
				progressed = true
				ps.Applied(wm) // the append returned: durable by the store's sync
				age := now.Sub(time.Unix(0, srcIngest[len(srcIngest)-1]))
				t.mu.Lock()
				t.status.Watermark, t.status.High = wm, max(high, wm)
				t.status.Records += uint64(stored)
				t.lastAge = max(age, 0)
				if t.status.High > wm {
					t.status.State = "catching-up"
				}
				t.mu.Unlock()
			}
			if skipped > 0 {
				r.metrics.duplicates.WithLabelValues(t.key.stream, k.Hub).Add(float64(skipped))
			}
		case FramePullProgress:
			t.mu.Lock()
			t.status.High = max(in.Progress.High, wm)
			t.status.Watermark = wm
			if t.status.High <= wm {
				t.status.State, t.status.LastError = "following", ""
			}
			t.mu.Unlock()
		case FramePullGap:
			// Only what lies beyond what we hold can be lost to us.
			if from := max(in.Gap.From, wm+1); from <= in.Gap.To {
				r.recordGap(t, from, in.Gap.To, src.Name, in.Gap.Reason)
			}
		case FramePullTrimmed:
			return progressed, &trimmedError{peer: src.Name, k: k, first: in.Trimmed, need: wm + 1}
		case FramePullEnd:
			// The origin shard is closed and src sent all of it: its last
			// sequences may number others' records, so our watermark would
			// never reach the end by records alone.
			_, err := r.completeShard(ctx, st, t, src.Name, wm, in.ClosedEnd)
			return progressed, err
		}
	}
}

// checkOrder verifies that recs[from:] belong to origin k and continue the
// strictly increasing origin order of recs.
func checkOrder(recs []record.Record, from int, k store.OriginKey) error {
	prev := uint64(0)
	if from > 0 {
		prev = recs[from-1].Origin.Seq
	}
	for _, rec := range recs[from:] {
		if rec.Origin.Hub != k.Hub || rec.Origin.Shard != k.Shard {
			return fmt.Errorf("record of origin %s/%d in a pull of %s/%d", rec.Origin.Hub, rec.Origin.Shard, k.Hub, k.Shard)
		}
		if rec.Origin.Seq <= prev {
			return fmt.Errorf("origin sequence %d after %d", rec.Origin.Seq, prev)
		}
		prev = rec.Origin.Seq
	}
	return nil
}

package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/edgehub/edgehub/store"
)

// The autosplit controller (docs/resharding.md section 4, docs/config.md
// "[stream.autosplit]"): every autosplitInterval it samples each open shard
// of the streams that have a policy (live bytes, ingest rate in bytes and
// records) and, once a shard has met one of the policy's thresholds at
// every sample for the policy's For, splits the hottest such shard at its
// midpoint: one split per stream per sample, never beyond MaxShards open
// shards, and no automatic reshard within Cooldown of the last one.
//
// A split spreads future writes only. A single hot key cannot be spread at
// all, so when one child of an automatic split takes more than
// hotKeyShare of the pair's writes since the split and is about to be
// split again, the controller logs "hot key range" once and leaves the
// parent's range alone for 4 × Cooldown.
//
// Its state (samples, cooldown, hot ranges) is in memory: after a restart
// a shard must hold its threshold for For again before it is split.

// autosplitInterval is the sampling period; the policy's durations are
// measured on the clock the samples carry.
const autosplitInterval = 10 * time.Second

// hotKeyShare: a child of an automatic split that took more than this share
// of the pair's writes since (its sibling less than the rest) marks a range
// a split does not spread.
const hotKeyShare = 0.9

// autosplitter is the controller, one per hub, a hub component.
type autosplitter struct {
	h      *Hub
	logger *slog.Logger
	// interval is the period of Run's samples; now is their clock. Tests
	// shorten the first and step the second, or call sample themselves.
	interval time.Duration
	now      func() time.Time

	mu      sync.Mutex // serialises samples
	streams map[string]*autosplitStream
	samples uint64 // samples taken, for tests

	quit      chan struct{}
	closeOnce sync.Once
}

// autosplitStream is the controller's memory of one stream.
type autosplitStream struct {
	incarnation string
	shards      map[uint32]*shardSample // open shards seen at the last sample
	lastAuto    time.Time               // the last automatic reshard (or failed attempt)
	splits      map[uint32]autoSplit    // child id → the automatic split that made it
	hot         []hotRange
}

type shardSample struct {
	at        time.Time
	committed uint64    // store.Stream.ShardCommittedBytes
	lastSeq   uint64    // records appended move it by one each
	since     time.Time // since when a threshold held at every sample; zero: not now
	heat      float64   // the largest value/threshold at the last sample
}

// autoSplit remembers an automatic split, for the hot-key rule.
type autoSplit struct {
	lo, hi   uint64    // the parent's range
	children [2]uint32 // lower, upper
	base     [2]uint64 // their committed bytes (or last sequences) at the split
}

type hotRange struct {
	lo, hi uint64
	until  time.Time
}

// addAutosplit starts the controller and adds the policy's admin routes;
// it comes after addResharding, whose counter it shares.
func (h *Hub) addAutosplit() error {
	a := &autosplitter{
		h: h, logger: h.logger, interval: autosplitInterval, now: time.Now,
		streams: map[string]*autosplitStream{}, quit: make(chan struct{}),
	}
	h.autosplit = a
	h.route("PUT /v1/streams/{name}/autosplit", h.putAutosplit)
	h.route("DELETE /v1/streams/{name}/autosplit", h.deleteAutosplit)
	h.add(a)
	return nil
}

// Run samples every a.interval until ctx ends or Close.
func (a *autosplitter) Run(ctx context.Context) error {
	t := time.NewTicker(a.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-a.quit:
			return nil
		case <-t.C:
			a.sample(ctx, a.now())
		}
	}
}

// Close stops Run; idempotent.
func (a *autosplitter) Close() error {
	a.closeOnce.Do(func() { close(a.quit) })
	return nil
}

// sample takes one sample of every stream at now and splits where the
// policy says so.
func (a *autosplitter) sample(ctx context.Context, now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.samples++
	seen := map[string]bool{}
	for _, st := range a.h.store.Streams() {
		if ctx.Err() != nil {
			return
		}
		p, _, ok, err := decodeAutosplit(st.Config().Meta[MetaAutosplit])
		if err != nil || !ok {
			continue // a policy the hub wrote always decodes; without one, nothing to keep
		}
		seen[st.Name()] = true
		s := a.streams[st.Name()]
		if s == nil || s.incarnation != st.Incarnation() {
			s = &autosplitStream{incarnation: st.Incarnation(), shards: map[uint32]*shardSample{}, splits: map[uint32]autoSplit{}}
			a.streams[st.Name()] = s
		}
		a.sampleStream(ctx, st, s, p, now)
	}
	for name := range a.streams {
		if !seen[name] {
			delete(a.streams, name)
		}
	}
}

func (a *autosplitter) sampleStream(ctx context.Context, st *store.Stream, s *autosplitStream, p AutosplitConfig, now time.Time) {
	layout := st.Layout()
	open := layout.Open()
	stats := st.Stats()
	live := make(map[uint32]bool, len(open))
	for _, sh := range open {
		live[sh.ID] = true
		if int(sh.ID) >= len(stats) {
			continue // opened after Layout was read; next sample
		}
		cur := &shardSample{at: now, committed: st.ShardCommittedBytes(int(sh.ID)), lastSeq: stats[sh.ID].LastSeq}
		prev := s.shards[sh.ID]
		var rate, records float64
		haveRate := false
		if prev != nil && now.After(prev.at) {
			dt := now.Sub(prev.at).Seconds()
			rate, records, haveRate = float64(cur.committed-prev.committed)/dt, float64(cur.lastSeq-prev.lastSeq)/dt, true
		}
		if p.Bytes > 0 {
			cur.heat = max(cur.heat, float64(stats[sh.ID].Bytes)/float64(p.Bytes))
		}
		if haveRate && p.Rate > 0 {
			cur.heat = max(cur.heat, rate/float64(p.Rate))
		}
		if haveRate && p.RecordsRate > 0 {
			cur.heat = max(cur.heat, records/float64(p.RecordsRate))
		}
		if cur.heat >= 1 {
			cur.since = now
			if prev != nil && !prev.since.IsZero() {
				cur.since = prev.since
			}
		}
		s.shards[sh.ID] = cur
	}
	for id := range s.shards {
		if !live[id] {
			delete(s.shards, id)
		}
	}
	for id, sp := range s.splits {
		if !live[sp.children[0]] && !live[sp.children[1]] {
			delete(s.splits, id)
		}
	}
	kept := s.hot[:0]
	for _, r := range s.hot {
		if now.Before(r.until) {
			kept = append(kept, r)
		}
	}
	s.hot = kept

	if !s.lastAuto.IsZero() && now.Sub(s.lastAuto) < time.Duration(p.Cooldown) {
		return
	}
	if len(open) >= p.MaxShards {
		return
	}
	for {
		sh, ok := s.hottest(open, p, now)
		if !ok {
			return
		}
		if a.hotKey(st, s, sh, p, now) {
			continue // the range is set aside now; look at the others
		}
		a.split(ctx, st, s, sh, p, now, len(open))
		return
	}
}

// hottest returns the open shard that has held a threshold for p.For with
// the highest heat, outside the ranges set aside.
func (s *autosplitStream) hottest(open []store.ShardLayout, p AutosplitConfig, now time.Time) (store.ShardLayout, bool) {
	var best store.ShardLayout
	bestHeat := 0.0
	for _, sh := range open {
		smp := s.shards[sh.ID]
		if smp == nil || smp.since.IsZero() || now.Sub(smp.since) < time.Duration(p.For) || sh.HashStart == sh.HashEnd {
			continue
		}
		if s.setAside(sh) {
			continue
		}
		if smp.heat > bestHeat {
			best, bestHeat = sh, smp.heat
		}
	}
	return best, bestHeat > 0
}

func (s *autosplitStream) setAside(sh store.ShardLayout) bool {
	for _, r := range s.hot {
		if sh.HashStart >= r.lo && sh.HashEnd <= r.hi {
			return true
		}
	}
	return false
}

// hotKey applies the hot-key rule to sh, about to be split: if an
// automatic split made it and it took more than hotKeyShare of its pair's
// writes since, the split did not spread the range's load, and another
// would not either. It logs that once and sets the parent's range aside for
// 4 × Cooldown.
func (a *autosplitter) hotKey(st *store.Stream, s *autosplitStream, sh store.ShardLayout, p AutosplitConfig, now time.Time) bool {
	sp, ok := s.splits[sh.ID]
	if !ok {
		return false
	}
	var took [2]float64
	for i, c := range sp.children {
		took[i] = float64(a.progress(st, c, p) - sp.base[i])
	}
	total := took[0] + took[1]
	i := 0
	if sp.children[1] == sh.ID {
		i = 1
	}
	if total == 0 || took[i]/total <= hotKeyShare {
		return false
	}
	until := now.Add(4 * time.Duration(p.Cooldown))
	s.hot = append(s.hot, hotRange{lo: sp.lo, hi: sp.hi, until: until})
	for _, c := range sp.children {
		delete(s.splits, c) // logged once: the rule is not applied to this split again
	}
	a.logger.Warn("autosplit: hot key range: one child of the last automatic split takes nearly all of the range's writes; a single key cannot be split, so the range is left alone",
		"stream", st.Name(), "hash_start", fmt.Sprintf("%016x", sp.lo), "hash_end", fmt.Sprintf("%016x", sp.hi),
		"shard", sh.ID, "share", fmt.Sprintf("%.1f%%", 100*took[i]/total), "until", until.UTC().Format(time.RFC3339))
	return true
}

// progress is what the hot-key rule compares between siblings: committed
// bytes, or records when the policy counts only records.
func (a *autosplitter) progress(st *store.Stream, shard uint32, p AutosplitConfig) uint64 {
	if p.Bytes == 0 && p.Rate == 0 {
		if _, last, err := st.Bounds(int(shard)); err == nil {
			return last
		}
		return 0
	}
	return st.ShardCommittedBytes(int(shard))
}

func (a *autosplitter) split(ctx context.Context, st *store.Stream, s *autosplitStream, sh store.ShardLayout, p AutosplitConfig, now time.Time, open int) {
	smp := s.shards[sh.ID]
	l, err := st.Split(ctx, sh.ID, 0)
	switch {
	case errors.Is(err, store.ErrReshardBusy):
		return // another reshard just ran; the next sample sees its layout
	case err != nil:
		// Refusals (the store's cap on ids, a closed file) repeat: wait a
		// cooldown rather than log at every sample.
		s.lastAuto = now
		if ctx.Err() == nil {
			a.logger.Warn("autosplit: split refused", "stream", st.Name(), "shard", sh.ID, "err", err)
		}
		return
	}
	s.lastAuto = now
	a.h.reshards.WithLabelValues(st.Name(), "split", "auto").Inc()
	children := l.Shards[sh.ID].Children
	if len(children) == 2 {
		sp := autoSplit{lo: sh.HashStart, hi: sh.HashEnd, children: [2]uint32{children[0], children[1]}}
		if l.Shards[children[0]].HashStart > l.Shards[children[1]].HashStart {
			sp.children[0], sp.children[1] = sp.children[1], sp.children[0]
		}
		for i, c := range sp.children {
			sp.base[i] = a.progress(st, c, p)
			s.splits[c] = sp
		}
	}
	a.logger.Info("autosplit: split shard", "stream", st.Name(), "shard", sh.ID, "children", fmt.Sprint(children),
		"held_for", now.Sub(smp.since).Round(time.Second).String(), "heat", fmt.Sprintf("%.2f", smp.heat),
		"open_shards", open+1, "max_shards", p.MaxShards, "layout_version", l.Version)
}

// sampleCount returns how many samples were taken (tests wait on it).
func (a *autosplitter) sampleCount() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.samples
}

// putAutosplit sets a stream's policy: PUT /v1/streams/{name}/autosplit
// with an AutosplitConfig (for and cooldown default as in hub.toml). It is
// stored in the stream's metadata, so it survives restarts; a
// [stream.autosplit] in hub.toml replaces it at the next start.
func (h *Hub) putAutosplit(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	p := defaultAutosplitConfig()
	if err := readJSON(w, r, &p); err != nil {
		return err
	}
	st, err := h.store.Stream(name)
	if err != nil {
		return err
	}
	c := st.Config()
	if err := p.validate(c.Shards); err != nil {
		return &apiError{http.StatusBadRequest, CodeInvalid, fmt.Errorf("set autosplit of stream %q: %w", name, joinedMessage(err))}
	}
	if c.Meta == nil {
		c.Meta = map[string]string{}
	}
	c.Meta[MetaAutosplit] = encodeAutosplit(p, autosplitFromAPI)
	if err := h.store.UpdateStream(r.Context(), c); err != nil {
		return fmt.Errorf("set autosplit of stream %q: %w", name, err)
	}
	h.logger.Info("autosplit policy set", "stream", name, "policy", p.String())
	writeJSON(w, http.StatusOK, streamInfo(st, true, false))
	return nil
}

// deleteAutosplit removes a stream's policy (no more automatic splits; the
// layout stays as it is).
func (h *Hub) deleteAutosplit(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	st, err := h.store.Stream(name)
	if err != nil {
		return err
	}
	c := st.Config()
	if _, ok := c.Meta[MetaAutosplit]; ok {
		delete(c.Meta, MetaAutosplit)
		if err := h.store.UpdateStream(r.Context(), c); err != nil {
			return fmt.Errorf("remove autosplit of stream %q: %w", name, err)
		}
		h.logger.Info("autosplit policy removed", "stream", name)
	}
	writeJSON(w, http.StatusOK, streamInfo(st, true, false))
	return nil
}

// joinedMessage turns a policy's joined problems into one error whose
// message names each key: "max_shards: required; for: ...".
func joinedMessage(err error) error {
	var msgs []string
	for _, e := range flatten(err) {
		msgs = append(msgs, e.Error())
	}
	if len(msgs) == 1 {
		return err
	}
	return errors.New(strings.Join(msgs, "; "))
}

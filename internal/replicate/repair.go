package replicate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/store"
)

// Repair (docs/federation.md, "Repair"). A damaged chunk of a replicated
// stream (store.Stream.Damaged: found at open, at a read, or by the scrub
// the repairer runs at start) is fetched again from peers and written back
// under its sequences (store.Stream.Replace). Its range holds this hub's own
// records, which peers hold as origin (self, shard, seq), and records of
// foreign origins, which the origin index names; each is asked for with a
// bounded one-shot pull (PullRequest.Until), from the origin first, then
// from the peers holding the most of it. A range is written back only when
// every record of it came back (a compacted stream takes what peers hold:
// holes are expected there); otherwise it stays damaged, reported at every
// read, in Damaged and in the metrics, and is tried again at the next
// round, in case a peer that holds it comes back.

// defaultRepairInterval is how often damaged ranges are retried.
const defaultRepairInterval = 10 * time.Second

// repairFetchTimeout bounds one fetch of one origin's records from one peer.
const repairFetchTimeout = 30 * time.Second

// RepairStatus is a damaged chunk of a replicated stream and what repair
// made of it so far.
type RepairStatus struct {
	Stream string `json:"stream"`
	store.Damage
	// Missing is how many records of the range no peer returned at the
	// last attempt; LastError why the range is not repaired yet.
	Missing   int       `json:"missing"`
	LastError string    `json:"last_error,omitempty"`
	Attempted time.Time `json:"attempted"`
}

// repairState is the repairer's memory of attempts, for Repairs and for
// logging each failure once.
type repairState struct {
	mu       sync.Mutex
	attempts map[repairKey]RepairStatus
	repaired prometheus.Counter
}

type repairKey struct {
	stream string
	shard  int
	from   uint64
}

// Repairs lists the damaged chunks of replicated streams, with the last
// repair attempt of each.
func (r *Replicator) Repairs() []RepairStatus {
	var out []RepairStatus
	r.repair.mu.Lock()
	defer r.repair.mu.Unlock()
	for _, st := range r.cfg.Store.Streams() {
		if policyOf(st.Config()).Local() {
			continue
		}
		for _, d := range st.Damaged() {
			s, ok := r.repair.attempts[repairKey{st.Name(), d.Shard, d.From}]
			if !ok {
				s = RepairStatus{Stream: st.Name()}
			}
			s.Damage = d
			out = append(out, s)
		}
	}
	return out
}

// runRepair scrubs the replicated streams once, then repairs what is
// damaged every interval until ctx ends.
func (r *Replicator) runRepair(ctx context.Context) {
	for _, st := range r.cfg.Store.Streams() {
		if policyOf(st.Config()).Local() {
			continue
		}
		n, err := st.Scrub(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			r.logger.Warn("replicate: scrub", "stream", st.Name(), "err", err)
		} else if n > 0 {
			r.logger.Warn("replicate: scrub found damaged chunks; fetching them from peers", "stream", st.Name(), "chunks", n)
		}
	}
	every := r.cfg.RepairInterval
	if every <= 0 {
		every = defaultRepairInterval
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		r.repairAll(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// repairAll tries every damaged chunk of every replicated stream once.
func (r *Replicator) repairAll(ctx context.Context) {
	for _, st := range r.cfg.Store.Streams() {
		if policyOf(st.Config()).Local() {
			continue
		}
		for _, d := range st.Damaged() {
			if ctx.Err() != nil {
				return
			}
			missing, err := r.repairChunk(ctx, st, d)
			if ctx.Err() != nil {
				return
			}
			stale := errors.Is(err, store.ErrNotDamaged)
			if stale {
				// Not damaged after all (Replace stopped listing it): no
				// repair to count or log, nothing to retry.
				err = nil
			}
			k := repairKey{st.Name(), d.Shard, d.From}
			r.repair.mu.Lock()
			prev, tried := r.repair.attempts[k]
			if err == nil {
				delete(r.repair.attempts, k)
			} else {
				r.repair.attempts[k] = RepairStatus{Stream: st.Name(), Damage: d, Missing: missing, LastError: err.Error(), Attempted: time.Now()}
			}
			r.repair.mu.Unlock()
			switch {
			case stale:
			case err == nil:
				r.repair.repaired.Inc()
				r.logger.Warn("replicate: damaged chunk re-fetched from peers", "stream", st.Name(), "shard", d.Shard, "from", d.From, "to", d.To)
			case !tried || prev.LastError != err.Error():
				r.logger.Error("replicate: damaged chunk not repaired yet: its records are not served", "stream", st.Name(),
					"shard", d.Shard, "from", d.From, "to", d.To, "missing", missing, "err", err)
			}
		}
	}
}

// repairChunk fetches the records of damaged chunk d from peers and writes
// them back. It returns how many records it could not find; an error
// wrapping store.ErrNotDamaged if the chunk needed no repair.
func (r *Replicator) repairChunk(ctx context.Context, st *store.Stream, d store.Damage) (missing int, err error) {
	origins, err := st.DamageOrigins(ctx, d.Shard, d.From, d.To)
	if err != nil {
		return 0, err
	}
	foreign := map[uint64]bool{}
	for _, ps := range origins {
		for _, p := range ps {
			foreign[p.Seq] = true
		}
	}
	compact := st.Config().Compact
	got := map[uint64]record.Record{} // by sequence here
	// Our own records: origin sequence == sequence here.
	own := map[uint64]uint64{}
	for seq := d.From; seq <= d.To; seq++ {
		if !foreign[seq] {
			own[seq] = seq
		}
	}
	var why []string
	fetch := func(k store.OriginKey, want map[uint64]uint64, inc string) {
		if len(want) == 0 {
			return
		}
		recs, err := r.fetchOrigin(ctx, st, k, want, inc, compact)
		if err != nil {
			why = append(why, fmt.Sprintf("%s/%d: %v", k.Hub, k.Shard, err))
		}
		for oseq, rec := range recs {
			rec.Seq = want[oseq]
			if k.Hub == r.cfg.Self {
				rec.Origin = record.Origin{}
			}
			got[rec.Seq] = rec
		}
	}
	fetch(store.OriginKey{Hub: r.cfg.Self, Shard: uint32(d.Shard)}, own, st.Incarnation())
	keys := make([]store.OriginKey, 0, len(origins))
	for k := range origins {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		return keys[i].Hub < keys[j].Hub || (keys[i].Hub == keys[j].Hub && keys[i].Shard < keys[j].Shard)
	})
	for _, k := range keys {
		want := map[uint64]uint64{}
		for _, p := range origins[k] {
			want[p.OriginSeq] = p.Seq
		}
		fetch(k, want, st.OriginIncarnation(k.Hub))
	}
	if ctx.Err() != nil {
		return 0, ctx.Err()
	}
	missing = int(d.To-d.From+1) - len(got)
	if missing > 0 && !compact {
		msg := fmt.Sprintf("no peer returned %d of the %d records of sequences %d..%d", missing, d.To-d.From+1, d.From, d.To)
		if len(why) > 0 {
			msg += " (" + strings.Join(why, "; ") + ")"
		}
		return missing, errors.New(msg)
	}
	recs := make([]record.Record, 0, len(got))
	for _, rec := range got {
		recs = append(recs, rec)
	}
	slices.SortFunc(recs, func(a, b record.Record) int {
		switch {
		case a.Seq < b.Seq:
			return -1
		case a.Seq > b.Seq:
			return 1
		}
		return 0
	})
	if err := st.Replace(ctx, d.Shard, d.From, recs); err != nil {
		return missing, err
	}
	return 0, nil
}

// fetchOrigin asks peers for the records of origin k whose origin sequence
// is a key of want, with bounded one-shot pulls: the origin first, then the
// peers holding the most of k. It returns what it found, by origin
// sequence; err says why the rest was not found.
func (r *Replicator) fetchOrigin(ctx context.Context, st *store.Stream, k store.OriginKey, want map[uint64]uint64, inc string, compact bool) (map[uint64]record.Record, error) {
	lo, hi := uint64(0), uint64(0)
	for oseq := range want {
		if lo == 0 || oseq < lo {
			lo = oseq
		}
		hi = max(hi, oseq)
	}
	type cand struct {
		Peer
		held uint64
	}
	var cands []cand
	for _, p := range withImpliedVectors(r.cfg.Membership.Peers()) {
		ps, ok := p.Streams[st.Name()]
		if !ok || !p.Alive || !sameIncarnation(ps, k.Hub, inc) {
			continue
		}
		held := ps.Vector[k]
		if p.Name == k.Hub {
			held = ^uint64(0) // the origin holds all of its own that it kept
		}
		if held < lo {
			continue
		}
		cands = append(cands, cand{p, held})
	}
	sort.Slice(cands, func(i, j int) bool {
		return cands[i].held > cands[j].held || (cands[i].held == cands[j].held && cands[i].Name < cands[j].Name)
	})
	out := map[uint64]record.Record{}
	if len(cands) == 0 {
		return out, errors.New("no live peer holds them")
	}
	var errs []string
	for _, c := range cands {
		if len(out) == len(want) {
			break
		}
		if err := r.fetchFrom(ctx, st, c.Peer, k, lo, hi, want, inc, out); err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", c.Name, err))
		}
		if ctx.Err() != nil {
			return out, ctx.Err()
		}
	}
	if len(out) < len(want) && !compact {
		if len(errs) == 0 {
			errs = append(errs, "peers do not hold them")
		}
		return out, errors.New(strings.Join(errs, "; "))
	}
	return out, nil
}

// fetchFrom pulls origin k's records lo..hi from peer once, keeping those
// in want that out lacks.
func (r *Replicator) fetchFrom(ctx context.Context, st *store.Stream, peer Peer, k store.OriginKey, lo, hi uint64, want map[uint64]uint64, inc string, out map[uint64]record.Record) error {
	ctx, cancel := context.WithTimeout(ctx, repairFetchTimeout)
	defer cancel()
	ps, err := r.cfg.Transport.Pull(ctx, peer, PullRequest{
		Requester: r.cfg.Self, Stream: st.Name(), Origin: k, After: lo - 1, Until: hi,
		MaxBatchBytes: uint64(r.cfg.MaxBatchBytes), Incarnation: inc, Lineage: true,
	})
	if err != nil {
		return err
	}
	defer ps.Close()
	lim := r.limiter(peer.Name)
	for {
		m, err := ps.Recv(ctx)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		switch m.Type {
		case FramePullRecords:
			recs, err := record.DecodeBatch(m.Records.Batch, nil)
			if err != nil {
				return fmt.Errorf("batch: %w", err)
			}
			if err := checkOrder(recs, 0, k); err != nil {
				return fmt.Errorf("batch: %w", err)
			}
			if err := lim.Wait(ctx, float64(len(m.Records.Batch))); err != nil {
				return err
			}
			for i := range recs {
				oseq := recs[i].Origin.Seq
				if _, ok := want[oseq]; ok {
					if _, have := out[oseq]; !have {
						out[oseq] = recs[i].Clone()
					}
				}
			}
			if last := recs[len(recs)-1].Origin.Seq; last >= hi {
				return nil // a server from before Until sends on: enough
			}
		case FramePullTrimmed:
			return &trimmedError{peer: peer.Name, k: k, first: m.Trimmed, need: lo}
		case FramePullProgress, FramePullGap:
			// A one-shot pull ends after its progress; a gap leaves its
			// records missing, which the caller reports.
		}
	}
}

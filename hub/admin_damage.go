package hub

import (
	"time"

	"github.com/edgehub/edgehub/store"
)

// DamagedRange is a damaged chunk of a shard that is not repaired yet: its
// records (sequences From..To) are not served, every read of them fails
// with code corrupt (docs/store.md, "Damaged chunks"). GET
// /v1/streams/{name} lists them per shard.
type DamagedRange struct {
	From uint64 `json:"from"`
	To   uint64 `json:"to"`
	// Error is what failed (checksum, structure); Found when this hub
	// noticed (at open, at a read, or by the scrub at start).
	Error string    `json:"error"`
	Found time.Time `json:"found"`
	// Repair is what re-fetching it from peers has made of it:
	// "pending" (not tried yet), "failing" (tried: LastError says why,
	// Missing how many of its records no peer returned), or "none" (no
	// peer holds a copy: LastError says why).
	Repair    string     `json:"repair"`
	Missing   int        `json:"missing,omitempty"`
	LastError string     `json:"last_error,omitempty"`
	Attempted *time.Time `json:"attempted,omitempty"`
}

// addDamage fills the shards' damaged ranges of info, a described st.
func (h *Hub) addDamage(info *StreamInfo, st *store.Stream) {
	damaged := st.Damaged()
	if len(damaged) == 0 {
		return
	}
	type key struct {
		shard int
		from  uint64
	}
	tried := map[key]DamagedRange{}
	if h.federation != nil {
		for _, r := range h.federation.rep.Repairs() {
			if r.Stream != st.Name() || r.LastError == "" {
				continue
			}
			at := r.Attempted
			tried[key{r.Shard, r.From}] = DamagedRange{Repair: "failing", Missing: r.Missing, LastError: r.LastError, Attempted: &at}
		}
	}
	none := ""
	switch {
	case Replicate(st.Config().Meta[MetaReplicate]).orLocal() == ReplicateLocal:
		none = "the stream is not replicated: no peer holds a copy"
	case h.federation == nil:
		none = "federation is off ([gossip] bind unset): no peer to fetch it from"
	}
	for _, d := range damaged {
		r, ok := tried[key{d.Shard, d.From}]
		switch {
		case none != "":
			r = DamagedRange{Repair: "none", LastError: none}
		case !ok:
			r = DamagedRange{Repair: "pending"}
		}
		r.From, r.To, r.Error, r.Found = d.From, d.To, d.Err, d.Found
		for i := range info.Shards {
			if info.Shards[i].Shard == d.Shard {
				info.Shards[i].Damaged = append(info.Shards[i].Damaged, r)
			}
		}
	}
}

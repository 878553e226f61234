package replicate

import (
	"sync"

	"github.com/edgehub/edgehub/store"
)

// highCache answers "the highest sequence of shard s that holds a record
// of this hub's own origin". A shard interleaves local records with
// replicated ones, so the shard's last sequence overstates it; scanning the
// whole shard each time would cost a read of everything. The cache remembers
// how far it looked and searches only the new tail, backwards, stopping at
// the first local record.
type highCache struct {
	mu sync.Mutex
	m  map[highKey]*highEntry
}

type highKey struct {
	st    *store.Stream // a recreated stream is a new pointer, a new entry
	shard int
}

type highEntry struct {
	scanned uint64 // sequences up to here were examined
	high    uint64
}

func newHighCache() *highCache { return &highCache{m: map[highKey]*highEntry{}} }

// own returns the highest own-origin sequence held in shard of st.
func (c *highCache) own(st *store.Stream, shard int) (uint64, error) {
	first, last, err := st.Bounds(shard)
	if err != nil {
		return 0, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	k := highKey{st, shard}
	e := c.m[k]
	if e == nil {
		e = &highEntry{}
		c.m[k] = e
	}
	if last <= e.scanned {
		return e.high, nil
	}
	floor := max(e.scanned+1, first) // nothing below this is new or live
	window := uint64(256)
	for hi := last; hi >= floor; {
		lo := floor
		if hi-floor+1 > window {
			lo = hi - window + 1
		}
		h, err := highestLocal(st, shard, lo, hi)
		if err != nil {
			return 0, err
		}
		if h > 0 {
			e.high = h
			break
		}
		if lo == floor {
			break
		}
		hi = lo - 1
		window *= 4
	}
	e.scanned = last
	return e.high, nil
}

// forget drops entries of streams no longer open.
func (c *highCache) forget(keep func(*store.Stream) bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.m {
		if !keep(k.st) {
			delete(c.m, k)
		}
	}
}

// highestLocal returns the highest sequence in [lo, hi] of a local-origin
// record, 0 if none.
func highestLocal(st *store.Stream, shard int, lo, hi uint64) (uint64, error) {
	var best uint64
	for from := lo; from <= hi; {
		recs, err := st.Read(shard, from, store.ReadOptions{MaxRecords: int(min(hi-from+1, 4096))})
		if err != nil {
			return 0, err
		}
		if len(recs) == 0 {
			break
		}
		for i := range recs {
			if recs[i].Seq > hi {
				return best, nil
			}
			if recs[i].Origin.IsLocal() {
				best = recs[i].Seq
			}
		}
		from = recs[len(recs)-1].Seq + 1
	}
	return best, nil
}

// localVector returns self's vector for st: for our own origin, the
// highest own-origin sequence per shard; for foreign origins, the store's
// watermarks (highest origin sequence applied, contiguous because origins
// are applied in order, except for reported gaps).
func localVector(self string, st *store.Stream, hc *highCache) (map[store.OriginKey]uint64, error) {
	v := st.Watermarks()
	l := st.Layout()
	for s := 0; s < st.Shards(); s++ {
		h, err := hc.own(st, s)
		if err != nil {
			return nil, err
		}
		// A closed shard is held to its end (the sequences after our last
		// own record there number replicated records), and pullers
		// complete it at its end: say so, so peers can compare.
		if end, closed := closedEnd(l, uint32(s)); closed {
			h = max(h, end)
		}
		if h > 0 {
			v[store.OriginKey{Hub: self, Shard: uint32(s)}] = h
		}
	}
	return v, nil
}

// localIncarnations returns, for each origin hub of st's vector, the
// incarnation of its stream our sequences count in: our own stream's for
// self, the recorded origin incarnations for the others.
func localIncarnations(self string, st *store.Stream) map[string]string {
	incs := st.OriginIncarnations()
	incs[self] = st.Incarnation()
	return incs
}

package replicate

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/edgehub/edgehub/internal/atomicfile"
	"github.com/edgehub/edgehub/store"
)

// gapBook records the gaps this hub accepted, per stream and origin shard:
// ranges of origin sequences it will never hold. It makes a gap count once
// however often it is announced (a restarted pull, a restarted hub, the
// origin and a relay announcing the same range: the store's watermark moves
// only with records, so it cannot tell), and lets this hub, as a relay,
// announce its holes to the peers pulling from it instead of skipping them
// silently. It is kept in a JSON file (Config.StateFile) rewritten
// atomically at each new gap; gaps are rare.
type gapBook struct {
	path string // "" keeps the book in memory only

	mu      sync.Mutex
	entries map[gapKey]*gapEntry
}

type gapKey struct {
	stream string
	origin store.OriginKey
}

type gapEntry struct {
	// Ranges are the origin sequences lost here, sorted, merged, inclusive.
	Ranges [][2]uint64 `json:"ranges"`
	Gaps   uint64      `json:"gaps"`
	Seqs   uint64      `json:"sequences"`
	Last   string      `json:"last"`
}

// maxGapRanges bounds the ranges kept per origin shard; the oldest go
// first (a relay then no longer announces them: pullers that far behind
// are refused by its trimmed history anyway, or see them from the origin).
const maxGapRanges = 1024

// gapFile is the on-disk form of the book.
type gapFile struct {
	Version int                             `json:"version"`
	Streams map[string]map[string]*gapEntry `json:"streams"` // stream → "hub/shard" → entry
}

// newGapBook loads the book at path. A file that is not a gap book is
// reported with an empty book, which replaces it at the next gap; entries
// that do not hold up (a bad origin name, ranges unsorted, overlapping or
// empty) are dropped and reported, the rest kept. Dropping costs little (a
// gap forgotten is counted again when it is announced again), while a bogus
// range believed would make this hub skip records it could still pull.
func newGapBook(path string) (*gapBook, error) {
	b := &gapBook{path: path, entries: map[gapKey]*gapEntry{}}
	if path == "" {
		return b, nil
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return b, nil
	}
	if err != nil {
		return b, fmt.Errorf("replicate: read gap book: %w", err)
	}
	entries, err := decodeGapBook(data)
	if entries != nil {
		b.entries = entries
	}
	if err != nil {
		return b, fmt.Errorf("replicate: gap book %s: %w", path, err)
	}
	return b, nil
}

// decodeGapBook decodes a gap book file: the valid entries, and an error
// naming what was dropped (everything, if the file is not a gap book).
func decodeGapBook(data []byte) (map[gapKey]*gapEntry, error) {
	var f gapFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("damaged: %w", err)
	}
	if f.Version != 1 {
		return nil, fmt.Errorf("version %d, not 1", f.Version)
	}
	entries := map[gapKey]*gapEntry{}
	var dropped []string
	for stream, origins := range f.Streams {
		for name, e := range origins {
			k, err := parseGapKey(stream, name, e)
			if err != nil {
				dropped = append(dropped, fmt.Sprintf("%s %q: %v", stream, name, err))
				continue
			}
			entries[k] = e
		}
	}
	if len(dropped) > 0 {
		slices.Sort(dropped)
		return entries, fmt.Errorf("dropped %d damaged entries: %s", len(dropped), strings.Join(dropped, "; "))
	}
	return entries, nil
}

func parseGapKey(stream, name string, e *gapEntry) (gapKey, error) {
	i := strings.LastIndexByte(name, '/')
	if i <= 0 || e == nil || stream == "" {
		return gapKey{}, errors.New("not a hub/shard entry")
	}
	shard, err := strconv.ParseUint(name[i+1:], 10, 32)
	if err != nil {
		return gapKey{}, fmt.Errorf("shard: %w", err)
	}
	if len(e.Ranges) > maxGapRanges {
		return gapKey{}, fmt.Errorf("%d ranges, at most %d are kept", len(e.Ranges), maxGapRanges)
	}
	var prev uint64
	for j, r := range e.Ranges {
		if r[0] == 0 || r[1] < r[0] || j > 0 && r[0] <= prev+1 {
			return gapKey{}, fmt.Errorf("range %d %v: not sorted, merged and non-empty", j, r)
		}
		prev = r[1]
	}
	return gapKey{stream, store.OriginKey{Hub: name[:i], Shard: uint32(shard)}}, nil
}

// add records that origin sequences from..to of k are lost here, with desc
// saying how. It returns how many of them were not already recorded: 0
// means the gap is old news.
func (b *gapBook) add(stream string, k store.OriginKey, from, to uint64, desc string) (uint64, error) {
	if from == 0 || to < from {
		return 0, nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	key := gapKey{stream, k}
	e := b.entries[key]
	if e == nil {
		e = &gapEntry{}
		b.entries[key] = e
	}
	covered := uint64(0)
	for _, r := range e.Ranges {
		if lo, hi := max(r[0], from), min(r[1], to); lo <= hi {
			covered += hi - lo + 1
		}
	}
	fresh := to - from + 1 - covered
	if fresh == 0 {
		return 0, nil
	}
	e.Ranges = mergeRange(e.Ranges, [2]uint64{from, to})
	if len(e.Ranges) > maxGapRanges {
		e.Ranges = e.Ranges[len(e.Ranges)-maxGapRanges:]
	}
	e.Gaps++
	e.Seqs += fresh
	e.Last = desc
	return fresh, b.saveLocked()
}

// mergeRange inserts r into sorted, disjoint, non-adjacent rs.
func mergeRange(rs [][2]uint64, r [2]uint64) [][2]uint64 {
	out := make([][2]uint64, 0, len(rs)+1)
	for _, x := range rs {
		switch {
		case x[1]+1 < r[0]:
			out = append(out, x)
		case r[1]+1 < x[0]:
			out = append(out, r)
			r = x
		default:
			r = [2]uint64{min(r[0], x[0]), max(r[1], x[1])}
		}
	}
	return append(out, r)
}

// within returns the recorded ranges of k that intersect lo..hi, sorted.
func (b *gapBook) within(stream string, k store.OriginKey, lo, hi uint64) [][2]uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.entries[gapKey{stream, k}]
	if e == nil {
		return nil
	}
	var out [][2]uint64
	for _, r := range e.Ranges {
		if r[1] >= lo && r[0] <= hi {
			out = append(out, r)
		}
	}
	return out
}

// covers reports whether the recorded ranges of k cover lo..hi entirely.
func (b *gapBook) covers(stream string, k store.OriginKey, lo, hi uint64) bool {
	next := lo
	for _, r := range b.within(stream, k, lo, hi) {
		if r[0] > next {
			return false
		}
		next = max(next, r[1]+1)
	}
	return next > hi
}

// reach returns how far the recorded gaps of k extend contiguously from
// after: a puller holding everything up to after holds, or has lost for
// good, everything up to reach, and asks for what follows.
func (b *gapBook) reach(stream string, k store.OriginKey, after uint64) uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.entries[gapKey{stream, k}]
	if e == nil {
		return after
	}
	for _, r := range e.Ranges {
		if r[0] <= after+1 && r[1] > after {
			after = r[1]
		}
	}
	return after
}

// entry returns a copy of k's record.
func (b *gapBook) entry(stream string, k store.OriginKey) (gapEntry, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.entries[gapKey{stream, k}]
	if e == nil {
		return gapEntry{}, false
	}
	return *e, true
}

// GapStatus is what this hub lost of one origin shard of one stream.
type GapStatus struct {
	Stream string `json:"stream"`
	Origin string `json:"origin"`
	Shard  uint32 `json:"origin_shard"`
	// Gaps counts the gaps reported, Sequences the origin sequence numbers
	// they cover (an upper bound on the records lost: an origin's shard
	// also numbers records it replicated).
	Gaps      uint64 `json:"gaps"`
	Sequences uint64 `json:"sequences"`
	// Last describes the latest gap: range, time, peer and reason.
	Last string `json:"last"`
}

// all lists every origin shard with gaps, sorted.
func (b *gapBook) all() []GapStatus {
	b.mu.Lock()
	out := make([]GapStatus, 0, len(b.entries))
	for k, e := range b.entries {
		if e.Gaps > 0 {
			out = append(out, GapStatus{Stream: k.stream, Origin: k.origin.Hub, Shard: k.origin.Shard,
				Gaps: e.Gaps, Sequences: e.Seqs, Last: e.Last})
		}
	}
	b.mu.Unlock()
	slices.SortFunc(out, func(a, b GapStatus) int {
		return cmp.Or(strings.Compare(a.Stream, b.Stream), strings.Compare(a.Origin, b.Origin), cmp.Compare(a.Shard, b.Shard))
	})
	return out
}

// forget drops the gaps of streams keep rejects (deleted streams: a new
// stream of the same name starts with none).
func (b *gapBook) forget(keep func(stream string) bool) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	changed := false
	for k := range b.entries {
		if !keep(k.stream) {
			delete(b.entries, k)
			changed = true
		}
	}
	if !changed {
		return nil
	}
	return b.saveLocked()
}

// forgetOrigin drops the gaps of origin hub's shards in stream: they were
// counted in an incarnation of its stream that is gone.
func (b *gapBook) forgetOrigin(stream, hub string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	changed := false
	for k := range b.entries {
		if k.stream == stream && k.origin.Hub == hub {
			delete(b.entries, k)
			changed = true
		}
	}
	if !changed {
		return nil
	}
	return b.saveLocked()
}

func (b *gapBook) saveLocked() error {
	if b.path == "" {
		return nil
	}
	f := gapFile{Version: 1, Streams: map[string]map[string]*gapEntry{}}
	for k, e := range b.entries {
		m := f.Streams[k.stream]
		if m == nil {
			m = map[string]*gapEntry{}
			f.Streams[k.stream] = m
		}
		m[fmt.Sprintf("%s/%d", k.origin.Hub, k.origin.Shard)] = e
	}
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("replicate: encode gap book: %w", err)
	}
	if err := atomicfile.WriteFile(b.path, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("replicate: save gap book: %w", err)
	}
	return nil
}

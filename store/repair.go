package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgehub/edgehub"
	"github.com/edgehub/edgehub/internal/record"
)

// Damaged chunks (docs/store.md, "Damaged chunks"). A chunk whose checksum
// or structure fails is never served: every read of it is a *CorruptError.
// The stream remembers it (found at open, at a read, or by Scrub) so that
// it is listed (Damaged) and can be repaired: Replace writes the records of
// its range back, under their sequences, from copies a peer holds.
//
// A damaged chunk is named by its key (its first sequence); its range runs
// to the sequence before the next chunk's key, or to the shard's last
// sequence. The range may hold this hub's own records (origin: this hub,
// the same shard and sequence) and records of foreign origins, which the
// origin index maps to their sequence here (DamageOrigins).

// Damage is one damaged chunk of a stream.
type Damage struct {
	Shard int `json:"shard"`
	// From is the chunk's key; To the last sequence its range may hold.
	From uint64 `json:"from"`
	To   uint64 `json:"to"`
	// Err says what failed; Found is when this hub noticed.
	Err   string    `json:"error"`
	Found time.Time `json:"found"`
}

// ErrIncomplete is wrapped by Replace's refusal of records that do not
// cover a damaged range of a stream that is not compacted (a dense range:
// every sequence held a record).
var ErrIncomplete = errors.New("records do not cover the damaged range")

// ErrNotDamaged: Replace of a chunk that is not (or no longer) damaged.
var ErrNotDamaged = errors.New("chunk is not damaged")

// damageSet is a stream's known damaged chunks.
//
// A reader verifies the chunks it copied after its read transaction ended,
// so its copy may predate a Replace that committed meanwhile: noting that
// copy's damage would list the repaired chunk again, for good (the chunk
// verifies, so every later Replace refuses it as not damaged, and nothing
// else removes the entry). Such readers take the epoch before their
// transaction and note damage only if no Replace finished since
// (noteDamageSince); the damage they report to their caller stands, and a
// chunk that is still damaged is noted at the next read or scrub.
type damageSet struct {
	mu sync.Mutex
	m  map[damageKey]damageEntry
	// epoch counts the chunks Replace wrote back (under mu).
	epoch uint64
	// afterRead, if set (tests only), runs after the read transaction of
	// readChunks, before its copies are verified.
	afterRead func()
}

type damageKey struct {
	shard int
	seq   uint64
}

type damageEntry struct {
	err   error
	found time.Time
}

// noteDamage records that the chunk keyed seq of shard failed with err,
// logging it the first time. The caller read the chunk in the latest state:
// in a write transaction, or at open.
func (s *Stream) noteDamage(shard int, seq uint64, err error) {
	s.noteDamageSince(shard, seq, err, nil)
}

// damageEpoch is taken by a reader before the read transaction whose copies
// it verifies after, for noteDamageSince.
func (s *Stream) damageEpoch() uint64 {
	s.damage.mu.Lock()
	defer s.damage.mu.Unlock()
	return s.damage.epoch
}

// noteDamageSince is noteDamage for a chunk read in a transaction that
// began at damage epoch *since (nil: the latest state): it notes nothing
// if a Replace finished since, as the copy may be of the chunk it wrote
// back (see damageSet).
func (s *Stream) noteDamageSince(shard int, seq uint64, err error, since *uint64) {
	if seq == 0 {
		return
	}
	s.damage.mu.Lock()
	if since != nil && *since != s.damage.epoch {
		s.damage.mu.Unlock()
		return
	}
	if s.damage.m == nil {
		s.damage.m = map[damageKey]damageEntry{}
	}
	k := damageKey{shard, seq}
	_, known := s.damage.m[k]
	if !known {
		s.damage.m[k] = damageEntry{err: err, found: time.Now()}
	}
	s.damage.mu.Unlock()
	if !known {
		s.logger.Error("store: damaged chunk: its records are not served until it is repaired",
			"err", &CorruptError{File: s.path, Shard: shard, Seq: seq, Err: err})
	}
}

// corrupt returns the CorruptError of a damaged chunk, noting it.
func (s *Stream) corrupt(shard int, seq uint64, err error) *CorruptError {
	return s.corruptSince(shard, seq, err, nil)
}

// corruptSince is corrupt for a chunk copied in a read transaction that
// began at damage epoch *since (noteDamageSince).
func (s *Stream) corruptSince(shard int, seq uint64, err error, since *uint64) *CorruptError {
	s.noteDamageSince(shard, seq, err, since)
	return &CorruptError{File: s.path, Shard: shard, Seq: seq, Err: err}
}

// Damaged returns the stream's known damaged chunks, by shard and sequence.
func (s *Stream) Damaged() []Damage {
	s.damage.mu.Lock()
	out := make([]Damage, 0, len(s.damage.m))
	for k, e := range s.damage.m {
		out = append(out, Damage{Shard: k.shard, From: k.seq, Err: e.err.Error(), Found: e.found})
	}
	s.damage.mu.Unlock()
	slices.SortFunc(out, func(a, b Damage) int {
		if a.Shard != b.Shard {
			return a.Shard - b.Shard
		}
		return cmpU64(a.From, b.From)
	})
	for i := range out {
		to, err := s.damageEnd(out[i].Shard, out[i].From)
		if err != nil {
			to = out[i].From
		}
		out[i].To = to
	}
	return out
}

// DamagedChunks counts the known damaged chunks of each shard (indexed by
// shard), without touching the file: cheap enough for every metrics scrape.
func (s *Stream) DamagedChunks() []int {
	out := make([]int, len(s.table()))
	s.damage.mu.Lock()
	for k := range s.damage.m {
		if k.shard >= 0 && k.shard < len(out) {
			out[k.shard]++
		}
	}
	s.damage.mu.Unlock()
	return out
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// damageEnd returns the last sequence the chunk keyed from may hold.
func (s *Stream) damageEnd(shard int, from uint64) (uint64, error) {
	var to uint64
	err := s.view(func(tx *bolt.Tx) error {
		if cb := tx.Bucket(chunkBucket(shard)); cb != nil {
			to = rangeEnd(cb, from, s.table()[shard].next.Load())
		}
		return nil
	})
	return to, err
}

// rangeEnd is the sequence before the first chunk key after from, or next-1.
func rangeEnd(cb *bolt.Bucket, from, next uint64) uint64 {
	c := cb.Cursor()
	k, _ := c.Seek(u64(from + 1))
	if len(k) == 8 {
		return binary.BigEndian.Uint64(k) - 1
	}
	return next - 1
}

// scrubStep bounds one scrub transaction.
const (
	scrubChunks = 256
	scrubBytes  = 16 << 20
)

// Scrub verifies every chunk of the stream (checksum, structure, key), in
// short read transactions of a few hundred chunks, and records the damaged
// ones (Damaged). It returns how many damaged chunks it found.
func (s *Stream) Scrub(ctx context.Context) (int, error) {
	found := 0
	for shard := range s.table() {
		for from := uint64(0); ; {
			if err := ctx.Err(); err != nil {
				return found, err
			}
			var last uint64
			n := 0
			epoch := s.damageEpoch() // a Replace may commit after the view began
			err := s.view(func(tx *bolt.Tx) error {
				cb := tx.Bucket(chunkBucket(shard))
				if cb == nil {
					return nil // retired: nothing left to verify
				}
				c := cb.Cursor()
				size := 0
				for k, v := c.Seek(u64(from)); k != nil && n < scrubChunks && size < scrubBytes; k, v = c.Next() {
					n++
					size += len(v)
					seq, err := decodeChunkKey(k)
					if err != nil {
						return &CorruptError{File: s.path, Shard: shard, Err: err}
					}
					last = seq
					if err := verifyChunk(seq, v); err != nil {
						s.noteDamageSince(shard, seq, err, &epoch)
						found++
					}
				}
				return nil
			})
			if err != nil {
				return found, fmt.Errorf("store: scrub %q shard %d: %w", s.name, shard, err)
			}
			if n == 0 {
				break
			}
			from = last + 1
		}
	}
	return found, nil
}

// verifyChunk decodes a chunk fully: its checksum, its records, and that it
// starts at its key.
func verifyChunk(seq uint64, v []byte) error {
	recs, err := record.DecodeBatch(v, nil)
	if err != nil {
		return err
	}
	if recs[0].Seq != seq {
		return fmt.Errorf("chunk keyed %d starts at sequence %d", seq, recs[0].Seq)
	}
	return nil
}

// OriginPos is where a record of a foreign origin lives here.
type OriginPos struct {
	OriginSeq uint64 // its sequence at the origin
	Seq       uint64 // its sequence in the shard here
}

// DamageOrigins returns the records of foreign origins that the origin
// index places in shard's sequences from..to, per origin shard in origin
// order. Every other sequence of a damaged range held a record of this
// hub's own origin (or nothing, in a compacted stream). It scans the whole
// index in short transactions.
func (s *Stream) DamageOrigins(ctx context.Context, shard int, from, to uint64) (map[OriginKey][]OriginPos, error) {
	if shard < 0 || shard >= s.Shards() {
		return nil, fmt.Errorf("store: origins of %q: %w %d", s.name, ErrInvalidShard, shard)
	}
	out := map[OriginKey][]OriginPos{}
	var after []byte
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		n := 0
		err := s.view(func(tx *bolt.Tx) error {
			c := tx.Bucket(bucketOrigins).Cursor()
			k, v := c.First()
			if after != nil {
				if k, v = c.Seek(after); k != nil && bytes.Equal(k, after) {
					k, v = c.Next()
				}
			}
			for ; k != nil && n < 4096; k, v = c.Next() {
				n++
				after = append(after[:0], k...)
				o, oseq, sh, seq, err := decodeOriginEntry(k, v)
				if err != nil {
					return &CorruptError{File: s.path, Shard: -1, Err: err}
				}
				if int(sh) == shard && seq >= from && seq <= to {
					out[o] = append(out[o], OriginPos{OriginSeq: oseq, Seq: seq})
				}
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("store: origins of %q shard %d: %w", s.name, shard, err)
		}
		if n == 0 {
			return out, nil
		}
	}
}

// Replace writes recs in place of the damaged chunk keyed from in shard:
// the records of its range, each with its sequence here (Seq) and its
// origin (empty for this hub's own records). It refuses, changing
// nothing, unless the chunk is still damaged, recs lie within the range in
// strictly increasing order, every foreign record sits where the origin
// index says, no own record takes a sequence the index gives a foreign
// one, and (unless the stream is compacted) recs cover every sequence of
// the range (ErrIncomplete). A chunk that verifies, or is gone, is
// ErrNotDamaged and no longer listed in Damaged. Ingest times are kept
// within those of the neighbouring chunks, so they still never decrease
// within the shard.
func (s *Stream) Replace(ctx context.Context, shard int, from uint64, recs []edgehub.Record) error {
	if shard < 0 || shard >= s.Shards() {
		return fmt.Errorf("store: repair %q: %w %d", s.name, ErrInvalidShard, shard)
	}
	compact := s.Config().Compact
	recs = slices.Clone(recs)
	// The foreign records of the range, read in short transactions before
	// the write one (which must not scan the whole index while appends
	// wait); the index changes under it only when the origin's stream is
	// recreated, whose records are then checked against the index anyway.
	to, err := s.damageEnd(shard, from)
	if err != nil {
		return fmt.Errorf("store: repair %q shard %d at %d: %w", s.name, shard, from, err)
	}
	origins, err := s.DamageOrigins(ctx, shard, from, to)
	if err != nil {
		return err
	}
	foreign := map[uint64]bool{}
	for _, ps := range origins {
		for _, p := range ps {
			foreign[p.Seq] = true
		}
	}
	err = s.maintainShard(ctx, shard, func(tx *bolt.Tx, m *shardMeta) (uint64, error) {
		cb := tx.Bucket(chunkBucket(shard))
		old := cb.Get(u64(from))
		if old == nil {
			return 0, fmt.Errorf("%w: no chunk at sequence %d", ErrNotDamaged, from)
		}
		if verifyChunk(from, old) == nil {
			return 0, fmt.Errorf("%w: the chunk at sequence %d verifies", ErrNotDamaged, from)
		}
		to := rangeEnd(cb, from, m.Next)
		ob := tx.Bucket(bucketOrigins)
		prev := uint64(0)
		for i := range recs {
			r := &recs[i]
			if r.Seq < from || r.Seq > to || r.Seq <= prev {
				return 0, fmt.Errorf("record %d: sequence %d outside %d..%d or out of order", i, r.Seq, from, to)
			}
			prev = r.Seq
			if r.Origin.IsLocal() {
				continue
			}
			v := ob.Get(originIndexKey(r.Origin))
			if len(v) != 12 || binary.BigEndian.Uint32(v) != uint32(shard) || binary.BigEndian.Uint64(v[4:]) != r.Seq {
				return 0, fmt.Errorf("record %d: origin %s/%d/%d is not indexed at sequence %d", i, r.Origin.Hub, r.Origin.Shard, r.Origin.Seq, r.Seq)
			}
		}
		if !compact && (len(recs) != int(to-from+1)) {
			return 0, fmt.Errorf("%w: %d records for sequences %d..%d", ErrIncomplete, len(recs), from, to)
		}
		// Own records must not claim a foreign record's sequence.
		for i := range recs {
			if recs[i].Origin.IsLocal() && foreign[recs[i].Seq] {
				return 0, fmt.Errorf("record %d: sequence %d holds a record of a foreign origin", i, recs[i].Seq)
			}
		}
		lo, hi := ingestBounds(cb, from, m)
		for i := range recs {
			t := min(max(recs[i].IngestTime, lo), hi)
			recs[i].IngestTime, lo = t, t
		}
		// The damaged chunk's count is unknown: a dense range held to-from+1.
		oldCount := int64(to - from + 1)
		if compact {
			oldCount = int64(len(recs))
		}
		if err := cb.Delete(u64(from)); err != nil {
			return 0, err
		}
		m.Bytes -= int64(len(old))
		m.Records -= oldCount
		for rest := recs; len(rest) > 0; {
			n, size := 0, 0
			for n < len(rest) && (n == 0 || size < maxChunkBytes) {
				size += record.Size(&rest[n])
				n++
			}
			buf, err := record.AppendBatch(nil, rest[:n])
			if err != nil {
				return 0, err
			}
			if err := cb.Put(u64(rest[0].Seq), buf); err != nil {
				return 0, err
			}
			m.Bytes += int64(len(buf))
			m.Records += int64(n)
			rest = rest[n:]
		}
		return firstSeq(tx, shard, m), nil
	})
	if errors.Is(err, ErrNotDamaged) {
		// Whatever listed it is out of date (the chunk verifies, or is
		// gone): stop listing it, so a repairer asking again is done.
		s.damage.mu.Lock()
		delete(s.damage.m, damageKey{shard, from})
		s.damage.mu.Unlock()
	}
	if err != nil {
		return fmt.Errorf("store: repair %q shard %d at %d: %w", s.name, shard, from, err)
	}
	s.damage.mu.Lock()
	delete(s.damage.m, damageKey{shard, from})
	s.damage.epoch++
	s.damage.mu.Unlock()
	s.logger.Warn("store: damaged chunk repaired", "file", s.path, "shard", shard, "seq", from, "records", len(recs))
	return nil
}

// ingestBounds are the ingest times a repaired range may take: from the
// newest of the chunk before to the oldest of the chunk after (or the
// shard's last ingest time), as far as those chunks can be read.
func ingestBounds(cb *bolt.Bucket, from uint64, m *shardMeta) (lo, hi int64) {
	lo, hi = 0, m.LastIngest
	c := cb.Cursor()
	c.Seek(u64(from))
	if k, v := c.Prev(); k != nil {
		if info, err := record.ReadInfo(v); err == nil {
			lo = info.MaxIngest
		}
	}
	c.Seek(u64(from))
	if k, v := c.Next(); k != nil {
		if info, err := record.ReadInfo(v); err == nil {
			hi = info.BaseIngest
		}
	}
	return lo, max(lo, hi)
}

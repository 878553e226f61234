package store

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgehub/edgehub/internal/record"
)

// Retention and compaction run on a maintenance goroutine per stream. Each
// step is its own short write transaction that the writer runs between
// group commits, so appends never wait behind more than one step.
const (
	// stepChunks bounds the chunks one maintenance transaction deletes or
	// rewrites.
	stepChunks = 64
	// compactEvery compacts a shard at least this often when records arrived.
	compactEvery = 10 * time.Minute
)

func (s *Stream) maintenance() {
	defer close(s.maintDone)
	t := time.NewTicker(s.st.cfg.RetentionInterval)
	defer t.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-s.quit
		cancel()
	}()
	for {
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
		if err := s.enforce(ctx, false); err != nil && ctx.Err() == nil {
			s.logger.Error("store: retention", "err", err)
		}
	}
}

// Enforce runs retention (age and size), producer expiry and, when due,
// compaction now. The maintenance goroutine calls it periodically; tests
// and operators may call it directly. forceCompact compacts every shard of a
// compacted stream regardless of how much changed.
func (s *Stream) Enforce(ctx context.Context, forceCompact bool) error {
	return s.enforce(ctx, forceCompact)
}

func (s *Stream) enforce(ctx context.Context, forceCompact bool) error {
	s.maintMu.Lock()
	defer s.maintMu.Unlock()
	cfg := s.Config()
	now := s.st.ageNow() // a clock step must not delete records (docs/store.md)
	if cfg.Retention > 0 {
		cutoff := now.Add(-cfg.Retention).UnixNano()
		for i := range s.Shards() {
			if s.retired(i) {
				continue
			}
			if err := s.trimHead(ctx, i, func(_ int64, lastIngest int64) bool { return lastIngest < cutoff }); err != nil {
				return err
			}
		}
	}
	if cfg.MaxBytes > 0 {
		if err := s.trimBytes(ctx, cfg.MaxBytes); err != nil {
			return err
		}
	}
	// A closed shard left empty (it never held a record, or everything
	// went) is retired.
	for i, ls := range s.layout.Load().Shards {
		if sh := s.table()[i]; ls.State == ShardClosed && sh.records.Load() == 0 {
			if err := s.maintainShard(ctx, i, func(tx *bolt.Tx, m *shardMeta) (uint64, error) {
				return firstSeq(tx, i, m), nil
			}); err != nil {
				return err
			}
		}
	}
	if cfg.Compact {
		for i, sh := range s.table()[:s.Shards()] {
			if s.retired(i) {
				continue
			}
			next := sh.next.Load()
			grown := next - sh.compactedNext
			due := grown > 0 && (forceCompact || grown >= uint64(sh.records.Load()/4)+1 || now.Sub(sh.compactedAt) >= compactEvery)
			if !due && !(forceCompact && sh.records.Load() > 0) {
				continue
			}
			if err := s.compact(ctx, i, next-1, now); err != nil {
				return err
			}
			sh.compactedNext, sh.compactedAt = next, now
		}
	}
	return s.expireProducers(ctx, now)
}

// maintainShard runs fn on the writer goroutine in its own transaction with
// a copy of the shard's state, and publishes the state if the transaction
// commits. A closed shard left without records is retired in the same
// transaction (retire); a retired shard is left alone.
func (s *Stream) maintainShard(ctx context.Context, shard int, fn func(tx *bolt.Tx, m *shardMeta) (first uint64, err error)) error {
	sh := s.table()[shard]
	var m shardMeta
	var first uint64
	var retired *Layout
	skip := false
	err := s.maintain(ctx, func(tx *bolt.Tx) error {
		m, retired, skip = sh.meta, nil, false
		cur := s.layout.Load()
		if cur.Shards[shard].State == ShardRetired {
			skip = true
			return nil
		}
		var err error
		if first, err = fn(tx, &m); err != nil {
			return err
		}
		if cur.Shards[shard].State == ShardClosed && m.Records == 0 {
			if k, _ := tx.Bucket(chunkBucket(shard)).Cursor().First(); k == nil {
				retired, err = s.retire(tx, cur, shard)
				return err
			}
		}
		return tx.Bucket(bucketMeta).Put(shardKey(shard), m.encode())
	}, func() {
		if skip {
			return
		}
		sh.meta = m
		sh.publish(m, first)
		if retired != nil {
			s.publishLayout(s.table(), retired)
		}
	})
	return err
}

// retire marks a closed shard whose last record went as retired, in the
// transaction that removed it: its chunk bucket, its state and its
// producers' entries go; its layout entry stays (ids are never reused, and
// its children name it). The layout version is unchanged: routing is not.
func (s *Stream) retire(tx *bolt.Tx, cur *Layout, shard int) (*Layout, error) {
	if err := tx.DeleteBucket(chunkBucket(shard)); err != nil {
		return nil, err
	}
	m := tx.Bucket(bucketMeta)
	if err := m.Delete(shardKey(shard)); err != nil {
		return nil, err
	}
	pb := tx.Bucket(bucketProducers)
	var gone [][]byte
	pb.ForEach(func(k, _ []byte) error {
		if len(k) == 12 && binary.BigEndian.Uint32(k[8:]) == uint32(shard) {
			gone = append(gone, append([]byte(nil), k...))
		}
		return nil
	})
	for _, k := range gone {
		if err := pb.Delete(k); err != nil {
			return nil, err
		}
	}
	nl := Layout{Version: cur.Version, Shards: slices.Clone(cur.Shards)}
	nl.Shards[shard].State = ShardRetired
	if err := m.Put(keyLayout, encodeLayout(nl)); err != nil {
		return nil, err
	}
	return &nl, nil
}

// retired reports whether shard is retired now.
func (s *Stream) retired(shard int) bool {
	return s.layout.Load().Shards[shard].State == ShardRetired
}

// trimHead deletes chunks from the head of shard while expired(baseIngest,
// lastIngest) holds, in bounded steps.
func (s *Stream) trimHead(ctx context.Context, shard int, expired func(baseIngest, lastIngest int64) bool) error {
	for {
		more := false
		err := s.maintainShard(ctx, shard, func(tx *bolt.Tx, m *shardMeta) (uint64, error) {
			c := tx.Bucket(chunkBucket(shard)).Cursor()
			k, v := c.First()
			for n := 0; k != nil; n++ {
				if n == stepChunks {
					more = true
					break
				}
				info, err := record.ReadInfo(v)
				if err != nil {
					return 0, s.corrupt(shard, binary.BigEndian.Uint64(k), err)
				}
				if !expired(info.BaseIngest, info.MaxIngest) {
					break
				}
				nk, _ := c.Next()
				if nk == nil {
					// The last chunk: nothing follows it.
					if err := s.deleteChunk(tx, shard, k, v, m); err != nil {
						return 0, err
					}
					break
				}
				nk = append([]byte(nil), nk...) // deleting invalidates cursor memory
				if err := s.deleteChunk(tx, shard, k, v, m); err != nil {
					return 0, err
				}
				k, v = c.Seek(nk)
			}
			return firstSeq(tx, shard, m), nil
		})
		if err != nil || !more {
			return err
		}
	}
}

// trimBytes deletes the oldest chunks across shards while the stream's live
// bytes exceed maxBytes.
func (s *Stream) trimBytes(ctx context.Context, maxBytes int64) error {
	for {
		var total int64
		for _, sh := range s.table()[:s.Shards()] {
			total += sh.bytes.Load()
		}
		if total <= maxBytes {
			return nil
		}
		// The shard whose head is oldest loses its head chunk.
		oldest, oldestIngest := -1, int64(0)
		err := s.view(func(tx *bolt.Tx) error {
			for i := range s.Shards() {
				cb := tx.Bucket(chunkBucket(i))
				if cb == nil {
					continue // retired
				}
				_, v := cb.Cursor().First()
				if v == nil {
					continue
				}
				info, err := record.ReadInfo(v)
				if err != nil {
					return &CorruptError{File: s.path, Shard: i, Err: err}
				}
				if oldest < 0 || info.BaseIngest < oldestIngest {
					oldest, oldestIngest = i, info.BaseIngest
				}
			}
			return nil
		})
		if err != nil || oldest < 0 {
			return err
		}
		excess := total - maxBytes
		err = s.maintainShard(ctx, oldest, func(tx *bolt.Tx, m *shardMeta) (uint64, error) {
			c := tx.Bucket(chunkBucket(oldest)).Cursor()
			var freed int64
			for k, v := c.First(); k != nil && freed < excess; k, v = c.First() {
				info, err := record.ReadInfo(v)
				if err != nil {
					return 0, &CorruptError{File: s.path, Shard: oldest, Err: err}
				}
				if info.BaseIngest > oldestIngest && freed > 0 {
					break // another shard may be older now
				}
				freed += int64(len(v))
				if err := s.deleteChunk(tx, oldest, k, v, m); err != nil {
					return 0, err
				}
			}
			return firstSeq(tx, oldest, m), nil
		})
		if err != nil {
			return err
		}
	}
}

// deleteChunk removes a chunk with its origin index entries.
func (s *Stream) deleteChunk(tx *bolt.Tx, shard int, k, v []byte, m *shardMeta) error {
	recs, err := record.DecodeBatch(v, nil)
	if err != nil {
		return s.corrupt(shard, binary.BigEndian.Uint64(k), err)
	}
	size := len(v)
	if err := removeOrigins(tx, shard, recs); err != nil {
		return err
	}
	if err := tx.Bucket(chunkBucket(shard)).Delete(k); err != nil {
		return err
	}
	m.Bytes -= int64(size)
	m.Records -= int64(len(recs))
	return nil
}

// removeOrigins deletes the origin index entries of recs (stored in shard)
// that still point at them: after an origin's stream was recreated
// (SetOriginIncarnation), an entry of the same origin sequence may belong to
// a record of the new incarnation.
func removeOrigins(tx *bolt.Tx, shard int, recs []record.Record) error {
	var ob *bolt.Bucket
	for _, r := range recs {
		if r.Origin.IsLocal() {
			continue
		}
		if ob == nil {
			ob = tx.Bucket(bucketOrigins)
		}
		k := originIndexKey(r.Origin)
		if v := ob.Get(k); len(v) != 12 || binary.BigEndian.Uint32(v) != uint32(shard) || binary.BigEndian.Uint64(v[4:]) != r.Seq {
			continue
		}
		if err := ob.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

func firstSeq(tx *bolt.Tx, shard int, m *shardMeta) uint64 {
	if k, _ := tx.Bucket(chunkBucket(shard)).Cursor().First(); k != nil {
		return binary.BigEndian.Uint64(k)
	}
	return m.Next
}

// compact keeps, among records with sequence <= upTo, only the latest record
// per key; tombstones older than the stream's tombstone retention go too.
// Keyless records are kept. Survivors keep their sequence numbers. The scan
// for the latest sequence per key reads in short transactions; rewrites go
// in steps of stepChunks chunks.
func (s *Stream) compact(ctx context.Context, shard int, upTo uint64, now time.Time) error {
	latest := map[string]uint64{}
	for from := uint64(0); from <= upTo; {
		chunks, err := s.ReadRaw(shard, from, 4<<20)
		if err != nil {
			return err
		}
		if len(chunks) == 0 {
			break
		}
		for _, c := range chunks {
			recs, err := record.DecodeBatch(c, nil)
			if err != nil {
				return &CorruptError{File: s.path, Shard: shard, Err: err}
			}
			for _, r := range recs {
				if r.Key != nil && r.Seq <= upTo && r.Seq >= from {
					latest[string(r.Key)] = r.Seq
				}
			}
			from = recs[len(recs)-1].Seq + 1
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	tombCutoff := now.Add(-s.Config().TombstoneRetention).UnixNano()
	// Lineage rule 1: while an ancestor of the shard is not retired, it may
	// hold an older value of a tombstoned key, which dropping the tombstone
	// would bring back for a reader of the lineage (parent, then child).
	keepTombstones := tombstoneRule1 && s.liveAncestor(shard)
	keep := func(r *record.Record) bool {
		switch {
		case r.Seq > upTo || r.Key == nil:
			return true
		case latest[string(r.Key)] != r.Seq:
			return false
		case r.Value == nil:
			return keepTombstones || r.IngestTime >= tombCutoff
		}
		return true
	}
	removed := 0
	for from := uint64(0); from <= upTo; {
		var next uint64
		err := s.maintainShard(ctx, shard, func(tx *bolt.Tx, m *shardMeta) (uint64, error) {
			cb := tx.Bucket(chunkBucket(shard))
			c := cb.Cursor()
			k, v := c.Seek(u64(from))
			next = upTo + 1
			for n := 0; k != nil; n++ {
				if n == stepChunks {
					next = binary.BigEndian.Uint64(k)
					break
				}
				base := binary.BigEndian.Uint64(k)
				if base > upTo {
					break
				}
				recs, err := record.DecodeBatch(v, nil)
				if err != nil {
					return 0, s.corrupt(shard, base, err)
				}
				var kept, gone []record.Record
				for i := range recs {
					if keep(&recs[i]) {
						kept = append(kept, recs[i])
					} else {
						gone = append(gone, recs[i])
					}
				}
				if len(gone) == 0 {
					k, v = c.Next()
					continue
				}
				removed += len(gone)
				// Keep copies: deleting from the bucket invalidates v.
				for i := range kept {
					kept[i] = kept[i].Clone()
				}
				if err := s.deleteChunk(tx, shard, k, v, m); err != nil {
					return 0, err
				}
				if len(kept) > 0 {
					if err := s.putChunk(tx, shard, kept, m); err != nil {
						return 0, err
					}
				}
				k, v = c.Seek(u64(base + 1))
			}
			return firstSeq(tx, shard, m), nil
		})
		if err != nil {
			return fmt.Errorf("store: compact %q shard %d: %w", s.name, shard, err)
		}
		from = next
	}
	if removed > 0 {
		s.logger.Debug("store: compacted", "shard", shard, "removed", removed, "keys", len(latest))
	}
	return nil
}

// tombstoneRule1 is false only in the test showing that the rule matters.
var tombstoneRule1 = true

// liveAncestor reports whether some ancestor of shard is not retired.
func (s *Stream) liveAncestor(shard int) bool {
	l := s.layout.Load()
	seen := map[uint32]bool{}
	todo := slices.Clone(l.Shards[shard].Parents)
	for len(todo) > 0 {
		id := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		if seen[id] {
			continue
		}
		seen[id] = true
		if l.Shards[id].State != ShardRetired {
			return true
		}
		todo = append(todo, l.Shards[id].Parents...)
	}
	return false
}

// putChunk writes recs (already sequenced) as one chunk with its indexes.
func (s *Stream) putChunk(tx *bolt.Tx, shard int, recs []record.Record, m *shardMeta) error {
	buf, err := record.AppendBatch(nil, recs)
	if err != nil {
		return err
	}
	if err := tx.Bucket(chunkBucket(shard)).Put(u64(recs[0].Seq), buf); err != nil {
		return err
	}
	if err := indexOrigins(tx, shard, recs); err != nil {
		return err
	}
	m.Bytes += int64(len(buf))
	m.Records += int64(len(recs))
	return nil
}

// expireProducers forgets idempotent producers idle longer than
// Config.ProducerExpiry.
func (s *Stream) expireProducers(ctx context.Context, now time.Time) error {
	cutoff := now.Add(-s.st.cfg.ProducerExpiry).UnixNano()
	return s.maintain(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketProducers)
		var idle [][]byte
		damaged := 0
		b.ForEach(func(k, v []byte) error {
			used, _, err := decodeProducer(v)
			switch {
			case err != nil:
				// Kept: deleting it would quietly end the producer's
				// idempotence. Its appends are refused as corrupt.
				damaged++
			case used < cutoff:
				idle = append(idle, append([]byte(nil), k...))
			}
			return nil
		})
		if damaged > 0 && s.producerDamage.Swap(int64(damaged)) != int64(damaged) {
			s.logger.Error("store: damaged producer table entries; those producers' appends are refused",
				"err", &CorruptError{File: s.path, Shard: -1, Err: fmt.Errorf("%d producer table entries: %w", damaged, errBadProducer)})
		}
		for _, k := range idle {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	}, nil)
}

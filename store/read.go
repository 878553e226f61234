package store

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgehub/edgehub"
	"github.com/edgehub/edgehub/internal/record"
)

// ReadOptions bound one read. Zero values take the defaults.
type ReadOptions struct {
	// MaxRecords defaults to 1000.
	MaxRecords int
	// MaxBytes (of encoded chunks copied) defaults to 1 MiB. At least one
	// chunk is always read, so a large record is never stuck.
	MaxBytes int
}

func (o ReadOptions) withDefaults() ReadOptions {
	if o.MaxRecords <= 0 {
		o.MaxRecords = 1000
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = 1 << 20
	}
	return o
}

// view runs fn in a read transaction, turning a bbolt panic on a damaged page
// into a CorruptError. Reads copy what they return and keep transactions
// short, since a long read transaction holds back bbolt's page reuse.
func (s *Stream) view(fn func(tx *bolt.Tx) error) (err error) {
	if s.closed.Load() {
		return fmt.Errorf("store: stream %q: %w", s.name, ErrClosed)
	}
	defer func() {
		if r := recover(); r != nil {
			err = &CorruptError{File: s.path, Shard: -1, Err: fmt.Errorf("%v", r)}
		}
	}()
	err = s.db.View(fn)
	if err != nil && s.closed.Load() {
		return fmt.Errorf("store: stream %q: %w", s.name, ErrClosed)
	}
	return err
}

// ReadRaw returns copies of the encoded chunks of shard that hold records
// with sequence from or later, in order. The first chunk may also hold
// records before from: decoders skip them. A from below the first live
// sequence starts at the first live record (retention removed the rest).
// At least one chunk is returned when there is one, whatever maxBytes says.
// Every chunk returned passed its checksum. A damaged chunk ends the
// result before it; read at it, it is a *CorruptError, and the stream
// remembers it (Damaged) so that it is reported and, if the stream is
// replicated, repaired without waiting for the next scrub.
func (s *Stream) ReadRaw(shard int, from uint64, maxBytes int) ([][]byte, error) {
	chunks, epoch, err := s.readChunks(shard, from, maxBytes)
	if err != nil {
		return nil, err
	}
	out := make([][]byte, 0, len(chunks))
	for _, c := range chunks {
		if _, err := record.ReadInfo(c.data); err != nil {
			if len(out) > 0 {
				break // served up to it; the next read reports it
			}
			return nil, s.corruptSince(shard, c.seq, err, &epoch)
		}
		out = append(out, c.data)
	}
	return out, nil
}

type chunk struct {
	seq  uint64 // the chunk's key: its first sequence
	data []byte
}

// readChunks copies the chunks of shard from sequence from on, about
// maxBytes of them (at least one), unverified. It returns the damage epoch
// its transaction began at, for noting what the caller finds damaged
// (corruptSince).
func (s *Stream) readChunks(shard int, from uint64, maxBytes int) ([]chunk, uint64, error) {
	if shard < 0 || shard >= s.Shards() {
		return nil, 0, fmt.Errorf("store: read %q: %w %d of %d", s.name, ErrInvalidShard, shard, s.Shards())
	}
	if maxBytes <= 0 {
		maxBytes = 1 << 20
	}
	if from >= s.table()[shard].next.Load() {
		return nil, 0, nil
	}
	var out []chunk
	epoch := s.damageEpoch()
	err := s.view(func(tx *bolt.Tx) error {
		cb := tx.Bucket(chunkBucket(shard))
		if cb == nil {
			return nil // retired meanwhile: nothing left
		}
		c := cb.Cursor()
		k, v := seekChunk(c, from)
		for total := 0; k != nil && (total == 0 || total+len(v) <= maxBytes); k, v = c.Next() {
			seq, err := decodeChunkKey(k)
			if err != nil {
				return &CorruptError{File: s.path, Shard: shard, Err: err}
			}
			out = append(out, chunk{seq: seq, data: append([]byte(nil), v...)})
			total += len(v)
		}
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("store: read %q shard %d: %w", s.name, shard, err)
	}
	if s.damage.afterRead != nil {
		s.damage.afterRead()
	}
	return out, epoch, nil
}

// seekChunk positions c on the chunk that holds from, or the first chunk
// after it.
func seekChunk(c *bolt.Cursor, from uint64) (k, v []byte) {
	k, v = c.Seek(u64(from))
	if k != nil && binary.BigEndian.Uint64(k) == from {
		return k, v
	}
	// The chunk before may still hold from.
	if pk, pv := c.Prev(); pk != nil {
		if info, err := record.ReadInfo(pv); err != nil || info.LastSeq >= from {
			return pk, pv // a damaged chunk is returned so that decoding reports it
		}
		return c.Next()
	}
	return c.First()
}

// Read returns up to opts.MaxRecords records of shard with sequence from or
// later, in order. It returns no records (and no error) at the end of the
// shard; Wait blocks until there are more. A damaged chunk is reported as a
// *CorruptError, never returned as data.
func (s *Stream) Read(shard int, from uint64, opts ReadOptions) ([]edgehub.Record, error) {
	opts = opts.withDefaults()
	chunks, epoch, err := s.readChunks(shard, from, opts.MaxBytes)
	if err != nil {
		return nil, err
	}
	var recs []edgehub.Record
	for _, c := range chunks {
		before := len(recs)
		recs, err = record.DecodeBatch(c.data, recs)
		if err != nil {
			return nil, s.corruptSince(shard, c.seq, err, &epoch)
		}
		if before == 0 {
			// Drop the records before from in the first chunk.
			skip := 0
			for skip < len(recs) && recs[skip].Seq < from {
				skip++
			}
			recs = recs[skip:]
		}
		if len(recs) >= opts.MaxRecords {
			return recs[:opts.MaxRecords], nil
		}
	}
	return recs, nil
}

// SeqAtTime returns the sequence of the first record of shard ingested at or
// after t, or the next sequence to be assigned if there is none. Ingest
// times never decrease within a shard, so it binary-searches the chunks by
// sequence, reading one chunk header per step in its own short transaction.
func (s *Stream) SeqAtTime(shard int, t time.Time) (uint64, error) {
	if shard < 0 || shard >= s.Shards() {
		return 0, fmt.Errorf("store: read %q: %w %d", s.name, ErrInvalidShard, shard)
	}
	ts := t.UnixNano()
	first, last, _ := s.Bounds(shard)
	// The answer's chunk starts in [lo, hi); found is the earliest chunk
	// seen whose newest record is at or after ts.
	lo, hi := first, last+1
	var found []byte
	for lo < hi {
		mid := lo + (hi-lo)/2
		chunks, epoch, err := s.readChunks(shard, mid, 1)
		if err != nil {
			return 0, err
		}
		if len(chunks) == 0 {
			break // retention removed the rest meanwhile
		}
		c := chunks[0]
		info, err := record.ReadInfo(c.data)
		if err != nil {
			return 0, s.corruptSince(shard, c.seq, err, &epoch)
		}
		if info.BaseSeq >= hi {
			hi = mid // mid fell in a gap left by compaction: no chunk starts in [mid, hi)
			continue
		}
		if info.MaxIngest >= ts {
			found, hi = c.data, min(hi, info.BaseSeq)
		} else {
			lo = info.LastSeq + 1
		}
	}
	if found == nil {
		return s.firstAtOrAfter(shard, last+1), nil
	}
	recs, err := record.DecodeBatch(found, nil)
	if err != nil {
		return 0, &CorruptError{File: s.path, Shard: shard, Err: err}
	}
	for _, r := range recs {
		if r.IngestTime >= ts {
			return s.firstAtOrAfter(shard, r.Seq), nil
		}
	}
	return s.firstAtOrAfter(shard, last+1), nil // unreachable: MaxIngest >= ts
}

func (s *Stream) firstAtOrAfter(shard int, seq uint64) uint64 {
	if f := s.table()[shard].first.Load(); f > seq {
		return f
	}
	return seq
}

// ReadOrigin returns up to max records whose origin is k with origin
// sequence above after, in origin order. Replication serves pulls with it.
func (s *Stream) ReadOrigin(k OriginKey, after uint64, max int) ([]edgehub.Record, error) {
	if max <= 0 {
		max = 1000
	}
	type pos struct {
		shard int
		seq   uint64
	}
	var want []pos
	prefix := k.bytes()
	err := s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketOrigins).Cursor()
		for key, v := c.Seek(binary.BigEndian.AppendUint64(append([]byte(nil), prefix...), after+1)); key != nil && len(want) < max; key, v = c.Next() {
			if !bytes.HasPrefix(key, prefix) {
				break
			}
			_, _, shard, seq, err := decodeOriginEntry(key, v)
			if err != nil {
				return &CorruptError{File: s.path, Shard: -1, Err: fmt.Errorf("origin index of %s/%d: %w", k.Hub, k.Shard, err)}
			}
			want = append(want, pos{int(shard), seq})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: read origin %s/%d of %q: %w", k.Hub, k.Shard, s.name, err)
	}
	out := make([]edgehub.Record, 0, len(want))
	for i := 0; i < len(want); {
		// Records of one origin usually sit together in one shard: read
		// runs at once.
		p := want[i]
		if p.shard >= s.Shards() {
			return nil, &CorruptError{File: s.path, Shard: p.shard, Err: fmt.Errorf("origin index points at shard %d", p.shard)}
		}
		recs, err := s.Read(p.shard, p.seq, ReadOptions{MaxRecords: len(want) - i})
		if err != nil {
			return nil, err
		}
		before := i
		for _, r := range recs {
			// Entries whose record is gone (retention, compaction) are
			// skipped.
			for i < len(want) && want[i].shard == p.shard && want[i].seq < r.Seq {
				i++
			}
			if i >= len(want) || want[i].shard != p.shard {
				break
			}
			if want[i].seq == r.Seq {
				out = append(out, r)
				i++
			}
		}
		if i == before {
			i++ // the record is gone
		}
	}
	return out, nil
}

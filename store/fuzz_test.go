package store

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/edgehub/edgehub/internal/record"
)

// On-disk decoders get untrusted bytes (a damaged file): each must return an
// error or a value that encodes back to the same bytes, and never panic.

func FuzzDecodeProducer(f *testing.F) {
	f.Add(encodeProducer(1764633600e9, []producerBatch{{seq: 0, count: 2, first: 1, digest: 77}, {seq: 2, count: 1, first: 9, digest: 1}}))
	f.Add(encodeProducer(0, nil))
	v1 := binary.BigEndian.AppendUint64(nil, 5)
	v1 = binary.BigEndian.AppendUint64(v1, 10)
	v1 = binary.BigEndian.AppendUint32(v1, 3)
	f.Add(binary.BigEndian.AppendUint64(v1, 4))
	f.Add([]byte{producerV2, 1, 2})
	f.Fuzz(func(t *testing.T, v []byte) {
		used, batches, err := decodeProducer(v)
		if err != nil {
			return
		}
		again := encodeProducer(used, batches)
		if len(v)%2 == 1 && !bytes.Equal(again, v) {
			t.Fatalf("version 2 value %x re-encodes as %x", v, again)
		}
		used2, batches2, err := decodeProducer(again)
		if err != nil || used2 != used || len(batches2) != len(batches) {
			t.Fatalf("re-decode of %x: %v", again, err)
		}
		for i := range batches {
			if batches[i] != batches2[i] {
				t.Fatalf("batch %d: %+v, re-decoded %+v", i, batches[i], batches2[i])
			}
		}
	})
}

func FuzzDecodeShardMeta(f *testing.F) {
	f.Add(shardMeta{Next: 1}.encode())
	f.Add(shardMeta{Next: 1 << 40, LastIngest: -5, Bytes: 1 << 30, Records: 7}.encode())
	f.Fuzz(func(t *testing.T, v []byte) {
		m, err := decodeShardMeta(v)
		if err != nil {
			return
		}
		if !bytes.Equal(m.encode(), v) {
			t.Fatalf("%x re-encodes as %x", v, m.encode())
		}
	})
}

func FuzzDecodeWatermark(f *testing.F) {
	f.Add(OriginKey{Hub: "core-1", Shard: 3}.bytes(), u64(42))
	f.Add([]byte{0xff, 'a'}, []byte{})
	f.Fuzz(func(t *testing.T, k, v []byte) {
		ok, wm, err := decodeWatermark(k, v)
		if err != nil {
			return
		}
		if !bytes.Equal(ok.bytes(), k) || !bytes.Equal(u64(wm), v) {
			t.Fatalf("%x → %x re-encodes differently", k, v)
		}
	})
}

func FuzzDecodeOriginEntry(f *testing.F) {
	k := binary.BigEndian.AppendUint64(OriginKey{Hub: "core-1", Shard: 3}.bytes(), 99)
	v := binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint32(nil, 2), 1234)
	f.Add(k, v)
	f.Add(k[:len(k)-1], v[:11])
	f.Fuzz(func(t *testing.T, k, v []byte) {
		o, oseq, shard, seq, err := decodeOriginEntry(k, v)
		if err != nil {
			return
		}
		k2 := binary.BigEndian.AppendUint64(o.bytes(), oseq)
		v2 := binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint32(nil, shard), seq)
		if !bytes.Equal(k2, k) || !bytes.Equal(v2, v) {
			t.Fatalf("%x → %x re-encodes as %x → %x", k, v, k2, v2)
		}
	})
}

func FuzzDecodeChunkKey(f *testing.F) {
	f.Add(u64(1))
	f.Add([]byte("abc"))
	f.Fuzz(func(t *testing.T, k []byte) {
		seq, err := decodeChunkKey(k)
		if err != nil {
			return
		}
		if !bytes.Equal(u64(seq), k) {
			t.Fatalf("%x re-encodes as %x", k, u64(seq))
		}
	})
}

// BenchmarkBatchDigest: the idempotence check hashes every record of an
// idempotent batch once (1000 records of 128 bytes here).
func BenchmarkBatchDigest(b *testing.B) {
	recs := make([]record.Record, 1000)
	for i := range recs {
		recs[i] = record.Record{Key: []byte("sensor-42"), Value: make([]byte, 128), Time: int64(i)}
	}
	h := xxhash.New()
	var scratch []byte
	b.SetBytes(int64(1000 * (128 + 9)))
	for b.Loop() {
		batchDigest(recs, h, &scratch)
	}
}

func FuzzDecodeOriginIncarnation(f *testing.F) {
	inc := newIncarnation(time.Unix(1764633600, 0))
	f.Add(append(bytes.Clone(originIncPrefix), "core-1"...), inc)
	f.Add(bytes.Clone(originIncPrefix), inc[:3])
	f.Fuzz(func(t *testing.T, k, v []byte) {
		hub, hexInc, err := decodeOriginIncarnation(k, v)
		if err != nil {
			if _, err := decodeIncarnation(v); err == nil && len(v) != IncarnationLen {
				t.Fatalf("incarnation of %d bytes decoded", len(v))
			}
			return
		}
		raw, err := hex.DecodeString(hexInc)
		if err != nil || !bytes.Equal(raw, v) || !bytes.Equal(append(bytes.Clone(originIncPrefix), hub...), k) {
			t.Fatalf("%x → %x decoded as %q %q", k, v, hub, hexInc)
		}
		if again, err := decodeIncarnation(v); err != nil || again != hexInc {
			t.Fatalf("decodeIncarnation(%x) = %q %v", v, again, err)
		}
	})
}

// layoutSeeds are valid layouts: a split, a merge and a reshard with two
// parents, one shard retired.
func layoutSeeds() [][]byte {
	half := uint64(1) << 63
	split := Layout{Version: 1, Shards: []ShardLayout{
		{ID: 0, State: ShardClosed, HashStart: 0, HashEnd: ^uint64(0), End: 7, ClosedAt: 1764633600e9, Children: []uint32{1, 2}},
		{ID: 1, HashStart: 0, HashEnd: half - 1, Parents: []uint32{0}},
		{ID: 2, HashStart: half, HashEnd: ^uint64(0), Parents: []uint32{0}},
	}}
	merge := Layout{Version: 3, Shards: []ShardLayout{
		{ID: 0, State: ShardRetired, HashStart: 0, HashEnd: half - 1, End: 2, ClosedAt: 5, Children: []uint32{2}},
		{ID: 1, State: ShardClosed, HashStart: half, HashEnd: ^uint64(0), ClosedAt: 5, Children: []uint32{2}},
		{ID: 2, HashStart: 0, HashEnd: ^uint64(0), Parents: []uint32{0, 1}},
	}}
	l := uniformLayout(2)
	third1, _ := record.HashRange(1, 3)
	third2, _ := record.HashRange(2, 3)
	l.Version = 1
	l.Shards[0].State, l.Shards[0].Children, l.Shards[0].End = ShardClosed, []uint32{2, 3}, 10
	l.Shards[1].State, l.Shards[1].Children = ShardClosed, []uint32{3, 4}
	l.Shards = append(l.Shards,
		ShardLayout{ID: 2, HashStart: 0, HashEnd: third1 - 1, Parents: []uint32{0}},
		ShardLayout{ID: 3, HashStart: third1, HashEnd: third2 - 1, Parents: []uint32{0, 1}},
		ShardLayout{ID: 4, HashStart: third2, HashEnd: ^uint64(0), Parents: []uint32{1}})
	return [][]byte{encodeLayout(split), encodeLayout(merge), encodeLayout(l), encodeLayout(uniformLayout(1))}
}

func TestLayoutSeedsValid(t *testing.T) {
	for i, v := range layoutSeeds() {
		if _, err := decodeLayout(v); err != nil {
			t.Fatalf("seed %d: %v", i, err)
		}
	}
}

// FuzzDecodeLayout: m/layout decodes to a layout that passes every check
// and encodes back to the same bytes, or is an error.
func FuzzDecodeLayout(f *testing.F) {
	for _, v := range layoutSeeds() {
		f.Add(v)
	}
	f.Add([]byte{layoutEncoding, 1, 2, 2})
	f.Add([]byte{layoutEncoding, 0, 0xff, 0xff, 0xff, 0xff, 0x0f, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, v []byte) {
		l, err := decodeLayout(v)
		if err != nil {
			return
		}
		if err := l.check(); err != nil {
			t.Fatalf("decoded layout fails its check: %v", err)
		}
		if again := encodeLayout(l); !bytes.Equal(again, v) {
			t.Fatalf("%x re-encodes as %x", v, again)
		}
		_ = l.ShardFor(xxhash.Sum64(v))
	})
}

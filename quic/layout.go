package quic

import "encoding/binary"

// Resharding on the wire (docs/resharding.md sections 2 and 3,
// docs/protocol.md "Layouts"). A stream's shards have stable ids and a
// lineage; a client that sets the lineage flag of its OPEN body learns the
// layout from LAYOUT frames, and a subscription learns from SHARD_END that a
// closed shard has been sent to its end. Every field here is additive: it is
// a trailing field older peers ignore, or a frame type sent only to clients
// that asked for it.

// Frame types of layouts.
const (
	// FrameProduceLayout (hub → client, produce session with the lineage
	// flag): the stream's layout, after PRODUCE_READY and at every change.
	FrameProduceLayout FrameType = 0x13
	// FrameConsumeLayout (hub → client, subscription with the lineage flag):
	// the stream's layout, after CONSUME_READY and at every change, before
	// any RECORDS of a shard it adds.
	FrameConsumeLayout FrameType = 0x23
	// FrameShardEnd (hub → client, subscription with the lineage flag):
	// every record of a closed shard up to its end has been sent.
	FrameShardEnd FrameType = 0x24
)

// ShardState is a shard's state in a LAYOUT entry. Values other than the
// three below may come from later revisions: a receiver treats them as not
// open (no appends).
type ShardState byte

const (
	ShardOpen    ShardState = 0 // takes appends
	ShardClosed  ShardState = 1 // read-only; End is final
	ShardRetired ShardState = 2 // closed and emptied by retention
)

// MaxLayoutShards bounds the entries of a LAYOUT (the store's cap on ids
// ever assigned to a stream).
const MaxLayoutShards = 4096

// LayoutShard is one entry of a Layout.
type LayoutShard struct {
	ID                 uint32
	State              ShardState
	HashStart, HashEnd uint64 // inclusive XXH64 range
	End                uint64 // last sequence of a closed shard (0: never held a record); 0 while open
	Parents            []uint32
}

// Layout is the payload of LAYOUT frames (0x13, 0x23) and the trailing part
// of INFO.
type Layout struct {
	Version uint64 // 0: never resharded
	NextID  uint32 // the next id a reshard would assign: every id below it exists
	Shards  []LayoutShard
}

func (f *Layout) Append(dst []byte) []byte {
	dst = binary.AppendUvarint(dst, f.Version)
	dst = binary.AppendUvarint(dst, uint64(f.NextID))
	dst = binary.AppendUvarint(dst, uint64(len(f.Shards)))
	for _, s := range f.Shards {
		dst = binary.AppendUvarint(dst, uint64(s.ID))
		dst = append(dst, byte(s.State))
		dst = binary.BigEndian.AppendUint64(dst, s.HashStart)
		dst = binary.BigEndian.AppendUint64(dst, s.HashEnd)
		dst = binary.AppendUvarint(dst, s.End)
		dst = binary.AppendUvarint(dst, uint64(len(s.Parents)))
		for _, p := range s.Parents {
			dst = binary.AppendUvarint(dst, uint64(p))
		}
	}
	return dst
}

func (f *Layout) Decode(p []byte) error {
	d := newDecoder(p, "LAYOUT")
	f.decode(&d)
	return d.done()
}

// layoutEntryMin is the smallest encoded entry: id, state, two u64, end,
// parent count.
const layoutEntryMin = 1 + 1 + 8 + 8 + 1 + 1

func (f *Layout) decode(d *decoder) {
	f.Version = d.Uvarint()
	f.NextID = d.Uint32("next id")
	n := d.Count(layoutEntryMin)
	if n > MaxLayoutShards {
		d.Fail("%d layout entries", n)
	}
	f.Shards = make([]LayoutShard, 0, n)
	for i := 0; i < n && d.Err == nil; i++ {
		s := LayoutShard{ID: d.Uint32("shard"), State: ShardState(d.Byte())}
		s.HashStart = d.u64()
		s.HashEnd = d.u64()
		s.End = d.Uvarint()
		np := d.Count(1)
		if np > MaxLayoutShards {
			d.Fail("%d parents", np)
		}
		s.Parents = make([]uint32, 0, np)
		for j := 0; j < np && d.Err == nil; j++ {
			s.Parents = append(s.Parents, d.Uint32("parent"))
		}
		f.Shards = append(f.Shards, s)
	}
}

// u64 reads a fixed 8-byte big-endian integer (hash bounds).
func (d *decoder) u64() uint64 {
	b := d.Next(8)
	if len(b) < 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

// ShardEnd says that every record of a closed shard up to End has been sent
// on this subscription.
type ShardEnd struct {
	Shard uint32
	End   uint64
}

func (f *ShardEnd) Append(dst []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(f.Shard))
	return binary.AppendUvarint(dst, f.End)
}

func (f *ShardEnd) Decode(p []byte) error {
	d := newDecoder(p, "SHARD_END")
	f.Shard = d.Uint32("shard")
	f.End = d.Uvarint()
	return d.done()
}

// layoutFrameName names the layout frame types for FrameType.String.
func layoutFrameName(t FrameType) string {
	switch t {
	case FrameProduceLayout, FrameConsumeLayout:
		return "LAYOUT"
	case FrameShardEnd:
		return "SHARD_END"
	}
	return ""
}

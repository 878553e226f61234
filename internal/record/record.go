package record

import (
	"math/bits"

	"github.com/cespare/xxhash/v2"

	"github.com/edgehub/edgehub"
)

// Record, Header and Origin are the public data model of package edgehub
// (the module root): this package encodes them. They are aliases, so the
// store, the wire and the SDK pass the same values without conversion.
type (
	Record = edgehub.Record
	Header = edgehub.Header
	Origin = edgehub.Origin
)

// Size is the approximate encoded size of r, used for limits and accounting.
func Size(r *Record) int {
	n := len(r.Key) + len(r.Value) + len(r.Origin.Hub) + 24
	for _, h := range r.Headers {
		n += len(h.Key) + len(h.Value) + 2
	}
	return n
}

// KeyHash is the stable 64-bit hash that places a key in a stream's hash
// space: XXH64 with seed 0. It is part of the wire contract (clients may route
// records themselves), so it never changes within protocol version 1.
func KeyHash(key []byte) uint64 { return xxhash.Sum64(key) }

// ShardForHash maps a hash to one of n shards. Shard i owns the contiguous
// hash range [ceil(i*2^64/n), ceil((i+1)*2^64/n)), Kinesis-style; this is
// the high word of hash*n.
func ShardForHash(hash uint64, n int) int {
	hi, _ := bits.Mul64(hash, uint64(n))
	return int(hi)
}

// ShardForKey is ShardForHash(KeyHash(key), n).
func ShardForKey(key []byte, n int) int { return ShardForHash(KeyHash(key), n) }

// HashRange returns the inclusive hash range [start, end] owned by shard i of n.
func HashRange(i, n int) (start, end uint64) {
	start = rangeStart(i, n)
	if i == n-1 {
		return start, ^uint64(0)
	}
	return start, rangeStart(i+1, n) - 1
}

// rangeStart is ceil(i * 2^64 / n): the smallest h with ShardForHash(h, n) == i.
func rangeStart(i, n int) uint64 {
	if i == 0 {
		return 0
	}
	q, r := bits.Div64(uint64(i), 0, uint64(n))
	if r != 0 {
		q++
	}
	return q
}

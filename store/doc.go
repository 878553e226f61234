// Package store keeps edgehub's streams: sharded, append-only logs in bbolt.
//
// # Basics
//
// A Store is a directory with one bbolt file per stream. A stream is created
// with a number of shards; a record's key hash (XXH64 of the key, seed 0:
// docs/protocol.md) picks its open shard from contiguous hash ranges, so
// records with one key stay in order. Split, Merge and Reshard close open
// shards and open children owning their ranges in one transaction, copying
// nothing; the Layout records the lineage, so a key's records are in order
// along it (parent, then child: docs/store.md "Resharding"). Every record
// gets a per-shard sequence number: dense, strictly increasing from 1, never
// reused, even after retention deletes the head.
//
// Appends are group-committed: one writer goroutine per stream gathers every
// queued Append into one bbolt transaction and one fsync, and answers each
// caller only after that fsync (SyncAlways, the default). Each shard's share
// of a commit is stored as one chunk: an encoded batch (the protocol's batch
// encoding) under the key of its first sequence, so appends write few, full pages and a read copies few
// values.
//
// What must be atomic with the records commits in the same transaction: the
// idempotent-producer table (a retried batch is answered with its original
// positions) and the origin watermarks (a record whose origin was already
// applied is not stored again), which replication and plugin output rely on.
//
// # Caveats
//
// Readers copy chunks out in short read transactions: a long read
// transaction would stop bbolt from reusing freed pages and from growing its
// memory map. bbolt files never shrink; retention frees pages for reuse and
// size-based retention counts live chunk bytes, not file size.
//
// Retention by age uses ingest time (assigned by the store, non-decreasing
// within a shard), not the producer's timestamp.
package store

// Package edgehub is edgehub's data model: the Record, its Headers and its
// Origin, the types every part of the module speaks in. The store keeps
// them, the hub serves them, plugins read and emit them and the Go client
// (sdk, which names them sdk.Record and sdk.Header) sends and receives
// them, so a program that embeds the store and one that uses the client
// write a record the same way.
//
// # Basics
//
// A record is a key, an opaque value, headers and the producer's
// timestamp; the hub that stores it adds its per-shard sequence number and
// its ingest time. Its Origin, (origin hub, origin shard, origin sequence),
// is what makes replication and plugin output idempotent: a hub that
// already holds an origin never stores it twice.
//
// # Caveats
//
// The encoding of records (the version-1 batch, docs/protocol.md section 7)
// and the key hash that routes them to shards are contracts written in
// docs/; their Go implementation is internal. Records decoded from a batch
// alias its buffer: Clone one to keep it beyond the buffer's life.
package edgehub

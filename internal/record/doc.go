// Package record encodes edgehub's records (the types of package edgehub,
// aliased here): the stable key hash that routes records to shards, and the
// version-1 batch encoding shared by the store (one batch is one chunk on
// disk) and the wire protocol.
//
// # Caveats
//
// Decoded records alias the buffer they came from. Every decoder here takes
// untrusted input: it verifies the CRC-32C first and bounds every length and
// count by the bytes that remain, so a hostile batch cannot make it allocate
// more than a small multiple of the batch's own size.
package record

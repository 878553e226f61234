// Package sdk is edgehub's Go client: produce to and consume from a hub over
// QUIC.
//
// # Basics
//
// Dial opens a connection, which reconnects by itself when it breaks. A
// Producer sends records to one stream: Send waits for the durable
// acknowledgement, SendAsync and SendFuture return at once. Producers are
// idempotent by default: each has an id and numbers its batches per shard,
// so a batch resent after a timeout, a reconnect or a hub restart is stored
// once and acknowledged with its original positions. A Subscription reads a
// stream from the earliest or latest record, a sequence or a time; the hub
// pushes records as they are committed, within a byte credit the
// subscription returns as the application reads.
//
// The connection counts as dead when it has heard nothing from the hub for
// Options.IdleTimeout (10s) and pings the hub after Options.KeepAlive (2s)
// without traffic, so even a subscriber or group member that sends nothing
// notices a hub that was killed, restarted or cut off within about 12s and
// reconnects, while four keep-alives in a row must go unanswered to drop a
// healthy connection on a lossy link. A restarted hub's stateless reset
// does not help idle clients: it answers only packets larger than their
// keep-alives (docs/protocol.md, "Transport").
//
// The hub's self-signed certificate (hub-data/tls/cert.pem next to a hub
// started without [tls] settings) is trusted with Options.CAFile.
//
// # Caveats
//
// The package imports only the wire protocol (package quic and the record
// encoding), never the store or the plugin runtime, so device binaries stay
// small; a test checks it.
//
// A producer created with NotIdempotent resends unacknowledged batches after
// a reconnect, so its records are stored at least once, possibly twice.
// Datagram producers are fire-and-forget: records may be lost.
//
// SendAsync callbacks run on the producer's goroutine, outside its lock,
// in the order the batches completed: a callback may send more records,
// but must not wait for acknowledgements (Send, Flush, Close). Flush and
// Close return after the callbacks of the records they waited for.
package sdk

// Package quic is edgehub's wire protocol (version 1, ALPN "edgehub/1") and
// its QUIC transport, built on quic-go. docs/protocol.md is the normative
// description; this package is its reference implementation.
//
// # Basics
//
// A client holds one QUIC connection to a hub and opens one bidirectional
// stream per operation (a produce session, a subscription, a metadata
// query; later replication pulls and group membership). Every stream starts
// with an OPEN frame naming the operation; the Server dispatches the stream
// to the Handler registered for that operation, so new operations are added
// by registering handlers, without touching the transport.
//
// Frames are a type byte, a big-endian uint32 payload length and the
// payload. Record batches travel in the batch encoding of docs/protocol.md
// section 7, which carries its own CRC-32C; a hub serves stored chunks to
// consumers as they are, without re-encoding (SendBytes writes them without
// a copy), unless a consumer's credit is smaller than a chunk.
//
// The package knows nothing of the store or the hub: handlers adapt it.
//
// # Caveats
//
// Every decoder takes untrusted input and bounds each allocation by the bytes
// it was given. A malformed, truncated or oversized frame fails only its
// stream (with an ERROR frame carrying a Code and a message); a malformed
// datagram closes only its connection.
//
// A length prefix is a claim, never an allocation: payload buffers grow as
// bytes arrive. Before authentication a stream costs its QUIC state and its
// OPEN frame, at most MaxOpenBytes, read without a buffer and charged to
// Config.Budget; a larger OPEN is refused from its header. A frame begun
// and not finished within Config.FrameTimeout, or one the peer's flow
// control does not take in that time, fails its stream (ErrFrameTimeout,
// CodeLimit); streams may idle between frames. Handlers take their own
// budget between a frame's header and its payload (ReadFrameAdmit).
//
// A panic in a handler, in a goroutine it started with Request.Go, or in
// the datagram handler fails only its stream (or connection) with
// CodeInternal; it is logged with its stack and counted (Stats.Panics).
// Refusals are logged once per reason and interval, with a count.
//
// ToError maps errors to codes: an *Error keeps its code, this package's
// sentinels and the standard library's have theirs, anything else is
// CodeInternal. The hub maps the sentinels of the packages it composes
// (store, groups, plugins) in one table of its own (hub/errors.go), which
// falls back on ToError and takes this package's codes from it.
//
// Early data (0-RTT) may be replayed by an attacker. Handlers whose effect
// is not idempotent must wait for Conn.HandshakeComplete before acting.
package quic

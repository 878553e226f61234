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
// payload. Record batches travel in the internal/record batch encoding, which
// carries its own CRC-32C; a hub serves stored chunks to consumers as they
// are, without re-encoding.
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
// Early data (0-RTT) may be replayed by an attacker. Handlers whose effect
// is not idempotent must wait for Conn.HandshakeComplete before acting.
package quic

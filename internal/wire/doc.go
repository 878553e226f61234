// Package wire holds the sticky-error binary Reader shared by every decoder
// in edgehub: the record batch format, the QUIC protocol frames, the
// replication frames and the gossip messages.
//
// A Reader returns zero values after its first failure and keeps that
// failure, so a decoder reads all its fields and checks once. Each package
// keeps its own sentinel error (and an optional frame name) in the Reader,
// so callers still match failures with errors.Is against that package's
// sentinel. The package imports only the standard library: the leaf
// packages quic and gossip depend on it.
package wire

package replicate

import "errors"

// Sentinel errors of package replicate, wrapped with the operation. Pulls a
// server refuses travel as quic.Error codes (not found, permission denied,
// unavailable), which is what the puller tests.
var (
	// ErrBadPolicy: a replication policy that is not "local", "all" or a
	// list of "tag:NAME".
	ErrBadPolicy = errors.New("replicate: bad policy")
	// ErrTrimmed: a relay cannot serve an origin from the requested point
	// because its retention may have removed records there; the requester
	// must ask the origin or another peer.
	ErrTrimmed = errors.New("replicate: relay history trimmed")
	// ErrInvalidConfig is wrapped by Config.Validate failures.
	ErrInvalidConfig = errors.New("replicate: invalid config")
	// ErrClosed: the transport was closed.
	ErrClosed = errors.New("replicate: closed")
)

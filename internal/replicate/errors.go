package replicate

import "errors"

// Sentinel errors of package replicate, wrapped with the operation.
var (
	// ErrBadPolicy: a replication policy that is not "local", "all" or a
	// list of "tag:NAME".
	ErrBadPolicy = errors.New("replicate: bad policy")
	// ErrNotReplicated: a pull for a stream this hub does not have, or does
	// not replicate (local policy).
	ErrNotReplicated = errors.New("replicate: stream not replicated here")
	// ErrDenied: the stream's policy does not admit the requesting hub.
	ErrDenied = errors.New("replicate: policy does not admit the requester")
	// ErrTrimmed: a relay cannot serve an origin from the requested point
	// because its retention may have removed records there; the requester
	// must ask the origin or another peer.
	ErrTrimmed = errors.New("replicate: relay history trimmed")
	// ErrInvalidConfig is wrapped by Config.Validate failures.
	ErrInvalidConfig = errors.New("replicate: invalid config")
	// ErrClosed: the replicator was closed.
	ErrClosed = errors.New("replicate: closed")
)

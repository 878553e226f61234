package gossip

import "errors"

// Sentinel errors of package gossip, wrapped with the operation that failed.
var (
	// ErrInvalidConfig is wrapped by every Config.Validate failure.
	ErrInvalidConfig = errors.New("gossip: invalid config")
	// ErrBadKeyFile: the secret key file is unreadable, empty, or holds a
	// key that is not base64 of 16, 24 or 32 bytes.
	ErrBadKeyFile = errors.New("gossip: bad secret key file")
	// ErrBadMessage is wrapped by every failure to decode a gossip message or
	// node metadata: they come from the network and are never trusted.
	ErrBadMessage = errors.New("gossip: malformed message")
	// ErrMetaTooLarge: the node metadata does not fit memberlist's limit.
	ErrMetaTooLarge = errors.New("gossip: node metadata too large")
	// ErrUnencrypted: gossip would bind a non-loopback address without a
	// secret key file, and Config.AllowUnencrypted does not say that this is
	// intended. Unencrypted gossip lets anyone who can reach the port read
	// and forge membership and replication metadata.
	ErrUnencrypted = errors.New("gossip: unencrypted gossip on a non-loopback address")
	// ErrClosed is returned by operations on a closed Gossip.
	ErrClosed = errors.New("gossip: closed")
)

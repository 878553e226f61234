package hub

// TLSConfig is the [tls] section: certificates of the QUIC data plane.
// Owned by the data plane; with no settings the hub generates a self-signed
// certificate in its data directory.
type TLSConfig struct{}

// Validate reports every problem in the [tls] section.
func (c TLSConfig) Validate() error { return nil }

// AuthConfig is the [auth] section: client authentication and per-stream
// permissions on the data plane. Owned by the data plane.
type AuthConfig struct{}

// Validate reports every problem in the [auth] section.
func (c AuthConfig) Validate() error { return nil }

// LimitsConfig is the [limits] section: connection, stream and frame limits
// of the data plane. Owned by the data plane.
type LimitsConfig struct{}

// Validate reports every problem in the [limits] section.
func (c LimitsConfig) Validate() error { return nil }

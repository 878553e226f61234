package hub

// GossipConfig is the [gossip] section: federation membership (memberlist).
// Owned by federation.
type GossipConfig struct{}

// Validate reports every problem in the [gossip] section.
func (c GossipConfig) Validate() error { return nil }

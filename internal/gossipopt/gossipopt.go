// Package gossipopt holds the knobs of package gossip that are not API:
// memberlist's transport and its raw configuration. The module's tests use
// them (a fault-injecting transport, short intervals); an importer outside
// the module has no need of them, and keeping them here keeps memberlist's
// types out of gossip's public signatures (docs/RATIONALE.md).
package gossipopt

import "github.com/hashicorp/memberlist"

// Options are what Set attaches to a gossip.Config.
type Options struct {
	// Transport, if set, replaces memberlist's UDP/TCP transport (tests use
	// it to partition members). The config's Bind is then only used as the
	// advertised address unless Advertise is set.
	Transport memberlist.NodeAwareTransport
	// Tune, if set, adjusts memberlist's config after the profile is
	// applied (tests and benchmarks shorten intervals).
	Tune func(*memberlist.Config)
}

var set func(cfg any, o Options)

// Register is called once by package gossip, which alone can reach the
// unexported field that holds the options. It is not for anyone else.
func Register(f func(cfg any, o Options)) { set = f }

// Set attaches o to cfg, which must be a *gossip.Config; it replaces
// options attached before. The options travel with copies of the config.
func Set(cfg any, o Options) {
	if set == nil {
		panic("gossipopt: package gossip is not linked in")
	}
	set(cfg, o)
}

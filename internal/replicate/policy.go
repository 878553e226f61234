package replicate

import (
	"fmt"
	"slices"
	"strings"

	"github.com/edgehub/edgehub/store"
)

// MetaPolicy is the store.StreamConfig.Meta key that holds a stream's
// replication policy in the hub's canonical form: "local", "all", or a
// sorted comma-separated list of "tag:NAME".
const MetaPolicy = "replicate"

// Policy says which hubs a stream's records may reach.
type Policy struct {
	// All admits every hub; otherwise Tags admits hubs carrying any of them
	// and an empty Tags means local only.
	All  bool
	Tags []string
}

// Local reports whether the stream never leaves its hub.
func (p Policy) Local() bool { return !p.All && len(p.Tags) == 0 }

// Admits reports whether a hub carrying tags may hold the stream.
func (p Policy) Admits(tags []string) bool {
	if p.All {
		return true
	}
	for _, t := range p.Tags {
		if slices.Contains(tags, t) {
			return true
		}
	}
	return false
}

func (p Policy) String() string {
	switch {
	case p.All:
		return "all"
	case len(p.Tags) == 0:
		return "local"
	}
	parts := make([]string, len(p.Tags))
	for i, t := range p.Tags {
		parts[i] = "tag:" + t
	}
	return strings.Join(parts, ",")
}

// ParsePolicy reads the canonical form. "" (no policy recorded) is local:
// replication is opt-in.
func ParsePolicy(s string) (Policy, error) {
	switch strings.TrimSpace(s) {
	case "", "local":
		return Policy{}, nil
	case "all":
		return Policy{All: true}, nil
	}
	var p Policy
	for _, item := range strings.Split(s, ",") {
		name, ok := strings.CutPrefix(strings.TrimSpace(item), "tag:")
		if !ok || store.ValidateName(name) != nil {
			return Policy{}, fmt.Errorf("%w: %q", ErrBadPolicy, s)
		}
		p.Tags = append(p.Tags, name)
	}
	slices.Sort(p.Tags)
	p.Tags = slices.Compact(p.Tags)
	return p, nil
}

// policyOf returns a stream's policy; an unreadable one is treated as
// local, so a damaged setting never leaks a stream.
func policyOf(cfg store.StreamConfig) Policy {
	p, err := ParsePolicy(cfg.Meta[MetaPolicy])
	if err != nil {
		return Policy{}
	}
	return p
}

package hub

import (
	"errors"
	"net"
	"strconv"

	"github.com/edgehub/edgehub/gossip"
	"github.com/edgehub/edgehub/internal/replicate"
)

// GossipConfig is the [gossip] section: federation membership (memberlist)
// and replication between hubs. Without bind the hub runs alone.
//
//	[gossip]
//	bind = "0.0.0.0:7946"               # memberlist UDP+TCP; enables federation
//	advertise = "203.0.113.5:7946"      # what peers dial, if not bind
//	join = ["hub-a.example:7946"]       # any member; retried until one answers
//	secret_key_file = "/etc/edgehub/federation.keys"  # AES-GCM keys, base64, primary first
//	allow_unencrypted = false           # needed to gossip in clear text on a non-loopback bind
//	label = "acme-prod"                 # federations with other labels never merge
//	profile = "wan"                     # "wan" (default), "lan" or "local"
//	quic_advertise = "203.0.113.5:7440" # data plane address peers pull from, if not listen.quic
//	peer_ca_file = "/etc/edgehub/peers-ca.pem"  # verifies peers' certificates not pinned through gossip
//	peer_token = "..."                  # bearer token presented to peers when pulling
//	rate_limit = "256MiB"               # bytes per second pulled from one peer; "0" = unlimited
//	gap_after = "10m"                   # an unreachable origin's records no live peer holds are a gap after this
//	prune_after = "72h"                 # members dead or left this long are forgotten, with their gossip entries; "0" keeps them
//	tombstone_ttl = "168h"              # how long a deleted replicated stream's tombstone spreads; "0" forever
type GossipConfig struct {
	Bind          string   `toml:"bind"`
	Advertise     string   `toml:"advertise"`
	Join          []string `toml:"join"`
	SecretKeyFile string   `toml:"secret_key_file"`
	// AllowUnencrypted permits gossip without secret_key_file on a bind
	// that is not loopback. Without a key anyone who reaches the port can
	// read the federation's metadata and forge members, stream definitions
	// and vectors, so the hub refuses to start unless this says it is meant.
	AllowUnencrypted bool   `toml:"allow_unencrypted"`
	Label            string `toml:"label"`
	Profile          string `toml:"profile"`
	QUICAdvertise    string `toml:"quic_advertise"`
	// PeerCAFile holds the certificates (PEM) that peers' data plane
	// certificates must chain to when they do not match the pin their
	// gossip announces (docs/federation.md, "Security"). Empty: the
	// system roots.
	PeerCAFile string `toml:"peer_ca_file"`
	// PeerInsecure skips verification of peers' certificates: for demos
	// with self-signed certificates only. Traffic is still encrypted.
	PeerInsecure bool `toml:"peer_insecure_skip_verify"`
	// PeerToken is sent when pulling from peers; their [[auth.token]] must
	// grant it consume on the replicated streams.
	PeerToken string `toml:"peer_token"`
	// RateLimit bounds the bytes per second pulled from one peer.
	RateLimit *Size `toml:"rate_limit"`
	// GapAfter is how long an origin must have been unreachable before
	// its records that every live peer's retention deleted are declared a
	// gap; 0 means the default, 10m.
	GapAfter Duration `toml:"gap_after"`
	// PruneAfter is how long a member must have been dead or left
	// before it and the gossip entries it published are forgotten; unset
	// means 72h, 0 keeps them.
	PruneAfter *Duration `toml:"prune_after"`
	// TombstoneTTL is how long the deletion of a replicated stream is
	// kept in gossip and applied by peers; unset means 168h (7 days), 0
	// keeps tombstones forever.
	TombstoneTTL *Duration `toml:"tombstone_ttl"`

	// Test hooks: adjust the gossip and replication configs the hub builds
	// (fault-injecting transports, short intervals). Not in hub.toml.
	tune            func(*gossip.Config)
	tuneReplication func(*replicate.Config)
}

// Enabled reports whether the hub federates.
func (c GossipConfig) Enabled() bool { return c.Bind != "" }

// Validate reports every problem in the [gossip] section.
func (c GossipConfig) Validate() error {
	if !c.Enabled() {
		var errs []error
		for key, set := range map[string]bool{
			"advertise": c.Advertise != "", "join": len(c.Join) > 0, "secret_key_file": c.SecretKeyFile != "",
			"label": c.Label != "", "quic_advertise": c.QUICAdvertise != "", "allow_unencrypted": c.AllowUnencrypted,
		} {
			if set {
				errs = append(errs, fieldErrorf(key, "needs bind: set gossip.bind to federate"))
			}
		}
		return errors.Join(errs...)
	}
	var errs []error
	if err := hostPort(c.Bind, true); err != nil {
		errs = append(errs, fieldErrorf("bind", "%v", err))
	}
	if c.Advertise != "" {
		if err := hostPort(c.Advertise, false); err != nil {
			errs = append(errs, fieldErrorf("advertise", "%v", err))
		}
	}
	for i, j := range c.Join {
		if err := hostPort(j, false); err != nil {
			errs = append(errs, fieldErrorf("join["+strconv.Itoa(i)+"]", "%v", err))
		}
	}
	switch c.Profile {
	case "", gossip.ProfileWAN, gossip.ProfileLAN, gossip.ProfileLocal:
	default:
		errs = append(errs, fieldErrorf("profile", "%q is not one of \"wan\", \"lan\", \"local\"", c.Profile))
	}
	if len(c.Label) > 255 {
		errs = append(errs, fieldErrorf("label", "longer than 255 bytes"))
	}
	if c.SecretKeyFile == "" && !c.AllowUnencrypted && !gossip.IsLoopback(c.Bind) {
		errs = append(errs, fieldErrorf("bind", "%q is not a loopback address, and without gossip.secret_key_file "+
			"gossip is unencrypted: anyone who reaches it can read and forge federation metadata. Set "+
			"gossip.secret_key_file (docs/federation.md, \"Key rotation\"), bind to loopback, or set "+
			"gossip.allow_unencrypted = true to accept this: %w", c.Bind, gossip.ErrUnencrypted))
	}
	if c.SecretKeyFile != "" {
		if _, err := gossip.LoadKeyFile(c.SecretKeyFile); err != nil {
			errs = append(errs, fieldErrorf("secret_key_file", "%v", err))
		}
	}
	if c.QUICAdvertise != "" {
		if err := hostPort(c.QUICAdvertise, false); err != nil {
			errs = append(errs, fieldErrorf("quic_advertise", "%v", err))
		}
	}
	if c.RateLimit != nil && *c.RateLimit < 0 {
		errs = append(errs, fieldErrorf("rate_limit", "%s is negative", *c.RateLimit))
	}
	if c.GapAfter < 0 {
		errs = append(errs, fieldErrorf("gap_after", "%s is negative", c.GapAfter))
	}
	if c.PruneAfter != nil && *c.PruneAfter < 0 {
		errs = append(errs, fieldErrorf("prune_after", "%s is negative", *c.PruneAfter))
	}
	if c.TombstoneTTL != nil && *c.TombstoneTTL < 0 {
		errs = append(errs, fieldErrorf("tombstone_ttl", "%s is negative", *c.TombstoneTTL))
	}
	return errors.Join(errs...)
}

// hostPort checks a host:port; zeroPort allows port 0 (pick one).
func hostPort(s string, zeroPort bool) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return err
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return errors.New("port " + strconv.Quote(port) + " is not a number in 0..65535")
	}
	if p == 0 && !zeroPort {
		return errors.New("port 0 cannot be dialled")
	}
	if host == "" && !zeroPort {
		return errors.New("give a host")
	}
	return nil
}

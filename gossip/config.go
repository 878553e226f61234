package gossip

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/edgehub/edgehub/internal/gossipopt"
)

// Profiles select memberlist's timing defaults.
const (
	// ProfileWAN suits hubs across sites and regions (the default): slower
	// probes and gossip, more tolerance for latency and loss.
	ProfileWAN = "wan"
	// ProfileLAN suits hubs in one data centre: faster failure detection
	// and dissemination.
	ProfileLAN = "lan"
	// ProfileLocal suits hubs on one machine (tests, demos).
	ProfileLocal = "local"
)

// Config configures a Gossip. Fill defaults with DefaultConfig; check with
// Validate.
type Config struct {
	// Name is the member name: the hub's name, unique in the federation.
	Name string
	// Bind is the host:port memberlist listens on (UDP and TCP). Port 0
	// picks a free port.
	Bind string
	// Advertise is the host:port peers reach us at, if not Bind (NAT, a
	// wildcard bind address).
	Advertise string
	// Join lists host:port of members to join at start; we retry until one
	// answers, and again whenever we find ourselves alone.
	Join []string
	// SecretKeyFile holds the federation's AES-GCM keys, one base64 key per
	// line, the first one primary (see LoadKeyFile). Empty disables
	// encryption, which only tests and demos should do: Validate refuses it
	// on a non-loopback Bind unless AllowUnencrypted is set.
	SecretKeyFile string
	// AllowUnencrypted permits a non-loopback Bind without SecretKeyFile
	// (ErrUnencrypted otherwise). Loopback binds never need it.
	AllowUnencrypted bool
	// Label is stamped on every packet and stream; members with another
	// label are ignored, so unrelated federations never merge.
	Label string
	// Profile is ProfileWAN (default), ProfileLAN or ProfileLocal.
	Profile string
	// Meta is published to every member.
	Meta NodeMeta
	// KeyCheckInterval is how often the key file is checked for changes
	// (rotation without a restart). 0 disables the check; ReloadKeys still
	// works.
	KeyCheckInterval time.Duration
	// RejoinInterval is how often Run retries Join while no other member is
	// alive.
	RejoinInterval time.Duration
	// PruneAfter is how long a member must have been dead or left before
	// it and every entry it published are forgotten; 0 keeps them.
	PruneAfter time.Duration
	// TombstoneTTL is how long a stream deletion (a Def with Deleted)
	// is kept and spread, counted from when its publisher published it;
	// 0 keeps deletions forever.
	TombstoneTTL time.Duration
	// Logger defaults to slog.Default(); memberlist's own log is bridged to
	// it.
	Logger *slog.Logger

	// opts are the knobs that are not API (a test transport, memberlist
	// tuning), attached by internal/gossipopt.Set.
	opts gossipopt.Options
}

func init() {
	gossipopt.Register(func(cfg any, o gossipopt.Options) { cfg.(*Config).opts = o })
}

// DefaultConfig returns the defaults for a member named name.
func DefaultConfig(name string) Config {
	return Config{
		Name:             name,
		Bind:             "0.0.0.0:7946",
		Profile:          ProfileWAN,
		KeyCheckInterval: 10 * time.Second,
		RejoinInterval:   10 * time.Second,
		PruneAfter:       DefaultPruneAfter,
		TombstoneTTL:     DefaultTombstoneTTL,
	}
}

// Defaults of Config.PruneAfter and Config.TombstoneTTL.
const (
	// DefaultPruneAfter outlasts any outage a hub is expected to come
	// back from with its name: a pruned hub that returns is a new member
	// again, but peers forget its vectors and definitions meanwhile.
	DefaultPruneAfter = 72 * time.Hour
	// DefaultTombstoneTTL is how long a hub may be away and still learn
	// that a stream was deleted: one offline longer comes back with its
	// copy and defines the stream again.
	DefaultTombstoneTTL = 7 * 24 * time.Hour
)

// sweepInterval is how often Run prunes: a tenth of the shorter period,
// between 10ms and a minute.
func (c Config) sweepInterval() time.Duration {
	d := time.Minute
	for _, p := range []time.Duration{c.PruneAfter, c.TombstoneTTL} {
		if p > 0 {
			d = min(d, p/10)
		}
	}
	return max(d, 10*time.Millisecond)
}

// Validate reports every problem in c at once.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...))
	}
	if c.Name == "" || len(c.Name) > maxNameLen {
		bad("name must be 1..%d bytes", maxNameLen)
	}
	if _, _, err := splitHostPort(c.Bind); err != nil {
		bad("bind %q: %v", c.Bind, err)
	}
	if c.Advertise != "" {
		if _, _, err := splitHostPort(c.Advertise); err != nil {
			bad("advertise %q: %v", c.Advertise, err)
		}
	}
	for _, j := range c.Join {
		if _, _, err := net.SplitHostPort(j); err != nil {
			bad("join %q: %v", j, err)
		}
	}
	if c.SecretKeyFile == "" && !c.AllowUnencrypted && !IsLoopback(c.Bind) {
		errs = append(errs, fmt.Errorf("%w: bind %q is not a loopback address and no secret key file is set "+
			"(set a key file, or allow unencrypted gossip explicitly)", ErrUnencrypted, c.Bind))
	}
	switch c.Profile {
	case ProfileWAN, ProfileLAN, ProfileLocal:
	default:
		bad("profile %q (want %q, %q or %q)", c.Profile, ProfileWAN, ProfileLAN, ProfileLocal)
	}
	if c.KeyCheckInterval < 0 {
		bad("key check interval %s is negative", c.KeyCheckInterval)
	}
	if c.PruneAfter < 0 {
		bad("prune after %s is negative", c.PruneAfter)
	}
	if c.TombstoneTTL < 0 {
		bad("tombstone TTL %s is negative", c.TombstoneTTL)
	}
	if c.RejoinInterval <= 0 {
		bad("rejoin interval %s must be positive", c.RejoinInterval)
	}
	if len(c.Meta.encode()) > memberlist.MetaMaxSize {
		errs = append(errs, fmt.Errorf("%w: %d bytes (max %d): fewer or shorter tags", ErrMetaTooLarge, len(c.Meta.encode()), memberlist.MetaMaxSize))
	}
	return errors.Join(errs...)
}

// IsLoopback reports whether the host of addr (host:port) is a loopback
// address or "localhost". A wildcard ("", "0.0.0.0", "::") or any other
// name is not: names are not resolved, since what a name resolves to can
// change after the check.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func splitHostPort(s string) (string, int, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, err
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return "", 0, fmt.Errorf("bad port %q", port)
	}
	return host, p, nil
}

// memberlistConfig builds memberlist's config from c (already validated).
func (c Config) memberlistConfig() *memberlist.Config {
	var mc *memberlist.Config
	switch c.Profile {
	case ProfileLAN:
		mc = memberlist.DefaultLANConfig()
	case ProfileLocal:
		mc = memberlist.DefaultLocalConfig()
	default:
		mc = memberlist.DefaultWANConfig()
	}
	mc.Name = c.Name
	host, port, _ := splitHostPort(c.Bind)
	mc.BindAddr, mc.BindPort = host, port
	if c.Advertise != "" {
		host, port, _ = splitHostPort(c.Advertise)
		mc.AdvertiseAddr, mc.AdvertisePort = host, port
	}
	mc.Label = c.Label
	// A hub restarted on another address (a new port, a moved site) keeps
	// its name: let it take the name over once the old address is dead,
	// instead of memberlist's default of never.
	mc.DeadNodeReclaimTime = 10 * time.Second
	if c.opts.Transport != nil {
		mc.Transport = c.opts.Transport
	}
	return mc
}

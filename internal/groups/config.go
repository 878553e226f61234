package groups

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// StartKind says where a shard without a committed offset starts.
type StartKind uint8

// Start kinds.
const (
	StartEarliest StartKind = iota // the first live record
	StartLatest                    // the next record to be committed
	StartSeq                       // Start.Value is a sequence
	StartTime                      // Start.Value is ingest time, Unix nanoseconds
)

// Start is a joining member's start position for shards the group has never
// committed.
type Start struct {
	Kind  StartKind
	Value uint64
}

// Resolver returns the sequence a shard of stream starts at for start. The
// coordinator calls it under a group's lock: it must be quick and must not
// call back into the coordinator.
type Resolver func(stream string, shard int, start Start) (uint64, error)

// Config configures a Coordinator. DefaultConfig fills it; Validate checks it.
type Config struct {
	// Path is the bbolt file (groups.db in the hub's data directory).
	Path string
	// DefaultSessionTimeout applies to members that ask for none;
	// MinSessionTimeout and MaxSessionTimeout bound what members may ask.
	DefaultSessionTimeout time.Duration
	MinSessionTimeout     time.Duration
	MaxSessionTimeout     time.Duration
	// MaxMembers bounds the members of one group.
	MaxMembers int
	// Resolve positions shards without a committed offset. Required.
	Resolve Resolver
	// OpenTimeout bounds the wait for the file lock at Open.
	OpenTimeout time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// TestSkipParents leases a child shard before its parents are finished:
	// the negative control of lineage tests (a checker must see the
	// reorder it causes). Never set in production: the hub sets it only
	// in chaos builds (EDGEHUB_CHAOS_SKIP_LINEAGE).
	TestSkipParents bool
}

// Defaults.
const (
	DefaultSessionTimeout = 10 * time.Second
	DefaultMinSession     = time.Second
	DefaultMaxSession     = 5 * time.Minute
	DefaultMaxMembers     = 1000
)

// DefaultConfig returns the defaults for the file at path; Resolve must
// still be set.
func DefaultConfig(path string) Config {
	return Config{
		Path:                  path,
		DefaultSessionTimeout: DefaultSessionTimeout,
		MinSessionTimeout:     DefaultMinSession,
		MaxSessionTimeout:     DefaultMaxSession,
		MaxMembers:            DefaultMaxMembers,
		OpenTimeout:           time.Second,
	}
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.Path == "" {
		errs = append(errs, errors.New("groups: config: path is empty"))
	}
	if c.MinSessionTimeout <= 0 || c.MaxSessionTimeout < c.MinSessionTimeout {
		errs = append(errs, fmt.Errorf("groups: config: session timeout bounds %s..%s: want 0 < min <= max",
			c.MinSessionTimeout, c.MaxSessionTimeout))
	}
	if c.DefaultSessionTimeout < c.MinSessionTimeout || c.DefaultSessionTimeout > c.MaxSessionTimeout {
		errs = append(errs, fmt.Errorf("groups: config: default session timeout %s outside %s..%s",
			c.DefaultSessionTimeout, c.MinSessionTimeout, c.MaxSessionTimeout))
	}
	if c.MaxMembers <= 0 {
		errs = append(errs, fmt.Errorf("groups: config: max members %d must be positive", c.MaxMembers))
	}
	if c.Resolve == nil {
		errs = append(errs, errors.New("groups: config: Resolve is nil"))
	}
	if c.OpenTimeout <= 0 {
		errs = append(errs, fmt.Errorf("groups: config: open timeout %s must be positive", c.OpenTimeout))
	}
	return errors.Join(errs...)
}

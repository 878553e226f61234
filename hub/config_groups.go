package hub

import (
	"errors"
	"time"

	"github.com/edgehub/edgehub/internal/groups"
)

// GroupsConfig is the [groups] section: consumer-group coordination. Zero
// values take the defaults shown.
//
//	[groups]
//	default_session_timeout = "10s" # for members that ask for none
//	min_session_timeout = "1s"      # shortest a member may ask for
//	max_session_timeout = "5m"      # longest a member may ask for
//	max_members = 1000              # per group
type GroupsConfig struct {
	DefaultSessionTimeout Duration `toml:"default_session_timeout"`
	MinSessionTimeout     Duration `toml:"min_session_timeout"`
	MaxSessionTimeout     Duration `toml:"max_session_timeout"`
	MaxMembers            int      `toml:"max_members"`
}

// withDefaults fills zero values.
func (c GroupsConfig) withDefaults() GroupsConfig {
	if c.DefaultSessionTimeout == 0 {
		c.DefaultSessionTimeout = Duration(groups.DefaultSessionTimeout)
	}
	if c.MinSessionTimeout == 0 {
		c.MinSessionTimeout = Duration(groups.DefaultMinSession)
	}
	if c.MaxSessionTimeout == 0 {
		c.MaxSessionTimeout = Duration(groups.DefaultMaxSession)
	}
	if c.MaxMembers == 0 {
		c.MaxMembers = groups.DefaultMaxMembers
	}
	return c
}

// Validate reports every problem in the [groups] section, with the defaults
// filled in (so a max below the default session timeout is reported).
func (c GroupsConfig) Validate() error {
	var errs []error
	for _, d := range []struct {
		key string
		v   Duration
	}{
		{"default_session_timeout", c.DefaultSessionTimeout},
		{"min_session_timeout", c.MinSessionTimeout},
		{"max_session_timeout", c.MaxSessionTimeout},
	} {
		if d.v < 0 {
			errs = append(errs, fieldErrorf(d.key, "%s is negative", d.v))
		} else if d.v != 0 && time.Duration(d.v) < 10*time.Millisecond {
			errs = append(errs, fieldErrorf(d.key, "%s below 10ms", d.v))
		}
	}
	if c.MaxMembers < 0 {
		errs = append(errs, fieldErrorf("max_members", "%d is negative", c.MaxMembers))
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	f := c.withDefaults()
	if f.MinSessionTimeout > f.MaxSessionTimeout {
		errs = append(errs, fieldErrorf("min_session_timeout", "%s above max_session_timeout %s", f.MinSessionTimeout, f.MaxSessionTimeout))
	}
	if f.DefaultSessionTimeout < f.MinSessionTimeout || f.DefaultSessionTimeout > f.MaxSessionTimeout {
		errs = append(errs, fieldErrorf("default_session_timeout", "%s outside min_session_timeout..max_session_timeout (%s..%s)",
			f.DefaultSessionTimeout, f.MinSessionTimeout, f.MaxSessionTimeout))
	}
	return errors.Join(errs...)
}

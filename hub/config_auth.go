package hub

import (
	"errors"
	"fmt"
	"path"

	"github.com/edgehub/edgehub/quic"
)

// AuthConfig is the [auth] section: who may produce to and consume from which
// streams. With no tokens and no clients, everyone may do everything (a
// local hub). Once any is configured, unauthenticated clients get only what
// [auth.anonymous] grants (nothing by default).
//
//	[[auth.token]]
//	name = "sensors"
//	token = "s3cret"
//	produce = ["sensors.*"]   # stream name patterns (path.Match syntax)
//	consume = []
//
//	[[auth.client]]           # mTLS identities (certificate common name)
//	name = "dashboard.example.com"
//	consume = ["*"]
//
//	[auth.anonymous]
//	consume = ["public.*"]
type AuthConfig struct {
	Tokens    []TokenGrant `toml:"token"`
	Clients   []Grant      `toml:"client"`
	Anonymous Grant        `toml:"anonymous"`
}

// Grant is an identity's permissions: stream name patterns it may produce
// to and consume from.
type Grant struct {
	Name    string   `toml:"name"`
	Produce []string `toml:"produce"`
	Consume []string `toml:"consume"`
}

// TokenGrant is a bearer token and its permissions.
type TokenGrant struct {
	Name    string   `toml:"name"`
	Token   string   `toml:"token"`
	Produce []string `toml:"produce"`
	Consume []string `toml:"consume"`
}

// Enabled reports whether authentication is configured at all.
func (c AuthConfig) Enabled() bool { return len(c.Tokens) > 0 || len(c.Clients) > 0 }

// Validate reports every problem in the [auth] section.
func (c AuthConfig) Validate() error {
	var errs []error
	checkPatterns := func(key string, pats []string) {
		for i, p := range pats {
			if _, err := path.Match(p, "x"); err != nil || p == "" {
				errs = append(errs, fieldErrorf(fmt.Sprintf("%s[%d]", key, i), "bad pattern %q", p))
			}
		}
	}
	tokens, names := map[string]int{}, map[string]int{}
	for i, t := range c.Tokens {
		key := fmt.Sprintf("token[%d]", i)
		if t.Name == "" {
			errs = append(errs, fieldErrorf(key+".name", "must not be empty"))
		} else if j, dup := names[t.Name]; dup {
			errs = append(errs, fieldErrorf(key+".name", "%q is already the name of token[%d]", t.Name, j))
		} else {
			names[t.Name] = i
		}
		switch {
		case len(t.Token) < 16:
			errs = append(errs, fieldErrorf(key+".token", "must be at least 16 characters"))
		case len(t.Token) > quic.MaxTokenLength:
			errs = append(errs, fieldErrorf(key+".token", "longer than %d bytes", quic.MaxTokenLength))
		}
		if j, dup := tokens[t.Token]; dup && t.Token != "" {
			errs = append(errs, fieldErrorf(key+".token", "same token as token[%d]", j))
		}
		tokens[t.Token] = i
		checkPatterns(key+".produce", t.Produce)
		checkPatterns(key+".consume", t.Consume)
	}
	for i, g := range c.Clients {
		key := fmt.Sprintf("client[%d]", i)
		if g.Name == "" {
			errs = append(errs, fieldErrorf(key+".name", "must not be empty"))
		}
		checkPatterns(key+".produce", g.Produce)
		checkPatterns(key+".consume", g.Consume)
	}
	if c.Anonymous.Name != "" {
		// Grant is shared with [[auth.client]], so the decoder accepts the key;
		// ignoring it would hide a misplaced client entry.
		errs = append(errs, fieldErrorf("anonymous.name", "the anonymous identity has no name: remove the key (an [[auth.client]] needs a table of its own)"))
	}
	checkPatterns("anonymous.produce", c.Anonymous.Produce)
	checkPatterns("anonymous.consume", c.Anonymous.Consume)
	return errors.Join(errs...)
}

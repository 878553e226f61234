package hub

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"path"

	"github.com/edgehub/edgehub/quic"
)

// Permission actions.
const (
	actionProduce = "produce"
	actionConsume = "consume"
)

// authorizer implements [auth]: token and certificate identities and their
// stream patterns. Tokens are looked up by their SHA-256, so lookup time
// does not depend on how much of a guessed token is right.
type authorizer struct {
	enabled bool
	tokens  map[[32]byte]grant // by SHA-256 of the token
	byName  map[string]grant   // token grants by name (names are unique)
	clients map[string]grant
	anon    grant
	// pins names federation members by their pinned certificates; nil
	// unless the data plane checks client certificates against pins.
	pins *clientPins
}

type grant struct {
	name             string
	produce, consume []string
}

func newAuthorizer(c AuthConfig) (*authorizer, error) {
	a := &authorizer{
		enabled: c.Enabled(),
		tokens:  map[[32]byte]grant{},
		byName:  map[string]grant{},
		clients: map[string]grant{},
		anon:    grant{name: "anonymous", produce: c.Anonymous.Produce, consume: c.Anonymous.Consume},
	}
	for _, t := range c.Tokens {
		g := grant{name: t.Name, produce: t.Produce, consume: t.Consume}
		a.tokens[sha256.Sum256([]byte(t.Token))] = g
		a.byName[t.Name] = g
	}
	for _, g := range c.Clients {
		a.clients[g.Name] = grant{name: g.Name, produce: g.Produce, consume: g.Consume}
	}
	return a, nil
}

// authenticate names the stream's principal: a known token, else a verified
// client certificate, else anonymous. An unknown token is refused outright
// rather than downgraded to anonymous, so a typo is reported as such.
func (a *authorizer) authenticate(_ context.Context, info quic.AuthInfo) (quic.Principal, error) {
	if info.Token != "" {
		sum := sha256.Sum256([]byte(info.Token))
		if g, ok := a.tokens[sum]; ok {
			return quic.Principal{Name: g.name, Method: "token"}, nil
		}
		if !a.enabled {
			return quic.Principal{Method: "anonymous"}, nil
		}
		return quic.Principal{}, quic.Errorf(quic.CodeUnauthenticated, "unknown token")
	}
	if len(info.Certificates) > 0 {
		// A federation member's pinned certificate (typically
		// self-signed, all named alike) is named by its hub; one that
		// also chains to the client CAs keeps its certificate name, as
		// without pins.
		if hub, ok := a.pins.member(info.Certificates[0]); ok && a.pins.chainVerifies(info.Certificates) != nil {
			return quic.Principal{Name: hub, Method: "mtls"}, nil
		}
		return quic.Principal{Name: certName(info.Certificates[0]), Method: "mtls"}, nil
	}
	return quic.Principal{Method: "anonymous"}, nil
}

func certName(c *x509.Certificate) string {
	if c.Subject.CommonName != "" {
		return c.Subject.CommonName
	}
	if len(c.DNSNames) > 0 {
		return c.DNSNames[0]
	}
	return ""
}

// allow checks action on stream for p; the error says which code applies.
func (a *authorizer) allow(p quic.Principal, action, stream string) error {
	if !a.enabled {
		return nil
	}
	var g grant
	var ok bool
	switch p.Method {
	case "token":
		g, ok = a.byName[p.Name]
	case "mtls":
		g, ok = a.clients[p.Name]
	default:
		g, ok = a.anon, true
	}
	pats := g.consume
	if action == actionProduce {
		pats = g.produce
	}
	if ok {
		for _, pat := range pats {
			if m, _ := path.Match(pat, stream); m {
				return nil
			}
		}
	}
	verb := "consume from"
	if action == actionProduce {
		verb = "produce to"
	}
	if p.Method == "anonymous" || p.Method == "" {
		return quic.Errorf(quic.CodeUnauthenticated, "this hub requires a token or client certificate to %s stream %q", verb, stream)
	}
	return quic.Errorf(quic.CodePermissionDenied, "%s %q may not %s stream %q", p.Method, p.Name, verb, stream)
}

package hub

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"

	"github.com/edgehub/edgehub/gossip"
)

// AdminConfig is the [admin] section: who may use the admin API, from
// which browser origins, and over TLS or not. See docs/admin-api.md,
// "Security".
//
//	[admin]
//	allowed_hosts = ["hub-7.example.com"]      # Host values besides the listener's own address
//	allowed_origins = ["https://ops.example"]  # browser origins allowed to call the API (CORS)
//	tls = true                                 # HTTPS with the data plane's certificate ...
//	cert_file = "/etc/edgehub/admin.pem"       # ... or with this one
//	key_file = "/etc/edgehub/admin.key"
//
//	[[admin.token]]
//	name = "ops"
//	role = "write"                             # "read" or "write"
//	token_file = "/etc/edgehub/admin-ops.token" # or token_env = "HUB_ADMIN_OPS_TOKEN"
type AdminConfig struct {
	// AllowedHosts are extra values of the Host header the admin API
	// answers (a name, matching any port, or name:port). The listener's own
	// address and the loopback names on its port are always allowed; any
	// other Host is refused, which defeats DNS rebinding.
	AllowedHosts []string `toml:"allowed_hosts"`
	// AllowedOrigins are browser origins ("https://ops.example") whose
	// pages may call the API; they get CORS answers. A request from any
	// other origin but the API's own is refused.
	AllowedOrigins []string `toml:"allowed_origins"`
	// TLS serves the API over HTTPS with the data plane's certificate
	// ([tls] cert_file, or the self-signed one) unless CertFile is set.
	TLS      bool   `toml:"tls"`
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`
	// Tokens are the bearer tokens of the admin API. With none, the API is
	// open to whoever reaches it, which is refused on a non-loopback
	// listener unless InsecureAllowUnauthenticated is set.
	Tokens []AdminToken `toml:"token"`
	// InsecureAllowUnauthenticated lets a non-loopback listener run
	// without tokens: anyone who reaches it can delete every stream.
	InsecureAllowUnauthenticated bool `toml:"insecure_allow_unauthenticated"`
}

// AdminToken is a bearer token of the admin API and its role. The token
// itself is never in hub.toml: it is read from TokenFile (surrounding
// white space trimmed) or the environment variable TokenEnv.
type AdminToken struct {
	Name      string `toml:"name"`
	Role      string `toml:"role"`
	TokenFile string `toml:"token_file"`
	TokenEnv  string `toml:"token_env"`
}

// Admin roles: read may GET (and HEAD) everything; write may also change
// everything.
const (
	RoleRead  = "read"
	RoleWrite = "write"
)

// minAdminToken is the shortest admin token accepted, as for [[auth.token]].
const minAdminToken = 16

// Enabled reports whether admin tokens are configured.
func (c AdminConfig) Enabled() bool { return len(c.Tokens) > 0 }

// TLSEnabled reports whether the admin API serves HTTPS.
func (c AdminConfig) TLSEnabled() bool { return c.TLS || c.CertFile != "" }

// secret reads the token from its file or environment variable.
func (t AdminToken) secret() (string, error) {
	var v string
	switch {
	case t.TokenFile != "":
		b, err := os.ReadFile(t.TokenFile)
		if err != nil {
			return "", fmt.Errorf("read token: %w", err)
		}
		v = strings.TrimSpace(string(b))
		if v == "" {
			return "", fmt.Errorf("token file %s is empty", t.TokenFile)
		}
	case t.TokenEnv != "":
		v = strings.TrimSpace(os.Getenv(t.TokenEnv))
		if v == "" {
			return "", fmt.Errorf("environment variable %s is not set or empty", t.TokenEnv)
		}
	default:
		return "", errors.New("give token_file or token_env")
	}
	if len(v) < minAdminToken {
		return "", fmt.Errorf("the token is %d characters, at least %d are needed", len(v), minAdminToken)
	}
	return v, nil
}

// Validate reports every problem in the [admin] section. It reads the
// tokens, so a missing file or variable stops the hub before it starts; it
// never puts a token in a message.
func (c AdminConfig) Validate() error {
	var errs []error
	if (c.CertFile == "") != (c.KeyFile == "") {
		errs = append(errs, fieldErrorf("cert_file", "cert_file and key_file go together"))
	}
	for i, h := range c.AllowedHosts {
		if h == "" || strings.ContainsAny(h, "/ ") {
			errs = append(errs, fieldErrorf(fmt.Sprintf("allowed_hosts[%d]", i), "%q is not a host or host:port", h))
		}
	}
	for i, o := range c.AllowedOrigins {
		if _, err := parseOrigin(o); err != nil {
			errs = append(errs, fieldErrorf(fmt.Sprintf("allowed_origins[%d]", i), "%v", err))
		}
	}
	names := map[string]int{}
	secrets := map[string]int{}
	for i, t := range c.Tokens {
		key := fmt.Sprintf("token[%d]", i)
		if t.Name == "" {
			errs = append(errs, fieldErrorf(key+".name", "must not be empty"))
		} else if j, dup := names[t.Name]; dup {
			errs = append(errs, fieldErrorf(key+".name", "%q is already the name of token[%d]", t.Name, j))
		} else {
			names[t.Name] = i
		}
		if t.Role != RoleRead && t.Role != RoleWrite {
			errs = append(errs, fieldErrorf(key+".role", "%q is not one of \"read\", \"write\"", t.Role))
		}
		if t.TokenFile != "" && t.TokenEnv != "" {
			errs = append(errs, fieldErrorf(key+".token_file", "give token_file or token_env, not both"))
			continue
		}
		s, err := t.secret()
		if err != nil {
			k := key + ".token_file"
			if t.TokenEnv != "" {
				k = key + ".token_env"
			}
			errs = append(errs, fieldError(k, err))
			continue
		}
		if j, dup := secrets[s]; dup {
			errs = append(errs, fieldErrorf(key, "same token as token[%d]", j))
		}
		secrets[s] = i
	}
	return errors.Join(errs...)
}

// validateAdminExposure refuses an unauthenticated admin API on a
// listener that is not loopback: it can delete every stream.
func (c Config) validateAdminExposure() error {
	if c.Admin.Enabled() || c.Admin.InsecureAllowUnauthenticated || gossip.IsLoopback(c.Listen.Admin) {
		return nil
	}
	return &ConfigError{Key: "listen.admin", Err: fmt.Errorf("%q is not a loopback address and the admin API has no "+
		"tokens: anyone who reaches it could create, change and delete streams and plugins. Add an [[admin.token]] "+
		"(docs/admin-api.md, \"Security\"), listen on loopback, or set admin.insecure_allow_unauthenticated = true "+
		"to accept this", c.Listen.Admin)}
}

// parseOrigin checks a browser origin: scheme://host[:port], nothing else.
func parseOrigin(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", fmt.Errorf("%q is not an origin: want scheme://host[:port], e.g. \"https://ops.example\"", s)
	}
	return strings.ToLower(u.Scheme + "://" + u.Host), nil
}

// splitHostPortLoose splits host[:port], accepting a bare host and
// bracketed IPv6 addresses; the host is lower-cased and unbracketed.
func splitHostPortLoose(s string) (host, port string) {
	if h, p, err := net.SplitHostPort(s); err == nil {
		return strings.ToLower(h), p
	}
	return strings.ToLower(strings.Trim(s, "[]")), ""
}

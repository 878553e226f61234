package hub

import (
	"errors"
	"fmt"
	"path"
	"time"

	"github.com/edgehub/edgehub/quic"
)

// TLSConfig is the [tls] section: certificates of the QUIC data plane. TLS
// 1.3 is always on. With no cert_file the hub generates a self-signed
// certificate (valid for localhost, loopback and the host name) in
// <data_dir>/tls/cert.pem and key.pem on first start and reuses it; the CLI
// on the same machine trusts that file without flags.
//
//	[tls]
//	cert_file = "/etc/edgehub/hub.pem"
//	key_file = "/etc/edgehub/hub.key"
//	client_ca_file = "/etc/edgehub/clients-ca.pem"  # enables mTLS
//	require_client_cert = true                       # refuse handshakes without one
type TLSConfig struct {
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`
	// ClientCAFile verifies client certificates; the certificate's common
	// name (or first DNS name) is the client's identity in [[auth.client]].
	ClientCAFile string `toml:"client_ca_file"`
	// RequireClientCert refuses handshakes without a valid client
	// certificate; otherwise certificates are optional and clients may use
	// tokens instead.
	RequireClientCert bool `toml:"require_client_cert"`
	// Hosts are extra names or addresses for the self-signed certificate.
	Hosts []string `toml:"hosts"`
}

// Validate reports every problem in the [tls] section.
func (c TLSConfig) Validate() error {
	var errs []error
	if (c.CertFile == "") != (c.KeyFile == "") {
		errs = append(errs, fieldErrorf("cert_file", "cert_file and key_file go together"))
	}
	if c.RequireClientCert && c.ClientCAFile == "" {
		errs = append(errs, fieldErrorf("require_client_cert", "needs client_ca_file"))
	}
	return errors.Join(errs...)
}

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
	checkPatterns("anonymous.produce", c.Anonymous.Produce)
	checkPatterns("anonymous.consume", c.Anonymous.Consume)
	return errors.Join(errs...)
}

// LimitsConfig is the [limits] section: protections of the data plane. Zero
// values take the defaults shown.
//
//	[limits]
//	max_connections = 10000
//	max_streams_per_connection = 100
//	max_frame_bytes = "8MiB"
//	handshake_timeout = "10s"
//	idle_timeout = "60s"
//	validate_address_above = 64   # handshakes in progress before Retry
//	max_inflight_batches = 64     # per produce session
//	max_consumer_credit = "16MiB" # per subscription
//	allow_0rtt = true
//	datagrams = true
type LimitsConfig struct {
	MaxConnections          int      `toml:"max_connections"`
	MaxStreamsPerConnection int      `toml:"max_streams_per_connection"`
	MaxFrameBytes           Size     `toml:"max_frame_bytes"`
	HandshakeTimeout        Duration `toml:"handshake_timeout"`
	IdleTimeout             Duration `toml:"idle_timeout"`
	ValidateAddressAbove    int      `toml:"validate_address_above"`
	MaxInflightBatches      int      `toml:"max_inflight_batches"`
	MaxConsumerCredit       Size     `toml:"max_consumer_credit"`
	Allow0RTT               *bool    `toml:"allow_0rtt"`
	Datagrams               *bool    `toml:"datagrams"`
}

// Defaults of [limits].
const (
	DefaultMaxInflightBatches = 64
	DefaultMaxConsumerCredit  = 16 << 20
)

// withDefaults fills zero values.
func (c LimitsConfig) withDefaults() LimitsConfig {
	d := quic.DefaultConfig("")
	if c.MaxConnections == 0 {
		c.MaxConnections = d.MaxConnections
	}
	if c.MaxStreamsPerConnection == 0 {
		c.MaxStreamsPerConnection = d.MaxStreamsPerConn
	}
	if c.MaxFrameBytes == 0 {
		c.MaxFrameBytes = Size(d.MaxFrameBytes)
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = Duration(d.HandshakeTimeout)
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = Duration(d.IdleTimeout)
	}
	if c.ValidateAddressAbove == 0 {
		c.ValidateAddressAbove = d.ValidateAddressAbove
	}
	if c.MaxInflightBatches == 0 {
		c.MaxInflightBatches = DefaultMaxInflightBatches
	}
	if c.MaxConsumerCredit == 0 {
		c.MaxConsumerCredit = DefaultMaxConsumerCredit
	}
	if c.Allow0RTT == nil {
		c.Allow0RTT = &d.Allow0RTT
	}
	if c.Datagrams == nil {
		c.Datagrams = &d.EnableDatagrams
	}
	return c
}

// Validate reports every problem in the [limits] section.
func (c LimitsConfig) Validate() error {
	var errs []error
	neg := func(key string, v int64) {
		if v < 0 {
			errs = append(errs, fieldErrorf(key, "%d is negative", v))
		}
	}
	neg("max_connections", int64(c.MaxConnections))
	neg("max_streams_per_connection", int64(c.MaxStreamsPerConnection))
	neg("validate_address_above", int64(c.ValidateAddressAbove))
	neg("max_inflight_batches", int64(c.MaxInflightBatches))
	if c.MaxFrameBytes != 0 && (c.MaxFrameBytes < 64<<10 || c.MaxFrameBytes > 256<<20) {
		errs = append(errs, fieldErrorf("max_frame_bytes", "%s outside 64KiB..256MiB", c.MaxFrameBytes))
	}
	if c.MaxConsumerCredit < 0 || (c.MaxConsumerCredit != 0 && c.MaxConsumerCredit < 64<<10) {
		errs = append(errs, fieldErrorf("max_consumer_credit", "%s below 64KiB", c.MaxConsumerCredit))
	}
	if c.HandshakeTimeout < 0 || (c.HandshakeTimeout != 0 && time.Duration(c.HandshakeTimeout) < 100*time.Millisecond) {
		errs = append(errs, fieldErrorf("handshake_timeout", "%s below 100ms", c.HandshakeTimeout))
	}
	if c.IdleTimeout < 0 || (c.IdleTimeout != 0 && time.Duration(c.IdleTimeout) < time.Second) {
		errs = append(errs, fieldErrorf("idle_timeout", "%s below 1s", c.IdleTimeout))
	}
	return errors.Join(errs...)
}

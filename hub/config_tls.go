package hub

import "errors"

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

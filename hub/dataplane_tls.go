package hub

import (
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/edgehub/edgehub/internal/atomicfile"
	"github.com/edgehub/edgehub/quic"
)

// The data plane's TLS: the configured certificate or the self-signed one,
// client CAs for mTLS, and the QUIC stateless reset key.

// SelfSignedCertFile is where a hub without [tls] cert_file keeps its
// generated certificate, relative to the data directory; the CLI trusts
// ./hub-data/tls/cert.pem by default.
const SelfSignedCertFile = "tls/cert.pem"

// serverTLS loads the configured certificate or creates the self-signed one.
func (h *Hub) serverTLS() (*tls.Config, error) {
	c := h.cfg.TLS
	var cert tls.Certificate
	var err error
	if c.CertFile != "" {
		cert, err = tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("hub: tls: load %s: %w", c.CertFile, err)
		}
	} else {
		hosts := []string{"localhost", "127.0.0.1", "::1"}
		if hn, err := os.Hostname(); err == nil {
			hosts = append(hosts, hn)
		}
		if host, _, err := net.SplitHostPort(h.cfg.Listen.QUIC); err == nil && host != "" {
			if ip := net.ParseIP(host); ip == nil || !ip.IsUnspecified() {
				hosts = append(hosts, host)
			}
		}
		hosts = append(hosts, c.Hosts...)
		dir := h.cfg.Hub.DataDir
		cert, err = quic.LoadOrCreateCert(filepath.Join(dir, SelfSignedCertFile), filepath.Join(dir, "tls/key.pem"), hosts)
		if err != nil {
			return nil, fmt.Errorf("hub: tls: %w", err)
		}
	}
	conf := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}
	if c.ClientCAFile != "" {
		pool, err := quic.CertPool(c.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("hub: tls: %w", err)
		}
		conf.ClientCAs = pool
		conf.ClientAuth = tls.VerifyClientCertIfGiven
		if c.RequireClientCert {
			conf.ClientAuth = tls.RequireAndVerifyClientCert
		}
	}
	return conf, nil
}

// resetKey returns the QUIC stateless reset key kept in the data directory,
// creating it on first start. A stable key lets a restarted hub tell clients
// of the previous process that their connection is gone, so they reconnect
// at once rather than after the idle timeout.
func (h *Hub) resetKey() (*[32]byte, error) {
	path := filepath.Join(h.cfg.Hub.DataDir, "tls", "reset.key")
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("hub: reset key: %w", err)
	}
	if err == nil && len(b) == 32 {
		return (*[32]byte)(b), nil
	}
	if err == nil {
		// The key only lets a restarted hub reset connections of its
		// previous life faster: a damaged one is replaced, not fatal.
		h.logger.Warn("hub: replacing damaged stateless reset key", "file", path, "bytes", len(b))
	}
	b = make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("hub: reset key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("hub: reset key: %w", err)
	}
	if err := atomicfile.WriteFile(path, b, 0o600); err != nil {
		return nil, fmt.Errorf("hub: reset key: %w", err)
	}
	return (*[32]byte)(b), nil
}

package cli

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestEndToEndHelpOnStdout: help asked for (hub help X, hub X --help,
// hub GROUP --help) is the output: stdout, exit 0, as hub help's; a
// missing subcommand or an unknown help topic is a usage error on stderr.
func TestEndToEndHelpOnStdout(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"help", "produce"}, {"produce", "--help"}, {"stream", "--help"}, {"help", "stream"}, {"stream", "create", "--help"}, {"consume", "-h"}} {
		code, out, errOut := runHub(t, nil, args...)
		if code != 0 || errOut != "" || !strings.Contains(out, "Usage: hub") {
			t.Errorf("hub %v: exit %d, stdout %q, stderr %q; want 0, the help on stdout, nothing on stderr", args, code, out, errOut)
		}
	}
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"stream"}, "Usage: hub stream COMMAND"},
		{[]string{"help", "nosuch"}, `hub help: unknown command "nosuch"`},
		{[]string{"help", "strem"}, `hub help: unknown command "strem" (did you mean "stream"?)`},
	} {
		code, out, errOut := runHub(t, nil, tc.args...)
		if code != 2 || out != "" || !strings.Contains(errOut, tc.msg) {
			t.Errorf("hub %v: exit %d, stdout %q, stderr %q; want 2 and %q on stderr", tc.args, code, out, errOut, tc.msg)
		}
	}
}

// TestEndToEndWrongCA: a --ca that does not vouch for the hub gets a hint
// as a missing one does, not the bare x509 error.
func TestEndToEndWrongCA(t *testing.T) {
	base := t.TempDir()
	s := startServer(t, filepath.Join(base, "hub-data"))
	other := filepath.Join(base, "other.pem")
	writeFile(t, other, selfSignedPEM(t))
	code, _, errOut := runHubStdin(t, base, "x\n", []string{"HUB_ADDR=" + s.quicAddr(t)}, "produce", "s", "--ca", other)
	if want := "the CA file " + other + " does not vouch for this hub: pass --ca with its DATA_DIR/tls/cert.pem"; code != 1 || !strings.Contains(errOut, want) {
		t.Errorf("exit %d, stderr %q; want 1 and %q", code, errOut, want)
	}
}

// selfSignedPEM is a certificate of no hub.
func selfSignedPEM(tb testing.TB) string {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "not the hub"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

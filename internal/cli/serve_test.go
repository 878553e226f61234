package cli

import (
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/edgehub/edgehub/hub"
	"github.com/edgehub/edgehub/internal/testutil"
)

// TestEndToEndHangup: SIGHUP does not end the hub (Go's default would, with
// no drain): it re-reads the gossip key file, keeps a bad one out, and says
// so; without gossip it says what it could not do. SIGTERM still stops it.
func TestEndToEndHangup(t *testing.T) {
	dir := t.TempDir()
	keys := filepath.Join(dir, "gossip.keys")
	key := func(b byte) string {
		return base64.StdEncoding.EncodeToString([]byte(strings.Repeat(string(b), 32))) + "\n"
	}
	writeFile(t, keys, key('a'))
	cfg := filepath.Join(dir, "hub.toml")
	writeFile(t, cfg, fmt.Sprintf("[gossip]\nbind = \"127.0.0.1:%d\"\nlabel = \"hup\"\nprofile = \"local\"\nsecret_key_file = %q\n", testutil.FreePort(t), keys))
	s := startServer(t, filepath.Join(dir, "data"), "--config", cfg)
	hangup := func(want string) {
		t.Helper()
		if err := s.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		testutil.Eventually(t, "the log to say "+want, func() bool { return strings.Contains(s.logs(), want) })
	}
	writeFile(t, keys, key('b')+key('a'))
	hangup("SIGHUP: gossip keys reloaded")
	writeFile(t, keys, "not base64\n")
	hangup("SIGHUP: gossip keys not reloaded")
	if err := s.stop(t, syscall.SIGTERM); err != nil {
		t.Errorf("serve after SIGHUP and SIGTERM: %v\n%s", err, s.logs())
	}
	if !strings.Contains(s.logs(), "hub stopped") {
		t.Errorf("no clean stop after SIGHUP:\n%s", s.logs())
	}

	// Without gossip there is nothing to reload, and the hub says so.
	s = startServer(t, t.TempDir())
	hangup("the hub is not federated")
	if err := s.stop(t, syscall.SIGTERM); err != nil {
		t.Errorf("serve after SIGHUP and SIGTERM: %v\n%s", err, s.logs())
	}
}

// TestEndToEndRename: a data directory keeps the name it was created under;
// another name is refused with both names and the way out, and --rename
// adopts the new name.
func TestEndToEndRename(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, dir) // --name e2e
	s.stop(t, syscall.SIGTERM)
	idFile := filepath.Join(dir, hub.IdentityFile)

	code, _, errOut := runHub(t, nil, "serve", "--data", dir, "--admin-listen", "127.0.0.1:0", "--quic-listen", "127.0.0.1:0", "--name", "other")
	if code != 1 {
		t.Errorf("serve under another name: exit %d, want 1\n%s", code, errOut)
	}
	for _, want := range []string{`belongs to hub "e2e"`, `[hub] name is "other"`, idFile, "--rename"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}

	s = startServer(t, dir, "--name", "other", "--rename")
	if !strings.Contains(s.logs(), "hub renamed") {
		t.Errorf("no warning about the rename:\n%s", s.logs())
	}
	s.stop(t, syscall.SIGTERM)
	if b, err := os.ReadFile(idFile); err != nil || string(b) != "other\n" {
		t.Errorf("%s = %q, %v", idFile, b, err)
	}
	s = startServer(t, dir, "--name", "other")
	s.stop(t, syscall.SIGTERM)
}

package cli

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/edgehub/edgehub/hub"
)

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

package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgehub/edgehub/hub"
)

// TestAdminTLSWithCLI runs `hub serve` with an HTTPS admin API and admin
// tokens, and drives it with the CLI: --ca, --token and HUB_ADMIN_TOKEN,
// --insecure, and the errors a user meets without them.
func TestAdminTLSWithCLI(t *testing.T) {
	const readTok, writeTok = "cli-read-token-0123456789", "cli-write-token-0123456789"
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	for name, tok := range map[string]string{"read.token": readTok, "write.token": writeTok} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := filepath.Join(dir, "hub.toml")
	err := os.WriteFile(cfg, []byte(fmt.Sprintf(`[admin]
tls = true

[[admin.token]]
name = "dash"
role = "read"
token_file = %q

[[admin.token]]
name = "ops"
role = "write"
token_file = %q
`, filepath.Join(dir, "read.token"), filepath.Join(dir, "write.token"))), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	s := startServer(t, data, "--config", cfg)
	if !strings.HasPrefix(s.admin, "https://") {
		t.Fatalf("hub ready admin=%s, want https", s.admin)
	}
	admin := "--admin=" + s.admin
	ca := "--ca=" + filepath.Join(data, hub.SelfSignedCertFile)

	steps := []struct {
		name   string
		env    []string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{name: "create with the write token", args: []string{"stream", "create", "orders", admin, ca, "--token", writeTok},
			stdout: "created stream orders"},
		{name: "list with the read token from the environment", env: []string{"HUB_ADMIN_TOKEN=" + readTok},
			args: []string{"stream", "list", admin, ca}, stdout: "orders"},
		{name: "the read token cannot create", args: []string{"stream", "create", "more", admin, ca, "--token", readTok},
			code: 1, stderr: "permission_denied"},
		{name: "no token", args: []string{"stream", "list", admin, ca}, code: 1, stderr: "unauthenticated"},
		{name: "no CA: the certificate is not trusted", args: []string{"stream", "list", admin, "--token", readTok},
			code: 1, stderr: "--ca"},
		{name: "CA from the environment", env: []string{"HUB_ADMIN_CA=" + filepath.Join(data, hub.SelfSignedCertFile)},
			args: []string{"stream", "list", admin, "--token", readTok}, stdout: "orders"},
		{name: "--insecure", args: []string{"stream", "list", admin, "--insecure", "--token", readTok}, stdout: "orders"},
		{name: "plain http to an https API", args: []string{"stream", "list", "--admin=" + strings.Replace(s.admin, "https://", "http://", 1), "--token", readTok},
			code: 1, stderr: "serves HTTPS"},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			code, out, errOut := runHub(t, st.env, st.args...)
			if code != st.code || !strings.Contains(out, st.stdout) || !strings.Contains(errOut, st.stderr) {
				t.Fatalf("hub %v: exit %d, stdout %q, stderr %q; want exit %d, stdout with %q, stderr with %q",
					st.args, code, out, errOut, st.code, st.stdout, st.stderr)
			}
		})
	}
	for _, tok := range []string{readTok, writeTok} {
		if strings.Contains(s.logs(), tok) {
			t.Error("a token appears in the hub's log")
		}
	}
}

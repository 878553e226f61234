//go:build !wasip1

package plugin

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestImportsOnlyStandardLibrary keeps the guest SDK buildable anywhere
// GOOS=wasip1 works: no module dependency, no edgehub package.
func TestImportsOnlyStandardLibrary(t *testing.T) {
	cmd := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".")
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, p := range strings.Fields(string(out)) {
		if p != "github.com/edgehub/edgehub/sdk/plugin" {
			t.Errorf("sdk/plugin depends on %s", p)
		}
	}
}

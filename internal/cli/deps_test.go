package cli

import (
	"os/exec"
	"strings"
	"testing"
)

// TestCLITalksToHubs keeps the command line a client: it imports the hub
// (for serve and the admin API's bodies), the SDK and the bench engine,
// never the store, the plugin manager or the Wasm host itself (plugin
// bench runs them through internal/pluginbench).
func TestCLITalksToHubs(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{join .Imports " "}}`, ".").Output()
	if err != nil {
		t.Skipf("go list unavailable: %v", err)
	}
	forbidden := []string{
		"github.com/edgehub/edgehub/store", "github.com/edgehub/edgehub/plugins", "github.com/edgehub/edgehub/wasmhost",
		"github.com/edgehub/edgehub/internal/record", "github.com/edgehub/edgehub/internal/groups",
		"github.com/edgehub/edgehub/internal/replicate", "go.etcd.io/bbolt", "github.com/tetratelabs/wazero",
	}
	imports := strings.Fields(string(out))
	if len(imports) < 5 {
		t.Fatalf("go list returned %q", out)
	}
	for _, dep := range imports {
		for _, f := range forbidden {
			if dep == f || strings.HasPrefix(dep, f+"/") {
				t.Errorf("internal/cli imports %s", dep)
			}
		}
	}
}

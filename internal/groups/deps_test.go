package groups

import (
	"os/exec"
	"strings"
	"testing"
)

// TestGroupsIsALeaf keeps the import rule: the coordinator knows bbolt and
// the shared name rule, not the store, the data plane or the hub (which
// resolves stream positions for it through Config.Resolve).
func TestGroupsIsALeaf(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Skipf("go list unavailable: %v", err)
	}
	forbidden := []string{
		"github.com/edgehub/edgehub/store", "github.com/edgehub/edgehub/quic", "github.com/edgehub/edgehub/plugins",
		"github.com/edgehub/edgehub/hub", "github.com/edgehub/edgehub/internal/record",
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, f := range forbidden {
			if dep == f {
				t.Errorf("groups depends on %s", dep)
			}
		}
	}
}

package gossip

import (
	"os/exec"
	"strings"
	"testing"
)

// TestGossipIsALeaf keeps the import rule: gossip knows memberlist, not the
// store, the data plane, the Wasm host or replication.
func TestGossipIsALeaf(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Skipf("go list unavailable: %v", err)
	}
	forbidden := []string{
		"github.com/edgehub/edgehub/store", "github.com/edgehub/edgehub/quic", "github.com/edgehub/edgehub/wasmhost",
		"github.com/edgehub/edgehub/internal/replicate", "github.com/edgehub/edgehub/internal/record",
		"go.etcd.io/bbolt", "github.com/quic-go/quic-go", "github.com/tetratelabs/wazero",
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, f := range forbidden {
			if dep == f {
				t.Errorf("gossip depends on %s", dep)
			}
		}
	}
}

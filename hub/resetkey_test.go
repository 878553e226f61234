package hub

import (
	"os"
	"path/filepath"
	"testing"
)

// A power cut right after the first start can leave tls/reset.key empty
// (it was written without fsync); the hub then refused to start ("0 bytes,
// want 32"), found by the chaos crash loop with power cuts. The key is
// replaced instead, and written durably.
func TestDamagedResetKeyIsReplaced(t *testing.T) {
	for _, content := range [][]byte{{}, []byte("short")} {
		cfg := testConfig(t)
		path := filepath.Join(cfg.Hub.DataDir, "tls", "reset.key")
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, content, 0o600); err != nil {
			t.Fatal(err)
		}
		startHub(t, cfg)
		b, err := os.ReadFile(path)
		if err != nil || len(b) != 32 {
			t.Fatalf("reset key after start: %d bytes, %v", len(b), err)
		}
	}
}

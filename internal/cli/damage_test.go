package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestStreamDescribeShowsDamage: bytes of a stream's records flipped while
// the hub was stopped; once a consumer meets them, `hub stream describe`
// lists the damaged range under the shards, and says nothing will repair a
// stream that is not replicated.
func TestStreamDescribeShowsDamage(t *testing.T) {
	base := t.TempDir()
	data := filepath.Join(base, "hub-data")
	s := startServer(t, data)
	env := []string{"HUB_ADDR=" + s.quicAddr(t), "HUB_ADMIN=" + s.admin}
	if code, _, errOut := runHubIn(t, base, env, "stream", "create", "s", "--shards", "1"); code != 0 {
		t.Fatalf("create: %s", errOut)
	}
	var in strings.Builder
	for i := range 50 {
		in.WriteString("marker-" + string(rune('a'+i%26)) + string(rune('a'+i/26)) + "\n")
	}
	if code, _, errOut := runHubStdin(t, base, in.String(), env, "produce", "s"); code != 0 {
		t.Fatalf("produce: %s", errOut)
	}
	if code, out, _ := runHubIn(t, base, env, "stream", "describe", "s"); code != 0 || strings.Contains(out, "Damaged") {
		t.Fatalf("describe before the damage: exit %d\n%s", code, out)
	}
	if err := s.stop(t, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(data, "streams", "s.db")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	flipped := 0
	for i := bytes.Index(raw, []byte("marker-kb")); i >= 0; i = bytes.Index(raw, []byte("marker-kb")) {
		raw[i] ^= 0xFF
		flipped++
	}
	if flipped == 0 {
		t.Fatal("marker not found in the stream file")
	}
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}

	s = startServer(t, data)
	env = []string{"HUB_ADDR=" + s.quicAddr(t), "HUB_ADMIN=" + s.admin}
	if code, _, errOut := runHubIn(t, base, env, "consume", "s", "-n", "50"); code == 0 || !strings.Contains(errOut, "corrupt") {
		t.Fatalf("consume of the damaged stream: exit %d, stderr %q", code, errOut)
	}
	if code, _, errOut := runHubIn(t, base, env, "stream", "list"); code != 0 ||
		!strings.Contains(errOut, "warning: stream s has 1 damaged chunk not repaired, not served: hub stream describe s") {
		t.Errorf("stream list: exit %d, no warning of the damage: %q", code, errOut)
	}
	code, out, errOut := runHubIn(t, base, env, "stream", "describe", "s")
	if code != 0 {
		t.Fatalf("describe: exit %d: %s", code, errOut)
	}
	for _, want := range []string{"Damaged ranges, not served until repaired: 1", "SHARD  FROM  TO", "none", "checksum", "not replicated"} {
		if !strings.Contains(out, want) {
			t.Errorf("describe lacks %q:\n%s", want, out)
		}
	}
}

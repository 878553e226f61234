package cli

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestEndToEndProduceRecordLimit drives `hub produce` against a `hub serve`
// child at the default store.max_record_bytes (1 MiB): lines of exactly the
// limit (as value, and as key + value) are stored; one byte more fails with
// a message naming the line and the limit, after storing what came before.
// The CLI used to refuse every line above 1 MiB - 1 (its scanner limit) and
// the SDK every record above 512 KiB (its batch size).
func TestEndToEndProduceRecordLimit(t *testing.T) {
	base := t.TempDir()
	s := startServer(t, filepath.Join(base, "hub-data"))
	env := []string{"HUB_ADDR=" + s.quicAddr(t), "HUB_ADMIN=" + s.admin}
	if code, _, errOut := runHubIn(t, base, env, "stream", "create", "big"); code != 0 {
		t.Fatalf("stream create: %s", errOut)
	}
	const limit = 1 << 20
	tests := []struct {
		name  string
		in    string
		args  []string
		code  int
		acked string
		msg   string
	}{
		{"value at the limit", strings.Repeat("a", 600<<10) + "\n" + strings.Repeat("b", limit) + "\n", nil, 0, "acked 2 records", ""},
		{"key and value at the limit", "k:" + strings.Repeat("c", limit-1) + "\n", []string{"--key-sep", ":"}, 0, "acked 1 record\n", ""},
		{"CRLF line at the limit", strings.Repeat("d", limit) + "\r\n", nil, 0, "acked 1 record\n", ""},
		{"one byte over", "before\n" + strings.Repeat("e", limit+1) + "\nafter\n", nil, 1, "acked 1 record\n",
			"line 2: quic: record_too_large: record of 1048577 bytes"},
		// The header counts 1 + 1 + 2 bytes.
		{"header pushes it over", strings.Repeat("f", limit-3) + "\n", []string{"--header", "h=v"}, 1, "acked 0 records",
			"max_record_bytes 1048576"},
		{"far too long a line", "ok\n" + strings.Repeat("g", 3*limit) + "\n", nil, 1, "acked 1 record\n",
			"stdin line 2: longer than 1048577 bytes: no record made of it fits the hub's max_record_bytes 1048576 (line 1 is stored; resume with tail -n +2)"},
		// A CR is allowed for, so the longest line is one byte more than a record.
		{"two bytes over", strings.Repeat("h", limit+2) + "\n", nil, 1, "acked 0 records",
			"stdin line 1: longer than 1048577 bytes: no record made of it fits the hub's max_record_bytes 1048576 (nothing was sent)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := runHubStdin(t, base, tc.in, env, append([]string{"produce", "big"}, tc.args...)...)
			if code != tc.code || !strings.Contains(errOut, tc.acked) || !strings.Contains(errOut, tc.msg) {
				t.Fatalf("exit %d, stderr %q; want %d, %q and %q", code, errOut, tc.code, tc.acked, tc.msg)
			}
		})
	}
	// What was acknowledged is stored, byte for byte.
	code, out, errOut := runHubIn(t, base, env, "consume", "big")
	if code != 0 {
		t.Fatalf("consume: %s", errOut)
	}
	var lens []int
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		lens = append(lens, len(line))
	}
	want := []int{600 << 10, limit, limit - 1, limit, len("before"), len("ok")}
	if len(lens) != len(want) {
		t.Fatalf("consumed %d records of lengths %v, want %v", len(lens), lens, want)
	}
	for i := range want {
		if lens[i] != want[i] {
			t.Fatalf("consumed lengths %v, want %v", lens, want)
		}
	}
}

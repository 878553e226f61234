package cli

import (
	"regexp"
	"testing"
)

// watPassThrough is the hand-written WAT pass-through plugin (no Go build).
const watPassThrough = "../../examples/wat-passthrough/passthrough.wasm"

// TestPluginBench: hub plugin bench measures a module through the host and,
// with --ingest, ingest without and with copies of it attached, in the
// documented lines.
func TestPluginBench(t *testing.T) {
	code, out, errOut := capture(t, "plugin", "bench", watPassThrough, "--records", "3000", "--batch", "500")
	if code != 0 {
		t.Fatalf("exit %d: %s%s", code, out, errOut)
	}
	host := regexp.MustCompile(`(?m)^host passthrough\.wasm: 3000 records in \S+: \d+ records/s \(\d+ ns/record\), 3000 outputs, 6 calls, instance memory \S+$`)
	if !host.MatchString(out) {
		t.Fatalf("output:\n%s", out)
	}
	code, out, errOut = capture(t, "bench", "plugin", watPassThrough, "--records", "2000", "--ingest", "--plugins", "2", "--rounds", "2")
	if code != 0 {
		t.Fatalf("exit %d: %s%s", code, out, errOut)
	}
	for _, re := range []string{
		`(?m)^host passthrough\.wasm: 2000 records in .* 2000 outputs, 2 calls, `,
		`(?m)^round 1: ingest \d+ records/s without plugins, \d+ with 2 attached \(\d+%\); plugins caught up after \S+ \(\d+ records/s each\)$`,
		`(?m)^round 2: `,
		`(?m)^ingest with 2 plugins: median \d+% of ingest without plugins \(2000 records of 128 bytes, 4 producers, 2 rounds\)$`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Fatalf("no line matching %s in:\n%s", re, out)
		}
	}
	if code, _, _ := capture(t, "plugin", "bench", watPassThrough, "--rounds", "0"); code != 2 {
		t.Fatalf("--rounds 0: exit %d, want 2", code)
	}
}

package hub

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgehub/edgehub/internal/plugintest"
	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/internal/testutil"
	"github.com/edgehub/edgehub/plugins"
)

// readmeCommands returns the shell commands in the unlabelled (or sh)
// fenced blocks of a README, continuation lines joined and comments
// dropped, each split into words (the READMEs quote nothing).
func readmeCommands(tb testing.TB, path string) [][]string {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	var cmds [][]string
	in, shell := false, false
	var cur string
	for _, line := range strings.Split(string(b), "\n") {
		if t := strings.TrimSpace(line); strings.HasPrefix(t, "```") {
			if !in {
				lang := strings.TrimPrefix(t, "```")
				in, shell = true, lang == "" || lang == "sh" || lang == "shell"
			} else {
				in = false
			}
			continue
		}
		if !in || !shell {
			continue
		}
		if i := strings.Index(line, " #"); i >= 0 {
			line = line[:i]
		}
		line = strings.TrimSpace(line)
		if cont, ok := strings.CutSuffix(line, `\`); ok {
			cur += cont + " "
			continue
		}
		cur += line
		if f := strings.Fields(cur); len(f) > 0 {
			cmds = append(cmds, f)
		}
		cur = ""
	}
	return cmds
}

// runReadme runs an example's README commands as a user would, against the
// child hub c: the build (go build or wat2wasm) in the example's directory
// with its output written to out, and every `hub ...` command through the
// hub binary. It fails the test if the README has no deploy command.
func runReadme(t *testing.T, c *child, example, out string) {
	t.Helper()
	root := plugintest.ModuleRoot(t)
	dir := filepath.Join(root, "examples", example)
	cmds := readmeCommands(t, filepath.Join(dir, "README.md"))
	mapArgs := func(args []string) []string {
		args = slices.Clone(args)
		for i, a := range args {
			switch {
			case strings.HasSuffix(a, ".wasm"):
				args[i] = filepath.Join(out, a)
			case strings.HasSuffix(a, ".wat"):
				args[i] = filepath.Join(dir, a)
			}
		}
		return args
	}
	deployed := false
	for _, cmd := range cmds {
		var env []string
		for len(cmd) > 0 && strings.Contains(cmd[0], "=") && !strings.HasPrefix(cmd[0], "-") {
			env, cmd = append(env, cmd[0]), cmd[1:]
		}
		switch cmd[0] {
		case "go":
			x := exec.Command("go", mapArgs(cmd[1:])...)
			x.Dir, x.Env = dir, append(os.Environ(), env...)
			if b, err := x.CombinedOutput(); err != nil {
				t.Fatalf("README of %s: %s: %v\n%s", example, strings.Join(cmd, " "), err, b)
			}
		case "wat2wasm":
			args := mapArgs(cmd[1:])
			if path, err := exec.LookPath("wat2wasm"); err == nil {
				if b, err := exec.Command(path, args...).CombinedOutput(); err != nil {
					t.Fatalf("README of %s: %s: %v\n%s", example, strings.Join(cmd, " "), err, b)
				}
				continue
			}
			// Without wabt, use the committed module (TestCommittedWasmMatchesSource
			// keeps it equal to the source where wabt is installed).
			name := args[len(args)-1]
			b, err := os.ReadFile(filepath.Join(dir, filepath.Base(name)))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(name, b, 0o644); err != nil {
				t.Fatal(err)
			}
		case "hub":
			outText := c.cli(mapArgs(cmd[1:])...)
			t.Logf("$ %s\n%s", strings.Join(cmd, " "), outText)
			if len(cmd) > 2 && cmd[1] == "plugin" && cmd[2] == "deploy" {
				deployed = true
			}
		default:
			t.Fatalf("README of %s: command %q not understood by the test", example, strings.Join(cmd, " "))
		}
	}
	if !deployed {
		t.Fatalf("README of %s has no `hub plugin deploy` command", example)
	}
}

// TestExampleReadmes builds every example plugin and deploys it in a real
// `hub serve` exactly as its README says (same commands, same config, the
// rest at its documented defaults), feeds it over QUIC and checks its
// outputs. TestExamples in the plugins package runs the examples with tuned
// settings; this is what a user who copies the README gets.
func TestExampleReadmes(t *testing.T) {
	hubBinary(t)
	entries, err := os.ReadDir(filepath.Join(plugintest.ModuleRoot(t), "examples"))
	if err != nil {
		t.Fatal(err)
	}
	checks := map[string]func(t *testing.T, c *child){
		"aggregate": checkAggregateReadme, "alert": checkAlertReadme, "derive": checkDeriveReadme,
		"passthrough": checkPassThroughReadme, "wat-passthrough": checkPassThroughReadme,
	}
	for _, e := range entries {
		if _, err := os.Stat(filepath.Join(plugintest.ModuleRoot(t), "examples", e.Name(), "README.md")); err != nil {
			continue // not a plugin (federation is a set of configs)
		}
		check := checks[e.Name()]
		if check == nil {
			t.Errorf("example %s has no README test: add one to TestExampleReadmes", e.Name())
			continue
		}
		t.Run(e.Name(), func(t *testing.T) {
			dir := t.TempDir()
			c := startChild(t, writeHubToml(t, dir, "[[stream]]\nname = \"readings\"\nshards = 2\n"))
			c.wasmDir = dir
			runReadme(t, c, e.Name(), dir)
			check(t, c)
			c.stop()
		})
	}
}

// valuesOf decodes JSON outputs keyed by their record key.
func valuesOf(t *testing.T, recs []record.Record) map[string][]map[string]any {
	t.Helper()
	out := map[string][]map[string]any{}
	for _, r := range recs {
		var m map[string]any
		if err := json.Unmarshal(r.Value, &m); err != nil {
			t.Fatalf("output %q is not JSON: %v", r.Value, err)
		}
		out[string(r.Key)] = append(out[string(r.Key)], m)
	}
	return out
}

// checkAggregateReadme: window=1m, lateness=5s as in the README. Readings of
// one window, then one 70 s later that moves the watermark past the first
// window's end plus the lateness: the timer (every 1 s by default) emits
// that window. With lateness above zero the "no readings yet" watermark
// used to wrap around and every reading was dropped as late.
func checkAggregateReadme(t *testing.T, c *child) {
	// The same module with every config key at its default (lateness 2s).
	c.cli("plugin", "deploy", c.wasm("aggregate.wasm"), "--name", "agg-defaults", "--input", "readings",
		"--output", "aggregates", "--from", "earliest")
	cl := dialChild(t, c)
	w := time.Now().Add(-time.Hour).Truncate(time.Minute)
	var recs []record.Record
	for i, v := range []float64{20, 30, 25, 35} {
		recs = append(recs, reading("s1", w.Add(time.Duration(i)*10*time.Second), v))
	}
	recs = append(recs, reading("s1", w.Add(70*time.Second), 99)) // next window: closes the first
	produceSDK(t, cl, "readings", recs)
	aggs := consumeSDK(t, cl, "aggregates", 2)
	byPlugin := map[string]int{}
	for _, r := range aggs {
		byPlugin[r.Origin.Hub]++
	}
	if len(byPlugin) != 2 {
		t.Fatalf("aggregates from %v, want one from each of agg and agg-defaults", byPlugin)
	}
	for _, a := range valuesOf(t, aggs)["s1"] {
		if a["count"] != 4.0 || a["min"] != 20.0 || a["max"] != 35.0 || a["mean"] != 27.5 ||
			a["window_start"] != w.UTC().Format(time.RFC3339Nano) {
			t.Fatalf("aggregate %v, want count 4 min 20 max 35 mean 27.5 from %s", a, w.UTC().Format(time.RFC3339))
		}
	}
	// The firing's state change commits after its output is stored.
	for _, name := range []string{"agg", "agg-defaults"} {
		testutil.Eventually(t, name+": the open second window and the watermark left in state", func() bool {
			i := c.describe(name)
			return i.Status == plugins.StatusRunning && i.StateKeys == 2 && i.RecordsIn == 5 && i.RecordsOut == 1
		})
	}
}

// checkAlertReadme: threshold=80, hysteresis=5, rate=10/s, debounce=1m.
// With every key at its default (no threshold, no rate) the plugin alerts
// on nothing, as its README says.
func checkAlertReadme(t *testing.T, c *child) {
	c.cli("plugin", "deploy", c.wasm("alert.wasm"), "--name", "alert-defaults", "--input", "readings",
		"--output", "alerts-defaults")
	cl := dialChild(t, c)
	t0 := time.Now().Add(-time.Hour)
	at := func(sec int) time.Time { return t0.Add(time.Duration(sec) * time.Second) }
	produceSDK(t, cl, "readings", []record.Record{
		reading("s1", at(0), 70),
		reading("s1", at(10), 85), // crosses 80: threshold alert (1.5/s: no rate alert)
		reading("s1", at(11), 86), // still above: nothing
		reading("s1", at(12), 60), // falls 26/s: rate alert; re-armed (<= 75)
		reading("s1", at(13), 90), // crosses again, 30/s: both debounced (1m)
		reading("s2", at(0), 10),  // quiet sensor
		reading("s2", at(30), 20),
	})
	alerts := valuesOf(t, consumeSDK(t, cl, "alerts", 2))
	var kinds []string
	for _, a := range alerts["s1"] {
		kinds = append(kinds, fmt.Sprintf("%s:%v", a["kind"], a["value"]))
	}
	if !slices.Equal(kinds, []string{"threshold:85", "rate:60"}) || len(alerts["s2"]) != 0 {
		t.Fatalf("alerts %v (s2: %v), want threshold:85 then rate:60 for s1", kinds, alerts["s2"])
	}
	for _, name := range []string{"alert", "alert-defaults"} {
		testutil.Eventually(t, name+" caught up", func() bool { i := c.describe(name); return i.Lag == 0 && i.RecordsIn == 7 })
	}
	if info := c.describe("alert"); info.RecordsOut != 2 {
		t.Fatalf("alert emitted %d records, want 2", info.RecordsOut)
	}
	if info := c.describe("alert-defaults"); info.RecordsOut != 0 || info.Errors != 0 {
		t.Fatalf("alert with its defaults emitted %d records (%d errors), want none", info.RecordsOut, info.Errors)
	}
}

// checkDeriveReadme: Fahrenheit with the site of plant7- sensors, below
// -50 °C dropped; with its defaults (--output derived only: no filter, scale 1)
// every reading is copied with its source.
func checkDeriveReadme(t *testing.T, c *child) {
	c.cli("plugin", "deploy", c.wasm("derive.wasm"), "--name", "derive-defaults", "--input", "readings", "--output", "derived")
	cl := dialChild(t, c)
	now := time.Now()
	produceSDK(t, cl, "readings", []record.Record{
		reading("plant7-a", now, 100),
		reading("other", now, -60), // below min
		reading("other", now, 0),
	})
	got := valuesOf(t, consumeSDK(t, cl, "readings-f", 2))
	p, o := got["plant7-a"], got["other"]
	if len(p) != 1 || p[0]["value"] != 212.0 || p[0]["unit"] != "F" || p[0]["site"] != "plant-7" {
		t.Fatalf("plant7-a: %v", p)
	}
	if len(o) != 1 || o[0]["value"] != 32.0 || o[0]["site"] != nil {
		t.Fatalf("other: %v (the -60 reading is below min and must be dropped)", o)
	}
	d := valuesOf(t, consumeSDK(t, cl, "derived", 3))
	if len(d["plant7-a"]) != 1 || d["plant7-a"][0]["value"] != 100.0 || len(d["other"]) != 2 ||
		!strings.HasPrefix(fmt.Sprint(d["other"][0]["source"]), "readings/") {
		t.Fatalf("derive with its defaults: %v", d)
	}
}

// checkPassThroughReadme: every record copied to "copy", keys and values
// intact.
func checkPassThroughReadme(t *testing.T, c *child) {
	cl := dialChild(t, c)
	var recs []record.Record
	for i := 0; i < 20; i++ {
		recs = append(recs, record.Record{Key: []byte(fmt.Sprintf("k%d", i%3)), Value: []byte(fmt.Sprint(i)),
			Headers: []record.Header{{Key: "n", Value: []byte(fmt.Sprint(i))}}})
	}
	produceSDK(t, cl, "readings", recs)
	got := consumeSDK(t, cl, "copy", len(recs))
	seen := map[string]bool{}
	for _, r := range got {
		if len(r.Headers) != 1 || string(r.Headers[0].Value) != string(r.Value) {
			t.Fatalf("copied record %q has headers %+v", r.Value, r.Headers)
		}
		seen[string(r.Key)+"="+string(r.Value)] = true
	}
	for i := 0; i < 20; i++ {
		if !seen[fmt.Sprintf("k%d=%d", i%3, i)] {
			t.Fatalf("record %d not copied; got %d records", i, len(got))
		}
	}
}

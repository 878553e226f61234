package plugins

import (
	"slices"
	"strings"
	"testing"

	"github.com/edgehub/edgehub/internal/plugintest"
	"github.com/edgehub/edgehub/internal/testutil"
)

// initLine waits for the plugin's newest log line starting with "init "
// logged after its last "deployed"/"upgraded" line and returns it.
func initLine(tb testing.TB, m *Manager, name string) string {
	tb.Helper()
	var line string
	testutil.Eventually(tb, name+" logs its init", func() bool {
		logs, err := m.Logs(name, 100)
		if err != nil {
			tb.Fatal(err)
		}
		for _, l := range slices.Backward(logs) {
			if strings.HasPrefix(l.Message, "deployed ") || strings.HasPrefix(l.Message, "upgraded ") {
				return false
			}
			if strings.HasPrefix(l.Message, "init ") {
				line = l.Message
				return true
			}
		}
		return false
	})
	return line
}

// TestDeclaredOutputsReachInit: eh_init receives "output" (the first declared
// output) and "outputs" (all, in declaration order) unless the deploy's config
// sets them; the stored config stays as given.
func TestDeclaredOutputsReachInit(t *testing.T) {
	wasm := plugintest.Wasm(t, "plugins/testdata/outputs")
	tests := []struct {
		name    string
		outputs []string
		config  map[string]string
		want    string
	}{
		{name: "one", outputs: []string{"a"}, want: `init output="a" outputs="a"`},
		{name: "several in declaration order", outputs: []string{"b", "a"}, want: `init output="b" outputs="b,a"`},
		{name: "none", want: "init output unset outputs unset"},
		{name: "user output wins", outputs: []string{"a"}, config: map[string]string{"output": "elsewhere"},
			want: `init output="elsewhere" outputs="a"`},
		{name: "user outputs win", outputs: []string{"a", "b"}, config: map[string]string{"outputs": "a"},
			want: `init output="a" outputs="a"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			in := e.stream("in", 1)
			e.deploy(Definition{Name: "p", Inputs: []string{"in"}, Outputs: tt.outputs, Config: tt.config, Start: StartEarliest}, wasm)
			e.produce(in, rec("k", "v"))
			if got := initLine(t, e.m, "p"); got != tt.want {
				t.Errorf("init saw %s, want %s", got, tt.want)
			}
			info, err := e.m.Describe("p")
			if err != nil {
				t.Fatal(err)
			}
			if len(info.Config) != len(tt.config) {
				t.Errorf("stored config %v, want the deploy's %v", info.Config, tt.config)
			}
		})
	}
}

// TestDeclaredOutputsAreEnough: a plugin given only its outputs emits to
// them, and an upgrade that changes the outputs tells the new instances.
func TestDeclaredOutputsAreEnough(t *testing.T) {
	e := newEnv(t)
	in := e.stream("in", 1)
	wasm := plugintest.Wasm(t, "plugins/testdata/outputs")
	e.deploy(Definition{Name: "p", Inputs: []string{"in"}, Outputs: []string{"a", "b"}, Start: StartEarliest}, wasm)
	e.produce(in, rec("k", "1"))
	for _, name := range []string{"a", "b"} {
		s, _ := e.st.Stream(name)
		if got := readAll(t, s, 1); string(got[0].Value) != "1" {
			t.Fatalf("%s holds %q, want the input record", name, got[0].Value)
		}
	}
	e.deploy(Definition{Name: "p", Inputs: []string{"in"}, Outputs: []string{"c"}, Start: StartEarliest}, wasm)
	if got := initLine(t, e.m, "p"); got != `init output="c" outputs="c"` {
		t.Fatalf("after the upgrade init saw %s", got)
	}
	e.produce(in, rec("k", "2"))
	c, _ := e.st.Stream("c")
	if got := readAll(t, c, 1); string(got[0].Value) != "2" {
		t.Fatalf("c holds %q, want the second input record", got[0].Value)
	}
}

// TestDeclaredOutputsABIv1Module: a module built before the hub filled
// "output" (the WAT pass-through reads only that key) needs no config.
func TestDeclaredOutputsABIv1Module(t *testing.T) {
	e := newEnv(t)
	in := e.stream("in", 2)
	e.deploy(Definition{Name: "copy", Inputs: []string{"in"}, Outputs: []string{"copy"}, Start: StartEarliest},
		readTestdata(t, watPassThrough))
	e.produce(in, rec("a", "1"), rec("b", "2"))
	out, _ := e.st.Stream("copy")
	got := readAll(t, out, 2)
	var values []string
	for _, r := range got {
		values = append(values, string(r.Value))
	}
	slices.Sort(values)
	if !slices.Equal(values, []string{"1", "2"}) {
		t.Fatalf("copy holds %v, want [1 2]", values)
	}
}

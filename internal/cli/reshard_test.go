package cli

import (
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/edgehub/edgehub/hub"
)

// TestEndToEndReshard runs split, merge and reshard as a user types them
// against a real hub serve, and checks what describe and list then show.
func TestEndToEndReshard(t *testing.T) {
	s := startServer(t, t.TempDir())
	env := []string{"HUB_ADMIN=" + s.admin}
	steps := []struct {
		name   string
		args   []string
		code   int
		stdout []string // substrings, in order
		stderr string
	}{
		{name: "create", args: []string{"stream", "create", "s", "--shards", "2"}, stdout: []string{"created stream s with 2 shards"}},
		{name: "describe before", args: []string{"stream", "describe", "s"}, stdout: []string{"Shards:", "2\n", "LAST INGEST\n"}},
		{name: "split without --shard", args: []string{"stream", "split", "s"}, code: 2, stderr: "missing --shard"},
		{name: "split", args: []string{"stream", "split", "s", "--shard", "0"}, stdout: []string{"split stream s: layout version 1, 3 open shards (2, 3, 1, in hash order)"}},
		{name: "split a closed shard", args: []string{"stream", "split", "s", "--shard", "0"}, code: 1, stderr: "shard closed"},
		{name: "split at a hash", args: []string{"stream", "split", "s", "--shard", "1", "--at", "0xC000000000000000"},
			stdout: []string{"layout version 2, 4 open shards (2, 3, 4, 5, in hash order)"}},
		{name: "merge bad list", args: []string{"stream", "merge", "s", "--shards", "3"}, code: 2, stderr: "want two shard ids"},
		{name: "merge not adjacent", args: []string{"stream", "merge", "s", "--shards", "2,4"}, code: 1, stderr: "not adjacent"},
		{name: "merge", args: []string{"stream", "merge", "s", "--shards", "3,4"}, stdout: []string{"merged stream s: layout version 3, 3 open shards"}},
		{name: "reshard", args: []string{"stream", "reshard", "s", "--shards", "4"}, stdout: []string{"resharded stream s: layout version 4, 4 open shards"}},
		{name: "reshard bad count", args: []string{"stream", "reshard", "s", "--shards", "0"}, code: 2, stderr: "invalid --shards 0"},
		{name: "describe after", args: []string{"stream", "describe", "s"},
			stdout: []string{"Shards:", "4 open (created with 2; layout version 4)", "LINEAGE", "\n0 ", "closed at 0, into 2+3", "\n7 ", "open, from"}},
		{name: "list", args: []string{"stream", "list"}, stdout: []string{"\ns ", " 4 "}},
		{name: "autosplit nothing", args: []string{"stream", "autosplit", "s"}, code: 2, stderr: "give a policy"},
		{name: "autosplit off and a policy", args: []string{"stream", "autosplit", "s", "--off", "--bytes", "1GiB"}, code: 2, stderr: "give it alone"},
		{name: "autosplit no max", args: []string{"stream", "autosplit", "s", "--bytes", "1GiB"}, code: 1, stderr: "max_shards"},
		{name: "autosplit short for", args: []string{"stream", "autosplit", "s", "--rate", "8MiB/s", "--max-shards", "8", "--for", "10s"}, code: 1, stderr: "for"},
		{name: "autosplit", args: []string{"stream", "autosplit", "s", "--bytes", "1GiB", "--records-rate", "5000", "--max-shards", "8", "--cooldown", "45m"},
			stdout: []string{"autosplit for stream s: bytes ≥ 1GiB or records ≥ 5000/s for 10m; at most 8 open shards; cooldown 45m"}},
		{name: "describe autosplit", args: []string{"stream", "describe", "s"}, stdout: []string{"Autosplit:", "at most 8 open shards", "(set by api)"}},
		{name: "autosplit off", args: []string{"stream", "autosplit", "s", "--off"}, stdout: []string{"autosplit for stream s: off"}},
		{name: "describe no autosplit", args: []string{"stream", "describe", "s"}, stdout: []string{"Autosplit:", " -\nUsed by:"}},
	}
	for _, st := range steps {
		code, out, errOut := runHub(t, env, st.args...)
		if code != st.code {
			t.Fatalf("%s: exit %d, want %d\nstdout: %s\nstderr: %s", st.name, code, st.code, out, errOut)
		}
		rest := out
		for _, want := range st.stdout {
			i := strings.Index(rest, want)
			if i < 0 {
				t.Fatalf("%s: stdout lacks %q (in order):\n%s", st.name, want, out)
			}
			rest = rest[i+len(want):]
		}
		if !strings.Contains(errOut, st.stderr) {
			t.Fatalf("%s: stderr %q does not contain %q", st.name, errOut, st.stderr)
		}
	}
	_, out, _ := runHub(t, env, "stream", "describe", "s", "--json")
	var info hub.StreamInfo
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatal(err)
	}
	if info.LayoutVersion != 4 || info.OpenShards != 4 || info.Config.Shards != 2 {
		t.Fatalf("describe --json: layout %d, %d open, created with %d", info.LayoutVersion, info.OpenShards, info.Config.Shards)
	}

	// describe shows the autosplit policy, none until one is set.
	if _, out, _ := runHub(t, env, "stream", "describe", "s"); !regexp.MustCompile(`Autosplit:\s+-\n`).MatchString(out) {
		t.Fatalf("describe without a policy:\n%s", out)
	}
	req, err := http.NewRequest("PUT", s.admin+"/v1/streams/s/autosplit", strings.NewReader(`{"bytes":"1GiB","rate":"8MiB/s","max_shards":16,"cooldown":"1h"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("PUT autosplit: %s", resp.Status)
	}
	want := "bytes ≥ 1GiB or rate ≥ 8MiB/s for 10m; at most 16 open shards; cooldown 1h (set by api)"
	if _, out, _ := runHub(t, env, "stream", "describe", "s"); !regexp.MustCompile(`Autosplit:\s+` + regexp.QuoteMeta(want)).MatchString(out) {
		t.Fatalf("describe lacks %q:\n%s", want, out)
	}
	_, out, _ = runHub(t, env, "stream", "describe", "s", "--json")
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatal(err)
	}
	if a := info.Config.Autosplit; a == nil || a.MaxShards != 16 || a.Rate != 8<<20 || info.Config.AutosplitFrom != "api" {
		t.Fatalf("describe --json: autosplit %+v from %q", a, info.Config.AutosplitFrom)
	}
}

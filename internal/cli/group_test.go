package cli

import (
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/edgehub/edgehub/hub"
)

// TestEndToEndGroups drives `hub consume --group` and `hub group` against a
// `hub serve` child: consumers of one group continue where the previous one
// committed, and the group's offsets can be listed, described and reset.
func TestEndToEndGroups(t *testing.T) {
	base := t.TempDir()
	s := startServer(t, filepath.Join(base, "hub-data"))
	env := []string{"HUB_ADDR=" + s.quicAddr(t), "HUB_ADMIN=" + s.admin}
	run := func(t *testing.T, wantCode int, args ...string) (string, string) {
		t.Helper()
		code, out, errOut := runHubIn(t, base, env, args...)
		if code != wantCode {
			t.Fatalf("hub %s: exit %d, want %d\n%s%s", strings.Join(args, " "), code, wantCode, out, errOut)
		}
		return out, errOut
	}
	run(t, 0, "stream", "create", "events", "--shards", "3")
	var in strings.Builder
	var all []string
	for i := range 12 {
		v := string(rune('a'+i)) + "-value"
		in.WriteString(string(rune('a'+i)) + ":" + v + "\n")
		all = append(all, v)
	}
	if code, _, errOut := runHubStdin(t, base, in.String(), env, "produce", "events", "--key-sep", ":"); code != 0 {
		t.Fatalf("produce: %s", errOut)
	}

	// Two consumers of the group, one after the other, print every record
	// once: the second starts where the first committed.
	first, _ := run(t, 0, "consume", "events", "--group", "billing", "-n", "5")
	second, _ := run(t, 0, "consume", "events", "--group", "billing")
	got := append(strings.Fields(first), strings.Fields(second)...)
	if len(strings.Fields(first)) != 5 || !slices.Equal(slices.Sorted(slices.Values(got)), all) {
		t.Fatalf("first printed %q, second %q; want every value once", first, second)
	}
	if out, _ := run(t, 0, "consume", "events", "--group", "billing"); out != "" {
		t.Fatalf("a third consumer printed %q: the group had consumed everything", out)
	}

	out, _ := run(t, 0, "group", "list")
	if !strings.Contains(out, "NAME") || !strings.Contains(out, "billing") || !strings.Contains(out, "events") {
		t.Fatalf("group list:\n%s", out)
	}
	out, _ = run(t, 0, "group", "describe", "billing")
	for _, want := range []string{"Name:", "billing", "Stream:", "events", "Lag:", "SHARD", "STATE", "COMMITTED", "unassigned"} {
		if !strings.Contains(out, want) {
			t.Fatalf("group describe lacks %q:\n%s", want, out)
		}
	}
	out, _ = run(t, 0, "group", "describe", "billing", "--json")
	var g hub.GroupInfo
	if err := json.Unmarshal([]byte(out), &g); err != nil || len(g.Shards) != 3 || g.Lag != 0 || len(g.Members) != 0 {
		t.Fatalf("describe --json: %v\n%s", err, out)
	}

	// Rewind: everything again.
	out, _ = run(t, 0, "group", "reset", "billing", "--stream", "events", "--to", "earliest", "--yes")
	if !strings.Contains(out, "reset group billing on stream events") {
		t.Fatalf("reset:\n%s", out)
	}
	again, _ := run(t, 0, "consume", "events", "--group", "billing")
	if !slices.Equal(slices.Sorted(slices.Values(strings.Fields(again))), all) {
		t.Fatalf("after reset to earliest: %q", again)
	}
	run(t, 0, "group", "reset", "billing", "--stream", "events", "--to", "1", "--shard", "0", "--yes")

	for _, tc := range []struct {
		name   string
		code   int
		args   []string
		stderr string
	}{
		{"reset without stream", 2, []string{"group", "reset", "billing", "--to", "earliest"}, "missing --stream"},
		{"reset bad position", 2, []string{"group", "reset", "billing", "--stream", "events", "--to", "soon"}, "invalid --to"},
		{"reset for another stream", 1, []string{"group", "reset", "billing", "--stream", "nope", "--to", "earliest", "--yes"}, "not found"},
		{"group and shard", 2, []string{"consume", "events", "--group", "billing", "--shard", "1"}, "exclude each other"},
		{"describe unknown", 1, []string{"group", "describe", "nope"}, "not found"},
		{"bad group name", 1, []string{"consume", "events", "--group", "no good"}, "invalid_argument"},
		// Destructive commands refuse without a terminal or --yes, and a
		// stream the group uses is not deleted without --force.
		{"reset without --yes", 2, []string{"group", "reset", "billing", "--stream", "events", "--to", "earliest"}, "pass --yes"},
		{"group delete without --yes", 2, []string{"group", "delete", "billing"}, "pass --yes"},
		{"stream delete in use", 1, []string{"stream", "delete", "events", "--yes"}, "used by group billing: pass --force"},
		{"stream delete --force without --yes", 2, []string{"stream", "delete", "events", "--force"}, "pass --yes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, errOut := run(t, tc.code, tc.args...)
			if !strings.Contains(errOut, tc.stderr) {
				t.Fatalf("stderr %q lacks %q", errOut, tc.stderr)
			}
		})
	}

	// Nothing was deleted or reset by the refused commands.
	out, _ = run(t, 0, "group", "describe", "billing", "--json")
	if err := json.Unmarshal([]byte(out), &g); err != nil || g.Shards[0].Committed != 1 || g.Shards[1].Committed == 1 {
		t.Fatalf("after refused commands: %v\n%s", err, out)
	}
	if out, _ := run(t, 0, "stream", "describe", "events"); !strings.Contains(out, "12") || !strings.Contains(out, "group billing") {
		t.Fatalf("stream describe after a refused delete:\n%s", out)
	}

	out, _ = run(t, 0, "group", "delete", "billing", "--yes")
	if !strings.Contains(out, "deleted group billing") {
		t.Fatalf("delete: %s", out)
	}
	out, _ = run(t, 0, "group", "list")
	if !strings.Contains(out, "no consumer groups") {
		t.Fatalf("list after delete: %s", out)
	}
}

// TestGroupLineageCell: describe's LINEAGE column across a reshard.
func TestGroupLineageCell(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   hub.GroupShard
		want string
	}{
		{"open", hub.GroupShard{}, "open"},
		{"closed parent", hub.GroupShard{ShardState: "closed", EndSeq: 150}, "closed end=150"},
		{"finished parent", hub.GroupShard{ShardState: "finished", EndSeq: 150}, "finished end=150"},
		{"waiting child", hub.GroupShard{WaitingFor: []int{1, 2}}, "open, waiting for 1,2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := groupLineage(tc.in); got != tc.want {
				t.Fatalf("groupLineage(%+v) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

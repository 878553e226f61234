package groups

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
)

func TestAssign(t *testing.T) {
	tests := []struct {
		name     string
		members  []string
		owner    []string
		revoking []bool
		want     []string
	}{
		{name: "no members", members: nil, owner: []string{"a", ""}, want: []string{"", ""}},
		{name: "fresh split", members: []string{"a", "b"}, owner: []string{"", "", "", ""},
			want: []string{"a", "b", "a", "b"}},
		{name: "sticky join: the holder keeps its first shards", members: []string{"a", "b"}, owner: []string{"a", "a", "a", "a"},
			want: []string{"a", "a", "b", "b"}},
		{name: "leaver's shards spread", members: []string{"a", "c"}, owner: []string{"a", "b", "c", "b", "a", "c"},
			want: []string{"a", "a", "c", "c", "a", "c"}},
		{name: "odd count: the bigger holder keeps the extra", members: []string{"a", "b"}, owner: []string{"b", "b", "a", "", "b"},
			want: []string{"b", "b", "a", "a", "b"}},
		{name: "settled shards kept before ones being handed over", members: []string{"a", "b"},
			owner: []string{"a", "a", "a", "a"}, revoking: []bool{true, true, false, false},
			want: []string{"b", "b", "a", "a"}},
		{name: "more members than shards", members: []string{"a", "b", "c"}, owner: []string{"c", ""},
			want: []string{"c", "a"}},
		{name: "unknown holders are ignored", members: []string{"a"}, owner: []string{"gone", "a"},
			want: []string{"a", "a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rev := tt.revoking
			if rev == nil {
				rev = make([]bool, len(tt.owner))
			}
			if got := assign(tt.members, tt.owner, rev); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("assign = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestAssignProperties checks random inputs: every shard gets a member,
// counts differ by at most one, a holder under its quota keeps its settled
// shards, and applying the result again changes nothing.
func TestAssignProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for iter := range 2000 {
		nm := r.IntN(6)
		members := make([]string, nm)
		for i := range members {
			members[i] = fmt.Sprintf("m%d", i)
		}
		ns := 1 + r.IntN(20)
		owner := make([]string, ns)
		revoking := make([]bool, ns)
		for s := range owner {
			switch k := r.IntN(nm + 2); {
			case k < nm:
				owner[s] = members[k]
				revoking[s] = r.IntN(4) == 0
			case k == nm:
				owner[s] = "departed"
			}
		}
		got := assign(members, owner, revoking)
		if again := assign(members, owner, revoking); !slices.Equal(got, again) {
			t.Fatalf("iter %d: not deterministic: %q then %q", iter, got, again)
		}
		if nm == 0 {
			continue
		}
		count := map[string]int{}
		for s, m := range got {
			if !slices.Contains(members, m) {
				t.Fatalf("iter %d: shard %d to %q (members %q)", iter, s, m, members)
			}
			count[m]++
		}
		lo, hi := ns, 0
		for _, m := range members {
			lo, hi = min(lo, count[m]), max(hi, count[m])
		}
		if hi-lo > 1 {
			t.Fatalf("iter %d: unbalanced %v for owners %q", iter, count, owner)
		}
		// Stickiness: a member that lost a settled shard has no room for it.
		for s, o := range owner {
			if got[s] != o && slices.Contains(members, o) && !revoking[s] && count[o] < ns/nm {
				t.Fatalf("iter %d: shard %d moved from %q holding %d (< %d)", iter, s, o, count[o], ns/nm)
			}
		}
		// Applying the target is a fixed point: nothing moves again.
		if next := assign(members, got, make([]bool, ns)); !slices.Equal(next, got) {
			t.Fatalf("iter %d: %q then %q", iter, got, next)
		}
	}
}

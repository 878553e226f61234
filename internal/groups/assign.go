package groups

import (
	"cmp"
	"slices"
)

// assign returns the owner every shard should have among members: balanced
// (owned counts differ by at most one) and sticky (a shard stays with its
// current owner whenever that owner's quota allows). owner[s] is the
// shard's current holder ("" for none; holders not among members are
// ignored); revoking[s] marks a shard its holder is already giving up, which
// the holder keeps only after its settled shards. Equal inputs give equal
// outputs, so repeated rebalances do not shuffle shards.
func assign(members []string, owner []string, revoking []bool) []string {
	n := len(owner)
	target := make([]string, n)
	if len(members) == 0 {
		return target
	}
	idx := make(map[string]int, len(members))
	for i, m := range members {
		idx[m] = i
	}
	// Each member's current shards, settled ones first, each in shard order.
	held := make([][]int, len(members))
	settled := make([]int, len(members))
	for s, o := range owner {
		if i, ok := idx[o]; ok && !revoking[s] {
			held[i] = append(held[i], s)
			settled[i]++
		}
	}
	for s, o := range owner {
		if i, ok := idx[o]; ok && revoking[s] {
			held[i] = append(held[i], s)
		}
	}
	// The members holding the most (settled first) get the larger quotas,
	// so as little as possible moves.
	order := make([]int, len(members))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		if c := cmp.Compare(settled[b], settled[a]); c != 0 {
			return c
		}
		if c := cmp.Compare(len(held[b]), len(held[a])); c != 0 {
			return c
		}
		return cmp.Compare(members[a], members[b])
	})
	base, extra := n/len(members), n%len(members)
	quota := make([]int, len(members))
	rank := make([]int, len(members)) // position in order: ties in the fill go to the earlier
	for r, i := range order {
		quota[i] = base
		if r < extra {
			quota[i]++
		}
		rank[i] = r
	}
	count := make([]int, len(members))
	for _, i := range order {
		for _, s := range held[i] {
			if count[i] < quota[i] {
				target[s] = members[i]
				count[i]++
			}
		}
	}
	// The rest go, in shard order, to the member furthest below its quota.
	for s := range target {
		if target[s] != "" {
			continue
		}
		best := -1
		for i := range members {
			if count[i] >= quota[i] {
				continue
			}
			if best < 0 || quota[i]-count[i] > quota[best]-count[best] ||
				(quota[i]-count[i] == quota[best]-count[best] && rank[i] < rank[best]) {
				best = i
			}
		}
		target[s] = members[best]
		count[best]++
	}
	return target
}

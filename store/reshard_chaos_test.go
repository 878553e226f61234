//go:build chaos

package store

import "testing"

// TestReshardChaosEdges kills the child exactly inside a split's
// transaction before its commit, and exactly after the commit before the
// layout is published in memory (EDGEHUB_CHAOS_RESHARD): the reopened file
// has the old layout in the first case and the new one in the second, each
// whole, with every acknowledged record in place.
func TestReshardChaosEdges(t *testing.T) {
	for _, tc := range []struct {
		point string
		bump  uint64
	}{{"before-commit", 0}, {"after-commit", 1}} {
		t.Run(tc.point, func(t *testing.T) {
			dir := t.TempDir()
			_, layouts := runReshardChild(t, dir, -1, "EDGEHUB_CHAOS_RESHARD="+tc.point)
			if len(layouts) != 1 || layouts[0] != 0 {
				t.Fatalf("child printed layouts %v; the split must not return", layouts)
			}
			s := openStore(t, testConfig(t, dir))
			st, err := s.Stream("rc")
			if err != nil {
				t.Fatal(err)
			}
			if v := st.Layout().Version; v != tc.bump {
				t.Fatalf("layout version %d after a kill %s, want %d", v, tc.point, tc.bump)
			}
			if errs := checkReshardFile(st, nil, tc.bump); len(errs) > 0 {
				t.Fatal(errs)
			}
		})
	}
}

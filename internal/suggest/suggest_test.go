package suggest

import "testing"

func TestClosest(t *testing.T) {
	known := []string{"name", "shards", "retention"}
	for s, want := range map[string]string{"nmae": "name", "shard": "shards", "retnetion": "retention", "retxxxxon": "", "x": ""} {
		if got := Closest(s, known); got != want {
			t.Errorf("Closest(%q) = %q, want %q", s, got, want)
		}
	}
}

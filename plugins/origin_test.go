package plugins

import (
	"strings"
	"testing"

	"github.com/edgehub/edgehub/internal/replicate"
)

// TestOriginSeqShift: the output index bits of every origin OriginHub
// makes, shortened names included, and none for other origins; the hub
// writing each is what replication follows it from.
func TestOriginSeqShift(t *testing.T) {
	long := strings.Repeat("p", 120)
	for _, tt := range []struct {
		origin string
		shift  uint
	}{
		{OriginHub("edge-1", "agg", "readings"), 16},
		{OriginHub("edge-1", "agg", "readings") + "/timer", 32},
		{OriginHub("edge-1", long, long), 16},
		{OriginHub("edge-1", long, long) + "/timer", 32},
		{OriginHub("edge-1", "agg", "timer"), 16},
		{"edge-1", 0},
		{"edge-1/other/x", 0},
		{"a/b/plugin/x/y", 0},
	} {
		if got := OriginSeqShift(tt.origin); got != tt.shift {
			t.Errorf("OriginSeqShift(%q) = %d, want %d", tt.origin, got, tt.shift)
		}
		if tt.shift > 0 && replicate.OwnerOf(tt.origin) != "edge-1" {
			t.Errorf("OwnerOf(%q) = %q, want edge-1", tt.origin, replicate.OwnerOf(tt.origin))
		}
	}
}

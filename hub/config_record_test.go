package hub

import (
	"strings"
	"testing"
)

// TestRecordLimitNeedsFrame: the hub refuses a frame limit that cannot
// carry one record of store.max_record_bytes in a BATCH, naming both keys
// and a frame limit that works; that suggestion and the defaults load.
func TestRecordLimitNeedsFrame(t *testing.T) {
	tests := []struct {
		name, toml string
		want       string // "" = loads
	}{
		{"defaults", "", ""},
		{"16MiB records, default frames", "[store]\nmax_record_bytes = \"16MiB\"\n",
			"limits.max_frame_bytes: 8MiB cannot carry a record of store.max_record_bytes 16MiB; set it to at least 17MiB"},
		{"16MiB records, 17MiB frames", "[store]\nmax_record_bytes = \"16MiB\"\n[limits]\nmax_frame_bytes = \"17MiB\"\n", ""},
		{"64MiB records, 65MiB frames", "[store]\nmax_record_bytes = \"64MiB\"\n[limits]\nmax_frame_bytes = \"65MiB\"\n", ""},
		{"frames of exactly the record", "[limits]\nmax_frame_bytes = \"1MiB\"\n", "set it to at least 2MiB"},
		{"small records, small frames", "[store]\nmax_record_bytes = \"60KiB\"\n[limits]\nmax_frame_bytes = \"64KiB\"\n", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig("hub.toml", []byte(tc.toml))
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

package store

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/edgehub/edgehub/internal/record"
)

// TestRecordLimitCounting: max_record_bytes counts key, value, and each
// header's key and value plus 2, and nothing else: a record of exactly the
// limit is stored, also with a foreign origin (a replicated record keeps
// its size), and one byte more is refused.
func TestRecordLimitCounting(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.MaxRecordBytes = 1000
	s := openStore(t, cfg)
	st := newStream(t, s, StreamConfig{Name: "lim", Shards: 1})
	hdr := []record.Header{{Key: "ab", Value: []byte("cd")}} // counts 6
	tests := []struct {
		name string
		rec  record.Record
		ok   bool
	}{
		{"value at the limit", record.Record{Value: make([]byte, 1000)}, true},
		{"value one over", record.Record{Value: make([]byte, 1001)}, false},
		{"key, value, header at the limit", record.Record{Key: make([]byte, 94), Value: make([]byte, 900), Headers: hdr}, true},
		{"key, value, header one over", record.Record{Key: make([]byte, 95), Value: make([]byte, 900), Headers: hdr}, false},
		{"replicated at the limit", record.Record{Value: make([]byte, 1000), Time: 7, Origin: record.Origin{Hub: strings.Repeat("h", 200), Seq: 1}}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := st.Append(context.Background(), Batch{Shard: 0, Records: []record.Record{tc.rec}})
			if tc.ok != (err == nil) || (!tc.ok && !errors.Is(err, ErrRecordTooLarge)) {
				t.Fatalf("payload %d: %v", tc.rec.PayloadSize(), err)
			}
			if !tc.ok && !strings.Contains(err.Error(), "above max_record_bytes 1000") {
				t.Fatalf("message does not name the limit: %v", err)
			}
		})
	}
}

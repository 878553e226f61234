package hub

import (
	"testing"

	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/quic"
	"github.com/edgehub/edgehub/store"
)

// TestDataPlaneSequenceConflict resends changed batches under the last
// producer sequence of a shard from a raw client, as the independent client
// of issue 8 did: a different record count or content is refused with
// sequence_conflict (it was answered duplicate_too_old, "treat as stored",
// while nothing was stored), and only the exact resend is a duplicate.
func TestDataPlaneSequenceConflict(t *testing.T) {
	d := startDataPlane(t, nil, store.StreamConfig{Name: "idem", Shards: 1})
	st, _ := produceRaw(t, d.raw(t, ""), quic.ProduceOpen{Stream: "idem", ProducerID: 41})
	if ack := sendBatch(t, st, quic.Batch{ID: 1, ProducerSeq: 0, Records: encode(t, "a", "b")}); ack.Err() != nil {
		t.Fatal(ack.Err())
	}
	last := sendBatch(t, st, quic.Batch{ID: 2, ProducerSeq: 2, Records: encode(t, "c")})
	if last.Err() != nil {
		t.Fatal(last.Err())
	}
	withTime, err := record.AppendBatch(nil, []record.Record{{Value: []byte("c"), Time: 1}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		seq     uint64
		records []byte
		want    quic.Code
	}{
		{"one record more", 2, encode(t, "c", "d"), quic.CodeSequenceConflict},
		{"same count, other value", 2, encode(t, "C"), quic.CodeSequenceConflict},
		{"same value, other time", 2, withTime, quic.CodeSequenceConflict},
		{"inside a stored batch", 1, encode(t, "b"), quic.CodeSequenceConflict},
		{"exact resend", 2, encode(t, "c"), quic.CodeOK},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ack := sendBatch(t, st, quic.Batch{ID: uint64(10 + i), ProducerSeq: tc.seq, Records: tc.records})
			if ack.Code != tc.want {
				t.Fatalf("ack %+v, want %s", ack, tc.want)
			}
			if tc.want != quic.CodeOK {
				if ack.Duplicate || len(ack.Runs) != 0 || ack.Message == "" {
					t.Fatalf("refusal %+v carries positions or no message", ack)
				}
				return
			}
			if !ack.Duplicate || len(ack.Runs) != 1 || ack.Runs[0] != last.Runs[0] {
				t.Fatalf("exact resend %+v, want a duplicate at %+v", ack, last.Runs)
			}
		})
	}
	s, _ := d.h.Store().Stream("idem")
	recs, err := s.Read(0, 1, store.ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range recs {
		got = append(got, string(r.Value))
	}
	if len(got) != 3 || got[0] != "a" || got[1] != "b" || got[2] != "c" {
		t.Fatalf("stored %q, want a b c", got)
	}
}

package quic

import (
	"testing"

	"github.com/edgehub/edgehub/internal/record"
)

// BenchmarkBatchFrame measures encoding and decoding a BATCH frame of 1,000
// 128-byte records (the record batch itself is encoded once, outside).
func BenchmarkBatchFrame(b *testing.B) {
	recs := make([]record.Record, 1000)
	for i := range recs {
		recs[i].Value = make([]byte, 128)
	}
	payload, err := record.AppendBatch(nil, recs)
	if err != nil {
		b.Fatal(err)
	}
	f := &Batch{ID: 1, Shard: 2, ProducerSeq: 3, Records: payload}
	var buf []byte
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	for range b.N {
		buf = AppendFrame(buf[:0], FrameBatch, f)
		var g Batch
		if err := g.Decode(buf[frameHeaderLen:]); err != nil {
			b.Fatal(err)
		}
	}
}

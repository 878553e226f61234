package quic

import (
	"bufio"
	"bytes"
	"testing"
)

// Each fuzzer feeds untrusted bytes to a decoder: it must return an error or
// a value that re-encodes and decodes to itself, and never panic or allocate
// beyond the input's size.

func fuzzDecoder[T any, P interface {
	*T
	Appender
	Decoder
}](f *testing.F, seeds ...P) {
	for _, s := range seeds {
		f.Add(s.Append(nil))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var v T
		if err := P(&v).Decode(b); err != nil {
			return
		}
		again := P(&v).Append(nil)
		var w T
		if err := P(&w).Decode(again); err != nil {
			t.Fatalf("re-decode of %x: %v", again, err)
		}
		if !bytes.Equal(P(&w).Append(nil), again) {
			t.Fatalf("unstable encoding of %x", b)
		}
	})
}

func FuzzOpen(f *testing.F) {
	fuzzDecoder(f, &Open{Op: OpProduce, Token: "t", Body: []byte("b")})
}

func FuzzError(f *testing.F) {
	f.Add(AppendError(nil, &Error{Code: CodeNotFound, Message: "no stream"}))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := DecodeError(b)
		if err != nil {
			return
		}
		if e2, err := DecodeError(AppendError(nil, e)); err != nil || *e2 != *e {
			t.Fatalf("round trip %+v: %+v %v", e, e2, err)
		}
	})
}

func FuzzInfo(f *testing.F) {
	fuzzDecoder(f, &Info{Stream: "s", Shards: []ShardBounds{{1, 2}}, MaxFrameBytes: 1 << 20},
		&Info{Stream: "s", Shards: []ShardBounds{{1, 2}, {3, 2}, {1, 0}, {1, 0}}, MaxFrameBytes: 1 << 20, Layout: testLayout()})
}

func FuzzLayout(f *testing.F) {
	fuzzDecoder(f, testLayout(), &Layout{NextID: 1, Shards: []LayoutShard{{HashEnd: 1<<64 - 1}}})
}

func FuzzShardEnd(f *testing.F) { fuzzDecoder(f, &ShardEnd{Shard: 3, End: 1 << 20}) }

func FuzzInfoRequest(f *testing.F) { fuzzDecoder(f, &InfoRequest{Stream: "s"}) }

func FuzzProduceOpen(f *testing.F) {
	fuzzDecoder(f, &ProduceOpen{Stream: "s", ProducerID: 42, Flags: ProduceDatagrams})
}

func FuzzProduceReady(f *testing.F) {
	fuzzDecoder(f, &ProduceReady{Shards: 4, MaxBatchBytes: 1 << 20, MaxInFlight: 8, DatagramSession: 1, MaxRecordBytes: 1 << 20},
		&ProduceReady{Shards: 4, MaxBatchBytes: 1 << 20, MaxInFlight: 8, MaxRecordBytes: 1 << 20, LayoutVersion: 3})
	f.Add([]byte{4, 0x80, 0x80, 0x04, 8, 1}) // a hub that does not announce max_record_bytes
}

func FuzzBatch(f *testing.F) {
	fuzzDecoder(f, &Batch{ID: 1, Shard: 2, ProducerSeq: 3, Records: []byte("r")}, &Batch{Shard: -1})
}

func FuzzAck(f *testing.F) {
	fuzzDecoder(f, &Ack{ID: 1, Runs: []Run{{1, 2, 3}}}, &Ack{ID: 2, Code: CodeSequenceGap, Message: "m", Runs: []Run{}},
		&Ack{ID: 3, Code: CodeShardClosed, Message: "closed", Runs: []Run{}, LayoutVersion: 2})
}

func FuzzConsumeOpen(f *testing.F) {
	fuzzDecoder(f, &ConsumeOpen{Stream: "s", Shards: []uint32{1}, Start: Start{StartSeq, 5}, Resume: []Position{{0, 9}}, Credit: 1 << 20},
		&ConsumeOpen{Stream: "s", Resume: []Position{{1, 11}}, Credit: 1 << 20, Flags: ConsumeLineage})
}

func FuzzConsumeReady(f *testing.F) {
	fuzzDecoder(f, &ConsumeReady{Shards: 2, Subs: []Subscription{{0, 1, 2}}},
		&ConsumeReady{Shards: 3, Subs: []Subscription{{2, 1, 2}}, Incarnation: "ab", LayoutVersion: 1})
}

func FuzzRecords(f *testing.F) { fuzzDecoder(f, &Records{Shard: 1, Batch: []byte("b")}) }

func FuzzCredit(f *testing.F) { fuzzDecoder(f, &Credit{Bytes: 1 << 20}) }

func FuzzDatagram(f *testing.F) {
	fuzzDecoder(f, &Datagram{Session: 1, Shard: 0, Records: []byte("r")})
}

// FuzzReadFrame feeds a byte stream to the frame reader: it must stop with an
// error or frames within the limit, never panic or over-allocate.
func FuzzReadFrame(f *testing.F) {
	f.Add(AppendFrame(AppendFrame(nil, FrameCredit, &Credit{Bytes: 1}), FrameBatch, &Batch{ID: 1}))
	f.Add([]byte{0x11, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0x11, 0, 0, 0, 9, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bufio.NewReader(bytes.NewReader(b))
		for {
			_, p, err := readFrame(r, 1024)
			if err != nil {
				return
			}
			if len(p) > 1024 {
				t.Fatalf("payload of %d bytes above the limit", len(p))
			}
		}
	})
}

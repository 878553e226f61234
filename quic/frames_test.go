package quic

import (
	"bufio"
	"bytes"
	"errors"
	"reflect"
	"testing"
)

// frameCase pairs an encodable frame with a fresh value to decode into.
type frameCase struct {
	name string
	in   interface {
		Appender
		Decoder
	}
	out Decoder
}

func frameCases() []frameCase {
	return []frameCase{
		{"open", &Open{Op: OpProduce, Token: "secret", Body: []byte{1, 2, 3}}, &Open{}},
		{"open empty", &Open{Op: OpInfo, Body: []byte{}}, &Open{}},
		{"info request", &InfoRequest{Stream: "sensors"}, &InfoRequest{}},
		{"info", &Info{Stream: "s", Shards: []ShardBounds{{1, 10}, {11, 10}}, MaxFrameBytes: 8 << 20}, &Info{}},
		{"produce open", &ProduceOpen{Stream: "s", ProducerID: 1<<63 + 5, Flags: ProduceDatagrams}, &ProduceOpen{}},
		{"produce ready", &ProduceReady{Shards: 4, MaxBatchBytes: 1 << 20, MaxInFlight: 64, DatagramSession: 9, MaxRecordBytes: 1 << 20}, &ProduceReady{}},
		{"batch", &Batch{ID: 7, Shard: -1, ProducerSeq: 100, Records: []byte("xyz")}, &Batch{}},
		{"batch shard", &Batch{ID: 1<<40 + 1, Shard: 3, ProducerSeq: 0, Records: []byte{}}, &Batch{}},
		{"ack ok", &Ack{ID: 7, Runs: []Run{{Shard: 1, FirstSeq: 5, Count: 10}, {Shard: 2, FirstSeq: 0, Count: 1}}}, &Ack{}},
		{"ack dup", &Ack{ID: 8, Duplicate: true, Runs: []Run{{Shard: 0, FirstSeq: 1, Count: 1}}}, &Ack{}},
		{"ack refused", &Ack{ID: 9, Code: CodeSequenceGap, Message: "expected 5", Runs: []Run{}}, &Ack{}},
		{"consume open", &ConsumeOpen{Stream: "s", Shards: []uint32{0, 3}, Start: Start{Kind: StartTime, Value: 1 << 60},
			Resume: []Position{{Shard: 3, Seq: 42}}, Credit: 4 << 20}, &ConsumeOpen{}},
		{"consume open all", &ConsumeOpen{Stream: "s", Shards: []uint32{}, Start: Start{Kind: StartEarliest}, Resume: []Position{}}, &ConsumeOpen{}},
		{"consume ready", &ConsumeReady{Shards: 2, Subs: []Subscription{{0, 1, 100}, {1, 5, 4}}}, &ConsumeReady{}},
		{"consume ready with incarnation", &ConsumeReady{Shards: 1, Subs: []Subscription{{0, 1, 1}}, Incarnation: "0192f3a4b5c6d7e8f901122334455667"}, &ConsumeReady{}},
		{"records", &Records{Shard: 5, Batch: []byte("chunk")}, &Records{}},
		{"credit", &Credit{Bytes: 1 << 33}, &Credit{}},
		{"datagram", &Datagram{Session: 3, Shard: -1, Records: []byte("recs")}, &Datagram{}},
		{"info with layout", &Info{Stream: "s", Shards: []ShardBounds{{1, 10}, {11, 10}, {1, 0}}, MaxFrameBytes: 1 << 20, Layout: testLayout()}, &Info{}},
		{"produce ready with layout version", &ProduceReady{Shards: 3, MaxBatchBytes: 1, MaxInFlight: 2, MaxRecordBytes: 3, LayoutVersion: 7}, &ProduceReady{}},
		{"ack shard closed", &Ack{ID: 3, Code: CodeShardClosed, Message: "shard 0 closed", Runs: []Run{}, LayoutVersion: 2}, &Ack{}},
		{"consume open lineage", &ConsumeOpen{Stream: "s", Shards: []uint32{}, Resume: []Position{{Shard: 0, Seq: 11}}, Flags: ConsumeLineage}, &ConsumeOpen{}},
		{"consume ready with layout version", &ConsumeReady{Shards: 3, Subs: []Subscription{{0, 1, 1}}, Incarnation: "ab", LayoutVersion: 1}, &ConsumeReady{}},
		{"layout", testLayout(), &Layout{}},
		{"layout v0", &Layout{NextID: 1, Shards: []LayoutShard{{ID: 0, HashEnd: 1<<64 - 1, Parents: []uint32{}}}}, &Layout{}},
		{"shard end", &ShardEnd{Shard: 4, End: 1 << 40}, &ShardEnd{}},
	}
}

// testLayout is shard 0 split into 1 and 2, then 1 and 2 merged into 3.
func testLayout() *Layout {
	return &Layout{Version: 2, NextID: 4, Shards: []LayoutShard{
		{ID: 0, State: ShardRetired, HashEnd: 1<<64 - 1, End: 10, Parents: []uint32{}},
		{ID: 1, State: ShardClosed, HashEnd: 1<<63 - 1, End: 0, Parents: []uint32{0}},
		{ID: 2, State: ShardClosed, HashStart: 1 << 63, HashEnd: 1<<64 - 1, End: 5, Parents: []uint32{0}},
		{ID: 3, State: ShardOpen, HashEnd: 1<<64 - 1, Parents: []uint32{1, 2}},
	}}
}

// TestOldEncodingsDecode: frames as peers before resharding encode them
// (no flags, no layout_version, INFO without entries) still decode, with
// the new fields zero; and what an old peer decodes of a new encoding is
// what it knew (the new fields are trailing).
func TestOldEncodingsDecode(t *testing.T) {
	// CONSUME open without flags: the encoding up to credit.
	old := (&ConsumeOpen{Stream: "s", Shards: []uint32{}, Resume: []Position{}, Credit: 9}).Append(nil)
	old = old[:len(old)-1] // drop flags (one byte: 0)
	var co ConsumeOpen
	if err := co.Decode(old); err != nil || co.Flags != 0 || co.Credit != 9 {
		t.Fatalf("consume open without flags: %+v %v", co, err)
	}
	// CONSUME_READY without layout_version, and without incarnation.
	cr := (&ConsumeReady{Shards: 1, Subs: []Subscription{{0, 1, 1}}, Incarnation: "ab", LayoutVersion: 5}).Append(nil)
	var r ConsumeReady
	if err := r.Decode(cr[:len(cr)-1]); err != nil || r.LayoutVersion != 0 || r.Incarnation != "ab" {
		t.Fatalf("consume ready without layout version: %+v %v", r, err)
	}
	if err := r.Decode(cr[:len(cr)-4]); err != nil || r.LayoutVersion != 0 || r.Incarnation != "" {
		t.Fatalf("consume ready without incarnation: %+v %v", r, err)
	}
	// PRODUCE_READY without layout_version.
	pr := (&ProduceReady{Shards: 2, MaxRecordBytes: 5, LayoutVersion: 3}).Append(nil)
	var p ProduceReady
	if err := p.Decode(pr[:len(pr)-2]); err != nil || p.LayoutVersion != 0 || p.MaxRecordBytes != 5 {
		t.Fatalf("produce ready without layout version: %+v %v", p, err)
	}
	// PRODUCE_READY without copies (a hub before copies: 0, never 1), and
	// PRODUCE open without them (the stream's).
	if err := p.Decode(pr[:len(pr)-1]); err != nil || p.LayoutVersion != 3 || p.Copies != 0 {
		t.Fatalf("produce ready without copies: %+v %v", p, err)
	}
	pc := (&ProduceOpen{Stream: "s", ProducerID: 7, Copies: 3}).Append(nil)
	var o ProduceOpen
	if err := o.Decode(pc); err != nil || o.Copies != 3 {
		t.Fatalf("produce open with copies: %+v %v", o, err)
	}
	if err := o.Decode(pc[:len(pc)-1]); err != nil || o.Copies != 0 || o.ProducerID != 7 {
		t.Fatalf("produce open without copies: %+v %v", o, err)
	}
	// ACK with copies; without them (absent is 0).
	ca := (&Ack{ID: 2, Runs: []Run{{0, 1, 1}}, Copies: 2}).Append(nil)
	var cak Ack
	if err := cak.Decode(ca); err != nil || cak.Copies != 2 {
		t.Fatalf("ack with copies: %+v %v", cak, err)
	}
	if err := cak.Decode(ca[:len(ca)-1]); err != nil || cak.Copies != 0 || len(cak.Runs) != 1 {
		t.Fatalf("ack without copies: %+v %v", cak, err)
	}
	// INFO without layout entries.
	in := (&Info{Stream: "s", Shards: []ShardBounds{{1, 0}}, MaxFrameBytes: 7}).Append(nil)
	var i Info
	if err := i.Decode(in); err != nil || i.Layout != nil || i.MaxFrameBytes != 7 {
		t.Fatalf("info without layout: %+v %v", i, err)
	}
	// ACK shard_closed without layout_version; other codes never carry it.
	ack := (&Ack{ID: 1, Code: CodeShardClosed, Runs: []Run{}, LayoutVersion: 4}).Append(nil)
	var a Ack
	if err := a.Decode(ack[:len(ack)-1]); err != nil || a.LayoutVersion != 0 || a.Code != CodeShardClosed {
		t.Fatalf("ack without layout version: %+v %v", a, err)
	}
	if b := (&Ack{ID: 1, Runs: []Run{}, LayoutVersion: 4}).Append(nil); !bytes.Equal(b, (&Ack{ID: 1, Runs: []Run{}}).Append(nil)) {
		t.Fatalf("an ok ACK carries a layout version: %x", b)
	}
	// An old peer's decoder stops before the new trailing fields: simulate
	// it by checking the new encodings begin with the old ones.
	newInfo := (&Info{Stream: "s", Shards: []ShardBounds{{1, 0}}, MaxFrameBytes: 7, Layout: testLayout()}).Append(nil)
	if !bytes.HasPrefix(newInfo, in) {
		t.Fatal("INFO with a layout does not begin with the old encoding")
	}
	// The lineage produce flag shares the flags byte with datagrams.
	var po ProduceOpen
	if err := po.Decode((&ProduceOpen{Stream: "s", Flags: ProduceDatagrams | ProduceLineage}).Append(nil)); err != nil || po.Flags&ProduceLineage == 0 || po.Flags&ProduceDatagrams == 0 {
		t.Fatalf("produce open flags: %+v %v", po, err)
	}
	if FrameShardEnd.String() != "SHARD_END" || FrameConsumeLayout.String() != "LAYOUT" || FrameProduceLayout.String() != "LAYOUT" {
		t.Fatal("frame names")
	}
}

func TestFrameRoundTrip(t *testing.T) {
	for _, tc := range frameCases() {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.in.Append(nil)
			if err := tc.out.Decode(b); err != nil {
				t.Fatalf("decode: %v", err)
			}
			if !reflect.DeepEqual(tc.in, tc.out) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", tc.out, tc.in)
			}
			// Later revisions append fields: trailing bytes are ignored.
			// (Not after an INFO without its optional layout: there they
			// would be read as the layout.)
			if in, ok := tc.in.(*Info); !ok || in.Layout != nil {
				if err := tc.out.Decode(append(b, 0xff, 0x01)); err != nil {
					t.Fatalf("decode with trailing bytes: %v", err)
				}
			}
			// Every strict prefix that cuts a field must fail, never panic.
			for i := 0; i < len(b); i++ {
				_ = tc.out.Decode(b[:i])
			}
		})
	}
}

func TestFrameDecodeErrors(t *testing.T) {
	tests := []struct {
		name string
		out  Decoder
		in   []byte
	}{
		{"open truncated", &Open{}, []byte{0x02}},
		{"open huge token", &Open{}, append([]byte{0x02, 0x80, 0x80, 0x01}, make([]byte, 10)...)},
		{"batch shard too low", &Batch{}, (&Batch{ID: 1, Shard: -1}).Append(nil)[:1]},
		{"batch body past end", &Batch{}, []byte{1, 1, 0, 0, 100}},
		{"ack count lies", &Ack{}, []byte{1, 0, 0, 0, 0xff, 0xff, 0x03}},
		{"batch shard beyond int32", &Batch{}, []byte{1, 0x80, 0x80, 0x80, 0x80, 0x10, 0, 0, 0}},
		{"consume ready count lies", &ConsumeReady{}, []byte{1, 0x90, 0x4e}},
		{"datagram wrong type", &Datagram{}, []byte{0x7f, 1, 0}},
		{"uvarint overflow", &Credit{}, bytes.Repeat([]byte{0xff}, 11)},
		{"u32 overflow", &ProduceReady{}, []byte{0x80, 0x80, 0x80, 0x80, 0x10}},
		{"layout count lies", &Layout{}, []byte{1, 2, 0xff, 0x01}},
		{"layout too many entries", &Layout{}, append([]byte{1, 2, 0x81, 0x20}, make([]byte, 4097*layoutEntryMin)...)},
		{"layout hash cut", &Layout{}, []byte{1, 1, 1, 0, 0, 1, 2, 3}},
		{"layout parent beyond u32", &Layout{}, append(append([]byte{1, 1, 1, 0, 0}, make([]byte, 16)...), 0, 1, 0x80, 0x80, 0x80, 0x80, 0x10)},
		{"info layout cut", &Info{}, []byte{1, 's', 0, 7, 1}},
		{"shard end cut", &ShardEnd{}, []byte{1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.out.Decode(tc.in)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Decode(%x) = %v, want ErrMalformed", tc.in, err)
			}
		})
	}
}

func TestReadFrame(t *testing.T) {
	good := AppendFrame(nil, FrameCredit, &Credit{Bytes: 9})
	tests := []struct {
		name    string
		in      []byte
		max     int
		wantErr error
	}{
		{"ok", good, 1024, nil},
		{"truncated header", good[:3], 1024, ErrMalformed},
		{"truncated payload", append(good[:5:5], 0x00)[:5], 1024, ErrMalformed},
		{"oversized", []byte{0x11, 0x7f, 0xff, 0xff, 0xff}, 1024, ErrFrameTooLarge},
		{"exactly max", AppendFrame(nil, FrameRecords, RawPayload(make([]byte, 64))), 64, nil},
		{"max plus one", AppendFrame(nil, FrameRecords, RawPayload(make([]byte, 65))), 64, ErrFrameTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := readFrame(bufio.NewReader(bytes.NewReader(tc.in)), tc.max)
			if tc.wantErr == nil && err != nil || tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Fatalf("readFrame = %v, want %v", err, tc.wantErr)
			}
		})
	}
}

func TestCodes(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want Code
	}{
		{"nil", nil, CodeOK},
		{"wire", Errorf(CodeNotFound, "x"), CodeNotFound},
		{"wrapped", errors.Join(errors.New("a"), &Error{Code: CodeLimit}), CodeLimit},
		{"plain", errors.New("boom"), CodeInternal},
		{"malformed", WireError(ErrMalformed), CodeProtocol},
		{"too large", WireError(ErrFrameTooLarge), CodeFrameTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := CodeOf(tc.err); got != tc.want {
				t.Fatalf("CodeOf = %s, want %s", got, tc.want)
			}
		})
	}
	if !errors.Is(Errorf(CodeNotFound, "stream x"), &Error{Code: CodeNotFound}) {
		t.Fatal("errors.Is by code failed")
	}
	if Code(0x99).String() != "code_0x99" || !CodeUnavailable.Retryable() || CodeSequenceGap.Retryable() {
		t.Fatal("code helpers")
	}
}

// TestDecodeLeavesRangeChecksToTheHub: a shard or a start kind that is well
// formed but not valid for the stream decodes, so the hub refuses it with
// invalid_argument for that request alone (before, -2 and an unknown start
// kind were protocol errors, while shard 99 was invalid_argument).
func TestDecodeLeavesRangeChecksToTheHub(t *testing.T) {
	var b Batch
	if err := b.Decode((&Batch{ID: 1, Shard: -2, Records: []byte("r")}).Append(nil)); err != nil || b.Shard != -2 {
		t.Fatalf("batch with shard -2: %+v %v", b, err)
	}
	var c ConsumeOpen
	if err := c.Decode((&ConsumeOpen{Stream: "s", Start: Start{Kind: 9}}).Append(nil)); err != nil || c.Start.Kind != 9 {
		t.Fatalf("consume with start kind 9: %+v %v", c, err)
	}
	var g GroupJoin
	if err := g.Decode((&GroupJoin{Group: "g", Stream: "s", MemberID: "m", Start: Start{Kind: 9}}).Append(nil)); err != nil || g.Start.Kind != 9 {
		t.Fatalf("group join with start kind 9: %+v %v", g, err)
	}
}

package quic

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"testing"
	"time"
)

func groupFrameCases() []frameCase {
	return []frameCase{
		{"join", &GroupJoin{Group: "billing", Stream: "orders", MemberID: "worker-1", SessionTimeoutMillis: 10_000,
			Start: Start{Kind: StartTime, Value: 1 << 60}}, &GroupJoin{}},
		{"join defaults", &GroupJoin{Group: "g", Stream: "s", MemberID: "m"}, &GroupJoin{}},
		{"assignment", &GroupAssignment{Generation: 3, SessionTimeoutMillis: 300, Shards: 8,
			Leases: []GroupLease{{Shard: 1, Epoch: 17, Offset: 1}, {Shard: 7, Epoch: 1 << 40, Offset: 1 << 50}}}, &GroupAssignment{}},
		{"assignment closed shards", &GroupAssignment{Generation: 4, SessionTimeoutMillis: 300, Shards: 11,
			Leases: []GroupLease{{Shard: 2, Epoch: 17, Offset: 1, ClosedNext: 151}, {Shard: 9, Epoch: 18, Offset: 3}, {Shard: 10, Epoch: 19, Offset: 1, ClosedNext: 1}}}, &GroupAssignment{}},
		{"assignment empty", &GroupAssignment{Generation: 1, SessionTimeoutMillis: 10_000, Shards: 2, Leases: []GroupLease{}}, &GroupAssignment{}},
		{"heartbeat", &GroupHeartbeat{Generation: 9}, &GroupHeartbeat{}},
		{"commit", &GroupCommit{ID: 4, Offsets: []GroupOffset{{Shard: 0, Epoch: 2, Offset: 100}, {Shard: 3, Epoch: 5, Offset: 1}}}, &GroupCommit{}},
		{"commit ack", &GroupCommitAck{ID: 4, Results: []GroupCommitResult{{Shard: 0}, {Shard: 3, Code: CodeStaleEpoch, Message: "epoch 5 < 6"}}}, &GroupCommitAck{}},
		{"sync", &GroupSync{Generation: 1<<63 + 1}, &GroupSync{}},
		{"leave", &GroupLeave{}, &GroupLeave{}},
	}
}

func TestGroupFrameRoundTrip(t *testing.T) {
	for _, tc := range groupFrameCases() {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.in.Append(nil)
			if err := tc.out.Decode(b); err != nil {
				t.Fatalf("decode: %v", err)
			}
			if !reflect.DeepEqual(tc.in, tc.out) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", tc.out, tc.in)
			}
			if err := tc.out.Decode(append(b, 0xff, 0x01)); err != nil {
				t.Fatalf("decode with trailing bytes: %v", err)
			}
			for i := 0; i < len(b); i++ {
				_ = tc.out.Decode(b[:i])
			}
		})
	}
}

func TestGroupFrameDecodeErrors(t *testing.T) {
	tests := []struct {
		name string
		out  Decoder
		in   []byte
	}{
		{"join truncated", &GroupJoin{}, []byte{1, 'g', 1, 's'}},
		{"join timeout overflow", &GroupJoin{}, append([]byte{1, 'g', 1, 's', 1, 'm'}, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0, 0)},
		{"join long member id", &GroupJoin{}, append([]byte{1, 'g', 1, 's', 0x80, 0x02}, make([]byte, 256+3)...)},
		{"assignment count lies", &GroupAssignment{}, []byte{1, 1, 1, 0xff, 0x01, 0, 0, 0}},
		{"assignment shard overflow", &GroupAssignment{}, []byte{1, 1, 1, 1, 0x80, 0x80, 0x80, 0x80, 0x10, 1, 1}},
		{"assignment closed_next truncated", &GroupAssignment{}, []byte{1, 1, 4, 2, 1, 1, 1, 2, 1, 1, 0x80}},
		{"commit truncated", &GroupCommit{}, []byte{1, 2, 0, 1, 1}},
		{"commit ack message past end", &GroupCommitAck{}, []byte{1, 1, 0, 0x10, 9, 'x'}},
		{"heartbeat empty", &GroupHeartbeat{}, nil},
		{"sync bad uvarint", &GroupSync{}, []byte{0x80}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.out.Decode(tc.in); !errors.Is(err, ErrMalformed) {
				t.Fatalf("Decode(%x) = %v, want ErrMalformed", tc.in, err)
			}
		})
	}
}

func TestGroupNames(t *testing.T) {
	for _, tc := range []struct {
		name string
		got  string
		want string
	}{
		{"stale epoch", CodeStaleEpoch.String(), "stale_epoch"},
		{"session expired", CodeSessionExpired.String(), "session_expired"},
		{"assignment frame", FrameGroupAssignment.String(), "GROUP_ASSIGNMENT"},
		{"leave frame", FrameGroupLeave.String(), "GROUP_LEAVE"},
		{"unknown group frame", FrameType(0x4f).String(), "frame_0x4f"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Fatalf("got %q, want %q", tc.got, tc.want)
			}
		})
	}
	if CodeStaleEpoch.Retryable() || CodeSessionExpired.Retryable() {
		t.Fatal("group codes are handled by the member, not retried unchanged")
	}
	ack := GroupCommitAck{Results: []GroupCommitResult{{Shard: 1}, {Shard: 2, Code: CodeStaleEpoch, Message: "moved"}}}
	if err := ack.Err(); !errors.Is(err, &Error{Code: CodeStaleEpoch}) {
		t.Fatalf("Err() = %v", err)
	}
	for _, tc := range []struct {
		d    time.Duration
		want uint64
	}{{0, 0}, {-time.Second, 0}, {time.Nanosecond, 1}, {1500 * time.Microsecond, 2}, {10 * time.Second, 10_000}} {
		if got := Millis(tc.d); got != tc.want {
			t.Errorf("Millis(%v) = %d, want %d", tc.d, got, tc.want)
		}
	}
}

func FuzzGroupJoin(f *testing.F) {
	fuzzDecoder(f, &GroupJoin{Group: "g", Stream: "s", MemberID: "m", SessionTimeoutMillis: 300, Start: Start{StartSeq, 5}})
}

func FuzzGroupAssignment(f *testing.F) {
	fuzzDecoder(f, &GroupAssignment{Generation: 2, SessionTimeoutMillis: 300, Shards: 4, Leases: []GroupLease{{Shard: 1, Epoch: 2, Offset: 3}}},
		&GroupAssignment{Leases: []GroupLease{}},
		&GroupAssignment{Generation: 3, SessionTimeoutMillis: 300, Shards: 6,
			Leases: []GroupLease{{Shard: 1, Epoch: 2, Offset: 3, ClosedNext: 151}, {Shard: 4, Epoch: 5, Offset: 1}}})
}

func FuzzGroupCommit(f *testing.F) {
	fuzzDecoder(f, &GroupCommit{ID: 1, Offsets: []GroupOffset{{0, 1, 2}, {3, 4, 5}}})
}

func FuzzGroupCommitAck(f *testing.F) {
	fuzzDecoder(f, &GroupCommitAck{ID: 1, Results: []GroupCommitResult{{0, CodeOK, ""}, {1, CodeStaleEpoch, "moved"}}})
}

func FuzzGroupHeartbeat(f *testing.F) { fuzzDecoder(f, &GroupHeartbeat{Generation: 7}) }

func FuzzGroupSync(f *testing.F) { fuzzDecoder(f, &GroupSync{Generation: 7}) }

// TestGroupAssignmentOldDecoders: the trailing closed_next list is what a
// decoder from before resharding ignores (it stops after the leases), and
// an assignment from a hub before resharding decodes with every lease open.
func TestGroupAssignmentOldDecoders(t *testing.T) {
	a := GroupAssignment{Generation: 3, SessionTimeoutMillis: 300, Shards: 6,
		Leases: []GroupLease{{Shard: 1, Epoch: 2, Offset: 3, ClosedNext: 151}, {Shard: 4, Epoch: 5, Offset: 1}}}
	b := a.Append(nil)
	// The encoding before resharding: the same fields without the list.
	old := binary.AppendUvarint(nil, a.Generation)
	old = binary.AppendUvarint(old, a.SessionTimeoutMillis)
	old = binary.AppendUvarint(old, uint64(a.Shards))
	old = binary.AppendUvarint(old, uint64(len(a.Leases)))
	for _, l := range a.Leases {
		old = binary.AppendUvarint(old, uint64(l.Shard))
		old = binary.AppendUvarint(old, l.Epoch)
		old = binary.AppendUvarint(old, l.Offset)
	}
	if !bytes.HasPrefix(b, old) || len(b) != len(old)+3 {
		t.Fatalf("encoding %x does not extend the old one %x by the closed_next list", b, old)
	}
	var got GroupAssignment
	if err := got.Decode(old); err != nil {
		t.Fatal(err)
	}
	for _, l := range got.Leases {
		if l.ClosedNext != 0 {
			t.Fatalf("an old hub's lease decoded as closed: %+v", got)
		}
	}
}

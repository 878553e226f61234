package replicate

import (
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/quic"
	"github.com/edgehub/edgehub/store"
)

func TestPullRequestRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		req  PullRequest
	}{
		{name: "follow", req: PullRequest{Requester: "edge-1", Stream: "temps", Origin: store.OriginKey{Hub: "core", Shard: 7}, After: 1 << 40, Follow: true, MaxBatchBytes: 1 << 20}},
		{name: "once", req: PullRequest{Requester: "a", Stream: "s", Origin: store.OriginKey{Hub: "b"}}},
		{name: "incarnation", req: PullRequest{Requester: "a", Stream: "s", Origin: store.OriginKey{Hub: "b", Shard: 1}, After: 5, Follow: true,
			Incarnation: "0192f3a4b5c6d7e8f90112233445566"}},
		{name: "lineage", req: PullRequest{Requester: "a", Stream: "s", Origin: store.OriginKey{Hub: "b", Shard: 9}, Follow: true, Lineage: true}},
		{name: "lineage bounded", req: PullRequest{Requester: "a", Stream: "s", Origin: store.OriginKey{Hub: "b"}, Until: 3, Lineage: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got PullRequest
			if err := got.Decode(tt.req.Append(nil)); err != nil {
				t.Fatal(err)
			}
			if got != tt.req {
				t.Fatalf("got %+v, want %+v", got, tt.req)
			}
		})
	}
}

// A pull from a hub before incarnations ends after max batch bytes: it
// decodes with no incarnation, which servers do not check.
func TestPullWithoutIncarnation(t *testing.T) {
	old := []byte{1, 1, 'a', 1, 's', 1, 'b', 3, 10, 1, 0}
	var r PullRequest
	if err := r.Decode(old); err != nil || r.Incarnation != "" || r.After != 10 || !r.Follow {
		t.Fatalf("old pull: %+v, %v", r, err)
	}
	oldFollow := []byte{1, 1, 's', 1, 'b', 0, 0, 0, 0, 9}
	var f Follow
	if err := f.Decode(oldFollow); err != nil || f.Incarnation != "" || f.Credit != 9 {
		t.Fatalf("old follow: %+v, %v", f, err)
	}
	// Flags this version does not know are ignored (a later addition); a
	// server from before the flags reads a lineage pull as before.
	var lr PullRequest
	if err := lr.Decode(append((&PullRequest{Requester: "a", Stream: "s", Origin: store.OriginKey{Hub: "b"}}).Append(nil), 0, 6)); err != nil || lr.Lineage {
		t.Fatalf("unknown flags: %+v, %v", lr, err)
	}
	long := (&PullRequest{Requester: "a", Stream: "s", Origin: store.OriginKey{Hub: "b"}, Incarnation: strings.Repeat("f", maxIncarnationLen+1)}).Append(nil)
	if err := r.Decode(long); !errors.Is(err, quic.ErrMalformed) {
		t.Fatalf("an incarnation of %d bytes: %v", maxIncarnationLen+1, err)
	}
}

func TestDecodeMsg(t *testing.T) {
	batch, err := record.AppendBatch(nil, []record.Record{{Value: []byte("v"), Origin: record.Origin{Hub: "a", Seq: 3}}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		typ     quic.FrameType
		payload []byte
		want    Msg
		wantErr error
	}{
		{name: "records", typ: FramePullRecords, payload: (&Records{High: 9, Batch: batch}).Append(nil), want: Msg{Type: FramePullRecords, Records: Records{High: 9, Batch: batch}}},
		{name: "progress", typ: FramePullProgress, payload: (&Progress{High: 4, Time: -5}).Append(nil), want: Msg{Type: FramePullProgress, Progress: Progress{High: 4, Time: -5}}},
		{name: "gap", typ: FramePullGap, payload: (&Gap{From: 2, To: 9, Reason: "r"}).Append(nil), want: Msg{Type: FramePullGap, Gap: Gap{From: 2, To: 9, Reason: "r"}}},
		{name: "trimmed", typ: FramePullTrimmed, payload: appendUvarint(nil, 77), want: Msg{Type: FramePullTrimmed, Trimmed: 77}},
		{name: "empty records", typ: FramePullRecords, payload: appendUvarint(nil, 1), wantErr: quic.ErrMalformed},
		{name: "reversed gap", typ: FramePullGap, payload: (&Gap{From: 9, To: 2}).Append(nil), wantErr: quic.ErrMalformed},
		{name: "trailing bytes ignored", typ: FramePullProgress, payload: append((&Progress{High: 1}).Append(nil), 0), want: Msg{Type: FramePullProgress, Progress: Progress{High: 1}}},
		{name: "foreign frame", typ: quic.FrameCredit, payload: nil, wantErr: quic.ErrUnexpectedFrame},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeMsg(tt.typ, tt.payload)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func FuzzPullRequest(f *testing.F) {
	f.Add((&PullRequest{Requester: "a", Stream: "s", Origin: store.OriginKey{Hub: "b", Shard: 3}, After: 10, Follow: true}).Append(nil))
	f.Add([]byte{1, 1, 'a', 1, 's', 1, 'b', 0, 0, 2, 0})
	f.Add((&PullRequest{Requester: "a", Stream: "s", Origin: store.OriginKey{Hub: "b"}, After: 4, Incarnation: "ab", Until: 12}).Append(nil))
	f.Add((&PullRequest{Requester: "a", Stream: "s", Origin: store.OriginKey{Hub: "b", Shard: 5}, Follow: true, Lineage: true}).Append(nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		var r PullRequest
		if err := r.Decode(b); err != nil {
			return
		}
		var again PullRequest
		if err := again.Decode(r.Append(nil)); err != nil || again != r {
			t.Fatalf("re-decode: %+v %v, want %+v", again, err, r)
		}
	})
}

func FuzzPullMsg(f *testing.F) {
	batch, _ := record.AppendBatch(nil, []record.Record{{Key: []byte("k"), Value: []byte("v"), Origin: record.Origin{Hub: "a", Shard: 1, Seq: 3}}})
	f.Add(byte(FramePullRecords), (&Records{High: 3, Batch: batch}).Append(nil))
	f.Add(byte(FramePullProgress), (&Progress{High: 3, Time: 1}).Append(nil))
	f.Add(byte(FramePullGap), (&Gap{From: 1, To: 2, Reason: "x"}).Append(nil))
	f.Add(byte(FramePullTrimmed), appendUvarint(nil, 5))
	f.Fuzz(func(t *testing.T, typ byte, b []byte) {
		m, err := decodeMsg(quic.FrameType(typ), b)
		if err != nil {
			return
		}
		if m.Type == FramePullRecords {
			// The batch is verified by its own decoder before use.
			record.DecodeBatch(m.Records.Batch, nil)
		}
	})
}

func TestSessionFramesRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		in   interface {
			quic.Appender
			quic.Decoder
		}
		out interface{ quic.Decoder }
	}{
		{name: "open", in: &SessionOpen{Requester: "edge-1"}, out: &SessionOpen{}},
		{name: "follow", in: &Follow{ID: 1 << 40, Stream: "s", Origin: store.OriginKey{Hub: "core", Shard: 15}, After: 99, Follow: true, MaxBatchBytes: 1 << 22, Credit: 1 << 23}, out: &Follow{}},
		{name: "one-shot follow", in: &Follow{ID: 1, Stream: "s", Origin: store.OriginKey{Hub: "h"}}, out: &Follow{}},
		{name: "follow with incarnation", in: &Follow{ID: 2, Stream: "s", Origin: store.OriginKey{Hub: "h"}, Credit: 1, Incarnation: "ab12"}, out: &Follow{}},
		{name: "bounded follow", in: &Follow{ID: 4, Stream: "s", Origin: store.OriginKey{Hub: "h"}, After: 9, Credit: 1, Until: 1 << 33}, out: &Follow{}},
		{name: "bounded follow without incarnation", in: &Follow{ID: 5, Stream: "s", Origin: store.OriginKey{Hub: "h"}, Incarnation: "", Until: 7}, out: &Follow{}},
		{name: "credit", in: &FollowCredit{ID: 3, Bytes: 1 << 20}, out: &FollowCredit{}},
		{name: "cancel", in: &FollowCancel{ID: 3}, out: &FollowCancel{}},
		{name: "end", in: &FollowEnd{ID: 3, Code: quic.CodePermissionDenied, Message: "no"}, out: &FollowEnd{}},
		{name: "lineage follow", in: &Follow{ID: 6, Stream: "s", Origin: store.OriginKey{Hub: "h", Shard: 4}, Follow: true, Credit: 1, Lineage: true}, out: &Follow{}},
		{name: "closed end", in: &FollowEnd{ID: 3, Closed: true, ClosedEnd: 1 << 35}, out: &FollowEnd{}},
		{name: "closed end of an empty shard", in: &FollowEnd{ID: 3, Closed: true}, out: &FollowEnd{}},
		{name: "reporting follow", in: &Follow{ID: 7, Stream: "s", Origin: store.OriginKey{Hub: "h"}, Follow: true, Credit: 1, Lineage: true, Report: true}, out: &Follow{}},
		{name: "reporting follow without lineage", in: &Follow{ID: 8, Stream: "s", Origin: store.OriginKey{Hub: "h"}, Credit: 1, Report: true}, out: &Follow{}},
		{name: "applied", in: &FollowApplied{ID: 3, Applied: 1 << 41}, out: &FollowApplied{}},
		{name: "applied nothing yet", in: &FollowApplied{ID: 3}, out: &FollowApplied{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.out.Decode(tt.in.Append(nil)); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(tt.in, tt.out) {
				t.Fatalf("got %+v, want %+v", tt.out, tt.in)
			}
		})
	}
}

func TestDecodeSessionMsg(t *testing.T) {
	batch, err := record.AppendBatch(nil, []record.Record{{Value: []byte("v"), Origin: record.Origin{Hub: "a", Seq: 3}}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		typ     quic.FrameType
		payload []byte
		want    sessionMsg
		wantErr error
	}{
		{name: "records", typ: FramePullRecords, payload: tagged{7, &Records{High: 9, Batch: batch}}.Append(nil),
			want: sessionMsg{ID: 7, Msg: Msg{Type: FramePullRecords, Records: Records{High: 9, Batch: batch}}}},
		{name: "gap", typ: FramePullGap, payload: tagged{1, &Gap{From: 1, To: 2, Reason: "r"}}.Append(nil),
			want: sessionMsg{ID: 1, Msg: Msg{Type: FramePullGap, Gap: Gap{From: 1, To: 2, Reason: "r"}}}},
		{name: "end", typ: FramePullEnd, payload: (&FollowEnd{ID: 2, Code: quic.CodeOK}).Append(nil),
			want: sessionMsg{ID: 2, End: &FollowEnd{ID: 2, Code: quic.CodeOK}}},
		{name: "zero id", typ: FramePullProgress, payload: tagged{0, &Progress{}}.Append(nil), wantErr: quic.ErrMalformed},
		{name: "no id", typ: FramePullProgress, payload: nil, wantErr: quic.ErrMalformed},
		{name: "client frame", typ: FramePullCredit, payload: (&FollowCredit{ID: 1, Bytes: 1}).Append(nil), wantErr: quic.ErrUnexpectedFrame},
		{name: "error frame", typ: quic.FrameError, payload: nil, wantErr: quic.ErrUnexpectedFrame},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeSessionMsg(tt.typ, tt.payload)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
	var bad FollowEnd
	if err := bad.Decode(append((&FollowEnd{ID: 1, Code: quic.CodeNotFound}).Append(nil), 5)); !errors.Is(err, quic.ErrMalformed) {
		t.Fatalf("closed_end on a refusal: %v, want malformed", err)
	}
	if err := (&FollowEnd{ID: 1}).Err(); !errors.Is(err, io.EOF) {
		t.Fatalf("PULL_END ok: %v, want io.EOF", err)
	}
}

func FuzzFollow(f *testing.F) {
	f.Add((&Follow{ID: 1, Stream: "s", Origin: store.OriginKey{Hub: "b", Shard: 3}, After: 10, Follow: true, Credit: 1 << 20}).Append(nil))
	f.Add((&SessionOpen{Requester: "edge"}).Append(nil))
	f.Add((&Follow{ID: 2, Stream: "s", Origin: store.OriginKey{Hub: "b", Shard: 4}, Follow: true, Credit: 9, Lineage: true}).Append(nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		var fl Follow
		if err := fl.Decode(b); err == nil {
			var again Follow
			if err := again.Decode(fl.Append(nil)); err != nil || again != fl {
				t.Fatalf("re-decode: %+v %v, want %+v", again, err, fl)
			}
		}
		var o SessionOpen
		if err := o.Decode(b); err == nil {
			var again SessionOpen
			if err := again.Decode(o.Append(nil)); err != nil || again != o {
				t.Fatalf("re-decode: %+v %v, want %+v", again, err, o)
			}
		}
	})
}

func FuzzSessionFrame(f *testing.F) {
	batch, _ := record.AppendBatch(nil, []record.Record{{Key: []byte("k"), Value: []byte("v"), Origin: record.Origin{Hub: "a", Shard: 1, Seq: 3}}})
	f.Add(byte(FramePullRecords), tagged{1, &Records{High: 3, Batch: batch}}.Append(nil))
	f.Add(byte(FramePullTrimmed), tagged{2, quic.RawPayload(appendUvarint(nil, 5))}.Append(nil))
	f.Add(byte(FramePullEnd), (&FollowEnd{ID: 4, Code: quic.CodeNotFound, Message: "x"}).Append(nil))
	f.Add(byte(FramePullEnd), (&FollowEnd{ID: 4, Closed: true, ClosedEnd: 77}).Append(nil))
	f.Add(byte(FramePullCredit), (&FollowCredit{ID: 4, Bytes: 9}).Append(nil))
	f.Add(byte(FramePullCancel), (&FollowCancel{ID: 4}).Append(nil))
	f.Add(byte(FramePullReport), followID(4).Append(nil))
	f.Add(byte(FramePullApplied), (&FollowApplied{ID: 4, Applied: 12}).Append(nil))
	f.Fuzz(func(t *testing.T, typ byte, b []byte) {
		var a FollowApplied
		if a.Decode(b) == nil && a.ID == 0 {
			t.Fatal("applied of id 0 accepted")
		}
		if m, err := decodeSessionMsg(quic.FrameType(typ), b); err == nil && m.Msg.Type == FramePullRecords {
			record.DecodeBatch(m.Msg.Records.Batch, nil)
		}
		var c FollowCredit
		if c.Decode(b) == nil && (c.ID == 0 || c.Bytes == 0) {
			t.Fatalf("credit %+v accepted", c)
		}
		var x FollowCancel
		if x.Decode(b) == nil && x.ID == 0 {
			t.Fatal("cancel of id 0 accepted")
		}
	})
}

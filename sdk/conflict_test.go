package sdk_test

import (
	"testing"

	"github.com/edgehub/edgehub/sdk"
	"github.com/edgehub/edgehub/store"
)

// TestProducerSequenceConflict: two producers sharing an id send different
// records under the same producer sequence. The second must fail with
// sequence_conflict, never be acknowledged (the hub used to answer it as a
// duplicate of the first producer's record: an ack for a record never
// stored), and stop, so that it cannot go on numbering from a sequence the
// hub does not agree with.
func TestProducerSequenceConflict(t *testing.T) {
	th := newHub(t, nil, store.StreamConfig{Name: "s", Shards: 1})
	c := dial(t, th)
	ctx := testCtx(t)
	a, err := c.Producer(ctx, "s", sdk.ProducerOptions{ProducerID: 0x5eed})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close(ctx)
	first, err := a.Send(ctx, sdk.Record{Value: []byte("from a")})
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.Producer(ctx, "s", sdk.ProducerOptions{ProducerID: 0x5eed})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(ctx)
	pos, err := b.Send(ctx, sdk.Record{Value: []byte("from b")})
	if sdk.CodeOf(err) != sdk.CodeSequenceConflict {
		t.Fatalf("conflicting send: %+v %v, want sequence_conflict", pos, err)
	}
	if _, err := b.Send(ctx, sdk.Record{Value: []byte("more from b")}); sdk.CodeOf(err) != sdk.CodeSequenceConflict {
		t.Fatalf("send after the conflict: %v, want the producer stopped with sequence_conflict", err)
	}
	// An exact resend is still a duplicate with the original position.
	again, err := c.Producer(ctx, "s", sdk.ProducerOptions{ProducerID: 0x5eed})
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close(ctx)
	if pos, err := again.Send(ctx, sdk.Record{Value: []byte("from a")}); err != nil || !pos.Duplicate || pos.Seq != first.Seq {
		t.Fatalf("exact resend: %+v %v, want duplicate at %d", pos, err, first.Seq)
	}
	st, _ := th.h.Store().Stream("s")
	if _, last, _ := st.Bounds(0); last != 1 {
		t.Fatalf("stream holds %d records, want 1", last)
	}
}

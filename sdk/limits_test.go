package sdk_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/edgehub/edgehub/hub"
	"github.com/edgehub/edgehub/sdk"
	"github.com/edgehub/edgehub/store"
)

// withPayload returns a record whose PayloadSize is n: a key, a header and
// the rest as value, so that every counted part is exercised.
func withPayload(n int) sdk.Record {
	r := sdk.Record{Key: []byte("key"), Headers: []sdk.Header{{Key: "h", Value: []byte("vv")}}}
	r.Value = bytes.Repeat([]byte{'v'}, n-3-(1+2+2))
	return r
}

// TestProducerRecordLimit sends records at the hub's default
// store.max_record_bytes (1 MiB) and one byte over it. Records between
// 512 KiB and 1 MiB used to be refused by the SDK's batch size (BatchBytes
// 512 KiB) although the hub accepts them.
func TestProducerRecordLimit(t *testing.T) {
	th := newHub(t, nil, store.StreamConfig{Name: "big", Shards: 1})
	c := dial(t, th)
	ctx := testCtx(t)
	p, err := c.Producer(ctx, "big", sdk.ProducerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(ctx)
	if got := p.MaxRecordBytes(); got != hub.DefaultMaxRecordBytes {
		t.Fatalf("MaxRecordBytes = %d, want the hub's %d", got, hub.DefaultMaxRecordBytes)
	}
	accepted := []sdk.Record{
		{Value: bytes.Repeat([]byte{'a'}, 700<<10)}, // between 512 KiB and 1 MiB
		{Value: bytes.Repeat([]byte{'b'}, 1<<20)},   // a value of exactly the limit
		withPayload(1 << 20),                        // key + value + header at the limit
	}
	for i, r := range accepted {
		if r.PayloadSize() != 1<<20 && i > 0 {
			t.Fatalf("record %d has payload %d", i, r.PayloadSize())
		}
		pos, err := p.Send(ctx, r)
		if err != nil {
			t.Fatalf("record %d (%d bytes): %v", i, r.PayloadSize(), err)
		}
		if pos.Seq != uint64(i+1) {
			t.Fatalf("record %d at %d", i, pos.Seq)
		}
	}
	refused := []sdk.Record{
		{Value: bytes.Repeat([]byte{'c'}, 1<<20+1)},
		withPayload(1<<20 + 1),
		{Value: []byte("x"), Headers: []sdk.Header{{Key: "k", Value: bytes.Repeat([]byte{'h'}, 1<<20-3)}}}, // 1 + 1 + (1<<20-3) + 2
	}
	for i, r := range refused {
		_, err := p.Send(ctx, r)
		if sdk.CodeOf(err) != sdk.CodeRecordTooLarge || !strings.Contains(err.Error(), "max_record_bytes 1048576") {
			t.Fatalf("record %d of %d bytes: %v, want record_too_large naming max_record_bytes", i, r.PayloadSize(), err)
		}
	}
	st, _ := th.h.Store().Stream("big")
	recs, err := st.Read(0, 1, store.ReadOptions{MaxBytes: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != len(accepted) {
		t.Fatalf("stored %d records, want %d", len(recs), len(accepted))
	}
	for i, r := range recs {
		if !bytes.Equal(r.Value, accepted[i].Value) || !bytes.Equal(r.Key, accepted[i].Key) || len(r.Headers) != len(accepted[i].Headers) {
			t.Fatalf("record %d stored differently", i)
		}
	}
}

// TestProducerRecordLimitRaised: with max_record_bytes 16 MiB and the frame
// limit it needs, a 16 MiB record goes through the SDK and one byte more is
// refused; the frame limit it cannot fit in is refused at start, naming
// both keys.
func TestProducerRecordLimitRaised(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 32 MiB")
	}
	_, err := hub.New(func() hub.Config {
		cfg := hub.DefaultConfig()
		cfg.Hub.DataDir = t.TempDir()
		cfg.Store.MaxRecordBytes = 16 << 20
		return cfg
	}())
	if err == nil || !strings.Contains(err.Error(), "limits.max_frame_bytes") || !strings.Contains(err.Error(), "store.max_record_bytes 16MiB") {
		t.Fatalf("16 MiB records with 8 MiB frames: %v", err)
	}
	th := newHub(t, func(c *hub.Config) {
		c.Store.MaxRecordBytes = 16 << 20
		c.Limits.MaxFrameBytes = 17 << 20
	}, store.StreamConfig{Name: "big", Shards: 1})
	c := dial(t, th)
	ctx := testCtx(t)
	p, err := c.Producer(ctx, "big", sdk.ProducerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(ctx)
	if _, err := p.Send(ctx, withPayload(16<<20)); err != nil {
		t.Fatalf("16 MiB record: %v", err)
	}
	if _, err := p.Send(ctx, withPayload(16<<20+1)); sdk.CodeOf(err) != sdk.CodeRecordTooLarge {
		t.Fatalf("16 MiB + 1: %v", err)
	}
}

package sdk_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/edgehub/edgehub/hub"
	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/quic"
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
	// What was acknowledged is stored and reads back through the SDK.
	sub, err := c.Subscribe(ctx, "big", sdk.ConsumeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	for i, want := range accepted {
		m, err := sub.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		r := m.Record
		if r.Seq != uint64(i+1) || !bytes.Equal(r.Value, want.Value) || !bytes.Equal(r.Key, want.Key) || len(r.Headers) != len(want.Headers) {
			t.Fatalf("record %d read back differently (seq %d, %d bytes)", i, r.Seq, r.PayloadSize())
		}
	}
	st, _ := th.h.Store().Stream("big")
	if _, last, _ := st.Bounds(0); last != uint64(len(accepted)) {
		t.Fatalf("stored %d records, want %d", last, len(accepted))
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
	sub, err := c.Subscribe(ctx, "big", sdk.ConsumeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	m, err := sub.Next(ctx)
	if err != nil || m.Record.PayloadSize() != 16<<20 {
		t.Fatalf("read back: %v", err)
	}
}

// TestClientFrameLimitCarriesLargestRecord: a consumer must be able to
// receive a stored chunk holding a record of the largest max_record_bytes
// a hub accepts (64 MiB): up to 256 KiB of other records, the record and
// its encoding. The client's default of 64 MiB could not.
func TestClientFrameLimitCarriesLargestRecord(t *testing.T) {
	const largest = 64 << 20
	if _, err := hub.ParseConfig("hub.toml", []byte("[store]\nmax_record_bytes = \"64MiB\"\n[limits]\nmax_frame_bytes = \"65MiB\"\n")); err != nil {
		t.Fatalf("the largest record limit does not load: %v", err)
	}
	if _, err := hub.ParseConfig("hub.toml", []byte("[store]\nmax_record_bytes = \"65MiB\"\n[limits]\nmax_frame_bytes = \"66MiB\"\n")); err == nil {
		t.Fatal("a record limit above 64 MiB loads: raise DefaultClientMaxFrameBytes with it")
	}
	need := 2*(256<<10) + largest + record.MaxEncodingOverhead(largest) + 1<<10 // chunk, record, frame fields
	if quic.DefaultClientMaxFrameBytes < need {
		t.Fatalf("clients accept frames up to %d bytes; a chunk with a %d-byte record needs %d", quic.DefaultClientMaxFrameBytes, largest, need)
	}
}

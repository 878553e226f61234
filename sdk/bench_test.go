package sdk_test

import (
	"context"
	"testing"

	"github.com/edgehub/edgehub/sdk"
	"github.com/edgehub/edgehub/store"
)

// BenchmarkProduce measures durable produce through a real hub on loopback:
// one op is one 128-byte record, acknowledged after fsync.
func BenchmarkProduce(b *testing.B) {
	th := newHub(b, nil, store.StreamConfig{Name: "bench", Shards: 4})
	c := dial(b, th)
	ctx := context.Background()
	p, err := c.Producer(ctx, "bench", sdk.ProducerOptions{})
	if err != nil {
		b.Fatal(err)
	}
	value := make([]byte, 128)
	fail := func(_ sdk.Position, err error) {
		if err != nil {
			b.Error(err)
		}
	}
	b.SetBytes(128)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := p.SendAsync(ctx, sdk.Record{Value: value}, fail); err != nil {
			b.Fatal(err)
		}
	}
	if err := p.Close(ctx); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkConsume measures catch-up reads of committed records.
func BenchmarkConsume(b *testing.B) {
	th := newHub(b, nil, store.StreamConfig{Name: "bench", Shards: 4})
	c := dial(b, th)
	ctx := context.Background()
	p, err := c.Producer(ctx, "bench", sdk.ProducerOptions{})
	if err != nil {
		b.Fatal(err)
	}
	value := make([]byte, 128)
	for range b.N {
		if err := p.SendAsync(ctx, sdk.Record{Value: value}, func(sdk.Position, error) {}); err != nil {
			b.Fatal(err)
		}
	}
	if err := p.Close(ctx); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(128)
	b.ReportAllocs()
	b.ResetTimer()
	sub, err := c.Subscribe(ctx, "bench", sdk.ConsumeOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Close()
	for n := 0; n < b.N; {
		_, recs, err := sub.NextBatch(ctx)
		if err != nil {
			b.Fatal(err)
		}
		n += len(recs)
	}
}

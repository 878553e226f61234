package sdk_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgehub/edgehub/sdk"
	"github.com/edgehub/edgehub/store"
)

// TestProducerCallbackCallsProducer: a SendAsync callback may call back
// into the producer (here: it sends the next record of a chain, and asks
// for the producer's id). Callbacks used to run under the producer's lock,
// so the first one deadlocked the producer: no record after the first was
// ever acknowledged.
func TestProducerCallbackCallsProducer(t *testing.T) {
	th := newHub(t, nil, store.StreamConfig{Name: "s", Shards: 2})
	c := dial(t, th)
	ctx := testCtx(t)
	p, err := c.Producer(ctx, "s", sdk.ProducerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	const chain = 50
	var acked atomic.Int64
	done := make(chan error, 1)
	var next func(i int) func(sdk.Position, error)
	next = func(i int) func(sdk.Position, error) {
		return func(_ sdk.Position, err error) {
			if err == nil && p.ID() == 0 {
				err = fmt.Errorf("producer id 0 in a callback")
			}
			if err != nil || i == chain {
				done <- err
				return
			}
			acked.Add(1)
			if err := p.SendAsync(ctx, sdk.Record{Key: []byte(fmt.Sprint(i)), Value: []byte("v")}, next(i+1)); err != nil {
				done <- err
			}
		}
	}
	if err := p.SendAsync(ctx, sdk.Record{Key: []byte("0"), Value: []byte("v")}, next(1)); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the chain stopped after %d of %d acknowledgements: a callback could not call the producer", acked.Load(), chain)
	}
	var stored uint64
	info, err := c.Info(ctx, "s")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range info.Shards {
		stored += s.Last
	}
	if stored != chain {
		t.Fatalf("stored %d records, want %d", stored, chain)
	}
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestProducerFlushWaitsForCallbacks: once Flush returns, the callbacks of
// every record sent before it have run (they run outside the producer's
// lock, but Flush still waits for them); Close likewise for the records it
// fails.
func TestProducerFlushWaitsForCallbacks(t *testing.T) {
	th := newHub(t, nil, store.StreamConfig{Name: "s", Shards: 4})
	c := dial(t, th)
	ctx := testCtx(t)
	p, err := c.Producer(ctx, "s", sdk.ProducerOptions{Linger: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	var ran atomic.Int64
	cb := func(_ sdk.Position, err error) {
		if err != nil {
			t.Error(err)
		}
		time.Sleep(time.Millisecond) // a callback that takes a while
		ran.Add(1)
	}
	for round := 1; round <= 3; round++ {
		for i := range 100 {
			if err := p.SendAsync(ctx, sdk.Record{Key: []byte(fmt.Sprint(i)), Value: []byte("v")}, cb); err != nil {
				t.Fatal(err)
			}
		}
		if err := p.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if n := ran.Load(); n != int64(100*round) {
			t.Fatalf("round %d: %d callbacks ran when Flush returned, want %d", round, n, 100*round)
		}
	}
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if n := ran.Load(); n != 300 {
		t.Fatalf("%d callbacks ran when Close returned, want 300", n)
	}
}

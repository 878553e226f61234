package hub

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/sdk"
	"github.com/edgehub/edgehub/store"
)

// TestSDKProducerAcrossReshard: SDK producers (idempotent and not) keep
// sending keyed records while the stream is split, merged and resharded
// under them, with batches in flight. Every record is acknowledged once,
// stored once, in a shard whose range holds its key's hash, and each key's
// records are stored in the order they were sent: read back through the
// lineage (parents before children), every key's values come in order.
func TestSDKProducerAcrossReshard(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts sdk.ProducerOptions
	}{
		{"idempotent", sdk.ProducerOptions{BatchRecords: 16, MaxInFlight: 8}},
		{"not idempotent", sdk.ProducerOptions{BatchRecords: 16, MaxInFlight: 8, NotIdempotent: true}},
	} {
		t.Run(tc.name, func(t *testing.T) { testProducerAcrossReshard(t, tc.opts) })
	}
}

func testProducerAcrossReshard(t *testing.T, opts sdk.ProducerOptions) {
	d := startDataPlane(t, nil, store.StreamConfig{Name: "s", Shards: 2})
	ctx := testCtx(t)
	st, err := d.h.Store().Stream("s")
	if err != nil {
		t.Fatal(err)
	}
	c := d.client(t, nil)
	p, err := c.Producer(ctx, "s", opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		// Bounded: a stalled producer fails the test instead of hanging it.
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		p.Close(cctx)
	}()

	const senders, keysPer, rounds = 4, 8, 150
	var acked atomic.Int64
	var errMu sync.Mutex
	var sendErrs []error
	cb := func(_ sdk.Position, err error) {
		if err != nil {
			errMu.Lock()
			sendErrs = append(sendErrs, err)
			errMu.Unlock()
			return
		}
		acked.Add(1)
	}
	// Reshards run while records are in flight: each waits for a share of
	// the acknowledgements, so it lands in the middle of the traffic
	// whatever the machine's speed.
	total := int64(senders * keysPer * rounds)
	reshards := []func() error{
		func() error { _, err := st.Split(ctx, st.Layout().Open()[0].ID, 0); return err },
		func() error {
			open := st.Layout().Open()
			_, err := st.Merge(ctx, open[0].ID, open[1].ID)
			return err
		},
		func() error { _, err := st.Reshard(ctx, 5); return err },
		func() error { _, err := st.Reshard(ctx, 3); return err },
	}
	reshardDone := make(chan error, 1)
	go func() {
		for i, r := range reshards {
			for acked.Load() < total*int64(i+1)/int64(len(reshards)+1) {
				if ctx.Err() != nil {
					reshardDone <- ctx.Err()
					return
				}
				time.Sleep(time.Millisecond)
			}
			if err := r(); err != nil {
				reshardDone <- fmt.Errorf("reshard %d: %w", i, err)
				return
			}
		}
		reshardDone <- nil
	}()
	var wg sync.WaitGroup
	for g := range senders {
		wg.Go(func() {
			for r := range rounds {
				for k := range keysPer {
					key := fmt.Sprintf("g%d-k%d", g, k)
					if err := p.SendAsync(ctx, sdk.Record{Key: []byte(key), Value: fmt.Appendf(nil, "%s/%d", key, r)}, cb); err != nil {
						cb(sdk.Position{}, err)
					}
				}
			}
		})
	}
	wg.Wait()
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-reshardDone; err != nil {
		t.Fatal(err)
	}
	// On a fast machine every record may be acknowledged before the last
	// reshard lands; one more round after it makes the producer meet the
	// final layout (a batch refused with shard_closed, then re-routed).
	for g := range senders {
		for k := range keysPer {
			key := fmt.Sprintf("g%d-k%d", g, k)
			if err := p.SendAsync(ctx, sdk.Record{Key: []byte(key), Value: fmt.Appendf(nil, "%s/%d", key, rounds)}, cb); err != nil {
				cb(sdk.Position{}, err)
			}
		}
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	total += senders * keysPer
	if len(sendErrs) > 0 {
		t.Fatalf("%d sends failed, first: %v", len(sendErrs), sendErrs[0])
	}
	if got := acked.Load(); got != total {
		t.Fatalf("%d acknowledged, want %d", got, total)
	}
	if p.Shards() != 3 {
		t.Fatalf("producer Shards() = %d after reshard to 3", p.Shards())
	}

	// Read everything back through the lineage.
	layout := st.Layout()
	sub, err := c.Subscribe(ctx, "s", sdk.ConsumeOptions{From: sdk.FromEarliest()})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	last := map[string]int{}
	for range total {
		m, err := sub.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		k, rs, _ := strings.Cut(string(m.Record.Value), "/")
		var r int
		fmt.Sscan(rs, &r)
		if prev, ok := last[k]; ok && r != prev+1 || !ok && r != 0 {
			t.Fatalf("key %s: round %d stored after %d (shard %d seq %d)", k, r, prev, m.Shard, m.Record.Seq)
		}
		last[k] = r
		if h, sh := record.KeyHash(m.Record.Key), layout.Shards[m.Shard]; h < sh.HashStart || h > sh.HashEnd {
			t.Fatalf("key %s (hash %016x) stored in shard %d [%016x, %016x]", k, h, m.Shard, sh.HashStart, sh.HashEnd)
		}
	}
	for k, r := range last {
		if r != rounds {
			t.Fatalf("key %s read to round %d", k, r)
		}
	}
	if len(last) != senders*keysPer {
		t.Fatalf("%d keys read, want %d", len(last), senders*keysPer)
	}
	// Nothing more: no record was stored twice.
	stored := 0
	for sh := range st.Shards() {
		for from := uint64(0); ; {
			recs, err := st.Read(sh, from, store.ReadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if len(recs) == 0 {
				break
			}
			stored += len(recs)
			from = recs[len(recs)-1].Seq + 1
		}
	}
	if stored != int(total) {
		t.Fatalf("%d records stored, %d sent", stored, total)
	}
	t.Logf("layout version %d; %v batches refused with shard_closed and re-routed", layout.Version,
		labeledValue(t, d.h, "edgehub_dataplane_refusals_total", `code="shard_closed"`))
}

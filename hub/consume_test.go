package hub

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"testing"
	"time"

	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/internal/testutil"
	"github.com/edgehub/edgehub/quic"
	"github.com/edgehub/edgehub/sdk"
	"github.com/edgehub/edgehub/store"
)

// storedChunks returns the chunks of shard 0 of a stream, in order.
func storedChunks(tb testing.TB, d *dpHub, stream string) [][]byte {
	tb.Helper()
	st, err := d.h.Store().Stream(stream)
	if err != nil {
		tb.Fatal(err)
	}
	var out [][]byte
	for next := uint64(1); ; {
		chunks, err := st.ReadRaw(0, next, 1)
		if err != nil {
			tb.Fatal(err)
		}
		if len(chunks) == 0 {
			return out
		}
		info, err := record.ReadInfo(chunks[0])
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, chunks[0])
		next = info.LastSeq + 1
	}
}

// readRecordsFrames reads a subscription's RECORDS frames until it has every record
// of vals (shard 0), checking them, returning the credit it used as the
// SDK does, and calling frame with each batch.
func readRecordsFrames(tb testing.TB, st *quic.Stream, vals [][]byte, frame func(batch []byte)) {
	tb.Helper()
	for next := uint64(1); next <= uint64(len(vals)); {
		var rf quic.Records
		if err := st.Expect(quic.FrameRecords, &rf); err != nil {
			tb.Fatal(err)
		}
		frame(rf.Batch)
		recs, err := record.DecodeBatch(rf.Batch, nil)
		if err != nil {
			tb.Fatal(err)
		}
		for _, r := range recs {
			if r.Seq < next {
				continue
			}
			if r.Seq != next || !bytes.Equal(r.Value, vals[r.Seq-1]) {
				tb.Fatalf("record %d, want %d", r.Seq, next)
			}
			next++
		}
		if err := st.Send(quic.FrameCredit, &quic.Credit{Bytes: uint64(len(rf.Batch))}); err != nil {
			tb.Fatal(err)
		}
	}
}

// TestConsumeSendsStoredChunksWhole: a consumer whose credit covers them
// gets the stored chunks byte for byte, none cut, when the consume share
// has room. Stored chunks are about 256 KiB plus up to one record: with
// records of a few KiB or more most are above 256 KiB, so with only its
// 256 KiB reservation to hold them a subscription cut (decoded and
// re-encoded) most of them, each twice, before sends could borrow from the
// share.
func TestConsumeSendsStoredChunksWhole(t *testing.T) {
	d := startDataPlane(t, nil, store.StreamConfig{Name: "small", Shards: 1}, store.StreamConfig{Name: "large", Shards: 1})
	share := d.h.dataPlane.budget.consume
	for _, tc := range []struct {
		stream string
		n      int
		size   int
	}{
		{"small", 800, 10000},    // chunks of 256 KiB plus up to one record
		{"large", 12, 700 << 10}, // one record a chunk, above the reservation
	} {
		vals := produceValues(t, d, tc.stream, tc.n, tc.size)
		chunks := storedChunks(t, d, tc.stream)
		over := 0
		for _, c := range chunks {
			if len(c) > subReserveMax {
				over++
			}
		}
		if over == 0 {
			t.Fatalf("%s: no stored chunk above the reservation: the test tests nothing", tc.stream)
		}
		t.Run(tc.stream+" raw credit 16 MiB", func(t *testing.T) {
			cuts0 := counterValue(t, d.h, "edgehub_consume_cut_batches_total")
			st, err := d.raw(t, "").Open(testCtx(t), quic.OpConsume, &quic.ConsumeOpen{Stream: tc.stream, Credit: 16 << 20})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Cancel(quic.CodeCanceled)
			if err := st.Expect(quic.FrameConsumeReady, &quic.ConsumeReady{}); err != nil {
				t.Fatal(err)
			}
			i := 0
			readRecordsFrames(t, st, vals, func(batch []byte) {
				if i >= len(chunks) || !bytes.Equal(batch, chunks[i]) {
					t.Fatalf("frame %d: %d bytes, not stored chunk %d of %d (%d of them above 256 KiB)", i, len(batch), i, len(chunks), over)
				}
				i++
			})
			if cuts := counterValue(t, d.h, "edgehub_consume_cut_batches_total") - cuts0; cuts != 0 {
				t.Fatalf("%v batches cut for a consumer with 16 MiB of credit", cuts)
			}
			t.Logf("%d stored chunks sent whole, %d of them above the 256 KiB reservation", len(chunks), over)
		})
		t.Run(tc.stream+" sdk default credit", func(t *testing.T) {
			cuts0 := counterValue(t, d.h, "edgehub_consume_cut_batches_total")
			ctx := testCtx(t)
			sub, err := d.client(t, nil).Subscribe(ctx, tc.stream, sdk.ConsumeOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close()
			for want := uint64(1); want <= uint64(len(vals)); {
				_, recs, err := sub.NextBatch(ctx)
				if err != nil {
					t.Fatal(err)
				}
				for _, m := range recs {
					if m.Seq != want || !bytes.Equal(m.Value, vals[want-1]) {
						t.Fatalf("record %d, want %d", m.Seq, want)
					}
					want++
				}
			}
			if cuts := counterValue(t, d.h, "edgehub_consume_cut_batches_total") - cuts0; cuts != 0 {
				t.Fatalf("%v batches cut for an SDK subscription with its default credit", cuts)
			}
		})
	}
	// Borrowed bytes are returned with each send: once the subscriptions
	// end, the share holds nothing.
	testutil.Eventually(t, "the consume share to empty", func() bool { return share.used.Load() == 0 })
}

// TestConsumeCutsUnderBudgetPressure: with more than half of the consume
// share reserved, sends borrow nothing and behave as they did before
// borrowing: chunks above the reservation are cut to it (batches of at most
// 256 KiB, records intact), the cuts are counted, and the share never holds
// more than the subscriptions reserved.
func TestConsumeCutsUnderBudgetPressure(t *testing.T) {
	d := startDataPlane(t, func(c *Config) {
		c.Limits.MemoryBudget = 16 << 20 // consume share 7 MiB
		c.Limits.MaxFrameBytes = 1 << 20
		c.Store.MaxRecordBytes = 512 << 10
	}, store.StreamConfig{Name: "s", Shards: 1}, store.StreamConfig{Name: "idle", Shards: 1})
	share := d.h.dataPlane.budget.consume
	vals := produceValues(t, d, "s", 800, 10000)
	ctx := testCtx(t)
	// Idle subscriptions (their stream is empty) reserving over half the share.
	idle := int(share.size/2/subReserveMax) + 1
	c := d.raw(t, "")
	for range idle {
		st, err := c.Open(ctx, quic.OpConsume, &quic.ConsumeOpen{Stream: "idle", Credit: 16 << 20})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Cancel(quic.CodeCanceled)
		if err := st.Expect(quic.FrameConsumeReady, &quic.ConsumeReady{}); err != nil {
			t.Fatal(err)
		}
	}
	if used := share.used.Load(); used != int64(idle)*subReserveMax || used <= share.size/2 {
		t.Fatalf("%d idle subscriptions hold %d bytes of a %d-byte share", idle, used, share.size)
	}
	cuts0 := counterValue(t, d.h, "edgehub_consume_cut_batches_total")
	st, err := c.Open(ctx, quic.OpConsume, &quic.ConsumeOpen{Stream: "s", Credit: 16 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Cancel(quic.CodeCanceled)
	if err := st.Expect(quic.FrameConsumeReady, &quic.ConsumeReady{}); err != nil {
		t.Fatal(err)
	}
	reserved := int64(idle+1) * subReserveMax
	frames, largest, peak := 0, 0, int64(0)
	readRecordsFrames(t, st, vals, func(batch []byte) {
		frames++
		largest = max(largest, len(batch))
		peak = max(peak, share.used.Load())
		if len(batch) > subReserveMax {
			t.Fatalf("a %d-byte batch under budget pressure: more than the 256 KiB reservation", len(batch))
		}
	})
	cuts := counterValue(t, d.h, "edgehub_consume_cut_batches_total") - cuts0
	t.Logf("%d frames, largest %d bytes, %v cut; share peak %d bytes, %d reserved", frames, largest, cuts, peak, reserved)
	if cuts < 1 {
		t.Fatalf("no batch cut under budget pressure")
	}
	if peak > reserved {
		t.Fatalf("the consume share held %d bytes, more than the %d reserved", peak, reserved)
	}
}

// TestConsumeBorrowingLeavesHalfTheShare: subscriptions that return credit
// and then stop reading pin what a send borrowed for a read of several
// chunks until frame_timeout; borrowing stops at half the share, so at
// least half as many subscriptions are admitted as reservations alone
// would allow, and the share is never exceeded.
func TestConsumeBorrowingLeavesHalfTheShare(t *testing.T) {
	d := startDataPlane(t, func(c *Config) {
		c.Limits.MemoryBudget = 16 << 20 // consume share 7 MiB
		c.Limits.MaxFrameBytes = 1 << 20
		c.Store.MaxRecordBytes = 512 << 10
		// The subscriptions never read: with the default 30 s write
		// deadline a slow run would see the first ones end (and give
		// back what they borrowed) while later ones are measured.
		c.Limits.FrameTimeout = Duration(time.Hour)
	}, store.StreamConfig{Name: "s", Shards: 1})
	share := d.h.dataPlane.budget.consume
	// Chunks of 100 KB each (one batch of 10 records per commit): a send's
	// 1 MiB read then holds at least 900 KB, so what it borrowed stays
	// borrowed. With chunks left to timing, a small chunk followed by one
	// that does not fit made a read of 100 KB that gave its borrow back,
	// and the wait below never ended.
	produceValuesWith(t, d, "s", 800, 10000, sdk.ProducerOptions{BatchRecords: 10, MaxInFlight: 1})
	ctx := testCtx(t)
	pool, err := quic.CertPool(d.ca)
	if err != nil {
		t.Fatal(err)
	}
	admitted, peak, peakBorrowed := 0, int64(0), int64(0)
	var refusal error
	for i := 0; i < 100 && refusal == nil; i++ {
		before := share.borrowed.Load()
		// A connection each (their windows would be shared), with a
		// window that takes the first 300 KiB and not the read that
		// follows the returned credit.
		c, err := quic.Dial(ctx, d.addr, quic.ClientConfig{TLS: &tls.Config{RootCAs: pool}, StreamReceiveWindow: 512 << 10, ConnReceiveWindow: 2 << 20})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		st, err := c.Open(ctx, quic.OpConsume, &quic.ConsumeOpen{Stream: "s", Credit: 300 << 10})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Cancel(quic.CodeCanceled)
		if refusal = st.Expect(quic.FrameConsumeReady, &quic.ConsumeReady{}); refusal != nil {
			break
		}
		admitted++
		// Credit returned as if it read; it never reads again.
		if err := st.Send(quic.FrameCredit, &quic.Credit{Bytes: 16 << 20}); err != nil {
			t.Fatal(err)
		}
		// Its send borrows for a read of several chunks, if the share
		// lets it, before the next one opens.
		testutil.Eventually(t, fmt.Sprintf("subscription %d to borrow", admitted), func() bool {
			peak, peakBorrowed = max(peak, share.used.Load()), max(peakBorrowed, share.borrowed.Load())
			return share.borrowed.Load() >= before+subReserveMax || share.used.Load()+subBurstMax-subReserveMax > share.size/2
		})
	}
	t.Logf("%d subscriptions admitted, share peak %d of %d bytes, %d borrowed: %v", admitted, peak, share.size, peakBorrowed, refusal)
	if quic.CodeOf(refusal) != quic.CodeLimit {
		t.Fatalf("after %d subscriptions: %v, want limit", admitted, refusal)
	}
	if peakBorrowed < 2*subReserveMax {
		t.Fatalf("%d bytes borrowed at most: the test tests nothing", peakBorrowed)
	}
	if min := int(share.size / 2 / subReserveMax); admitted < min {
		t.Fatalf("%d subscriptions admitted, want at least %d (half the share left to reservations)", admitted, min)
	}
	if peak > share.size || peakBorrowed > share.size/2 {
		t.Fatalf("share peak %d of %d bytes, %d borrowed", peak, share.size, peakBorrowed)
	}
}

// TestBudgetShareBorrow: a borrow never takes the share past half held,
// and a refused borrow is not counted as a refusal.
func TestBudgetShareBorrow(t *testing.T) {
	s := newShare("consume", 1<<20)
	if !s.TryAcquire(256 << 10) {
		t.Fatal("reservation refused")
	}
	if s.tryBorrow(257 << 10) {
		t.Fatal("borrow past half the share taken")
	}
	if !s.tryBorrow(256 << 10) {
		t.Fatal("borrow up to half the share refused")
	}
	if s.tryBorrow(1) {
		t.Fatal("borrow past half the share taken")
	}
	if s.refused.Load() != 0 || s.used.Load() != 512<<10 || s.borrowed.Load() != 256<<10 {
		t.Fatalf("refused %d, used %d, borrowed %d", s.refused.Load(), s.used.Load(), s.borrowed.Load())
	}
	s.giveBack(256 << 10)
	if !s.tryBorrow(200 << 10) {
		t.Fatal("borrow refused after a release")
	}
	// Reservations may still take the other half.
	if !s.TryAcquire(568 << 10) {
		t.Fatal("reservation refused with room")
	}
	if s.tryBorrow(1) || s.used.Load() != 1<<20 || s.borrowed.Load() != 200<<10 {
		t.Fatalf("borrow from a full share, used %d, borrowed %d", s.used.Load(), s.borrowed.Load())
	}
}

package hub

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime/metrics"
	"strings"
	"testing"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/internal/testutil"
	"github.com/edgehub/edgehub/quic"
	"github.com/edgehub/edgehub/sdk"
	"github.com/edgehub/edgehub/store"
)

// rawConn dials the hub with quic-go itself, for a client that writes bytes
// no frame encoder would: half frames, lying length prefixes.
func rawConn(tb testing.TB, addr, ca string) *quicgo.Conn {
	tb.Helper()
	pool, err := quic.CertPool(ca)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	qc, err := quicgo.DialAddr(ctx, addr, &tls.Config{RootCAs: pool, NextProtos: []string{quic.ALPN}, MinVersion: tls.VersionTLS13}, &quicgo.Config{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { qc.CloseWithError(0, "") })
	return qc
}

// rawOpen opens a stream and writes raw bytes on it.
func rawOpen(tb testing.TB, qc *quicgo.Conn, raw ...[]byte) *quicgo.Stream {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	qs, err := qc.OpenStreamSync(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	for _, b := range raw {
		if _, err := qs.Write(b); err != nil {
			tb.Fatal(err)
		}
	}
	return qs
}

func openFrame(op quic.Op, token string, body quic.Appender) []byte {
	var b []byte
	if body != nil {
		b = body.Append(nil)
	}
	return quic.AppendFrame(nil, quic.FrameOpen, &quic.Open{Op: op, Token: token, Body: b})
}

// nextFrame reads one frame from a raw stream, within 30 s.
func nextFrame(tb testing.TB, qs *quicgo.Stream) (quic.FrameType, []byte) {
	tb.Helper()
	qs.SetReadDeadline(time.Now().Add(30 * time.Second))
	var hdr [5]byte
	if _, err := io.ReadFull(qs, hdr[:]); err != nil {
		tb.Fatalf("read frame header: %v", err)
	}
	p := make([]byte, binary.BigEndian.Uint32(hdr[1:]))
	if _, err := io.ReadFull(qs, p); err != nil {
		tb.Fatalf("read frame: %v", err)
	}
	return quic.FrameType(hdr[0]), p
}

// hubError reads frames until the hub's ERROR frame.
func hubError(tb testing.TB, qs *quicgo.Stream) *quic.Error {
	tb.Helper()
	for {
		ft, p := nextFrame(tb, qs)
		if ft == quic.FrameError {
			e, err := quic.DecodeError(p)
			if err != nil {
				tb.Fatal(err)
			}
			return e
		}
	}
}

func heapAllocBytes() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// TestDataPlaneHalfSentBatch is defect 6's second half: a BATCH begun after
// OPEN and never finished was held forever, pinning a stream slot. It now
// fails with limit after limits.frame_timeout and the slot is free.
func TestDataPlaneHalfSentBatch(t *testing.T) {
	d := startDataPlane(t, func(c *Config) { c.Limits.FrameTimeout = Duration(300 * time.Millisecond) },
		store.StreamConfig{Name: "s", Shards: 1})
	qc := rawConn(t, d.addr, d.ca)
	qs := rawOpen(t, qc, openFrame(quic.OpProduce, "", &quic.ProduceOpen{Stream: "s"}))
	if ft, _ := nextFrame(t, qs); ft != quic.FrameProduceReady {
		t.Fatalf("got %s, want PRODUCE_READY", ft)
	}
	// A BATCH header announcing 100 bytes, and 10 of them.
	qs.Write([]byte{byte(quic.FrameBatch), 0, 0, 0, 100})
	qs.Write(make([]byte, 10))
	e := hubError(t, qs)
	if e.Code != quic.CodeLimit || !strings.Contains(e.Message, "BATCH frame incomplete after 300ms") {
		t.Fatalf("got %v, want limit naming the frame timeout", e)
	}
	testutil.Eventually(t, "the stream to end", func() bool { return d.h.DataPlaneStats().StreamsActive == 0 })
	// The session's budget came back.
	if n := d.h.dataPlane.budget.produce.used.Load(); n != 0 {
		t.Fatalf("produce budget holds %d bytes after the session ended", n)
	}
}

// TestDataPlaneProduceBudgetBeforeBody: a batch takes its budget from its
// frame header, before a byte of its payload is read, and the payload
// buffer grows only as bytes arrive. Before, the hub allocated the claimed
// length first (two 8 MiB claims: 16 MiB of heap) and took its in-flight
// budget only after reading the whole frame.
func TestDataPlaneProduceBudgetBeforeBody(t *testing.T) {
	d := startDataPlane(t, func(c *Config) {
		c.Limits.MemoryBudget = 32 << 20 // produce share 16 MiB
		c.Limits.FrameTimeout = Duration(2 * time.Second)
	}, store.StreamConfig{Name: "s", Shards: 1})
	claim := uint32(8<<20 - 64)
	before := heapAllocBytes()
	var held []*quicgo.Stream
	for range 2 {
		qc := rawConn(t, d.addr, d.ca)
		qs := rawOpen(t, qc, openFrame(quic.OpProduce, "", &quic.ProduceOpen{Stream: "s"}))
		nextFrame(t, qs) // PRODUCE_READY
		hdr := []byte{byte(quic.FrameBatch), 0, 0, 0, 0}
		binary.BigEndian.PutUint32(hdr[1:], claim)
		qs.Write(hdr)
		qs.Write([]byte{1, 2, 3})
		held = append(held, qs)
	}
	share := d.h.dataPlane.budget.produce
	testutil.Eventually(t, "both claims to take the produce share", func() bool { return share.used.Load() == 2*int64(claim) })
	if n := heapAllocBytes() - before; n > 4<<20 {
		t.Fatalf("%d bytes allocated for two headers claiming %d bytes each", n, claim)
	}
	// A well-behaved producer waits for the share, and is served once the
	// half-sent frames time out.
	c := d.client(t, nil)
	ctx := testCtx(t)
	p, err := c.Producer(ctx, "s", sdk.ProducerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Send(ctx, sdk.Record{Value: []byte("after")}); err != nil {
		t.Fatal(err)
	}
	for _, qs := range held {
		if e := hubError(t, qs); e.Code != quic.CodeLimit {
			t.Fatalf("half-sent claim ended with %v, want limit", e)
		}
	}
	p.Close(ctx)
	testutil.Eventually(t, "the produce share to empty", func() bool { return share.used.Load() == 0 })
}

// produceValues stores n records of size bytes each in one shard through
// the SDK and returns them.
func produceValues(tb testing.TB, d *dpHub, stream string, n, size int) [][]byte {
	tb.Helper()
	return produceValuesWith(tb, d, stream, n, size, sdk.ProducerOptions{})
}

// produceValuesWith is produceValues with the producer's options, for tests
// that need the stored chunks' sizes fixed: group commit stores each
// shard's share of a commit as one chunk, so chunk sizes follow timing
// unless one batch of known size is in flight at a time.
func produceValuesWith(tb testing.TB, d *dpHub, stream string, n, size int, opts sdk.ProducerOptions) [][]byte {
	tb.Helper()
	ctx := testCtx(tb)
	p, err := d.client(tb, nil).Producer(ctx, stream, opts)
	if err != nil {
		tb.Fatal(err)
	}
	vals := make([][]byte, n)
	for i := range vals {
		vals[i] = bytes.Repeat([]byte{byte('a' + i%26)}, size)
		binary.BigEndian.PutUint32(vals[i], uint32(i))
		if err := p.SendAsync(ctx, sdk.Record{Value: vals[i]}, func(_ sdk.Position, err error) {
			if err != nil {
				tb.Error(err)
			}
		}); err != nil {
			tb.Fatal(err)
		}
	}
	if err := p.Close(ctx); err != nil {
		tb.Fatal(err)
	}
	return vals
}

// TestDataPlaneSubscriptionHoldsItsCredit is defect 6: what a subscription
// holds (and sends ahead) is bounded by its credit. Before, the hub read
// 1 MiB per step whatever the credit and sent whole 256 KiB chunks to a
// consumer that granted 20 KiB.
func TestDataPlaneSubscriptionHoldsItsCredit(t *testing.T) {
	d := startDataPlane(t, nil, store.StreamConfig{Name: "s", Shards: 1})
	vals := produceValues(t, d, "s", 1200, 1000)
	for _, tc := range []struct {
		name        string
		credit      uint64
		wantCut     bool // frames smaller than the stored chunks
		maxBatchLen int
	}{
		{"credit 20 KiB", 20 << 10, true, 20 << 10},
		{"credit 1 KiB (16 KiB floor)", 1 << 10, true, 16 << 10},
		{"credit 4 MiB", 4 << 20, false, subReserveMax + 2<<10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := d.raw(t, "")
			st, err := c.Open(testCtx(t), quic.OpConsume, &quic.ConsumeOpen{Stream: "s", Credit: tc.credit})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Cancel(quic.CodeCanceled)
			var ready quic.ConsumeReady
			if err := st.Expect(quic.FrameConsumeReady, &ready); err != nil {
				t.Fatal(err)
			}
			next, frames, largest := uint64(1), 0, 0
			for next <= uint64(len(vals)) {
				var rf quic.Records
				if err := st.Expect(quic.FrameRecords, &rf); err != nil {
					t.Fatal(err)
				}
				frames++
				largest = max(largest, len(rf.Batch))
				if len(rf.Batch) > tc.maxBatchLen {
					t.Fatalf("RECORDS batch of %d bytes with credit %d (want at most %d)", len(rf.Batch), tc.credit, tc.maxBatchLen)
				}
				recs, err := record.DecodeBatch(rf.Batch, nil)
				if err != nil {
					t.Fatal(err)
				}
				for _, r := range recs {
					if r.Seq < next {
						continue // below our position: allowed, skipped
					}
					if r.Seq != next || !bytes.Equal(r.Value, vals[r.Seq-1]) {
						t.Fatalf("record %d (%x…), want %d", r.Seq, r.Value[:4], next)
					}
					next++
				}
				// Return what was consumed, as the SDK does.
				if err := st.Send(quic.FrameCredit, &quic.Credit{Bytes: uint64(len(rf.Batch))}); err != nil {
					t.Fatal(err)
				}
			}
			t.Logf("%d frames, largest batch %d bytes", frames, largest)
			if cut := largest < 200<<10; cut != tc.wantCut {
				t.Fatalf("largest batch %d bytes: cut %v, want %v", largest, cut, tc.wantCut)
			}
		})
	}
}

// TestDataPlaneSubscriptionBudget: subscriptions reserve their part of the
// consume share when they open; once it is spent, more are refused with
// limit and a message naming memory_budget, while the open ones keep being
// served, and closing one makes room.
func TestDataPlaneSubscriptionBudget(t *testing.T) {
	d := startDataPlane(t, func(c *Config) {
		c.Limits.MemoryBudget = 16 << 20 // consume share 7 MiB
		c.Limits.MaxFrameBytes = 1 << 20
		c.Store.MaxRecordBytes = 512 << 10
	},
		store.StreamConfig{Name: "s", Shards: 1})
	ctx := testCtx(t)
	c := d.client(t, nil)
	early, err := c.Subscribe(ctx, "s", sdk.ConsumeOptions{Credit: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	var open []*quic.Stream
	var refusal error
	for i := 0; i < 200 && refusal == nil; i++ {
		rc := d.raw(t, "")
		st, err := rc.Open(ctx, quic.OpConsume, &quic.ConsumeOpen{Stream: "s", Credit: 16 << 20})
		if err != nil {
			t.Fatal(err)
		}
		var ready quic.ConsumeReady
		if err := st.Expect(quic.FrameConsumeReady, &ready); err != nil {
			refusal = err
			break
		}
		open = append(open, st)
	}
	want := int(d.h.dataPlane.budget.consume.size/subReserveMax) - 1 // the SDK subscription holds one
	if quic.CodeOf(refusal) != quic.CodeLimit || !strings.Contains(refusal.Error(), "memory_budget") || len(open) != want {
		t.Fatalf("after %d subscriptions (want %d): %v, want limit naming memory_budget", len(open), want, refusal)
	}
	p, err := c.Producer(ctx, "s", sdk.ProducerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(ctx)
	if _, err := p.Send(ctx, sdk.Record{Value: []byte("still served")}); err != nil {
		t.Fatal(err)
	}
	if m, err := early.Next(ctx); err != nil || string(m.Record.Value) != "still served" {
		t.Fatalf("early subscription: %v %v", m, err)
	}
	open[0].Cancel(quic.CodeCanceled)
	testutil.Eventually(t, "room for one more", func() bool {
		st, err := d.raw(t, "").Open(ctx, quic.OpConsume, &quic.ConsumeOpen{Stream: "s", Credit: 16 << 20})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Cancel(quic.CodeCanceled)
		return st.Expect(quic.FrameConsumeReady, &quic.ConsumeReady{}) == nil
	})
	if n := counterValue(t, d.h, "edgehub_memory_budget_refusals_total"); n < 1 {
		t.Fatalf("refusals counted %v", n)
	}
}

// TestDataPlaneContract covers the points of docs/protocol.md an
// independent client had to guess: each is decided, documented, and
// checked here.
func TestDataPlaneContract(t *testing.T) {
	d := startDataPlane(t, func(c *Config) {
		c.Limits.MaxFrameBytes = 64 << 10
		c.Store.MaxRecordBytes = 30 << 10
		c.Limits.HandshakeTimeout = Duration(300 * time.Millisecond)
	}, store.StreamConfig{Name: "s", Shards: 2})
	ctx := testCtx(t)
	c := d.raw(t, "")
	st, ready := produceRaw(t, c, quic.ProduceOpen{Stream: "s"})
	good := encode(t, "x", "y", "z")

	t.Run("max_batch_bytes is max_frame_bytes - 64", func(t *testing.T) {
		if ready.MaxBatchBytes != 64<<10-64 {
			t.Fatalf("max_batch_bytes %d", ready.MaxBatchBytes)
		}
		// A record batch of exactly max_batch_bytes, with every other
		// BATCH field at its longest, is one frame the hub accepts.
		recs := []record.Record{{Value: make([]byte, 30000)}, {Value: make([]byte, 30000)}, {}}
		last := int(ready.MaxBatchBytes) - 60000
		for ; last > 0; last-- {
			recs[2].Value = make([]byte, last)
			b, err := record.AppendBatch(nil, recs)
			if err != nil {
				t.Fatal(err)
			}
			if len(b) > int(ready.MaxBatchBytes) {
				continue
			}
			if len(b) != int(ready.MaxBatchBytes) {
				t.Fatalf("cannot build a batch of exactly %d bytes (got %d)", ready.MaxBatchBytes, len(b))
			}
			batch := quic.Batch{ID: ^uint64(0), Shard: 0, Records: b}
			if n := len(batch.Append(nil)); n > 64<<10 {
				t.Fatalf("BATCH payload of %d bytes above max_frame_bytes", n)
			}
			if ack := sendBatch(t, st, batch); ack.Err() != nil {
				t.Fatal(ack.Err())
			}
			return
		}
	})
	t.Run("bad shards are invalid_argument for the batch", func(t *testing.T) {
		for _, sh := range []int32{-2, 2, 99, -1 << 31} {
			ack := sendBatch(t, st, quic.Batch{ID: 7, Shard: sh, Records: good})
			if ack.Code != quic.CodeInvalidArgument || !strings.Contains(ack.Message, fmt.Sprintf("shard %d", sh)) {
				t.Fatalf("shard %d: %+v", sh, ack)
			}
		}
		if ack := sendBatch(t, st, quic.Batch{ID: 8, Shard: 1, Records: good}); ack.Err() != nil {
			t.Fatalf("the session goes on: %v", ack.Err())
		}
	})
	t.Run("sequence fields set by a producer are refused", func(t *testing.T) {
		for _, r := range []record.Record{{Seq: 5, Value: []byte("v")}, {IngestTime: 9, Value: []byte("v")}} {
			b, err := record.AppendBatch(nil, []record.Record{r})
			if err != nil {
				t.Fatal(err)
			}
			ack := sendBatch(t, st, quic.Batch{ID: 9, Shard: 0, Records: b})
			if ack.Code != quic.CodeInvalidArgument || !strings.Contains(ack.Message, "producers send both as 0") {
				t.Fatalf("batch with %+v: %+v", r, ack)
			}
		}
	})
	st.Close()
	// Shard 0 now holds records 1..3 and the large one; shard 1 holds 3.
	consume := func(open quic.ConsumeOpen) (quic.ConsumeReady, *quic.Stream, error) {
		open.Stream, open.Credit = "s", 1<<20
		st, err := c.Open(ctx, quic.OpConsume, &open)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Cancel(quic.CodeCanceled) })
		var ready quic.ConsumeReady
		return ready, st, st.Expect(quic.FrameConsumeReady, &ready)
	}
	refusals := []struct {
		name string
		open quic.ConsumeOpen
		want string
	}{
		{"unknown start kind", quic.ConsumeOpen{Start: quic.Start{Kind: 9}}, "unknown start kind 9"},
		{"shard 99", quic.ConsumeOpen{Shards: []uint32{99}}, "shard 99 of a 2-shard stream"},
		{"shard listed twice", quic.ConsumeOpen{Shards: []uint32{1, 1}}, "shard 1 listed twice"},
		{"resume for an unlisted shard", quic.ConsumeOpen{Shards: []uint32{0}, Resume: []quic.Position{{Shard: 1, Seq: 1}}}, "does not list"},
		{"start past the end", quic.ConsumeOpen{Shards: []uint32{1}, Start: quic.Start{Kind: quic.StartSeq, Value: 50}}, "start 50 is past the end of shard 1 (its next sequence is 4)"},
		{"resume past the end", quic.ConsumeOpen{Resume: []quic.Position{{Shard: 1, Seq: 5}}}, "resume position 5 is past the end"},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := consume(tc.open)
			if quic.CodeOf(err) != quic.CodeInvalidArgument || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want invalid_argument with %q", err, tc.want)
			}
		})
	}
	t.Run("a resume position is the next sequence to deliver", func(t *testing.T) {
		ready, st, err := consume(quic.ConsumeOpen{Shards: []uint32{1}, Resume: []quic.Position{{Shard: 1, Seq: 2}}})
		if err != nil {
			t.Fatal(err)
		}
		if ready.Subs[0].Start != 2 {
			t.Fatalf("starts at %d, want 2", ready.Subs[0].Start)
		}
		var rf quic.Records
		if err := st.Expect(quic.FrameRecords, &rf); err != nil {
			t.Fatal(err)
		}
		recs, _ := record.DecodeBatch(rf.Batch, nil)
		var got []uint64
		for _, r := range recs {
			if r.Seq >= 2 {
				got = append(got, r.Seq)
			}
		}
		if len(got) != 2 || got[0] != 2 {
			t.Fatalf("delivered %v, want [2 3]", got)
		}
		// Resuming at last+1 (caught up) is fine.
		if _, _, err := consume(quic.ConsumeOpen{Shards: []uint32{1}, Resume: []quic.Position{{Shard: 1, Seq: 4}}}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("a token sent to a hub without auth is ignored", func(t *testing.T) {
		st, _ := produceRaw(t, d.raw(t, "no-such-token-0123456789"), quic.ProduceOpen{Stream: "s"})
		defer st.Close()
		if ack := sendBatch(t, st, quic.Batch{ID: 1, Shard: 0, Records: good}); ack.Err() != nil {
			t.Fatal(ack.Err())
		}
	})
	t.Run("a missed OPEN deadline is limit", func(t *testing.T) {
		qs := rawOpen(t, rawConn(t, d.addr, d.ca), []byte{byte(quic.FrameOpen)})
		if e := hubError(t, qs); e.Code != quic.CodeLimit || !strings.Contains(e.Message, "handshake_timeout") {
			t.Fatalf("got %v, want limit naming handshake_timeout", e)
		}
	})
	t.Run("TLS server name", func(t *testing.T) {
		pool, err := quic.CertPool(d.ca)
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name string
			ok   bool
		}{{"", true}, {"localhost", true}, {"wrong.example", false}} {
			dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			qc, err := quic.Dial(dctx, d.addr, quic.ClientConfig{TLS: &tls.Config{RootCAs: pool, ServerName: tc.name}})
			cancel()
			if (err == nil) != tc.ok {
				t.Fatalf("server name %q: %v, want ok=%v", tc.name, err, tc.ok)
			}
			if err == nil {
				qc.Close()
			} else if !quic.IsHandshakeFailure(errors.Unwrap(err)) && !quic.IsHandshakeFailure(err) {
				t.Fatalf("server name %q: %v, want a handshake failure", tc.name, err)
			}
		}
	})
	t.Run("panics are counted in /metrics", func(t *testing.T) {
		if v := counterValue(t, d.h, "edgehub_quic_handler_panics_total"); v != 0 {
			t.Fatalf("panics %v", v)
		}
	})
}

func TestLimitsBudgetConfig(t *testing.T) {
	cfg, err := ParseConfig("hub.toml", []byte("[limits]\nmemory_budget = \"64MiB\"\nframe_timeout = \"5s\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if l := cfg.Limits.withDefaults(); l.MemoryBudget != 64<<20 || time.Duration(l.FrameTimeout) != 5*time.Second {
		t.Fatalf("limits %+v", l)
	}
	if l := DefaultConfig().Limits.withDefaults(); l.MemoryBudget != DefaultMemoryBudget || time.Duration(l.FrameTimeout) != 30*time.Second {
		t.Fatalf("defaults %+v", l)
	}
	_, err = ParseConfig("hub.toml", []byte("[limits]\nmemory_budget = \"8MiB\"\nframe_timeout = \"1ms\"\n"))
	for _, want := range []string{"limits.memory_budget: 8MiB below", "limits.frame_timeout: 1ms below 100ms"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("want %q reported, got %v", want, err)
		}
	}
}

// TestCut: a chunk cut to a limit gives the records from the position on,
// as many as fit (at least one), with their sequences, times and origins.
func TestCut(t *testing.T) {
	var recs []record.Record
	for i := range 50 {
		recs = append(recs, record.Record{Seq: uint64(100 + i), IngestTime: int64(1000 + i), Time: int64(i),
			Key: []byte{byte(i)}, Value: bytes.Repeat([]byte{byte(i)}, 100*(i%3+1)),
			Headers: []record.Header{{Key: "h", Value: []byte("v")}}})
	}
	recs[49].Value = make([]byte, 5000) // larger than the smallest limit
	chunk, err := record.AppendBatch(nil, recs)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		next  uint64
		limit int64
	}{
		{"from the start", 100, 1000},
		{"from the middle", 120, 2000},
		{"one small limit", 130, 1},
		{"the big last record", 149, 1000},
		{"everything fits", 100, 1 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			part, last, n, err := cut(chunk, tc.next, tc.limit)
			if err != nil {
				t.Fatal(err)
			}
			got, err := record.DecodeBatch(part, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != n || n == 0 || got[0].Seq != tc.next || got[n-1].Seq != last {
				t.Fatalf("%d records %d..%d, reported %d up to %d", len(got), got[0].Seq, got[len(got)-1].Seq, n, last)
			}
			if n > 1 && int64(len(part)) > tc.limit {
				t.Fatalf("%d records in %d bytes, limit %d", n, len(part), tc.limit)
			}
			for i, r := range got {
				want := recs[int(tc.next-100)+i]
				if r.Seq != want.Seq || r.IngestTime != want.IngestTime || r.Time != want.Time || !bytes.Equal(r.Value, want.Value) || len(r.Headers) != 1 {
					t.Fatalf("record %d: %+v, want %+v", i, r, want)
				}
			}
		})
	}
}

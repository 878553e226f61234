package hub

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/quic"
	"github.com/edgehub/edgehub/sdk"
	"github.com/edgehub/edgehub/store"
)

// keyed encodes records with the given keys (value = key + "/" + tag).
func keyed(tb testing.TB, tag string, keys ...string) []byte {
	tb.Helper()
	return keyedPadded(tb, 0, tag, keys...)
}

// keyedPadded is keyed with pad bytes added to each value.
func keyedPadded(tb testing.TB, pad int, tag string, keys ...string) []byte {
	tb.Helper()
	recs := make([]record.Record, len(keys))
	for i, k := range keys {
		recs[i].Key, recs[i].Value = []byte(k), append(fmt.Appendf(nil, "%s/%s", k, tag), make([]byte, pad)...)
	}
	b, err := record.AppendBatch(nil, recs)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// TestLineageLayoutVersion0: on a stream never resharded, lineage sessions
// get layout version 0 in their READY frames and a LAYOUT right after it,
// and INFO carries the same entries; a session without the flag gets no
// LAYOUT (its first frame after READY is the ACK or RECORDS it expects).
func TestLineageLayoutVersion0(t *testing.T) {
	d := startDataPlane(t, nil, store.StreamConfig{Name: "s", Shards: 2})
	c := d.raw(t, "")
	ctx := testCtx(t)
	check := func(what string, l quic.Layout) {
		t.Helper()
		if l.Version != 0 || l.NextID != 2 || len(l.Shards) != 2 {
			t.Fatalf("%s: layout %+v", what, l)
		}
		for i, sh := range l.Shards {
			lo, hi := record.HashRange(i, 2)
			if sh.ID != uint32(i) || sh.State != quic.ShardOpen || sh.HashStart != lo || sh.HashEnd != hi || len(sh.Parents) != 0 {
				t.Fatalf("%s: shard %d %+v", what, i, sh)
			}
		}
	}

	cs, err := c.Open(ctx, quic.OpConsume, &quic.ConsumeOpen{Stream: "s", Credit: 1 << 20, Flags: quic.ConsumeLineage})
	if err != nil {
		t.Fatal(err)
	}
	var cr quic.ConsumeReady
	if err := cs.Expect(quic.FrameConsumeReady, &cr); err != nil || cr.LayoutVersion != 0 || len(cr.Subs) != 2 {
		t.Fatalf("consume ready %+v %v", cr, err)
	}
	var cl quic.Layout
	if err := cs.Expect(quic.FrameConsumeLayout, &cl); err != nil {
		t.Fatal(err)
	}
	check("consume LAYOUT", cl)

	ps, pr := produceRaw(t, c, quic.ProduceOpen{Stream: "s", Flags: quic.ProduceLineage})
	if pr.LayoutVersion != 0 || pr.Shards != 2 {
		t.Fatalf("produce ready %+v", pr)
	}
	var pl quic.Layout
	if err := ps.Expect(quic.FrameProduceLayout, &pl); err != nil {
		t.Fatal(err)
	}
	check("produce LAYOUT", pl)
	if ack := sendBatch(t, ps, quic.Batch{ID: 1, Shard: -1, Records: keyed(t, "a", "k1")}); ack.Code != quic.CodeOK {
		t.Fatalf("ack %+v", ack)
	}
	var rf quic.Records
	if err := cs.Expect(quic.FrameRecords, &rf); err != nil {
		t.Fatal(err)
	}

	is, err := c.Open(ctx, quic.OpInfo, &quic.InfoRequest{Stream: "s"})
	if err != nil {
		t.Fatal(err)
	}
	var info quic.Info
	if err := is.Expect(quic.FrameInfo, &info); err != nil || info.Layout == nil || len(info.Shards) != 2 {
		t.Fatalf("info %+v %v", info, err)
	}
	check("INFO", *info.Layout)

	// Without the flag: no LAYOUT before the ACK.
	old, _ := produceRaw(t, c, quic.ProduceOpen{Stream: "s"})
	if ack := sendBatch(t, old, quic.Batch{ID: 1, Shard: -1, Records: keyed(t, "b", "k2")}); ack.Code != quic.CodeOK {
		t.Fatalf("ack %+v", ack)
	}
}

// TestOldClientAcrossSplit speaks the frames of clients before resharding
// (no flags) to a stream split under them: an "all shards" subscription
// gets every record of the parent before any of its children, and follows
// children it never saw in CONSUME_READY; a misrouted explicit-shard batch
// (to the closed parent, or to a child not owning the key) is refused with
// shard_closed and stores nothing, while a resend of a batch stored in the
// parent before the split is still a duplicate.
func TestOldClientAcrossSplit(t *testing.T) {
	d := startDataPlane(t, nil, store.StreamConfig{Name: "s", Shards: 1})
	c := d.raw(t, "")
	ctx := testCtx(t)
	st, err := d.h.Store().Stream("s")
	if err != nil {
		t.Fatal(err)
	}
	keys := make([]string, 40)
	for i := range keys {
		keys[i] = fmt.Sprintf("key-%d", i)
	}
	ps, _ := produceRaw(t, c, quic.ProduceOpen{Stream: "s", ProducerID: 7})
	// 40 records of 16 KiB: more than a subscription's first sends take,
	// so the parent is still being read when its children appear.
	before := keyedPadded(t, 16<<10, "before", keys...)
	if ack := sendBatch(t, ps, quic.Batch{ID: 1, Shard: 0, ProducerSeq: 0, Records: before}); ack.Code != quic.CodeOK {
		t.Fatalf("ack %+v", ack)
	}
	// The subscription opens before the split, reading from the start
	// with a small credit, so the parent is not finished when the
	// children appear.
	cs, err := c.Open(ctx, quic.OpConsume, &quic.ConsumeOpen{Stream: "s", Credit: 1})
	if err != nil {
		t.Fatal(err)
	}
	var cr quic.ConsumeReady
	if err := cs.Expect(quic.FrameConsumeReady, &cr); err != nil || len(cr.Subs) != 1 {
		t.Fatalf("consume ready %+v %v", cr, err)
	}
	l, err := st.Split(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if l.Version != 1 || len(l.Open()) != 2 {
		t.Fatalf("layout after split %+v", l)
	}
	parentEnd := l.Shards[0].End

	// Routed batches (shard -1) from old clients work unchanged.
	rp, _ := produceRaw(t, c, quic.ProduceOpen{Stream: "s"})
	if ack := sendBatch(t, rp, quic.Batch{ID: 1, Shard: -1, Records: keyed(t, "after", keys...)}); ack.Code != quic.CodeOK {
		t.Fatalf("routed ack %+v", ack)
	}
	// The old idempotent producer resends its stored batch: duplicate.
	if ack := sendBatch(t, ps, quic.Batch{ID: 2, Shard: 0, ProducerSeq: 0, Records: before}); ack.Code != quic.CodeOK || !ack.Duplicate {
		t.Fatalf("resend ack %+v", ack)
	}
	// A new batch to the closed parent: shard_closed, with the layout.
	if ack := sendBatch(t, ps, quic.Batch{ID: 3, Shard: 0, ProducerSeq: uint64(len(keys)), Records: keyed(t, "late", keys[0])}); ack.Code != quic.CodeShardClosed || ack.LayoutVersion != 1 {
		t.Fatalf("batch to a closed shard: %+v", ack)
	}
	// A key routed by the old count (ShardForKey(k, 3 ids) or any stale
	// rule) to a child that does not own it.
	var wrong string
	var wrongShard int32
	for _, k := range keys {
		if own := l.ShardFor(record.KeyHash([]byte(k))); own == 1 {
			wrong, wrongShard = k, 2
			break
		}
	}
	if ack := sendBatch(t, ps, quic.Batch{ID: 4, Shard: wrongShard, ProducerSeq: 0, Records: keyed(t, "misrouted", wrong)}); ack.Code != quic.CodeShardClosed {
		t.Fatalf("misrouted legacy batch: %+v", ack)
	}
	// Nothing of the refused batches was stored.
	for _, id := range []int{1, 2} {
		if _, last, _ := st.Bounds(id); last != uint64(countOwned(l, uint32(id), keys)) {
			t.Fatalf("shard %d holds %d records, want %d", id, last, countOwned(l, uint32(id), keys))
		}
	}

	// Read everything, one frame per credit grant (each grant returns the
	// frame's bytes, so the credit stays at 1): parent first, in full.
	seen := map[uint32]int{}
	frames := 0
	total := 2 * len(keys)
	got := 0
	for got < total {
		var rf quic.Records
		if err := cs.Expect(quic.FrameRecords, &rf); err != nil {
			t.Fatal(err)
		}
		if err := cs.Send(quic.FrameCredit, &quic.Credit{Bytes: uint64(len(rf.Batch))}); err != nil {
			t.Fatal(err)
		}
		frames++
		recs, err := record.DecodeBatch(rf.Batch, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			if rf.Shard != 0 && seen[0] < int(parentEnd) {
				t.Fatalf("record of child %d (seq %d) after %d of the parent's %d records", rf.Shard, r.Seq, seen[0], parentEnd)
			}
			seen[rf.Shard]++
			got++
		}
	}
	if seen[0] != len(keys) || seen[1]+seen[2] != len(keys) {
		t.Fatalf("read %v", seen)
	}
	t.Logf("%d RECORDS frames", frames)
}

func countOwned(l store.Layout, id uint32, keys []string) int {
	n := 0
	for _, k := range keys {
		if l.ShardFor(record.KeyHash([]byte(k))) == id {
			n++
		}
	}
	return n
}

// TestLineageSubscriptionAcrossSplit: a lineage subscription gets the new
// LAYOUT at the split, SHARD_END once the parent's end is sent, and the
// children after it; a resume naming the parent finished starts the
// children at their first record; a position past a closed shard's end is
// invalid_argument.
func TestLineageSubscriptionAcrossSplit(t *testing.T) {
	d := startDataPlane(t, nil, store.StreamConfig{Name: "s", Shards: 1})
	c := d.raw(t, "")
	ctx := testCtx(t)
	st, err := d.h.Store().Stream("s")
	if err != nil {
		t.Fatal(err)
	}
	keys := []string{"a", "b", "c", "d", "e", "f", "g", "h"}
	ps, _ := produceRaw(t, c, quic.ProduceOpen{Stream: "s"})
	if ack := sendBatch(t, ps, quic.Batch{ID: 1, Shard: -1, Records: keyed(t, "p", keys...)}); ack.Code != quic.CodeOK {
		t.Fatalf("ack %+v", ack)
	}
	cs, err := c.Open(ctx, quic.OpConsume, &quic.ConsumeOpen{Stream: "s", Credit: 1 << 20, Flags: quic.ConsumeLineage})
	if err != nil {
		t.Fatal(err)
	}
	var cr quic.ConsumeReady
	var lf quic.Layout
	var rf quic.Records
	if err := cs.Expect(quic.FrameConsumeReady, &cr); err != nil {
		t.Fatal(err)
	}
	if err := cs.Expect(quic.FrameConsumeLayout, &lf); err != nil || lf.Version != 0 {
		t.Fatalf("layout %+v %v", lf, err)
	}
	if err := cs.Expect(quic.FrameRecords, &rf); err != nil || rf.Shard != 0 {
		t.Fatalf("records %+v %v", rf, err)
	}
	if _, err := st.Split(ctx, 0, 0); err != nil {
		t.Fatal(err)
	}
	if ack := sendBatch(t, ps, quic.Batch{ID: 2, Shard: -1, Records: keyed(t, "c", keys...)}); ack.Code != quic.CodeOK {
		t.Fatalf("ack %+v", ack)
	}
	if err := cs.Expect(quic.FrameConsumeLayout, &lf); err != nil || lf.Version != 1 || len(lf.Shards) != 3 || lf.Shards[0].State != quic.ShardClosed {
		t.Fatalf("layout after split %+v %v", lf, err)
	}
	var se quic.ShardEnd
	if err := cs.Expect(quic.FrameShardEnd, &se); err != nil || se.Shard != 0 || se.End != uint64(len(keys)) {
		t.Fatalf("shard end %+v %v", se, err)
	}
	children := 0
	for children < len(keys) {
		if err := cs.Expect(quic.FrameRecords, &rf); err != nil || rf.Shard == 0 {
			t.Fatalf("records %+v %v", rf, err)
		}
		recs, err := record.DecodeBatch(rf.Batch, nil)
		if err != nil {
			t.Fatal(err)
		}
		children += len(recs)
	}

	// Resume with the parent finished and no child position, from latest:
	// the children are read from their first record.
	rs, err := c.Open(ctx, quic.OpConsume, &quic.ConsumeOpen{Stream: "s", Credit: 1 << 20, Start: quic.Start{Kind: quic.StartLatest},
		Resume: []quic.Position{{Shard: 0, Seq: uint64(len(keys)) + 1}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.Expect(quic.FrameConsumeReady, &cr); err != nil || len(cr.Subs) != 3 {
		t.Fatalf("resume ready %+v %v", cr, err)
	}
	for _, s := range cr.Subs {
		if s.Shard != 0 && s.Start != 1 {
			t.Fatalf("child %d starts at %d, want 1", s.Shard, s.Start)
		}
	}
	// Past the end of the closed parent.
	bs, err := c.Open(ctx, quic.OpConsume, &quic.ConsumeOpen{Stream: "s", Credit: 1 << 20, Resume: []quic.Position{{Shard: 0, Seq: uint64(len(keys)) + 2}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := bs.Expect(quic.FrameConsumeReady, &cr); quic.CodeOf(err) != quic.CodeInvalidArgument {
		t.Fatalf("resume past the end of a closed shard: %v", err)
	}
}

// TestSDKSubscriptionAcrossSplit: a real SDK subscription (n = 0, lineage)
// reads a stream split under it: every record once, each key's records in
// the order they were produced (parent before child), and Shards() the open
// count once the new layout arrived.
func TestSDKSubscriptionAcrossSplit(t *testing.T) {
	d := startDataPlane(t, nil, store.StreamConfig{Name: "s", Shards: 1})
	ctx := testCtx(t)
	st, err := d.h.Store().Stream("s")
	if err != nil {
		t.Fatal(err)
	}
	c := d.client(t, nil)
	sub, err := c.Subscribe(ctx, "s", sdk.ConsumeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	rp, _ := produceRaw(t, d.raw(t, ""), quic.ProduceOpen{Stream: "s"})
	keys := make([]string, 30)
	for i := range keys {
		keys[i] = fmt.Sprintf("k%d", i)
	}
	const rounds = 6
	for r := range rounds {
		if r == rounds/2 {
			if _, err := st.Split(ctx, 0, 0); err != nil {
				t.Fatal(err)
			}
		}
		if ack := sendBatch(t, rp, quic.Batch{ID: uint64(r + 1), Shard: -1, Records: keyed(t, fmt.Sprint(r), keys...)}); ack.Code != quic.CodeOK {
			t.Fatalf("ack %+v", ack)
		}
	}
	readKeyRounds(t, ctx, sub, keys, rounds)
	if sub.Shards() != 2 {
		t.Fatalf("Shards() = %d after the split, want 2", sub.Shards())
	}
}

// TestSubscriptionThroughEmptyShard: a shard that held nothing between two
// reshards (merged, then split at once), left closed and empty or retired
// by maintenance, does not release its children before its own parents
// are read: every key's records arrive in the order they were produced.
// Without the rule, the grandchildren were sent alongside the grandparent
// and a key read round 2 before round 1.
func TestSubscriptionThroughEmptyShard(t *testing.T) {
	for _, retire := range []bool{false, true} {
		t.Run(fmt.Sprintf("retired=%v", retire), func(t *testing.T) {
			d := startDataPlane(t, nil, store.StreamConfig{Name: "s", Shards: 1})
			ctx := testCtx(t)
			st, err := d.h.Store().Stream("s")
			if err != nil {
				t.Fatal(err)
			}
			rp, _ := produceRaw(t, d.raw(t, ""), quic.ProduceOpen{Stream: "s"})
			keys := make([]string, 30)
			for i := range keys {
				keys[i] = fmt.Sprintf("k%d", i)
			}
			send := func(r int) {
				t.Helper()
				if ack := sendBatch(t, rp, quic.Batch{ID: uint64(r + 1), Shard: -1, Records: keyed(t, fmt.Sprint(r), keys...)}); ack.Code != quic.CodeOK {
					t.Fatalf("ack %+v", ack)
				}
			}
			send(0)                                        // shard 0
			if _, err := st.Split(ctx, 0, 0); err != nil { // 1, 2
				t.Fatal(err)
			}
			send(1)
			if _, err := st.Merge(ctx, 1, 2); err != nil { // 3, left empty
				t.Fatal(err)
			}
			if _, err := st.Split(ctx, 3, 0); err != nil { // 4, 5
				t.Fatal(err)
			}
			send(2)
			if retire {
				if err := st.Enforce(ctx, false); err != nil {
					t.Fatal(err)
				}
				if s := st.Layout().Shards[3].State; s != store.ShardRetired {
					t.Fatalf("shard 3 is %v after maintenance, want retired", s)
				}
			}
			c := d.client(t, nil)
			sub, err := c.Subscribe(ctx, "s", sdk.ConsumeOptions{From: sdk.FromEarliest()})
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close()
			const rounds = 3
			readKeyRounds(t, ctx, sub, keys, rounds)
		})
	}
}

// readKeyRounds reads rounds records of each key from sub, values
// "KEY/ROUND", and fails unless each key's rounds come 0, 1, 2, ... in order
// and reach rounds-1.
func readKeyRounds(t *testing.T, ctx context.Context, sub *sdk.Subscription, keys []string, rounds int) {
	t.Helper()
	lastRound := map[string]int{}
	for range rounds * len(keys) {
		m, err := sub.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		k, rs, _ := strings.Cut(string(m.Record.Value), "/")
		r, err := strconv.Atoi(rs)
		if err != nil {
			t.Fatalf("value %q: %v", m.Record.Value, err)
		}
		if prev, ok := lastRound[k]; ok && r != prev+1 || !ok && r != 0 {
			t.Fatalf("key %s: round %d after %d (shard %d)", k, r, prev, m.Shard)
		}
		lastRound[k] = r
	}
	for _, k := range keys {
		if lastRound[k] != rounds-1 {
			t.Fatalf("key %s read to round %d", k, lastRound[k])
		}
	}
}

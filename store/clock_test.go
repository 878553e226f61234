package store

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/edgehub/edgehub/internal/record"
)

// steppedClocks is a wall clock that tests step like settimeofday or an NTP
// step, and a tick clock (the monotonic clock) that only real elapsed time
// moves.
type steppedClocks struct{ wall, ticks testClock }

func newSteppedStore(t *testing.T) (*steppedClocks, *Store) {
	t.Helper()
	c := &steppedClocks{}
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	c.wall.ns.Store(start)
	c.ticks.ns.Store(start)
	cfg := testConfig(t, t.TempDir())
	cfg.Now, cfg.Ticks = c.wall.Now, c.ticks.Now
	return c, openStore(t, cfg)
}

// elapse lets d really pass: both clocks move.
func (c *steppedClocks) elapse(d time.Duration) { c.wall.Advance(d); c.ticks.Advance(d) }

func producerAppend(t *testing.T, st *Stream, seq uint64, values ...string) Result {
	t.Helper()
	recs := make([]record.Record, len(values))
	for i, v := range values {
		recs[i] = record.Record{Value: []byte(v)}
	}
	res, err := st.Append(context.Background(), Batch{Shard: 0, Records: recs, ProducerID: 7, ProducerSeq: seq})
	if err != nil {
		t.Fatalf("append producer seq %d: %v", seq, err)
	}
	return res
}

// TestClockStepForwardAgesNothing: the wall clock jumps 30 days ahead while
// the store runs with retention 168h and producer expiry 7 days. Retention
// must not delete the records ingested just before the jump, and the
// producer must not be forgotten (its retry is still a duplicate); both
// happen only once 168h have really passed. Before ageNow, Enforce measured
// ages by the wall clock and deleted every record at the first run after
// the jump, and forgot the producer, so its retry was stored twice.
func TestClockStepForwardAgesNothing(t *testing.T) {
	c, s := newSteppedStore(t)
	st := newStream(t, s, StreamConfig{Name: "jump", Shards: 1, Retention: 168 * time.Hour})
	ctx := context.Background()
	var seq uint64 = 1
	for i := range 10 {
		producerAppend(t, st, seq, fmt.Sprint("before-", i))
		seq++
		c.elapse(time.Minute)
	}
	c.wall.Advance(30 * 24 * time.Hour) // the step
	c.elapse(time.Second)
	if err := st.Enforce(ctx, false); err != nil {
		t.Fatal(err)
	}
	if got := len(readAll(t, st, 0)); got != 10 {
		t.Fatalf("after a 30-day forward step, %d of 10 records are left", got)
	}
	// The last batch's retry is recognised: the producer was not expired.
	if res := producerAppend(t, st, seq-1, "before-9"); !res.Duplicate || res.Positions[0].Seq != 10 {
		t.Fatalf("retry after the step: %+v, want duplicate of seq 10", res)
	}
	producerAppend(t, st, seq, "after")
	recs := readAll(t, st, 0)
	if len(recs) != 11 || recs[10].IngestTime <= recs[9].IngestTime {
		t.Fatalf("after the step: %d records, ingest %d after %d", len(recs), recs[10].IngestTime, recs[9].IngestTime)
	}
	// Once the retention has really passed, the records from before the
	// step go; the one ingested after it is 30 days "younger" and stays.
	c.elapse(168*time.Hour + time.Minute)
	if err := st.Enforce(ctx, false); err != nil {
		t.Fatal(err)
	}
	left := readAll(t, st, 0)
	if len(left) != 1 || string(left[0].Value) != "after" {
		t.Fatalf("after 168h held: %d records left, want only the one ingested after the step", len(left))
	}
}

// TestClockStepBackward: the wall clock goes back an hour. Ingest times
// never go back within a shard, sequences keep increasing, the producer's
// deduplication is unaffected and retention deletes nothing early.
func TestClockStepBackward(t *testing.T) {
	c, s := newSteppedStore(t)
	st := newStream(t, s, StreamConfig{Name: "back", Shards: 1, Retention: 2 * time.Hour})
	producerAppend(t, st, 1, "a", "b")
	c.wall.Advance(-time.Hour)
	c.elapse(time.Second)
	if res := producerAppend(t, st, 1, "a", "b"); !res.Duplicate {
		t.Fatalf("retry after a backward step stored again: %+v", res)
	}
	producerAppend(t, st, 3, "c")
	c.elapse(90 * time.Minute) // held 90 min: within the retention
	if err := st.Enforce(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	recs := readAll(t, st, 0)
	if len(recs) != 3 {
		t.Fatalf("%d records after a backward step and 90 minutes, want 3", len(recs))
	}
	for i := 1; i < len(recs); i++ {
		if recs[i].Seq != recs[i-1].Seq+1 || recs[i].IngestTime < recs[i-1].IngestTime {
			t.Fatalf("record %d: seq %d ingest %d after seq %d ingest %d", i, recs[i].Seq, recs[i].IngestTime, recs[i-1].Seq, recs[i-1].IngestTime)
		}
	}
}

package plugins

import (
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgehub/edgehub/internal/plugintest"
	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/internal/testutil"
)

// TestTimerFiringReplay plays the two crashes a timer firing can meet: after
// the firing was recorded but before its outputs were stored, and after they
// were stored but before state and checkpoint committed. Both restarts must
// leave each timer output stored exactly once, with the recorded time.
func TestTimerFiringReplay(t *testing.T) {
	wasm := plugintest.Wasm(t, "wasmhost/testdata/counter")
	e := newEnv(t)
	in := e.stream("in", 1)
	e.deploy(Definition{Name: "count", Inputs: []string{"in"}, Outputs: []string{"counts"}, Start: StartEarliest,
		Config: map[string]string{"output": "counts"}, TimerInterval: time.Hour}, wasm)
	e.produce(in, rec("a", "x"), rec("b", "x"), rec("a", "x"))
	out, _ := e.st.Stream("counts")
	readAll(t, out, 3)
	testutil.Eventually(t, "checkpoint", func() bool { i, _ := e.m.Describe("count"); return i.Shards[0].Checkpoint == 4 })
	e.stop()

	// Crash 1: the firing is recorded, nothing else happened.
	const firedAt = int64(1_700_000_000_123_456_789)
	var state map[string][]byte
	setPending := func() {
		t.Helper()
		db, err := openDB(e.dir, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		err = db.Update(func(tx *bolt.Tx) error {
			rb, err := runBucket(tx, "count", "in", 0, false)
			if err != nil || rb == nil {
				t.Fatalf("no run bucket: %v", err)
			}
			cp, err := decodeCheckpoint(rb.Get(keyCheckpoint))
			if err != nil {
				return err
			}
			cp.PendingSeq, cp.PendingNow = cp.TimerSeq+1, firedAt
			st := rb.Bucket(bucketState)
			if state == nil {
				state = map[string][]byte{}
				st.ForEach(func(k, v []byte) error { state[string(k)] = slices.Clone(v); return nil })
			} else {
				// Crash 2: put back the state the firing had cleared, as
				// if its commit never happened.
				cp.TimerSeq--
				cp.PendingSeq = cp.TimerSeq + 1
				for k, v := range state {
					if err := st.Put([]byte(k), v); err != nil {
						return err
					}
				}
			}
			return rb.Put(keyCheckpoint, cp.encode())
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	setPending()
	e.start()
	totals := func() []record.Record {
		t.Helper()
		var got []record.Record
		for _, r := range readAll(t, out, 5) {
			if strings.HasPrefix(string(r.Value), "total=") {
				got = append(got, r)
			}
		}
		return got
	}
	testutil.Eventually(t, "replay", func() bool { i, _ := e.m.Describe("count"); return i.StateKeys == 0 })
	first := totals()
	if len(first) != 2 {
		t.Fatalf("%d timer outputs after replay, want 2", len(first))
	}
	for _, r := range first {
		if r.Time != firedAt || r.Origin.Seq>>32 != 1 {
			t.Fatalf("replayed output %q: time %d origin %+v; want the recorded time and firing 1", r.Value, r.Time, r.Origin)
		}
	}
	e.stop()

	setPending()
	e.start()
	testutil.Eventually(t, "second replay", func() bool { i, _ := e.m.Describe("count"); return i.StateKeys == 0 })
	e.stop()
	e.start()
	if second := totals(); len(second) != 2 {
		t.Fatalf("%d timer outputs after the second replay, want still 2 (deduplicated)", len(second))
	}
	if n := len(readAll(t, out, 5)); n != 5 {
		t.Fatalf("counts holds %d records, want 5", n)
	}
}

func FuzzDecodeCheckpoint(f *testing.F) {
	f.Add(checkpoint{Next: 5, TimerSeq: 2, PendingSeq: 3, PendingNow: -1, StateBytes: 10, StateKeys: 1, RecordsIn: 4, RecordsOut: 9, Dead: 1}.encode())
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		cp, err := decodeCheckpoint(b)
		if err != nil {
			return
		}
		if got := cp.encode(); string(got) != string(b) {
			t.Fatalf("re-encoding differs")
		}
	})
}

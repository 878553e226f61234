package plugins

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/internal/testutil"
	"github.com/edgehub/edgehub/store"
)

func values(recs []record.Record) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = string(r.Value)
	}
	return out
}

func produceN(e *env, s *store.Stream, prefix string, n int) []string {
	var recs []record.Record
	var want []string
	for i := 1; i <= n; i++ {
		v := fmt.Sprintf("%s%d", prefix, i)
		recs = append(recs, rec("", v))
		want = append(want, v)
	}
	e.produce(s, recs...)
	return want
}

// caughtUp waits until every runner of name checkpointed past its input.
func caughtUp(tb testing.TB, e *env, name string) Info {
	tb.Helper()
	var info Info
	testutil.Eventually(tb, name+" caught up", func() bool {
		info, _ = e.m.Describe(name)
		if info.Status != StatusRunning || len(info.Shards) == 0 {
			return false
		}
		for _, s := range info.Shards {
			if s.Checkpoint != s.LastSeq+1 {
				return false
			}
		}
		return true
	})
	return info
}

// The regression of issue 8: a plugin kept its checkpoint on an input
// deleted and created again, and copied only the new records after the old
// sequence (new records 1-6 were never copied). Now the plugin starts over
// on the new incarnation: every record of it is copied, once, and so is
// everything after a restart.
func TestRecreatedInputStartsOver(t *testing.T) {
	e := newEnv(t)
	in := e.stream("in", 1)
	out := e.stream("out", 1)
	e.deploy(Definition{Name: "copy", Inputs: []string{"in"}, Outputs: []string{"out"}, Config: map[string]string{"output": "out"},
		Start: StartEarliest}, readTestdata(t, watPassThrough))
	first := produceN(e, in, "old", 6)
	readAll(t, out, 6)
	caughtUp(t, e, "copy")

	ctx := context.Background()
	if err := e.st.DeleteStream(ctx, "in"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "waiting for the deleted input", func() bool {
		i, _ := e.m.Describe("copy")
		return i.Status == StatusWaiting && strings.Contains(i.Waiting, `"in"`)
	})
	in = e.stream("in", 1)
	second := produceN(e, in, "new", 40)
	want := append(slices.Clone(first), second...)
	readAll(t, out, len(want)) // until they are all there
	info := caughtUp(t, e, "copy")
	got := values(readAll(t, out, len(want)))
	if !slices.Equal(got, want) {
		t.Fatalf("output holds %d records %v\nwant %d: every record of both incarnations once", len(got), got, len(want))
	}
	if info.Shards[0].Checkpoint != 41 || info.Shards[0].RecordsIn != 40 {
		t.Fatalf("after starting over: %+v", info.Shards[0])
	}

	// A restart keeps the new binding: nothing is copied again.
	e.stop()
	e.start()
	more := produceN(e, in, "after", 3)
	want = append(want, more...)
	readAll(t, out, len(want))
	caughtUp(t, e, "copy")
	if got := values(readAll(t, out, len(want))); !slices.Equal(got, want) {
		t.Fatalf("after a restart the output holds %v", got)
	}
}

// A deleted output stream is noticed at once, not at the next append: the
// plugin waits with the reason in its status, never dead-letters or loses
// a record for it, and starts by itself once the stream exists again.
func TestDeletedOutputMakesPluginWait(t *testing.T) {
	e := newEnv(t)
	in := e.stream("in", 1)
	e.deploy(Definition{Name: "copy", Inputs: []string{"in"}, Outputs: []string{"out"}, Config: map[string]string{"output": "out"},
		Start: StartEarliest, OnError: PolicyDeadLetter, DeadLetter: "dead"}, readTestdata(t, watPassThrough))
	produceN(e, in, "a", 2)
	out, err := e.st.Stream("out")
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, out, 2)
	caughtUp(t, e, "copy")
	if err := e.st.DeleteStream(context.Background(), "out"); err != nil {
		t.Fatal(err)
	}
	// No record is produced: only the watcher can notice.
	testutil.Eventually(t, "waiting", func() bool {
		i, _ := e.m.Describe("copy")
		return i.Status == StatusWaiting && strings.Contains(i.Waiting, `output stream "out"`)
	})
	if l := e.m.List(); len(l) != 1 || l[0].Status != StatusWaiting || l[0].Paused {
		t.Fatalf("list: %+v", l)
	}
	later := produceN(e, in, "b", 3)
	out = e.stream("out", 1)
	got := values(readAll(t, out, 3))
	info := caughtUp(t, e, "copy")
	if !slices.Equal(got, later) || info.DeadLettered != 0 || info.Paused {
		t.Fatalf("recreated output holds %v (want %v), %d dead letters, paused %v", got, later, info.DeadLettered, info.Paused)
	}
}

// A damaged binding is reported, not taken for a recreated stream: the
// plugin waits with the reason, its checkpoints untouched.
func TestDamagedBindingIsReported(t *testing.T) {
	e := newEnv(t)
	in := e.stream("in", 1)
	e.deploy(Definition{Name: "copy", Inputs: []string{"in"}, Outputs: []string{"out"}, Config: map[string]string{"output": "out"},
		Start: StartEarliest}, readTestdata(t, watPassThrough))
	produceN(e, in, "a", 3)
	caughtUp(t, e, "copy")
	e.stop()
	db, err := openDB(e.dir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketBindings).Put(bindingKey("copy", "in"), []byte("garbage"))
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	e.start()
	testutil.Eventually(t, "waiting on the damaged binding", func() bool {
		i, _ := e.m.Describe("copy")
		return i.Status == StatusWaiting && strings.Contains(i.Waiting, "corrupt")
	})
	if i, _ := e.m.Describe("copy"); i.Shards[0].Checkpoint != 4 {
		t.Fatalf("checkpoint %d after a damaged binding, want 4 (untouched)", i.Shards[0].Checkpoint)
	}
}

package plugins

import (
	"fmt"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/internal/testutil"
)

// stateWasm is testdata/state.wat: 'R' reads and sets the record key's
// state, 'L' reads it and loops until the deadline, 'G' sets 10 KiB under
// the record's seq.
const stateWasm = "testdata/state.wasm"

// TestLongCallDoesNotStallCommits: a guest call that reads state and then
// runs for a long time holds no read transaction on plugins.db, so another
// plugin whose commits must grow the file (bbolt remaps it only when no
// read transaction is open) goes on meanwhile. A runner used to keep the
// transaction of its first state read until the call ended: every
// plugin's commits waited for the looping call's deadline.
func TestLongCallDoesNotStallCommits(t *testing.T) {
	// An execution slot each, and no slot lease to move the slow call to
	// the quarantine slot: on a loaded machine the growing plugin's calls
	// could overrun a short lease and queue behind it there.
	e := newEnvTuned(t, func(c *Config) { c.MaxConcurrentCalls, c.SlotLease = 2, time.Hour })
	slowIn, growIn := e.stream("slow-in", 1), e.stream("grow-in", 1)
	wasm := readTestdata(t, stateWasm)
	e.deploy(Definition{Name: "slow", Inputs: []string{"slow-in"}, Start: StartEarliest, CallTimeout: time.Hour}, wasm)
	e.deploy(Definition{Name: "grow", Inputs: []string{"grow-in"}, Start: StartEarliest}, wasm)

	e.produce(slowIn, rec("k", "L"))
	var since time.Time
	testutil.Eventually(t, "the slow call to read its state", func() bool {
		lines, err := e.m.Logs("slow", 10)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range lines {
			if strings.Contains(l.Message, "state read") {
				info, err := e.m.Describe("slow")
				if err != nil {
					t.Fatal(err)
				}
				since = info.Shards[0].InCallSince
				return !since.IsZero()
			}
		}
		return false
	})

	// 10 KiB of state a record: 4 MB, many times plugins.db's map.
	const n = 400
	for i := 0; i < n; i += 50 {
		recs := make([]record.Record, 50)
		for j := range recs {
			recs[j] = rec("g", "G")
		}
		e.produce(growIn, recs...)
	}
	testutil.Eventually(t, "the growing plugin's commits", func() bool {
		info, err := e.m.Describe("grow")
		if err != nil {
			t.Fatal(err)
		}
		return info.RecordsIn >= n
	})
	info, err := e.m.Describe("slow")
	if err != nil {
		t.Fatal(err)
	}
	if sh := info.Shards[0]; !sh.InCallSince.Equal(since) || sh.Timeouts != 0 || info.RecordsIn != 0 {
		t.Fatalf("the slow call should still be the one in progress: %+v", sh)
	}
	grow, _ := e.m.Describe("grow")
	if grow.StateKeys != n || grow.StateBytes < n*10<<10 {
		t.Fatalf("grow holds %d keys, %d bytes of state; want %d keys of 10 KiB", grow.StateKeys, grow.StateBytes, n)
	}
}

// TestStateReadsAcrossCommits: state read in later calls (committed, not
// in the delta any more) is what was written, including values read back
// in the call that wrote them and keys never written.
func TestStateReadsAcrossCommits(t *testing.T) {
	e := newEnv(t)
	in := e.stream("in", 1)
	e.deploy(Definition{Name: "rmw", Inputs: []string{"in"}, Start: StartEarliest, BatchRecords: 7}, readTestdata(t, stateWasm))
	const keys, rounds = 20, 5
	for r := 0; r < rounds; r++ {
		var recs []record.Record
		for k := 0; k < keys; k++ {
			recs = append(recs, rec(fmt.Sprintf("key-%02d", k), fmt.Sprintf("R%d-%d", r, k)))
		}
		e.produce(in, recs...)
	}
	testutil.Eventually(t, "the plugin to catch up", func() bool {
		info, _ := e.m.Describe("rmw")
		return info.RecordsIn == keys*rounds
	})
	info, _ := e.m.Describe("rmw")
	if info.StateKeys != keys {
		t.Fatalf("%d state keys, want %d", info.StateKeys, keys)
	}
	got := e.state("rmw", "in", 0)
	for k := 0; k < keys; k++ {
		key, want := fmt.Sprintf("key-%02d", k), fmt.Sprintf("R%d-%d", rounds-1, k)
		if got[key] != want {
			t.Fatalf("state %s = %q, want %q", key, got[key], want)
		}
	}
}

// BenchmarkStateReads measures a runner whose every record reads its
// key's committed state and sets it (the WAT module, so the host's side
// dominates): records/s to catch up with a backlog of b.N records over
// 10,000 keys, in batches of 1,000, so every read misses the call's delta
// and goes to plugins.db.
func BenchmarkStateReads(b *testing.B) {
	e := newEnv(b)
	in := e.stream("in", 1)
	val := "R" + strings.Repeat("x", 127)
	for i := 0; i < b.N; i += 1000 {
		recs := make([]record.Record, min(1000, b.N-i))
		for j := range recs {
			recs[j] = rec(fmt.Sprintf("key-%05d", (i+j)%10000), val)
		}
		e.produce(in, recs...)
	}
	b.ResetTimer()
	t0 := time.Now()
	e.deploy(Definition{Name: "rmw", Inputs: []string{"in"}, Start: StartEarliest}, readTestdata(b, stateWasm))
	for {
		info, err := e.m.Describe("rmw")
		if err != nil {
			b.Fatal(err)
		}
		if info.RecordsIn >= uint64(b.N) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.ReportMetric(float64(b.N)/time.Since(t0).Seconds(), "records/s")
}

// state returns the committed keyed state of one runner.
func (e *env) state(plugin, input string, shard int) map[string]string {
	e.tb.Helper()
	out := map[string]string{}
	err := e.m.db.View(func(tx *bolt.Tx) error {
		rb, err := runBucket(tx, plugin, input, shard, false)
		if err != nil || rb == nil {
			return err
		}
		return rb.Bucket(bucketState).ForEach(func(k, v []byte) error {
			out[string(k)] = string(v)
			return nil
		})
	})
	if err != nil {
		e.tb.Fatal(err)
	}
	return out
}

// TestHostBenchmark: HostBenchmark runs a module on a runner as deployed
// plugins run, and stores nothing: no output, no state, no plugin.
func TestHostBenchmark(t *testing.T) {
	e := newEnv(t)
	e.stream("in", 1)
	out := e.stream("out", 1)
	batch := make([]record.Record, 100)
	for i := range batch {
		batch[i] = rec(fmt.Sprintf("k%d", i%10), "v")
		batch[i].Seq = uint64(i + 1)
	}
	def := Definition{Name: "pt", Inputs: []string{"in"}, Outputs: []string{"out"}, Config: map[string]string{"output": "out"}}
	res, err := e.m.HostBenchmark(t.Context(), def, readTestdata(t, watPassThrough), batch, 3)
	if err != nil {
		t.Fatal(err)
	}
	if res.Records != 300 || res.Outputs != 300 || res.Calls != 3 || res.MemoryBytes == 0 || res.Elapsed <= 0 {
		t.Fatalf("result %+v, want 300 records and outputs in 3 calls", res)
	}
	for i := range batch {
		batch[i].Value = []byte("R")
	}
	def = Definition{Name: "rmw", Inputs: []string{"in"}}
	if res, err = e.m.HostBenchmark(t.Context(), def, readTestdata(t, stateWasm), batch, 2); err != nil || res.Records != 200 {
		t.Fatalf("state module: %+v, %v", res, err)
	}
	if st := out.Stats(); st[0].LastSeq != 0 {
		t.Fatalf("output holds records up to %d, want none", st[0].LastSeq)
	}
	if got := e.state("rmw", "in", 0); len(got) != 0 {
		t.Fatalf("state committed: %v", got)
	}
	if l := e.m.List(); len(l) != 0 {
		t.Fatalf("plugins deployed: %v", l)
	}
	def.Outputs = []string{"missing"}
	if _, err := e.m.HostBenchmark(t.Context(), def, readTestdata(t, stateWasm), batch, 1); err == nil {
		t.Fatal("a missing output stream was not reported")
	}
}

package plugins

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgehub/edgehub/internal/backoff"
	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/internal/testutil"
	"github.com/edgehub/edgehub/store"
)

// hostileSoak is how long each phase of TestHostilePluginsChaos ingests; the
// chaos build tag makes it longer (hostile_chaos_long_test.go).
var hostileSoak = 3 * time.Second

// hostileKinds are the ops of wasmhost/testdata/hostile.wat that the chaos
// test feeds, one plugin each: loop to the deadline, memory to the cap,
// trap on every record, outputs until a limit, host-call spam until the
// deadline, state growth to the quota, state writes past the per-call cap.
var hostileKinds = []string{"L", "W", "T", "X", "H", "G", "S"}

// TestHostilePluginsChaos is chaos item 7: with one hostile plugin of each
// kind working (each on its own input, fed all the time), ingest into
// another stream keeps being acknowledged and a healthy plugin on it keeps
// up: it processes every record. It reports the p99 ack latency of ingest
// without and with the hostile plugins (t.Log; not asserted, the machine is
// shared).
func TestHostilePluginsChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("soaks for a few seconds; skipped with -short")
	}
	e := newEnv(t)
	in := e.stream("in", 2)
	e.deploy(Definition{Name: "healthy", Inputs: []string{"in"}, Outputs: []string{"copied"}, Start: StartEarliest,
		Config: map[string]string{"output": "copied"}}, readTestdata(t, watPassThrough))
	copied, _ := e.st.Stream("copied")

	var produced atomic.Int64
	ingest := func(d time.Duration) []time.Duration {
		var mu sync.Mutex
		var lat []time.Duration
		var wg sync.WaitGroup
		stop := time.Now().Add(d)
		for p := 0; p < 4; p++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				batch := make([]record.Record, 10)
				for i := 0; time.Now().Before(stop); i++ {
					for j := range batch {
						batch[j] = record.Record{Key: fmt.Appendf(nil, "p%d-%d", p, j), Value: []byte(`{"value":1}`)}
					}
					t0 := time.Now()
					if _, err := in.Append(context.Background(), store.Batch{Shard: -1, Records: batch}); err != nil {
						t.Errorf("ingest failed: %v", err)
						return
					}
					mu.Lock()
					lat = append(lat, time.Since(t0))
					mu.Unlock()
					produced.Add(int64(len(batch)))
				}
			}()
		}
		wg.Wait()
		slices.Sort(lat)
		return lat
	}
	p99 := func(lat []time.Duration) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[len(lat)*99/100]
	}
	caughtUp := func(what string) {
		t.Helper()
		want := int(produced.Load())
		readAll(t, copied, want)
		testutil.Eventually(t, what, func() bool { i, _ := e.m.Describe("healthy"); return i.RecordsIn == uint64(want) && i.Lag == 0 })
	}

	base := ingest(hostileSoak)
	caughtUp("healthy plugin caught up without hostile plugins")

	// One hostile plugin per kind, each on its own input, fed all the time.
	ctx, cancel := context.WithCancel(context.Background())
	var feeders sync.WaitGroup
	for _, k := range hostileKinds {
		s := e.stream("h"+k, 1)
		e.deploy(Definition{Name: "hostile-" + k, Inputs: []string{s.Name()}, Outputs: []string{"out"}, Start: StartEarliest,
			OnError: PolicyDeadLetter, DeadLetter: "dead", CallTimeout: time.Second, MemoryPages: 32,
			StateQuota: 256 << 10, MaxStateDelta: 64 << 10}, readTestdata(t, watHostile))
		feeders.Add(1)
		go func() {
			defer feeders.Done()
			for ctx.Err() == nil {
				if _, err := s.Append(ctx, store.Batch{Shard: 0, Records: []record.Record{rec("k", k)}}); err != nil && ctx.Err() == nil {
					t.Errorf("feeding %s: %v", s.Name(), err)
					return
				}
				backoff.Sleep(ctx, 20*time.Millisecond)
			}
		}()
	}
	// The healthy plugin keeps flowing while they misbehave: sample its
	// lag during the soak (reported, not asserted).
	var maxLag atomic.Uint64
	go func() {
		for ctx.Err() == nil {
			if i, err := e.m.Describe("healthy"); err == nil && i.Lag > maxLag.Load() {
				maxLag.Store(i.Lag)
			}
			backoff.Sleep(ctx, 50*time.Millisecond)
		}
	}()
	hostile := ingest(hostileSoak)
	caughtUp("healthy plugin caught up next to the hostile plugins")
	cancel()
	feeders.Wait()

	var failures, timeouts uint64
	for _, k := range hostileKinds {
		i, _ := e.m.Describe("hostile-" + k)
		failures += i.DeadLettered
		timeouts += i.Timeouts
		if i.Status == StatusPaused {
			t.Errorf("hostile-%s paused: %s (its policy is dead-letter)", k, i.PauseReason)
		}
	}
	if failures == 0 {
		t.Fatal("no hostile record failed: the hostile plugins did not run")
	}
	h, _ := e.m.Describe("healthy")
	t.Logf("ingest p99 ack latency: %s without hostile plugins (%d batches), %s with %d hostile plugins (%d batches): %.2fx",
		p99(base), len(base), p99(hostile), len(hostileKinds), len(hostile), float64(p99(hostile))/float64(max(p99(base), 1)))
	t.Logf("healthy plugin: %d records, max lag sampled %d, status %s, %d timeouts; hostile plugins: %d records dead-lettered, %d calls stopped at their deadline",
		h.RecordsIn, maxLag.Load(), h.Status, h.Timeouts, failures, timeouts)
	if h.Timeouts != 0 || h.DeadLettered != 0 {
		t.Fatalf("the healthy plugin failed: %d timeouts, %d dead letters", h.Timeouts, h.DeadLettered)
	}
}

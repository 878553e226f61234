package plugins

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/internal/testutil"
	"github.com/edgehub/edgehub/store"
)

// hostileTimeouts sums the hostile plugin's calls stopped at their
// deadline (since this manager started).
func hostileTimeouts(tb testing.TB, m *Manager, name string) uint64 {
	tb.Helper()
	info, err := m.Describe(name)
	if err != nil {
		tb.Fatal(err)
	}
	return info.Timeouts
}

// TestLoopingPluginDoesNotHoldUpHealthy runs a plugin that loops until its
// deadline next to a healthy one on the same input, with one and with two
// input shards, and again across a restart. The healthy plugin must process
// every record while the hostile one is still inside its first call: its
// deadline (10 s) has not expired once when the healthy plugin is done. A
// hostile runner used to hold the shared execution slot for its whole
// deadline (5 s by default per shard, and again after every restart since
// quarantine was not remembered).
func TestLoopingPluginDoesNotHoldUpHealthy(t *testing.T) {
	for _, shards := range []int{1, 2} {
		t.Run(fmt.Sprintf("%d shards", shards), func(t *testing.T) {
			e := newEnv(t)
			in := e.stream("in", shards)
			e.deploy(Definition{Name: "loop", Inputs: []string{"in"}, Outputs: []string{"loop-out"}, Start: StartEarliest,
				CallTimeout: 10 * time.Second, BackoffMin: 10 * time.Millisecond, BackoffMax: 10 * time.Millisecond},
				readTestdata(t, watHostile))
			e.deploy(Definition{Name: "copy", Inputs: []string{"in"}, Outputs: []string{"copied"}, Start: StartEarliest,
				Config: map[string]string{"output": "copied"}}, readTestdata(t, watPassThrough))
			for shard := 0; shard < shards; shard++ {
				if _, err := in.Append(context.Background(), store.Batch{Shard: shard, Records: []record.Record{rec("k", "L")}}); err != nil {
					t.Fatal(err)
				}
			}
			copied, _ := e.st.Stream("copied")
			n := shards // the L records are copied too
			phase := func(what string, more int) {
				t.Helper()
				// A hostile runner is inside a looping call (with the
				// fix, its other shard waits for the quarantine slot)...
				testutil.Eventually(t, "a hostile runner looping", func() bool {
					info, _ := e.m.Describe("loop")
					for _, s := range info.Shards {
						if !s.InCallSince.IsZero() {
							return true
						}
					}
					return false
				})
				// ...when records arrive for the healthy plugin.
				for i := 0; i < more; i++ {
					e.produce(in, rec("k"+strconv.Itoa(i%5), "ok"))
				}
				n += more
				readAll(t, copied, n)
				testutil.Eventually(t, "healthy plugin caught up", func() bool { i, _ := e.m.Describe("copy"); return i.RecordsIn == uint64(n) })
				if got := hostileTimeouts(t, e.m, "loop"); got != 0 {
					t.Fatalf("%s: the healthy plugin finished only after %d of the hostile plugin's deadlines expired", what, got)
				}
				info, _ := e.m.Describe("loop")
				if info.Status != StatusQuarantined || !strings.Contains(info.QuarantineReason, "slot") {
					t.Fatalf("%s: hostile plugin status %q, reason %q", what, info.Status, info.QuarantineReason)
				}
				if hi, _ := e.m.Describe("copy"); hi.Status != StatusRunning {
					t.Fatalf("%s: healthy plugin status %q (%s)", what, hi.Status, hi.QuarantineReason)
				}
			}
			phase("after deploy", 200)

			// The quarantine is durable: after a restart the hostile
			// runners start in the quarantine slot.
			e.stop()
			e.start()
			info, _ := e.m.Describe("loop")
			if !strings.Contains(info.QuarantineReason, "slot lease") {
				t.Fatalf("after restart the hostile plugin's quarantine is forgotten: %q", info.QuarantineReason)
			}
			testutil.Eventually(t, "runners started", func() bool { i, _ := e.m.Describe("loop"); return i.Status != StatusStopped })
			if info, _ = e.m.Describe("loop"); info.Status != StatusQuarantined {
				t.Fatalf("after restart the hostile plugin is %q, want it still quarantined", info.Status)
			}
			phase("after restart", 200)
		})
	}
}

// TestStateLimits: a call that writes more keyed state than max_state_delta,
// and records that would take the plugin's state past its state_quota, fail
// with ErrStateLimit and follow the error policy (here: dead-letter), while
// the state already committed stays within the quota.
func TestStateLimits(t *testing.T) {
	e := newEnv(t)
	in := e.stream("in", 1)
	const quota = 64 << 10
	e.deploy(Definition{Name: "grow", Inputs: []string{"in"}, Outputs: []string{"out"}, Start: StartEarliest,
		OnError: PolicyDeadLetter, DeadLetter: "dlq", MaxStateDelta: 32 << 10, StateQuota: quota}, readTestdata(t, watHostile))
	// S writes 32 KiB values until stopped: past the per-call cap at once.
	// Each G adds one 10 KiB value (+ an 8-byte key): six fit in 64 KiB.
	values := []string{"S"}
	for i := 0; i < 10; i++ {
		values = append(values, "G")
	}
	values = append(values, "ok")
	for _, v := range values {
		e.produce(in, rec("k", v))
	}
	outS, _ := e.st.Stream("out")
	dlq, _ := e.st.Stream("dlq")
	readAll(t, outS, 7) // until they are all there
	dead := readAll(t, dlq, 5)
	testutil.Eventually(t, "caught up", func() bool { i, _ := e.m.Describe("grow"); return i.Lag == 0 })
	if got := readAll(t, outS, 7); len(got) != 7 {
		t.Fatalf("%d outputs, want the six G records that fit and ok", len(got))
	}
	reasons := map[string]int{}
	for _, r := range dead {
		for _, h := range r.Headers {
			if h.Key == HeaderError {
				switch s := string(h.Value); {
				case strings.Contains(s, "max_state_delta") && string(r.Value) == "S":
					reasons["delta"]++
				case strings.Contains(s, "state_quota") && string(r.Value) == "G":
					reasons["quota"]++
				default:
					t.Errorf("dead letter %q: %s", r.Value, s)
				}
			}
		}
	}
	if reasons["delta"] != 1 || reasons["quota"] != 4 {
		t.Fatalf("dead letters by reason %v, want 1 over max_state_delta and 4 over state_quota", reasons)
	}
	info, _ := e.m.Describe("grow")
	if info.StateBytes > quota || info.StateKeys != 6 {
		t.Fatalf("state %d bytes in %d keys, want 6 keys within %d bytes", info.StateBytes, info.StateKeys, quota)
	}
	// The quota counts committed state across a restart.
	e.stop()
	e.start()
	e.produce(in, rec("k", "G"))
	dead = readAll(t, dlq, 6)
	if len(dead) != 6 {
		t.Fatalf("%d dead letters after restart, want 6", len(dead))
	}
}

func FuzzDecodeQuarantine(f *testing.F) {
	f.Add([]byte(`{"reason":"call failed: x","since":"2026-01-02T03:04:05Z"}`))
	f.Add([]byte(`{"reason":""}`))
	f.Add([]byte(`{"reason":"a"} {}`))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		q, err := decodeQuarantine(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error does not wrap ErrCorrupt: %v", err)
			}
			return
		}
		if !json.Valid(b) {
			t.Fatalf("%q decoded, but it is not one JSON value", b)
		}
		// What decodes re-encodes to a record that decodes the same.
		raw, err := json.Marshal(q)
		if err != nil {
			t.Fatal(err)
		}
		if q2, err := decodeQuarantine(raw); err != nil || q2.Reason != q.Reason || !q2.Since.Equal(q.Since) {
			t.Fatalf("%q -> %+v -> %s -> %+v, %v", b, q, raw, q2, err)
		}
	})
}

// TestDamagedQuarantineRecord: a damaged record is a *store.CorruptError
// naming plugins.db and the runner, never read as "not quarantined".
func TestDamagedQuarantineRecord(t *testing.T) {
	dir := t.TempDir()
	db, err := openDB(dir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error {
		rb, err := runBucket(tx, "p", "in", 1, true)
		if err != nil {
			return err
		}
		return rb.Put(keyQuarantine, []byte(`{"reason":"x","si`))
	}); err != nil {
		t.Fatal(err)
	}
	_, _, err = loadQuarantine(db, "p", "in", 1)
	var ce *store.CorruptError
	if !errors.As(err, &ce) || ce.File != filepath.Join(dir, "plugins.db") || !errors.Is(err, ErrCorrupt) ||
		!strings.Contains(err.Error(), `quarantine record of plugin "p" input "in" shard 1`) {
		t.Fatalf("err = %v, want a CorruptError naming plugins.db and the runner", err)
	}
}

// TestOverrunLogWording: a call that overruns the slot lease is logged as
// what it is (a slow call, not a broken plugin, running in the quarantine
// slot for the next calls), and leaving quarantine is logged too.
func TestOverrunLogWording(t *testing.T) {
	e := newEnv(t)
	in := e.stream("in", 1)
	e.deploy(Definition{Name: "loop", Inputs: []string{"in"}, Outputs: []string{"out"}, Start: StartEarliest,
		CallTimeout: 2 * time.Second, OnError: PolicyDeadLetter, DeadLetter: "dlq"}, readTestdata(t, watHostile))
	logged := func(want string) bool {
		lines, err := e.m.Logs("loop", 100)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range lines {
			if strings.Contains(l.Message, want) {
				return true
			}
		}
		return false
	}
	e.produce(in, rec("k", "L"))
	testutil.Eventually(t, "the overrun logged", func() bool {
		return logged("call overran its slot lease; running in the quarantine slot until 16 calls in a row succeed (not an error")
	})
	if logged("quarantined:") {
		t.Fatal("an overrun was logged as a plain quarantine")
	}
	for i := 1; i <= suspectCalls+1; i++ {
		e.produce(in, rec("k", "ok"))
		testutil.Eventually(t, "record processed", func() bool { i2, _ := e.m.Describe("loop"); return i2.RecordsIn >= uint64(1+i) })
	}
	testutil.Eventually(t, "leaving quarantine logged", func() bool { return logged("left quarantine after 16 good calls") })
	if info, _ := e.m.Describe("loop"); info.Status != StatusRunning {
		t.Fatalf("status %q after %d good calls", info.Status, suspectCalls+1)
	}
}

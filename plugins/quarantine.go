package plugins

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgehub/edgehub/wasmhost"
)

// Quarantine: a runner whose calls fail, or whose step holds an execution
// slot longer than Config.SlotLease, runs in the quarantine slot until it
// has made suspectCalls good calls in a row. The standing is durable
// (runs/<name>/<input>/<shard>/"q"), so a hostile plugin restarts in
// quarantine instead of taking a healthy plugin's slot again after every
// restart. An upgrade clears it: a new module gets a fresh start.

// keyQuarantine holds a runner's quarantine record in its run bucket.
var keyQuarantine = []byte("q")

// quarantine is a runner's durable standing while it is quarantined.
type quarantine struct {
	Reason string    `json:"reason"`
	Since  time.Time `json:"since"`
}

func loadQuarantine(db *bolt.DB, plugin, input string, shard int) (q quarantine, ok bool, err error) {
	err = db.View(func(tx *bolt.Tx) error {
		rb, err := runBucket(tx, plugin, input, shard, false)
		if err != nil || rb == nil {
			return err
		}
		v := rb.Get(keyQuarantine)
		if v == nil {
			return nil
		}
		if q, err = decodeQuarantine(v); err != nil {
			return corrupt(db, fmt.Sprintf("quarantine record of plugin %q input %q shard %d", plugin, input, shard), err)
		}
		ok = true
		return nil
	})
	return q, ok, err
}

// decodeQuarantine decodes a stored quarantine record (JSON, a reason and
// a time); anything else is ErrCorrupt.
func decodeQuarantine(b []byte) (quarantine, error) {
	var q quarantine
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&q); err != nil {
		return quarantine{}, fmt.Errorf("%w: quarantine record: %w", ErrCorrupt, err)
	}
	// More would miss a stray ']' or '}' after the object.
	if _, err := dec.Token(); err != io.EOF {
		return quarantine{}, fmt.Errorf("%w: quarantine record: trailing data", ErrCorrupt)
	}
	return q, nil
}

// storeQuarantine writes (q != nil) or clears a runner's record.
func storeQuarantine(db *bolt.DB, plugin, input string, shard int, q *quarantine) error {
	return db.Update(func(tx *bolt.Tx) error {
		rb, err := runBucket(tx, plugin, input, shard, q != nil)
		if err != nil || rb == nil {
			return err
		}
		if q == nil {
			return rb.Delete(keyQuarantine)
		}
		raw, err := json.Marshal(q)
		if err != nil {
			return err
		}
		return rb.Put(keyQuarantine, raw)
	})
}

// clearQuarantines drops every quarantine record of a plugin (at upgrade).
func clearQuarantines(tx *bolt.Tx, plugin string) error {
	pb := tx.Bucket(bucketRuns).Bucket([]byte(plugin))
	if pb == nil {
		return nil
	}
	return pb.ForEachBucket(func(k []byte) error {
		return pb.Bucket(k).Delete(keyQuarantine)
	})
}

// slot is one held execution slot: a token taken from the shared pool or
// from the quarantine slot.
type slot struct {
	mu    sync.Mutex
	ch    chan struct{} // the pool whose token is held; nil once given back
	since time.Time     // when the token of ch was taken
	rest  chan struct{} // the quarantine slot: its token is returned late
}

// give returns the token. The quarantine slot's token comes back only
// after twice as long as it was held, so quarantined runners together use
// at most a third of a core: a looping plugin burns its deadline, but not
// the machine ingest needs.
func (s *slot) give() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch == nil {
		return
	}
	if s.ch == s.rest {
		ch := s.ch
		time.AfterFunc(quarantineRest*time.Since(s.since), func() { <-ch })
	} else {
		<-s.ch
	}
	s.ch = nil
}

// quarantineRest is how much longer than it was held the quarantine slot
// stays idle.
const quarantineRest = 2

// errPreempted cancels a guest call that overran the slot lease while the
// quarantine slot was busy. It is not the record's fault: the call's
// effects are dropped and it is made again in the quarantine slot.
var errPreempted = errors.New("plugins: call overran the slot lease while the quarantine slot was busy")

// acquire takes an execution slot (see Config.MaxConcurrentCalls); it
// returns false if ctx ends first. A quarantined runner takes the
// quarantine slot instead, where calls have no lease: hostile runners wait
// for each other, not healthy ones for them.
func (r *runner) acquire(ctx context.Context) bool {
	ch := r.slots
	if r.suspect > 0 {
		ch = r.quarantine
	}
	if ch == nil {
		return true
	}
	select {
	case ch <- struct{}{}:
	case <-ctx.Done():
		return false
	}
	r.held = &slot{ch: ch, since: time.Now(), rest: r.quarantine}
	return true
}

func (r *runner) release() {
	if r.held != nil {
		r.held.give()
		r.held = nil
	}
}

// watch arms the slot lease for one guest call made in a slot of the shared
// pool. A goroutine running compiled wasm keeps its thread until the call
// returns, so a call that runs past the lease (a loop waiting for its
// call_timeout) must not keep a pool slot: it moves to the quarantine slot
// if that is free and goes on there, or else it is cancelled (errPreempted)
// and made again once the runner holds the quarantine slot. Either way the
// runner is quarantined, and at most MaxConcurrentCalls+1 guest calls run
// at once. end reports whether the call was cancelled; call it when the
// call returns.
func (r *runner) watch(ctx context.Context) (cctx context.Context, end func() (preempted bool)) {
	return r.watchFor(ctx, r.lease)
}

// instanceLeaseFactor stretches the lease of creating an instance (_initialize and
// eh_init): a language runtime's start-up is slower than a call.
const instanceLeaseFactor = 5

func (r *runner) watchFor(ctx context.Context, lease time.Duration) (cctx context.Context, end func() (preempted bool)) {
	s := r.held
	if s == nil || r.lease <= 0 || r.quarantine == nil {
		return ctx, func() bool { return false }
	}
	s.mu.Lock()
	pooled := s.ch == r.slots
	s.mu.Unlock()
	if !pooled {
		return ctx, func() bool { return false }
	}
	cctx, cancel := context.WithCancelCause(ctx)
	var over int // 1: moved to the quarantine slot, 2: preempted; guarded by s.mu
	ended := false
	t := time.AfterFunc(lease, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if ended || s.ch != r.slots {
			return
		}
		verb := "moved to the quarantine slot"
		select {
		case r.quarantine <- struct{}{}:
			<-s.ch
			s.ch, s.since, over = r.quarantine, time.Now(), 1
		default:
			over = 2
			cancel(errPreempted)
			verb = "cancelled, to be made again in the quarantine slot"
		}
		r.stats.overruns.Add(1)
		r.stats.quarantine(fmt.Sprintf("%s the %s slot lease (%s)", overrunReason, lease, verb), time.Now())
	})
	return cctx, func() bool {
		t.Stop()
		s.mu.Lock()
		ended = true
		o := over
		s.mu.Unlock()
		cancel(nil)
		r.overran = o != 0
		return o == 2
	}
}

// requeue follows a preempted call: the runner, now quarantined, trades
// its pool slot for the quarantine slot and recreates its instance.
func (r *runner) requeue(ctx context.Context) bool {
	r.suspect = suspectCalls
	return r.sleep(ctx, 0) && r.ensureInstance(ctx)
}

// judge updates the runner's standing after a call: a failure makes it a
// suspect for the next suspectCalls calls.
func (r *runner) judge(err error) {
	switch {
	case err != nil:
		if errors.Is(err, wasmhost.ErrTimeout) {
			r.stats.timeouts.Add(1)
		}
		if errors.Is(err, context.Canceled) && r.suspect == 0 {
			return // the hub stopping is not the guest's fault
		}
		r.suspect = suspectCalls
		r.stats.quarantine("call failed: "+err.Error(), time.Now())
	case r.overran:
		r.suspect = suspectCalls // a slow call is a failure of its own
	case r.suspect > 0:
		r.suspect--
		if r.suspect == 0 {
			r.stats.clearQuarantine()
		}
	}
	r.overran = false
}

// persistStanding writes the runner's quarantine record when it changed
// since the last write: on entering quarantine and on leaving it, not on
// every failure of a runner that stays there.
func (r *runner) persistStanding() {
	q, in := r.stats.standing()
	if in == r.persisted {
		return
	}
	var rec *quarantine
	if in {
		rec = &q
	}
	if err := storeQuarantine(r.m.db, r.def.Name, r.input.Name(), r.shard, rec); err != nil {
		r.logger.Warn("plugin: storing quarantine standing failed", "err", err)
		return
	}
	r.persisted = in
	switch {
	case in && strings.HasPrefix(q.Reason, overrunReason):
		// An overrun is a slow call, not a broken plugin: say so, since a
		// loaded machine makes healthy plugins overrun too.
		r.logf(LevelWarn, "call overran its slot lease; running in the quarantine slot until %d calls in a row succeed (not an error: a loaded machine does this too): %s", suspectCalls, q.Reason)
	case in:
		r.logf(LevelWarn, "quarantined: %s; running in the quarantine slot until %d calls in a row succeed", q.Reason, suspectCalls)
	default:
		// Info, not the Debug of guest Info lines: it ends a Warn.
		msg := fmt.Sprintf("left quarantine after %d good calls", suspectCalls)
		r.p.logs.add(LevelInfo, r.input.Name(), r.shard, msg)
		r.logger.Info("plugin: " + msg)
	}
}

// overrunReason starts the quarantine reason of a call that overran the
// slot lease.
const overrunReason = "a call ran longer than"

// restoreStanding puts a runner that was quarantined when the hub stopped
// back into quarantine.
func (r *runner) restoreStanding() error {
	q, ok, err := loadQuarantine(r.m.db, r.def.Name, r.input.Name(), r.shard)
	if err != nil || !ok {
		return err
	}
	r.suspect, r.persisted = suspectCalls, true
	r.stats.mu.Lock()
	r.stats.quarantined, r.stats.qReason, r.stats.qSince = true, q.Reason, q.Since
	r.stats.mu.Unlock()
	return nil
}

// quarantine records the standing shown by Describe; the first reason is
// kept while the runner stays quarantined.
func (st *runnerStats) quarantine(reason string, since time.Time) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.quarantined {
		st.quarantined, st.qReason, st.qSince = true, reason, since.UTC()
	}
}

func (st *runnerStats) clearQuarantine() {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.quarantined, st.qReason, st.qSince = false, "", time.Time{}
}

func (st *runnerStats) standing() (quarantine, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	return quarantine{Reason: st.qReason, Since: st.qSince}, st.quarantined
}

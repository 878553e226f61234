package plugins

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgehub/edgehub/internal/backoff"
	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/store"
	"github.com/edgehub/edgehub/wasmhost"
)

// Dead-letter record headers.
const (
	HeaderError  = "edgehub-error"
	HeaderPlugin = "edgehub-plugin"
	HeaderSource = "edgehub-source" // input stream/shard/seq
)

// deadLetterIndex is the output index reserved for the dead-letter copy of
// an input record: its origin is inputSeq<<16 | 0xFFFF.
const deadLetterIndex = 0xFFFF

// suspectCalls is how many successful calls a runner makes in quarantine
// after a failed one.
const suspectCalls = 16

// maxInstanceFailures is how many consecutive failures to create an
// instance (not calls: instantiation and eh_init) pause the plugin.
const maxInstanceFailures = 5

// OriginHub returns the origin hub name of a plugin's outputs derived from
// input. Names too long for an origin (255 bytes) are shortened with a
// hash; the "/timer" variant names timer outputs.
func OriginHub(hub, plugin, input string) string {
	h := hub + "/plugin/" + plugin + "/" + input
	if len(h)+len("/timer") > store.MaxOriginHubLength {
		sum := sha256.Sum256([]byte(plugin + "/" + input))
		h = hub + "/plugin/" + hex.EncodeToString(sum[:16])
		if len(h)+len("/timer") > store.MaxOriginHubLength {
			h = h[len(h)-store.MaxOriginHubLength+len("/timer"):]
		}
	}
	return h
}

// OriginSeqShift returns how many low bits of origin's sequence numbers
// are an output index (16 for a plugin's outputs, 32 for its timer
// outputs, 0 for an origin that is no plugin's): shifted right by it, a
// sequence numbers the input record (or timer firing) the output came
// from, so differences count those instead of 2^16 per input.
func OriginSeqShift(origin string) uint {
	_, rest, ok := strings.Cut(origin, "/plugin/")
	if !ok || strings.Contains(origin[:len(origin)-len(rest)-len("/plugin/")], "/") {
		return 0
	}
	// NAME/INPUT/timer, or HASH/timer when OriginHub shortened the name
	// (names never contain '/').
	parts := strings.Split(rest, "/")
	switch {
	case len(parts) == 3 && parts[2] == "timer", len(parts) == 2 && parts[1] == "timer" && isHash(parts[0]):
		return 32
	case len(parts) == 2, len(parts) == 1 && isHash(parts[0]):
		return 16
	}
	return 0
}

// isHash reports whether s is OriginHub's shortened name.
func isHash(s string) bool {
	if len(s) != 32 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

type callKind int

const (
	kindBatch callKind = iota
	kindTimer
)

// outBuf gathers one output stream's records of the uncommitted calls.
type outBuf struct {
	stream *store.Stream
	recs   []record.Record
}

// runner processes one input shard of one plugin, in order. It implements
// wasmhost.Host for its instance.
type runner struct {
	m      *Manager
	p      *plugin
	def    Definition
	mod    *wasmhost.Module
	input  *store.Stream
	shard  int
	logger *slog.Logger
	// standingErr is the error of loading the quarantine standing at
	// creation; run reports it.
	standingErr error

	originHub string
	timerHub  string
	inst      *wasmhost.Instance
	instFails int
	cp        checkpoint
	delta     *delta
	outs      []*outBuf
	outIdx    map[string]int
	nOut      int
	arena     []byte
	kind      callKind
	seqs      []uint64 // input sequences of the batch in the current call
	timerSeq  uint64
	// inputClock is the newest ingest time delivered to the guest, and
	// firedAt the last timer now: while the runner works through a backlog
	// its timers follow the input, not the wall clock.
	inputClock int64
	firedAt    int64
	// The last committed value StateGet read (key getKey, getFound),
	// kept until the next commit or discard: the committed state does not
	// change meanwhile, and a read-modify-write (StateGet, then StateSet
	// weighing the old value) or a re-read into a larger buffer need no
	// second transaction.
	getKey     []byte
	getVal     []byte
	getFound   bool
	getValid   bool
	nextBuf    []byte // the committed key StateNext returned last
	batch      []byte
	in         []wasmhost.InputRecord
	hdrs       []wasmhost.Header
	slots      chan struct{}    // guest-execution slots shared by all runners; nil = unbounded
	quarantine chan struct{}    // the slot for runners whose calls fail
	held       *slot            // the slot held during a step
	lease      time.Duration    // Config.SlotLease
	suspect    int              // calls left in quarantine
	persisted  bool             // a quarantine record is stored
	overran    bool             // the last call overran the slot lease
	written    int              // state bytes written by the call in progress (MaxStateDelta)
	growth     int64            // net state growth of the uncommitted delta (StateQuota)
	duty       float64          // Config.BusyDutyCycle
	maxRecord  int              // the store's record size limit
	now        func() time.Time // the hub's wall clock
	// The input shard's place in the layout, refreshed when layoutCh is
	// closed: a closed shard is processed to end and the runner exits.
	layoutCh <-chan struct{}
	inClosed bool
	inEnd    uint64

	stats runnerStats
}

// runnerStats are read by Describe and the metrics while the runner runs.
type runnerStats struct {
	calls, callNanos, errors, retries, restarts, firings, gaps atomic.Uint64
	timeouts, overruns                                         atomic.Uint64
	memory                                                     atomic.Int64
	callStart                                                  atomic.Int64                            // Unix nanos of the call in progress, 0 = none
	callHist                                                   [len(CallTimeBuckets) + 1]atomic.Uint64 // calls per bucket, +Inf last
	cp                                                         atomic.Pointer[checkpoint]

	mu          sync.Mutex
	lastErr     string
	lastErrAt   time.Time
	quarantined bool
	qReason     string
	qSince      time.Time
}

func newRunner(m *Manager, p *plugin, def Definition, mod *wasmhost.Module, in *store.Stream, shard int) *runner {
	r := &runner{
		m: m, p: p, def: def, mod: mod, input: in, shard: shard,
		logger:     p.logger.With("input", in.Name(), "shard", shard),
		originHub:  OriginHub(m.cfg.HubName, def.Name, in.Name()),
		delta:      newDelta(),
		outIdx:     map[string]int{},
		maxRecord:  m.st.Config().MaxRecordBytes,
		slots:      m.slots,
		quarantine: m.quarantine,
		lease:      m.cfg.SlotLease,
		duty:       m.cfg.BusyDutyCycle,
		now:        m.now,
	}
	r.timerHub = r.originHub + "/timer"
	// The durable quarantine is restored before the runner is visible to
	// Describe: a restarted hostile plugin never shows as running.
	r.standingErr = r.restoreStanding()
	for _, name := range append(append([]string(nil), def.Outputs...), def.DeadLetter) {
		if name == "" {
			continue
		}
		if _, dup := r.outIdx[name]; dup {
			continue
		}
		s, err := m.st.Stream(name)
		if err != nil {
			continue // reported when emitted to
		}
		r.outIdx[name] = len(r.outs)
		r.outs = append(r.outs, &outBuf{stream: s})
	}
	return r
}

func (r *runner) run(ctx context.Context) {
	defer r.closeInstance()
	defer func() { r.p.stateUsed.Add(-r.cp.StateBytes) }()
	if err := r.restore(ctx); err != nil {
		if ctx.Err() == nil {
			r.fatal(fmt.Sprintf("restore %s/%d: %v", r.input.Name(), r.shard, err))
		}
		return
	}
	var tick <-chan time.Time
	if r.mod.HasTimer() {
		t := time.NewTicker(r.def.TimerInterval)
		defer t.Stop()
		tick = t.C
	}
	// wait ends with ctx or a drain (Manager.Drain): it bounds the waits
	// between calls, never a call or its commit.
	wait, stopWait := context.WithCancel(ctx)
	defer stopWait()
	go func() {
		select {
		case <-r.m.drainCh:
			stopWait()
		case <-wait.Done():
		}
	}()
	for wait.Err() == nil {
		if r.inputFinished() {
			r.logf(LevelInfo, "input shard %d is closed and processed to its end (%d): finished", r.shard, r.inEnd)
			return
		}
		_, last, err := r.input.Bounds(r.shard)
		if err != nil {
			if !r.storeTrouble(ctx, "read input", err) {
				return
			}
			continue
		}
		if last < r.cp.Next {
			// Caught up: sleep until a commit to the shard (or a tick).
			ch := r.input.Changed(r.shard)
			if _, last, _ := r.input.Bounds(r.shard); last >= r.cp.Next {
				continue
			}
			select {
			case <-ch:
			case <-r.layoutCh:
			case <-tick:
				// Caught up: the timer follows the wall clock.
				if !r.withSlot(ctx, func() bool { return r.fireTimer(ctx, r.now().UnixNano()) }) {
					return
				}
			case <-wait.Done():
				return
			}
			continue
		}
		if last-r.cp.Next+1 < uint64(r.def.BatchRecords) && !r.linger(wait) {
			return
		}
		var took time.Duration // in the slot, not waiting for it
		if !r.withSlot(ctx, func() bool {
			began := time.Now()
			defer func() { took = time.Since(began) }()
			return r.step(ctx)
		}) {
			return
		}
		if !r.yieldToIngest(ctx, last, took) {
			return
		}
		if r.inputFinished() {
			continue // no timer after the end: the loop's top returns
		}
		select {
		case <-tick:
			// Behind its input: the timer follows the input's ingest
			// time, so "no input for a while" means the input was idle,
			// not that this runner is slow.
			now := max(r.firedAt, min(r.inputClock, r.now().UnixNano()))
			if !r.withSlot(ctx, func() bool { return r.fireTimer(ctx, now) }) {
				return
			}
		default:
		}
	}
}

// refreshLayout reads the input shard's state from the layout when it
// changed since the last look.
func (r *runner) refreshLayout() {
	if r.layoutCh != nil {
		select {
		case <-r.layoutCh:
		default:
			return
		}
	}
	r.layoutCh = r.input.LayoutChanged()
	l := r.input.Layout()
	if r.shard < len(l.Shards) {
		sh := l.Shards[r.shard]
		r.inClosed, r.inEnd = sh.State != store.ShardOpen, sh.End
	}
}

// inputFinished reports whether the input shard is closed and every record
// of it up to its end is committed (no timer firing pending either).
func (r *runner) inputFinished() bool {
	r.refreshLayout()
	return r.inClosed && r.cp.Next > r.inEnd && r.cp.PendingSeq == 0
}

// yieldToIngest keeps a runner to its duty cycle while its input is being
// written to: if records arrived during the batch (which took took), it
// waits took × (1−duty)/duty before the next one. Plugins then lag behind an
// ingest burst and catch up at full speed once it ends, instead of taking
// the cores producers need.
func (r *runner) yieldToIngest(ctx context.Context, lastBefore uint64, took time.Duration) bool {
	if r.duty >= 1 || r.duty <= 0 {
		return true
	}
	if _, last, err := r.input.Bounds(r.shard); err != nil || last <= lastBefore {
		return true
	}
	return backoff.Sleep(ctx, time.Duration(float64(took)*(1-r.duty)/r.duty))
}

// step reads the next batch and processes it; it returns false when the
// runner must stop.
func (r *runner) step(ctx context.Context) bool {
	recs, err := r.input.Read(r.shard, r.cp.Next, store.ReadOptions{MaxRecords: r.def.BatchRecords, MaxBytes: r.def.BatchBytes})
	if err != nil {
		return r.storeTrouble(ctx, "read input", err)
	}
	if len(recs) == 0 {
		if r.refreshLayout(); r.inClosed && r.cp.Next <= r.inEnd {
			// The rest of a closed shard is gone (retention, compaction):
			// its end is reached all the same.
			cp := r.cp
			cp.Next = r.inEnd + 1
			return r.commitCheckpoint(ctx, cp, nil)
		}
		return true
	}
	if first := recs[0].Seq; first > r.cp.Next {
		// Retention removed records before the plugin read them: report
		// the gap, never skip silently.
		r.stats.gaps.Add(first - r.cp.Next)
		r.logf(LevelWarn, "input gap: records %d..%d were removed by retention before the plugin read them", r.cp.Next, first-1)
	}
	return r.processBatch(ctx, recs)
}

// withSlot runs fn, which reads, calls the guest and commits, holding an
// execution slot: the slot covers the store work a batch causes (reading
// input, storing outputs, the checkpoint), not only the call, since that
// work competes with ingest too.
func (r *runner) withSlot(ctx context.Context, fn func() bool) bool {
	if !r.acquire(ctx) {
		return false
	}
	ok := fn()
	r.release()
	r.persistStanding()
	return ok
}

// sleep waits d without holding an execution slot.
func (r *runner) sleep(ctx context.Context, d time.Duration) bool {
	held := r.held != nil
	r.release()
	if !backoff.Sleep(ctx, d) {
		return false
	}
	return !held || r.acquire(ctx)
}

// linger waits up to MaxWait for a partial batch to fill, so that under a
// steady trickle each commit (two fsyncs: outputs, then checkpoint) covers
// many records instead of one producer batch. It returns false when ctx
// ends.
func (r *runner) linger(ctx context.Context) bool {
	if r.def.MaxWait <= 0 {
		return true
	}
	// Wake at the next multiple of MaxWait on the wall clock, not MaxWait
	// from now: runners with the same MaxWait then commit together, and the
	// store's and plugins.db's group commits turn their commits into one
	// fsync per output stream and one for the checkpoints. Commits to the
	// input do not wake a lingering runner: under load that would be a
	// wake-up per runner per ingest commit, for nothing.
	period := int64(r.def.MaxWait)
	return backoff.Sleep(ctx, time.Duration(period-r.now().UnixNano()%period))
}

// restore loads the checkpoint (creating it from the start position for a
// new plugin) and replays a timer firing that was recorded but not finished.
func (r *runner) restore(ctx context.Context) error {
	if r.standingErr != nil {
		return r.standingErr
	}
	cp, ok, err := loadCheckpoint(r.m.db, r.def.Name, r.input.Name(), r.shard)
	if err != nil {
		return err
	}
	if !ok {
		// Deploy pins the start of every input shard it knows; this covers
		// one it did not (shards added since).
		if cp, err = startCheckpoint(r.input, r.shard, r.def.Start); err != nil {
			return err
		}
		if cp, err = r.m.commit(r.def.Name, r.input.Name(), r.shard, cp, nil); err != nil {
			return err
		}
	}
	r.setCheckpoint(cp)
	if cp.PendingSeq != 0 {
		r.logf(LevelInfo, "replaying timer firing %d recorded at %s", cp.PendingSeq, time.Unix(0, cp.PendingNow).UTC().Format(time.RFC3339Nano))
		if !r.withSlot(ctx, func() bool { return r.runTimer(ctx, cp.PendingSeq, cp.PendingNow, true) }) {
			return ctx.Err()
		}
	}
	return nil
}

// startCheckpoint is the first checkpoint of a plugin on an input shard:
// its first record, or for StartLatest the record after its last.
func startCheckpoint(in *store.Stream, shard int, start string) (checkpoint, error) {
	first, last, err := in.Bounds(shard)
	if err != nil {
		return checkpoint{}, err
	}
	cp := checkpoint{Next: first}
	if start == StartLatest {
		cp.Next = last + 1
	}
	if cp.Next == 0 {
		cp.Next = 1
	}
	return cp, nil
}

func (r *runner) setCheckpoint(cp checkpoint) {
	r.p.stateUsed.Add(cp.StateBytes - r.cp.StateBytes)
	r.cp = cp
	c := cp
	r.stats.cp.Store(&c)
}

// processBatch runs recs through the plugin and commits. On failure it
// isolates the failing record by running the batch one record at a time.
// It returns false when the runner must stop.
func (r *runner) processBatch(ctx context.Context, recs []record.Record) bool {
	if !r.ensureInstance(ctx) {
		return false
	}
	err := r.callBatch(ctx, recs)
	if err == nil {
		return r.commitProgress(ctx, recs[len(recs)-1].Seq+1, len(recs))
	}
	r.discard()
	if ctx.Err() != nil {
		return false
	}
	if len(recs) == 1 {
		return r.handleFailure(ctx, recs[0], err)
	}
	for _, rec := range recs {
		if !r.processOne(ctx, rec) {
			return false
		}
	}
	return true
}

// processOne runs one record, applying the error policy until it is
// processed, dead-lettered or the plugin pauses.
func (r *runner) processOne(ctx context.Context, rec record.Record) bool {
	if !r.ensureInstance(ctx) {
		return false
	}
	err := r.callBatch(ctx, []record.Record{rec})
	if err == nil {
		return r.commitProgress(ctx, rec.Seq+1, 1)
	}
	r.discard()
	if ctx.Err() != nil {
		return false
	}
	return r.handleFailure(ctx, rec, err)
}

// handleFailure applies the error policy to a record whose call failed.
func (r *runner) handleFailure(ctx context.Context, rec record.Record, err error) bool {
	if errors.Is(err, store.ErrStreamNotFound) {
		// A deleted output stream is the operator's to fix, not the
		// record's fault: no policy applies.
		r.fatal(err.Error())
		return false
	}
	for attempt := 1; ; attempt++ {
		r.noteError(fmt.Sprintf("record %d: %v", rec.Seq, err))
		switch r.def.OnError {
		case PolicyPause:
			r.fatal(fmt.Sprintf("record %s/%d/%d failed: %v", r.input.Name(), r.shard, rec.Seq, err))
			return false
		case PolicyDeadLetter:
			return r.deadLetter(ctx, rec, err)
		}
		if r.def.MaxAttempts > 0 && attempt >= r.def.MaxAttempts {
			r.fatal(fmt.Sprintf("record %s/%d/%d failed %d times, last: %v", r.input.Name(), r.shard, rec.Seq, attempt, err))
			return false
		}
		r.stats.retries.Add(1)
		if !r.sleep(ctx, backoff.Delay(r.def.BackoffMin, r.def.BackoffMax, attempt)) || !r.ensureInstance(ctx) {
			return false
		}
		if err = r.callBatch(ctx, []record.Record{rec}); err == nil {
			return r.commitProgress(ctx, rec.Seq+1, 1)
		}
		r.discard()
		if ctx.Err() != nil {
			return false
		}
	}
}

// deadLetter stores rec with the failure reason in the dead-letter stream
// and moves the checkpoint past it. Its origin (input seq, index 0xFFFF)
// makes the copy exactly-once too.
func (r *runner) deadLetter(ctx context.Context, rec record.Record, cause error) bool {
	i, ok := r.outIdx[r.def.DeadLetter]
	if !ok {
		r.fatal(fmt.Sprintf("dead-letter stream %q is missing; record %d failed: %v", r.def.DeadLetter, rec.Seq, cause))
		return false
	}
	ob := r.outs[i]
	dl := rec.Clone()
	dl.Seq, dl.IngestTime = 0, 0
	reason := cause.Error()
	if len(reason) > 4096 {
		reason = reason[:4096]
	}
	dl.Headers = append(dl.Headers,
		record.Header{Key: HeaderError, Value: []byte(reason)},
		record.Header{Key: HeaderPlugin, Value: []byte(r.def.Name)},
		record.Header{Key: HeaderSource, Value: []byte(r.input.Name() + "/" + strconv.Itoa(r.shard) + "/" + strconv.FormatUint(rec.Seq, 10))})
	dl.Origin = record.Origin{Hub: r.originHub, Shard: uint32(r.shard), Seq: rec.Seq<<16 | deadLetterIndex}
	ob.recs = append(ob.recs, dl)
	r.logf(LevelWarn, "record %d dead-lettered to %s: %s", rec.Seq, r.def.DeadLetter, reason)
	cp := r.cp
	cp.Dead++
	return r.commitWith(ctx, cp, rec.Seq+1, 1)
}

// ensureInstance creates the instance if there is none. Failing to create
// one is not the input's fault: it backs off, and pauses the plugin after
// repeated failures.
func (r *runner) ensureInstance(ctx context.Context) bool {
	for r.inst == nil {
		cctx, end := r.watchFor(ctx, instanceLeaseFactor*r.lease)
		inst, err := r.mod.Instantiate(cctx, r)
		if err == nil {
			if err = inst.Init(cctx, wasmhost.AppendConfig(nil, r.def.guestConfig())); err != nil {
				inst.Close()
			}
		}
		if end() {
			if err == nil {
				inst.Close() // cancelled after it finished: redo it in quarantine anyway
			}
			r.suspect = suspectCalls
			if !r.sleep(ctx, 0) {
				return false
			}
			continue
		}
		r.judge(err)
		if err == nil {
			r.inst, r.instFails = inst, 0
			r.stats.memory.Store(int64(inst.MemoryBytes()))
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		r.instFails++
		r.noteError("create instance: " + err.Error())
		if r.instFails >= maxInstanceFailures {
			r.fatal(fmt.Sprintf("cannot create an instance (%d attempts): %v", r.instFails, err))
			return false
		}
		if !r.sleep(ctx, backoff.Delay(r.def.BackoffMin, r.def.BackoffMax, r.instFails)) {
			return false
		}
	}
	return true
}

func (r *runner) closeInstance() {
	if r.inst != nil {
		r.inst.Close()
		r.inst = nil
	}
}

// callBatch calls eh_on_batch; effects collect in r.delta and r.outs.
func (r *runner) callBatch(ctx context.Context, recs []record.Record) error {
	r.kind = kindBatch
	r.seqs = r.seqs[:0]
	r.in = r.in[:0]
	r.hdrs = r.hdrs[:0]
	for i := range recs {
		rec := &recs[i]
		r.seqs = append(r.seqs, rec.Seq)
		start := len(r.hdrs)
		for _, h := range rec.Headers {
			r.hdrs = append(r.hdrs, wasmhost.Header{Key: []byte(h.Key), Value: h.Value})
		}
		r.inputClock = max(r.inputClock, rec.IngestTime)
		r.in = append(r.in, wasmhost.InputRecord{Seq: rec.Seq, IngestTime: rec.IngestTime, Time: rec.Time,
			Key: rec.Key, Value: rec.Value, Headers: r.hdrs[start:len(r.hdrs):len(r.hdrs)]})
	}
	r.batch = wasmhost.AppendBatch(r.batch[:0], r.input.Name(), uint32(r.shard), r.in)
	for {
		cctx, end := r.watch(ctx)
		t0 := time.Now()
		r.written = 0
		r.stats.callStart.Store(t0.UnixNano())
		err := r.inst.OnBatch(cctx, r.batch, len(recs))
		r.stats.callStart.Store(0)
		preempted := end()
		if !preempted {
			r.judge(err)
		}
		r.afterCall(t0)
		if !preempted {
			return err
		}
		r.discard()
		if !r.requeue(ctx) {
			return fmt.Errorf("plugins: requeue: %w", context.Cause(ctx))
		}
	}
}

func (r *runner) afterCall(t0 time.Time) {
	d := time.Since(t0)
	r.stats.calls.Add(1)
	r.stats.callNanos.Add(uint64(d))
	r.stats.callHist[callBucket(d)].Add(1)
	if r.inst.Broken() {
		r.inst.Close()
		r.inst = nil
		r.stats.restarts.Add(1)
	} else {
		r.stats.memory.Store(int64(r.inst.MemoryBytes()))
	}
}

// discard drops the effects of failed calls, or of committed ones once
// they are durable.
func (r *runner) discard() {
	r.delta.reset()
	r.getValid = false
	for _, o := range r.outs {
		clear(o.recs)
		o.recs = o.recs[:0]
	}
	r.nOut = 0
	r.arena = r.arena[:0]
	r.growth = 0
}

// commitProgress makes the effects of the calls since the last commit
// durable: outputs first (idempotent by origin), then state and checkpoint
// together.
func (r *runner) commitProgress(ctx context.Context, next uint64, consumed int) bool {
	return r.commitWith(ctx, r.cp, next, consumed)
}

func (r *runner) commitWith(ctx context.Context, cp checkpoint, next uint64, consumed int) bool {
	if !r.appendOutputs(ctx) {
		return false
	}
	cp.Next = next
	cp.RecordsIn += uint64(consumed)
	cp.RecordsOut += uint64(r.nOut)
	return r.commitCheckpoint(ctx, cp, r.delta)
}

// commitCheckpoint commits cp with d (nil: checkpoint only), retrying a
// failing database with backoff, then clears the call effects.
func (r *runner) commitCheckpoint(ctx context.Context, cp checkpoint, d *delta) bool {
	if d != nil && d.empty() {
		d = nil
	}
	for attempt := 1; ; attempt++ {
		got, err := r.m.commit(r.def.Name, r.input.Name(), r.shard, cp, d)
		if err == nil {
			r.setCheckpoint(got)
			r.discard()
			return true
		}
		if errors.Is(err, ErrClosed) {
			return false
		}
		r.noteError(err.Error())
		if !r.sleep(ctx, backoff.Delay(r.def.BackoffMin, r.def.BackoffMax, attempt)) {
			return false
		}
	}
}

// appendOutputs stores the buffered outputs, stream by stream. A retry after
// a partial failure is safe: the store drops origins it already holds.
func (r *runner) appendOutputs(ctx context.Context) bool {
	for _, o := range r.outs {
		for len(o.recs) > 0 {
			_, err := o.stream.Append(ctx, store.Batch{Shard: -1, Records: o.recs})
			if err == nil {
				break
			}
			if !r.storeTrouble(ctx, "append to "+o.stream.Name(), err) {
				return false
			}
		}
	}
	return true
}

// storeTrouble handles a store error: a vanished stream pauses the plugin,
// anything else is retried after a backoff. It returns false when the
// runner must stop.
func (r *runner) storeTrouble(ctx context.Context, op string, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	if errors.Is(err, store.ErrStreamNotFound) || errors.Is(err, store.ErrClosed) {
		// A closed stream is either a hub shutdown (ctx ends too) or a
		// deleted stream, which the manager's watcher (binding.go) has
		// seen too: it restarts the plugin, which waits for the stream.
		r.noteError(op + ": " + err.Error())
		return false
	}
	r.noteError(op + ": " + err.Error())
	return r.sleep(ctx, backoff.Delay(r.def.BackoffMin, r.def.BackoffMax, 1))
}

// fireTimer calls eh_on_timer(now). A firing with outputs is recorded in the
// checkpoint before they are appended, so that a crash replays it with the
// same now and the same origins; a firing without effects costs no write.
func (r *runner) fireTimer(ctx context.Context, now int64) bool {
	r.firedAt = max(r.firedAt, now)
	return r.runTimer(ctx, r.cp.TimerSeq+1, now, false)
}

func (r *runner) runTimer(ctx context.Context, seq uint64, now int64, replay bool) bool {
	if !r.ensureInstance(ctx) {
		return false
	}
	var err error
	for {
		r.kind, r.timerSeq = kindTimer, seq
		cctx, end := r.watch(ctx)
		t0 := time.Now()
		r.written = 0
		r.stats.callStart.Store(t0.UnixNano())
		err = r.inst.OnTimer(cctx, now)
		r.stats.callStart.Store(0)
		preempted := end()
		if !preempted {
			r.judge(err)
		}
		r.afterCall(t0)
		if !preempted {
			break
		}
		r.discard()
		if !r.requeue(ctx) {
			return false
		}
	}
	r.stats.firings.Add(1)
	if err != nil {
		r.discard()
		if ctx.Err() != nil {
			return false
		}
		r.noteError(fmt.Sprintf("timer: %v", err))
		if r.def.OnError == PolicyPause {
			r.fatal("timer failed: " + err.Error())
			return false
		}
		if replay {
			// Abandon the recorded firing; its sequence is never reused,
			// so outputs it may have stored cannot shadow later ones.
			cp := r.cp
			cp.PendingSeq, cp.PendingNow, cp.TimerSeq = 0, 0, seq
			return r.commitCheckpoint(ctx, cp, nil)
		}
		return true // skipped; the next tick tries again
	}
	if r.nOut == 0 && r.delta.empty() {
		return true
	}
	cp := r.cp
	if r.nOut > 0 && !replay {
		cp.PendingSeq, cp.PendingNow = seq, now
		got, err := r.m.commit(r.def.Name, r.input.Name(), r.shard, cp, nil)
		if err != nil {
			r.noteError(err.Error())
			r.discard()
			return !errors.Is(err, ErrClosed)
		}
		r.setCheckpoint(got)
		cp = got
	}
	if !r.appendOutputs(ctx) {
		return false
	}
	cp.PendingSeq, cp.PendingNow, cp.TimerSeq = 0, 0, seq
	cp.RecordsOut += uint64(r.nOut)
	return r.commitCheckpoint(ctx, cp, r.delta)
}

// fatal pauses the plugin with reason.
func (r *runner) fatal(reason string) {
	r.noteError(reason)
	r.m.pauseAsync(r.p, r.def.Version, reason)
}

func (r *runner) noteError(msg string) {
	r.stats.errors.Add(1)
	r.stats.mu.Lock()
	r.stats.lastErr, r.stats.lastErrAt = msg, time.Now().UTC()
	r.stats.mu.Unlock()
	r.logf(LevelError, "%s", msg)
}

func (r *runner) logf(level Level, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.p.logs.add(level, r.input.Name(), r.shard, msg)
	switch {
	case level >= LevelError:
		r.logger.Error("plugin: " + msg)
	case level == LevelWarn:
		r.logger.Warn("plugin: " + msg)
	default:
		r.logger.Debug("plugin: " + msg)
	}
}

// wasmhost.Host implementation.

// Emit buffers an output with its origin: (input seq << 16 | index) for a
// batch, (firing << 32 | index) under the timer origin for a timer call.
func (r *runner) Emit(stream []byte, rec wasmhost.OutputRecord, input, index int) error {
	i, ok := r.outIdx[string(stream)]
	if !ok || string(stream) == r.def.DeadLetter && !r.declared(string(stream)) {
		if r.declared(string(stream)) {
			return fmt.Errorf("plugins: output %q: %w", stream, store.ErrStreamNotFound)
		}
		return fmt.Errorf("%w: %q (declared outputs: %v)", ErrUndeclaredStream, stream, r.def.Outputs)
	}
	out := record.Record{Time: rec.Time, Key: r.copy(rec.Key), Value: r.copy(rec.Value)}
	if len(rec.Headers) > 0 {
		out.Headers = make([]record.Header, len(rec.Headers))
		for j, h := range rec.Headers {
			out.Headers[j] = record.Header{Key: string(h.Key), Value: r.copy(h.Value)}
		}
	}
	if r.kind == kindTimer {
		out.Origin = record.Origin{Hub: r.timerHub, Shard: uint32(r.shard), Seq: r.timerSeq<<32 | uint64(index)}
	} else {
		out.Origin = record.Origin{Hub: r.originHub, Shard: uint32(r.shard), Seq: r.seqs[input]<<16 | uint64(index)}
	}
	if n := out.PayloadSize(); n > r.maxRecord {
		return fmt.Errorf("%w: output of %d bytes (key, value and headers) exceeds the store's record limit %d", wasmhost.ErrABI, n, r.maxRecord)
	}
	o := r.outs[i]
	o.recs = append(o.recs, out)
	r.nOut++
	return nil
}

func (r *runner) declared(stream string) bool {
	for _, s := range r.def.Outputs {
		if s == stream {
			return true
		}
	}
	return false
}

// copy moves b out of guest memory into the runner's arena, keeping nil nil.
func (r *runner) copy(b []byte) []byte {
	if b == nil {
		return nil
	}
	if len(r.arena)+len(b) > cap(r.arena) {
		// Earlier slices keep the old array: never reallocate under them.
		r.arena = make([]byte, 0, max(64<<10, 2*len(b)))
	}
	r.arena = append(r.arena, b...)
	return r.arena[len(r.arena)-len(b) : len(r.arena) : len(r.arena)]
}

// viewState runs fn on the runner's committed state (nil when it has
// none) in a read transaction of its own. A transaction is never held
// across guest code: bbolt grows a file's map only when no read
// transaction is open, so one kept for a whole call (up to its deadline)
// held up every runner's commits once plugins.db had to grow.
func (r *runner) viewState(fn func(st *bolt.Bucket)) {
	r.m.db.View(func(tx *bolt.Tx) error {
		var st *bolt.Bucket
		if rb, _ := runBucket(tx, r.def.Name, r.input.Name(), r.shard, false); rb != nil {
			st = rb.Bucket(bucketState)
		}
		fn(st)
		return nil
	})
}

// committed returns the committed value of key, copied out of the
// transaction (valid until the next host call).
func (r *runner) committed(key []byte) ([]byte, bool) {
	if r.getValid && bytes.Equal(key, r.getKey) {
		return r.getVal, r.getFound
	}
	r.getFound = false
	r.viewState(func(st *bolt.Bucket) {
		if st == nil {
			return
		}
		if v := st.Get(key); v != nil {
			r.getVal, r.getFound = append(r.getVal[:0], v...), true
		}
	})
	r.getKey, r.getValid = append(r.getKey[:0], key...), true
	if !r.getFound {
		return nil, false
	}
	return r.getVal, true
}

// StateGet reads the uncommitted delta, then the committed state.
func (r *runner) StateGet(key []byte) ([]byte, bool, error) {
	if v, exists, found := r.delta.get(key); found {
		return v, exists, nil
	}
	v, ok := r.committed(key)
	return v, ok, nil
}

// StateSet records a change in the delta; it commits with the checkpoint.
func (r *runner) StateSet(key, value []byte) error {
	if err := r.chargeState(key, len(key)+len(value), int64(len(key)+len(value))); err != nil {
		return err
	}
	r.delta.set(string(key), bytes.Clone(value))
	return nil
}

// StateDelete records a deletion in the delta.
func (r *runner) StateDelete(key []byte) error {
	if err := r.chargeState(key, len(key), 0); err != nil {
		return err
	}
	r.delta.remove(string(key))
	return nil
}

// chargeState accounts a state write of written bytes that leaves key with
// size bytes (0: deleted) against the per-call cap and the plugin's quota.
// Shrinking state is always allowed; the quota is checked against the
// committed state of every running shard plus this shard's uncommitted
// changes, so shards writing at once may pass it by one call's delta each.
func (r *runner) chargeState(key []byte, written int, size int64) error {
	if r.def.MaxStateDelta > 0 && r.written+written > r.def.MaxStateDelta {
		return fmt.Errorf("plugins: %w: the call wrote more than max_state_delta (%d bytes) of keyed state", ErrStateLimit, r.def.MaxStateDelta)
	}
	var old int64
	if v, exists, found := r.delta.get(key); found {
		if exists {
			old = int64(len(key) + len(v))
		}
	} else if v, ok := r.committed(key); ok {
		old = int64(len(key) + len(v))
	}
	growth := r.growth + size - old
	if size > old && r.def.StateQuota > 0 {
		if used := r.p.stateUsed.Load(); used+growth > r.def.StateQuota {
			return fmt.Errorf("plugins: %w: keyed state would grow to %d bytes, past state_quota (%d bytes)", ErrStateLimit, used+growth, r.def.StateQuota)
		}
	}
	r.written += written
	r.growth = growth
	return nil
}

// StateNext merges the delta's keys with the committed keys.
func (r *runner) StateNext(prefix, after []byte) ([]byte, bool, error) {
	// Smallest live key in the delta.
	var dk []byte
	cur := after
	for {
		k, deleted, ok := r.delta.next(prefix, cur)
		if !ok {
			break
		}
		if !deleted {
			dk = []byte(k)
			break
		}
		cur = []byte(k)
	}
	// Smallest committed key the delta does not override, copied out of
	// the transaction.
	var bk []byte
	r.viewState(func(st *bolt.Bucket) {
		if st == nil {
			return
		}
		c := st.Cursor()
		seek := after
		if len(seek) == 0 || bytes.Compare(seek, prefix) < 0 {
			seek = prefix
		}
		k, _ := c.Seek(seek)
		for ; k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			if bytes.Compare(k, after) <= 0 {
				continue
			}
			if _, _, found := r.delta.get(k); found {
				continue
			}
			r.nextBuf = append(r.nextBuf[:0], k...)
			bk = r.nextBuf
			break
		}
	})
	switch {
	case dk == nil && bk == nil:
		return nil, false, nil
	case dk == nil || (bk != nil && bytes.Compare(bk, dk) < 0):
		return bk, true, nil
	}
	return dk, true, nil
}

// Log keeps the guest's line in the plugin's log and forwards it to the
// hub's logger within the rate limit.
func (r *runner) Log(level wasmhost.Level, msg []byte) {
	s := string(msg)
	r.p.logs.add(Level(level), r.input.Name(), r.shard, s)
	if r.p.lim.Allow(time.Now()) {
		r.logger.Log(context.Background(), slog.Level(4*(int(level)-1)), "guest: "+s)
	}
}

// Now is the hub's wall clock.
func (r *runner) Now() int64 { return r.now().UnixNano() }

// Input names the runner's input shard.
func (r *runner) Input() (string, uint32) { return r.input.Name(), uint32(r.shard) }

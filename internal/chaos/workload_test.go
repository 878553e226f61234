//go:build chaos

package chaos

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgehub/edgehub/sdk"
	"github.com/edgehub/edgehub/store"
)

// workload is the clients of a fault test: idempotent producers writing
// unique values over a few keys, a consumer group member reading and
// committing, and a plain subscription reading everything; every operation
// goes into the history.
type workload struct {
	tb        testing.TB
	rec       *Recorder
	addr      string
	stream    string
	producers int
	keys      int
	rate      int // records per second per producer
	valueSize int // pad values to this many bytes (the history keeps the id only)
	// classify turns a producer's error into an outcome. The default
	// calls every error Unknown: a crash test claims nothing about
	// failures.
	classify func(error) Outcome
	// lossExpected is set by the negative control: the hub loses
	// acknowledged records, so a subscription resuming past a shard's new
	// end is refused (the hub saying so is right) and ends quietly.
	lossExpected bool

	ctx     context.Context // the consumers'
	cancel  context.CancelFunc
	pctx    context.Context // the producers'
	pcancel context.CancelFunc
	wg      sync.WaitGroup
	pwg     sync.WaitGroup
	acked   atomic.Int64
	failed  atomic.Int64
	unk     atomic.Int64
	reads   atomic.Int64
	stalls  atomic.Int64 // subscriptions reopened after a stall

	infoOnce sync.Once
	info     *sdk.Client
	errMu    sync.Mutex
	errs     map[string]int // producer error texts, for the log

	// lastRead is what the consumers have read, per client and shard,
	// for the catch-up wait.
	readMu   sync.Mutex
	lastRead map[string]map[int]uint64
}

func newWorkload(tb testing.TB, rec *Recorder, addr, stream string) *workload {
	w := &workload{tb: tb, rec: rec, addr: addr, stream: stream, producers: 4, keys: 16, rate: 400,
		errs: map[string]int{}, lastRead: map[string]map[int]uint64{}}
	w.classify = func(error) Outcome { return Unknown }
	w.ctx, w.cancel = context.WithCancel(context.Background())
	w.pctx, w.pcancel = context.WithCancel(w.ctx)
	return w
}

// start launches the producers and, if consumers, the group member and the
// subscription.
func (w *workload) start(consumers bool) {
	for i := range w.producers {
		w.pwg.Add(1)
		go func() {
			defer w.pwg.Done()
			w.produce(fmt.Sprintf("p%d", i))
		}()
	}
	if consumers {
		w.wg.Add(2)
		go func() { defer w.wg.Done(); w.groupMember("g1", "m1") }()
		go func() { defer w.wg.Done(); w.subscriber("s1") }()
	}
}

func (w *workload) noteErr(err error) {
	w.errMu.Lock()
	s := err.Error()
	if len(s) > 120 {
		s = s[:120]
	}
	w.errs[s]++
	w.errMu.Unlock()
}

// produce writes values "<client>-<n>" at the workload's rate until stopped.
func (w *workload) produce(client string) {
	c := dial(w.tb, w.addr)
	if c == nil {
		return
	}
	var p *sdk.Producer
	for w.pctx.Err() == nil {
		var err error
		ctx, cancel := context.WithTimeout(w.pctx, 30*time.Second)
		p, err = c.Producer(ctx, w.stream, sdk.ProducerOptions{AckTimeout: 2 * time.Second, DeliveryTimeout: 10 * time.Minute, MaxInFlight: 8})
		cancel()
		if err == nil {
			break
		}
		w.noteErr(err)
	}
	if p == nil {
		return
	}
	inflight := make(chan struct{}, 512) // bounds the history's open operations
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	perTick := max(w.rate/100, 1)
	for n := 0; w.pctx.Err() == nil; {
		<-tick.C
		for range perTick {
			select {
			case inflight <- struct{}{}:
			case <-w.pctx.Done():
			}
			if w.pctx.Err() != nil {
				break
			}
			key := fmt.Sprintf("k%02d", n%w.keys)
			value := fmt.Sprintf("%s-%d", client, n)
			n++
			inv := w.rec.Invoke(Op{Kind: Produce, Client: client, Stream: w.stream, Key: key, Value: value})
			payload := paddedValue(value, w.valueSize)
			err := p.SendAsync(context.Background(), sdk.Record{Key: []byte(key), Value: payload}, func(pos sdk.Position, err error) {
				<-inflight
				if err != nil {
					w.complete(inv, err)
					return
				}
				inv.OK(pos.Shard, pos.Seq)
				w.acked.Add(1)
			})
			if err != nil {
				<-inflight
				inv.Fail(err) // not accepted: never sent
				w.failed.Add(1)
				w.noteErr(err)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p.Flush(ctx)
	p.Close(ctx)
}

func (w *workload) complete(inv *Invocation, err error) {
	w.noteErr(err)
	if w.classify(err) == Failed {
		inv.Fail(err)
		w.failed.Add(1)
		return
	}
	inv.Unknown(err)
	w.unk.Add(1)
}

func (w *workload) noteRead(client string, shard int, seq uint64) {
	w.readMu.Lock()
	m := w.lastRead[client]
	if m == nil {
		m = map[int]uint64{}
		w.lastRead[client] = m
	}
	m[shard] = seq
	w.readMu.Unlock()
	w.reads.Add(1)
}

// groupMember reads as a member of group, committing explicitly (every 200
// records or 300 ms) so that every commit is in the history.
func (w *workload) groupMember(group, member string) {
	c := dial(w.tb, w.addr)
	if c == nil {
		return
	}
	pending := map[int]uint64{} // shard → offset to commit (last read + 1)
	var g *sdk.GroupConsumer
	var mu sync.Mutex // guards pending against the callbacks (same goroutine, but be explicit)
	opts := sdk.GroupOptions{MemberID: member, SessionTimeout: 3 * time.Second, CommitInterval: -1,
		OnAssign: func(shards []int) {
			mu.Lock()
			for _, s := range shards {
				delete(pending, s) // a new lease starts at the group's offset
			}
			mu.Unlock()
		},
		OnRevoke: func(shards []int) {
			// The SDK commits revoked shards itself: record that commit,
			// outcome unknown.
			mu.Lock()
			for _, s := range shards {
				if off, ok := pending[s]; ok {
					w.rec.Invoke(Op{Kind: Commit, Client: member, Stream: w.stream, Group: group, Shard: s, Seq: off}).Unknown(errors.New("revoke commit"))
					delete(pending, s)
				}
			}
			mu.Unlock()
		}}
	commit := func() {
		mu.Lock()
		defer mu.Unlock()
		if len(pending) == 0 {
			return
		}
		invs := map[int]*Invocation{}
		for s, off := range pending {
			invs[s] = w.rec.Invoke(Op{Kind: Commit, Client: member, Stream: w.stream, Group: group, Shard: s, Seq: off})
		}
		clear(pending)
		mu.Unlock()
		ctx, cancel := context.WithTimeout(w.ctx, 5*time.Second)
		err := g.Commit(ctx)
		cancel()
		mu.Lock()
		for _, inv := range invs {
			if err == nil {
				inv.OK(0, 0)
			} else {
				inv.Unknown(err)
			}
		}
	}
	defer func() {
		if g != nil {
			commit()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			g.Close(ctx)
			cancel()
		}
	}()
	lastCommit := time.Now()
	n, idle := 0, 0
	for w.ctx.Err() == nil {
		if g == nil {
			ctx, cancel := context.WithTimeout(w.ctx, 30*time.Second)
			var err error
			g, err = c.JoinGroup(ctx, group, w.stream, opts)
			cancel()
			if err != nil {
				g = nil
				time.Sleep(100 * time.Millisecond)
				continue
			}
		}
		ctx, cancel := context.WithTimeout(w.ctx, 500*time.Millisecond)
		m, err := g.Next(ctx)
		cancel()
		if err != nil {
			if w.ctx.Err() != nil {
				continue
			}
			stalled := false
			if errors.Is(err, context.DeadlineExceeded) {
				// Stalled on a connection the restarted hub forgot
				// (see subscriber): leave and join again.
				idle++
				stalled = idle >= 4 && w.behindAny(member)
			}
			if !errors.Is(err, context.DeadlineExceeded) || stalled {
				// A fatal membership error, or a stall: join again.
				if stalled {
					w.stalls.Add(1)
				}
				commit()
				cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
				g.Close(cctx)
				ccancel()
				g, idle = nil, 0
			}
			continue
		}
		idle = 0
		w.rec.Read(Op{Kind: Consume, Client: member, Stream: w.stream, Group: group, Shard: m.Shard, Seq: m.Record.Seq,
			Key: string(m.Record.Key), Value: valueID(m.Record.Value)})
		w.noteRead(member, m.Shard, m.Record.Seq)
		mu.Lock()
		pending[m.Shard] = m.Record.Seq + 1
		mu.Unlock()
		if n++; n%200 == 0 || time.Since(lastCommit) > 300*time.Millisecond {
			commit()
			lastCommit = time.Now()
		}
	}
}

// subscriber reads the whole stream from the start, one subscription per
// shard. A subscription that gets nothing for 2 s while its shard has more
// is closed and opened again after its last record: an idle QUIC client
// learns that a restarted hub forgot its connection only at the idle
// timeout (60 s), because its small packets are below the size quic-go
// answers with a stateless reset. (Reported; the SDK's own resume after a
// broken subscription is what the other reads exercise.)
func (w *workload) subscriber(client string) {
	c := dial(w.tb, w.addr)
	if c == nil {
		return
	}
	var info sdk.StreamInfo
	for w.ctx.Err() == nil {
		ctx, cancel := context.WithTimeout(w.ctx, 30*time.Second)
		var err error
		info, err = c.Info(ctx, w.stream)
		cancel()
		if err == nil {
			break
		}
	}
	var wg sync.WaitGroup
	for sh := range info.Shards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.subscribeShard(c, client, sh)
		}()
	}
	wg.Wait()
}

func (w *workload) subscribeShard(c *sdk.Client, client string, shard int) {
	from := sdk.FromEarliest()
	var sub *sdk.Subscription
	defer func() {
		if sub != nil {
			sub.Close()
		}
	}()
	idle := 0
	for w.ctx.Err() == nil {
		if sub == nil {
			ctx, cancel := context.WithTimeout(w.ctx, 10*time.Second)
			var err error
			sub, err = c.Subscribe(ctx, w.stream, sdk.ConsumeOptions{Shards: []int{shard}, From: from})
			cancel()
			if err != nil {
				sub = nil
				time.Sleep(50 * time.Millisecond)
				continue
			}
		}
		ctx, cancel := context.WithTimeout(w.ctx, 500*time.Millisecond)
		m, err := sub.Next(ctx)
		cancel()
		if err != nil {
			if w.ctx.Err() != nil {
				return
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				if w.lossExpected {
					w.tb.Logf("subscription to shard %d ended (the hub lost records, as expected here): %v", shard, err)
					return
				}
				w.tb.Errorf("subscription to shard %d ended: %v", shard, err)
				return
			}
			if idle++; idle >= 4 && w.behind(client, shard) {
				sub.Close()
				sub = nil
				w.stalls.Add(1)
				w.readMu.Lock()
				if last, ok := w.lastRead[client][shard]; ok {
					from = sdk.FromSeq(last + 1)
				}
				w.readMu.Unlock()
			}
			continue
		}
		idle = 0
		w.rec.Read(Op{Kind: Consume, Client: client, Stream: w.stream, Shard: m.Shard, Seq: m.Record.Seq,
			Key: string(m.Record.Key), Value: valueID(m.Record.Value)})
		w.noteRead(client, m.Shard, m.Record.Seq)
	}
}

// behind reports whether client has not read shard to its end.
func (w *workload) behind(client string, shard int) bool {
	c := w.infoClient()
	if c == nil {
		return false
	}
	ctx, cancel := context.WithTimeout(w.ctx, 2*time.Second)
	defer cancel()
	info, err := c.Info(ctx, w.stream)
	if err != nil || shard >= len(info.Shards) {
		return false
	}
	return w.behindIn(info, client, shard)
}

// behindAny reports whether client has not read some shard to its end.
func (w *workload) behindAny(client string) bool {
	c := w.infoClient()
	if c == nil {
		return false
	}
	ctx, cancel := context.WithTimeout(w.ctx, 2*time.Second)
	defer cancel()
	info, err := c.Info(ctx, w.stream)
	if err != nil {
		return false
	}
	for sh := range info.Shards {
		if w.behindIn(info, client, sh) {
			return true
		}
	}
	return false
}

func (w *workload) behindIn(info sdk.StreamInfo, client string, shard int) bool {
	s := info.Shards[shard]
	w.readMu.Lock()
	defer w.readMu.Unlock()
	last, ok := w.lastRead[client][shard]
	return s.Last >= s.First && (!ok || last < s.Last)
}

func (w *workload) infoClient() *sdk.Client {
	w.infoOnce.Do(func() { w.info = dial(w.tb, w.addr) })
	return w.info
}

// stopProducers ends production and waits for the producers to finish
// (their last records acknowledged or given up on); the consumers go on
// until stop.
func (w *workload) stopProducers() {
	w.pcancel()
	w.pwg.Wait()
}

// caughtUp waits until every consumer has read every shard to its last
// sequence, as the hub reports it.
func (w *workload) caughtUp(consumers []string, timeout time.Duration) error {
	c := w.infoClient()
	if c == nil {
		return errors.New("no client")
	}
	deadline := time.Now().Add(timeout)
	report := time.Now()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		info, err := c.Info(ctx, w.stream)
		cancel()
		if err == nil {
			behind := ""
			w.readMu.Lock()
			for _, cl := range consumers {
				for sh, s := range info.Shards {
					if s.Last >= s.First && w.lastRead[cl][sh] < s.Last {
						behind = fmt.Sprintf("%s at %d:%d of %d", cl, sh, w.lastRead[cl][sh], s.Last)
					}
				}
			}
			w.readMu.Unlock()
			if behind == "" {
				return nil
			}
			if time.Since(report) > 5*time.Second {
				w.tb.Logf("waiting for the consumers: %s", behind)
				report = time.Now()
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("consumers not caught up after %s: %s", timeout, behind)
			}
		} else if time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (w *workload) stop() {
	w.stopProducers()
	w.cancel()
	w.wg.Wait()
}

func (w *workload) errSummary() string {
	w.errMu.Lock()
	defer w.errMu.Unlock()
	type kv struct {
		k string
		n int
	}
	var all []kv
	for k, n := range w.errs {
		all = append(all, kv{k, n})
	}
	slices.SortFunc(all, func(a, b kv) int { return b.n - a.n })
	s := ""
	for i, e := range all {
		if i == 5 {
			break
		}
		s += fmt.Sprintf("\n  %6d × %s", e.n, e.k)
	}
	return s
}

// readBack records the whole stream, read from the data dir with the store
// (the hub must be stopped), as the history's Final lines.
func readBack(tb testing.TB, rec *Recorder, dataDir, stream, hub string) int {
	tb.Helper()
	return readBackTo(tb, rec, dataDir, stream, hub, nil)
}

// readBackTo is readBack calling fn (if not nil) with each record's
// position.
func readBackTo(tb testing.TB, rec *Recorder, dataDir, stream, hub string, fn func(shard int, seq uint64)) int {
	tb.Helper()
	cfg := store.DefaultConfig(dataDir)
	cfg.Logger = quietLogger()
	s, err := store.Open(cfg)
	if err != nil {
		tb.Fatalf("read-back: %v", err)
	}
	defer s.Close()
	st, err := s.Stream(stream)
	if err != nil {
		tb.Fatalf("read-back: %v", err)
	}
	n := 0
	for sh := 0; sh < st.Shards(); sh++ {
		for from := uint64(0); ; {
			recs, err := st.Read(sh, from, store.ReadOptions{MaxRecords: 10000})
			if err != nil {
				tb.Fatalf("read-back shard %d: %v", sh, err)
			}
			if len(recs) == 0 {
				break
			}
			for _, r := range recs {
				op := Op{Kind: Final, Client: "final", Hub: hub, Stream: stream, Shard: sh, Seq: r.Seq, Key: string(r.Key), Value: valueID(r.Value)}
				if !r.Origin.IsLocal() {
					op.Origin = &Origin{Hub: r.Origin.Hub, Shard: r.Origin.Shard, Seq: r.Origin.Seq}
				}
				rec.Read(op)
				if fn != nil {
					fn(sh, r.Seq)
				}
				n++
			}
			from = recs[len(recs)-1].Seq + 1
		}
	}
	return n
}

// paddedValue is the payload written for value id: the id, then '|' and
// zeros up to size bytes (the id alone if size is smaller).
func paddedValue(id string, size int) []byte {
	payload := []byte(id)
	if len(payload) < size {
		payload = append(append(payload, '|'), make([]byte, size-len(payload)-1)...)
	}
	return payload
}

// valueID is the id a produced value starts with (before any padding).
func valueID(v []byte) string {
	if i := bytes.IndexByte(v, '|'); i >= 0 {
		return string(v[:i])
	}
	return string(v)
}

// checkHistory closes rec, reads its file back and checks it.
func checkHistory(tb testing.TB, rec *Recorder, path string) *Report {
	tb.Helper()
	if err := rec.Close(); err != nil {
		tb.Fatal(err)
	}
	ops, err := ReadHistoryFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	r := Check(ops)
	if keep := os.Getenv("EDGEHUB_CHAOS_KEEP"); keep != "" && !r.OK() {
		// Keep the history of a failed check for a closer look.
		dst := filepath.Join(keep, strings.ReplaceAll(tb.Name(), "/", "_")+".jsonl")
		if b, err := os.ReadFile(path); err == nil && os.WriteFile(dst, b, 0o644) == nil {
			tb.Logf("history kept in %s", dst)
		}
	}
	return r
}

func historyPath(tb testing.TB) string { return filepath.Join(tb.TempDir(), "history.jsonl") }

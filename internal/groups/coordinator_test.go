package groups

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Session timeouts in these tests are short; waits are bounded generously
// (a deadline, not an assertion on speed).
const (
	testTimeout = 200 * time.Millisecond
	waitBound   = 20 * time.Second
)

// positions is a Resolver over fixed shard bounds: earliest is 1, latest is
// next, a sequence is itself.
func positions(next uint64) Resolver {
	return func(stream string, shard int, start Start) (uint64, error) {
		switch start.Kind {
		case StartLatest:
			return next, nil
		case StartSeq:
			return start.Value, nil
		}
		return 1, nil
	}
}

func openTest(tb testing.TB, path string) *Coordinator {
	tb.Helper()
	cfg := DefaultConfig(path)
	cfg.MinSessionTimeout = 10 * time.Millisecond
	cfg.MaxMembers = 4
	cfg.Resolve = positions(100)
	cfg.Logger = slog.New(slog.NewTextHandler(tbWriter{tb}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c, err := Open(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func join(tb testing.TB, c *Coordinator, group, member string) *Session {
	tb.Helper()
	s, err := c.Join(JoinRequest{Group: group, Stream: "events", Shards: 4, Member: member, SessionTimeout: testTimeout})
	if err != nil {
		tb.Fatalf("join %s: %v", member, err)
	}
	return s
}

// shards returns the shards of an assignment.
func shards(a Assignment) []int {
	var out []int
	for _, l := range a.Leases {
		out = append(out, l.Shard)
	}
	return out
}

func leaseOf(tb testing.TB, a Assignment, shard int) Lease {
	tb.Helper()
	for _, l := range a.Leases {
		if l.Shard == shard {
			return l
		}
	}
	tb.Fatalf("shard %d not in assignment %+v", shard, a)
	return Lease{}
}

// waitFor waits until s's assignment satisfies ok, returning it. It wakes
// on s.Changed and, since a behaving member (behave) may take that signal,
// every few milliseconds too.
func waitFor(tb testing.TB, s *Session, what string, ok func(Assignment) bool) Assignment {
	tb.Helper()
	deadline := time.After(waitBound)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		a := s.Assignment()
		if ok(a) {
			return a
		}
		select {
		case <-s.Changed():
		case <-tick.C:
		case <-deadline:
			tb.Fatalf("%s: waited for %s; assignment %+v", s.Member(), what, a)
		}
	}
}

func holds(want ...int) func(Assignment) bool {
	return func(a Assignment) bool { return slices.Equal(shards(a), want) }
}

// keepAlive touches s until the test ends.
func keepAlive(tb testing.TB, s *Session) { tb.Cleanup(behave(s, false)) }

// behave plays a member: it touches s well within its session timeout and,
// with sync, confirms every new assignment at once (a member with nothing
// to commit). The returned function stops it.
func behave(s *Session, sync bool) (stop func()) {
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(testTimeout / 4)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-s.Done():
				return
			case <-s.Changed():
				if sync {
					s.Sync(s.Assignment().Generation)
				}
			case <-t.C:
				s.Touch()
			}
		}
	}()
	var once bool
	return func() {
		if !once {
			once = true
			close(quit)
			<-done
		}
	}
}

func commit(tb testing.TB, s *Session, shard int, epoch, offset uint64) error {
	tb.Helper()
	return s.Commit([]Commit{{Shard: shard, Epoch: epoch, Offset: offset}})[0]
}

func TestJoinSplitsAndHandsOver(t *testing.T) {
	c := openTest(t, filepath.Join(t.TempDir(), "groups.db"))
	a := join(t, c, "g", "a")
	keepAlive(t, a)
	first := waitFor(t, a, "all shards", holds(0, 1, 2, 3))
	for _, l := range first.Leases {
		if l.Offset != 1 || l.Epoch == 0 {
			t.Fatalf("fresh lease %+v: want offset 1 (earliest) and an epoch", l)
		}
	}
	if err := commit(t, a, 2, leaseOf(t, first, 2).Epoch, 40); err != nil {
		t.Fatal(err)
	}

	b := join(t, c, "g", "b")
	keepAlive(t, b)
	// a gives up 2 and 3 but b gets them only after a confirms.
	revoked := waitFor(t, a, "a handing over 2 and 3", holds(0, 1))
	if got := shards(b.Assignment()); len(got) != 0 {
		t.Fatalf("b holds %v before a confirmed the hand-over", got)
	}
	info, _ := c.Group("g")
	if info.Offsets[2].State != StateRevoking || info.Offsets[0].State != StateAssigned {
		t.Fatalf("states %+v", info.Offsets)
	}
	// The holder's final commit of a shard it hands over is accepted.
	if err := commit(t, a, 2, leaseOf(t, first, 2).Epoch, 50); err != nil {
		t.Fatalf("final commit while handing over: %v", err)
	}
	if err := a.Sync(revoked.Generation); err != nil {
		t.Fatal(err)
	}
	got := waitFor(t, b, "b granted 2 and 3", holds(2, 3))
	if l := leaseOf(t, got, 2); l.Offset != 50 || l.Epoch <= leaseOf(t, first, 3).Epoch {
		t.Fatalf("b's lease %+v: want offset 50 and an epoch above every earlier one", l)
	}
	// a's old epoch is stale now.
	err := commit(t, a, 2, leaseOf(t, first, 2).Epoch, 60)
	if !errors.Is(err, ErrStaleEpoch) || !strings.Contains(err.Error(), "held by b") {
		t.Fatalf("stale commit: %v", err)
	}
	info, _ = c.Group("g")
	if info.Offsets[2].Offset != 50 || info.Offsets[2].CommittedBy != "a" || info.Offsets[2].Owner != "b" {
		t.Fatalf("shard 2 after the hand-over: %+v", info.Offsets[2])
	}
	if st := c.Stats(); st.CommitsRefused != 1 || st.Commits != 2 || st.Joins != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestHandOverNotConfirmed(t *testing.T) {
	c := openTest(t, filepath.Join(t.TempDir(), "groups.db"))
	a := join(t, c, "g", "a")
	keepAlive(t, a)
	first := waitFor(t, a, "all shards", holds(0, 1, 2, 3))
	b := join(t, c, "g", "b")
	keepAlive(t, b)
	// a never syncs: after its session timeout the shards move anyway.
	waitFor(t, b, "b granted 2 and 3 without a's confirmation", holds(2, 3))
	if err := commit(t, a, 3, leaseOf(t, first, 3).Epoch, 9); !errors.Is(err, ErrStaleEpoch) {
		t.Fatalf("commit after a forced hand-over: %v", err)
	}
	if a.Err() != nil {
		t.Fatalf("a's session ended: %v", a.Err())
	}
}

func TestLeaveAndExpiry(t *testing.T) {
	tests := []struct {
		name    string
		stop    func(s *Session) // how member a goes away
		wantErr error            // a's session end
	}{
		{name: "leave", stop: (*Session).Leave, wantErr: ErrLeft},
		{name: "connection lost", stop: (*Session).Detach, wantErr: nil},
		{name: "silent (killed)", stop: func(*Session) {}, wantErr: ErrSessionExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := openTest(t, filepath.Join(t.TempDir(), "groups.db"))
			a := join(t, c, "g", "a")
			stopA := behave(a, true)
			defer stopA()
			b := join(t, c, "g", "b")
			keepAlive(t, b)
			aa := waitFor(t, a, "two shards", func(a Assignment) bool { return len(a.Leases) == 2 })
			waitFor(t, b, "two shards", func(a Assignment) bool { return len(a.Leases) == 2 })
			for _, l := range aa.Leases {
				if err := commit(t, a, l.Shard, l.Epoch, uint64(10+l.Shard)); err != nil {
					t.Fatal(err)
				}
			}
			stopA()
			tt.stop(a)
			all := waitFor(t, b, "every shard", holds(0, 1, 2, 3))
			for _, l := range aa.Leases {
				if got := leaseOf(t, all, l.Shard); got.Offset != uint64(10+l.Shard) {
					t.Fatalf("b resumes shard %d at %d, want the committed %d", l.Shard, got.Offset, 10+l.Shard)
				}
				if err := commit(t, a, l.Shard, l.Epoch, 99); err == nil {
					t.Fatalf("commit from the departed member accepted")
				}
			}
			select {
			case <-a.Done():
			case <-time.After(waitBound):
				t.Fatal("a's session did not end")
			}
			if err := a.Err(); !errors.Is(err, tt.wantErr) {
				t.Fatalf("a ended with %v, want %v", err, tt.wantErr)
			}
			info, _ := c.Group("g")
			if len(info.Members) != 1 || info.Members[0].ID != "b" {
				t.Fatalf("members %+v", info.Members)
			}
		})
	}
}

func TestRejoinKeepsLeases(t *testing.T) {
	c := openTest(t, filepath.Join(t.TempDir(), "groups.db"))
	a := join(t, c, "g", "a")
	before := waitFor(t, a, "all shards", holds(0, 1, 2, 3))
	a.Detach()
	a2, err := c.Join(JoinRequest{Group: "g", Stream: "events", Shards: 4, Member: "a", SessionTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	after := a2.Assignment()
	if !slices.Equal(after.Leases, before.Leases) || after.Generation <= before.Generation || after.SessionTimeout != time.Minute {
		t.Fatalf("rejoin: %+v, before %+v", after, before)
	}
	// The detached session cannot commit; the new one can, with the epoch.
	if err := commit(t, a, 0, before.Leases[0].Epoch, 5); err == nil {
		t.Fatal("the old session committed")
	}
	if err := commit(t, a2, 0, before.Leases[0].Epoch, 5); err != nil {
		t.Fatal(err)
	}
	// A third join replaces the second.
	a3 := join(t, c, "g", "a")
	<-a2.Done()
	if !errors.Is(a2.Err(), ErrReplaced) || a3.Err() != nil {
		t.Fatalf("replaced session: %v; new: %v", a2.Err(), a3.Err())
	}
}

func TestCommitRefusals(t *testing.T) {
	c := openTest(t, filepath.Join(t.TempDir(), "groups.db"))
	a := join(t, c, "g", "a")
	stopA := behave(a, true)
	defer stopA()
	b := join(t, c, "g", "b")
	keepAlive(t, b)
	aa := waitFor(t, a, "two shards", func(a Assignment) bool { return len(a.Leases) == 2 })
	ba := waitFor(t, b, "two shards", func(a Assignment) bool { return len(a.Leases) == 2 })
	mine, theirs := aa.Leases[0], ba.Leases[0]
	res := a.Commit([]Commit{
		{Shard: mine.Shard, Epoch: mine.Epoch, Offset: 7},
		{Shard: mine.Shard, Epoch: mine.Epoch + 100, Offset: 7}, // wrong epoch
		{Shard: theirs.Shard, Epoch: theirs.Epoch, Offset: 7},   // right epoch, other member
		{Shard: 9, Epoch: 1, Offset: 7},                         // no such shard
		{Shard: mine.Shard, Epoch: mine.Epoch, Offset: 0},       // offsets start at 1
	})
	want := []error{nil, ErrStaleEpoch, ErrStaleEpoch, ErrInvalid, ErrInvalid}
	for i, err := range res {
		if !errors.Is(err, want[i]) || (want[i] == nil) != (err == nil) {
			t.Errorf("commit %d: %v, want %v", i, err, want[i])
		}
	}
	info, _ := c.Group("g")
	if info.Offsets[theirs.Shard].Offset == 7 || info.Offsets[mine.Shard].Offset != 7 {
		t.Fatalf("offsets %+v", info.Offsets)
	}
}

func TestPersistence(t *testing.T) {
	path := filepath.Join(t.TempDir(), "groups.db")
	c := openTest(t, path)
	a := join(t, c, "g", "a")
	before := waitFor(t, a, "all shards", holds(0, 1, 2, 3))
	for _, l := range before.Leases {
		if err := commit(t, a, l.Shard, l.Epoch, uint64(100+l.Shard)); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	<-a.Done()
	if !errors.Is(a.Err(), ErrClosed) {
		t.Fatalf("session after Close: %v", a.Err())
	}
	if _, err := c.Join(JoinRequest{Group: "g", Stream: "events", Shards: 4, Member: "a"}); !errors.Is(err, ErrClosed) {
		t.Fatalf("join after Close: %v", err)
	}

	c = openTest(t, path)
	info, err := c.Group("g")
	if err != nil {
		t.Fatal(err)
	}
	if info.Stream != "events" || info.Shards != 4 || len(info.Members) != 0 || info.Epoch != 4 {
		t.Fatalf("reopened group %+v", info)
	}
	a = join(t, c, "g", "a")
	after := waitFor(t, a, "all shards", holds(0, 1, 2, 3))
	for i, l := range after.Leases {
		if l.Offset != uint64(100+l.Shard) || l.Epoch <= before.Leases[len(before.Leases)-1].Epoch {
			t.Fatalf("lease %d after reopen %+v (before %+v): want the committed offset and a new epoch", i, l, before.Leases[i])
		}
		// An epoch from before the restart is stale.
		if err := commit(t, a, l.Shard, before.Leases[i].Epoch, 1); !errors.Is(err, ErrStaleEpoch) {
			t.Fatalf("pre-restart epoch: %v", err)
		}
	}
}

func TestInitialPositionIsStored(t *testing.T) {
	c := openTest(t, filepath.Join(t.TempDir(), "groups.db"))
	s, err := c.Join(JoinRequest{Group: "g", Stream: "events", Shards: 2, Member: "a", SessionTimeout: testTimeout,
		Start: Start{Kind: StartLatest}})
	if err != nil {
		t.Fatal(err)
	}
	a := s.Assignment()
	if len(a.Leases) != 2 || a.Leases[0].Offset != 100 {
		t.Fatalf("latest: %+v", a)
	}
	s.Leave()
	// The next member starts where the first was positioned, whatever its
	// own start says: nothing in between is skipped.
	s, err = c.Join(JoinRequest{Group: "g", Stream: "events", Shards: 2, Member: "b", SessionTimeout: testTimeout,
		Start: Start{Kind: StartEarliest}})
	if err != nil {
		t.Fatal(err)
	}
	if a := s.Assignment(); a.Leases[1].Offset != 100 {
		t.Fatalf("second member: %+v", a)
	}
}

func TestDeleteAndReset(t *testing.T) {
	c := openTest(t, filepath.Join(t.TempDir(), "groups.db"))
	a := join(t, c, "g", "a")
	reset := ResetRequest{Group: "g", Stream: "events", Shards: 4, Offsets: map[int]uint64{0: 5, 3: 7}}
	if err := c.Delete("g"); !errors.Is(err, ErrActive) {
		t.Fatalf("delete with a member: %v", err)
	}
	if err := c.Reset(reset); !errors.Is(err, ErrActive) {
		t.Fatalf("reset with a member: %v", err)
	}
	a.Leave()
	if err := c.Reset(reset); err != nil {
		t.Fatal(err)
	}
	info, _ := c.Group("g")
	if info.Offsets[0].Offset != 5 || info.Offsets[3].Offset != 7 || info.Offsets[1].Offset != 1 || info.Offsets[0].CommittedBy != "" {
		t.Fatalf("after reset %+v", info.Offsets)
	}
	for _, tt := range []struct {
		name string
		req  ResetRequest
		want error
	}{
		{"other stream", ResetRequest{Group: "g", Stream: "other", Shards: 4}, ErrStreamMismatch},
		{"shards changed", ResetRequest{Group: "g", Stream: "events", Shards: 8}, ErrShardsChanged},
		{"offset 0", ResetRequest{Group: "g", Stream: "events", Shards: 4, Offsets: map[int]uint64{1: 0}}, ErrInvalid},
		{"shard out of range", ResetRequest{Group: "g", Stream: "events", Shards: 4, Offsets: map[int]uint64{4: 1}}, ErrInvalid},
		{"bad name", ResetRequest{Group: "a b", Stream: "events", Shards: 4}, ErrInvalid},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := c.Reset(tt.req); !errors.Is(err, tt.want) {
				t.Fatalf("reset: %v, want %v", err, tt.want)
			}
		})
	}
	b := join(t, c, "g", "b")
	if got := b.Assignment(); leaseOf(t, got, 3).Offset != 7 {
		t.Fatalf("after reset, join gets %+v", got)
	}
	b.Leave()
	if err := c.Delete("g"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Group("g"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted group: %v", err)
	}
	if err := c.Delete("g"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete twice: %v", err)
	}
	// A group created again starts from scratch.
	s := join(t, c, "g", "c")
	if got := s.Assignment(); leaseOf(t, got, 3).Offset != 1 {
		t.Fatalf("recreated group: %+v", got)
	}
	// A reset can create a group before its first member.
	if err := c.Reset(ResetRequest{Group: "new", Stream: "events", Shards: 2, Offsets: map[int]uint64{1: 3}}); err != nil {
		t.Fatal(err)
	}
	if gs := c.Groups(); len(gs) != 2 || gs[0].Name != "g" || gs[1].Name != "new" || gs[1].Offsets[1].Offset != 3 {
		t.Fatalf("groups %+v", gs)
	}
}

func TestJoinErrors(t *testing.T) {
	c := openTest(t, filepath.Join(t.TempDir(), "groups.db"))
	join(t, c, "g", "a")
	ok := JoinRequest{Group: "g", Stream: "events", Shards: 4, Member: "m", SessionTimeout: testTimeout}
	tests := []struct {
		name string
		mod  func(*JoinRequest)
		want error
	}{
		{"bad group name", func(r *JoinRequest) { r.Group = "no good" }, ErrInvalid},
		{"empty member", func(r *JoinRequest) { r.Member = "" }, ErrInvalid},
		{"timeout too short", func(r *JoinRequest) { r.SessionTimeout = time.Millisecond }, ErrInvalid},
		{"timeout too long", func(r *JoinRequest) { r.SessionTimeout = time.Hour }, ErrInvalid},
		{"no shards", func(r *JoinRequest) { r.Shards = 0 }, ErrInvalid},
		{"bad start", func(r *JoinRequest) { r.Start.Kind = 9 }, ErrInvalid},
		{"other stream", func(r *JoinRequest) { r.Stream = "other" }, ErrStreamMismatch},
		{"shard count changed", func(r *JoinRequest) { r.Shards = 3 }, ErrShardsChanged},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := ok
			tt.mod(&r)
			if _, err := c.Join(r); !errors.Is(err, tt.want) {
				t.Fatalf("join: %v, want %v", err, tt.want)
			}
		})
	}
	for i := range 3 { // MaxMembers is 4
		join(t, c, "g", fmt.Sprintf("extra%d", i))
	}
	if _, err := c.Join(ok); !errors.Is(err, ErrTooManyMembers) {
		t.Fatalf("fifth member: %v", err)
	}
	// A known member may always rejoin.
	join(t, c, "g", "extra0")
}

func TestConfigValidate(t *testing.T) {
	good := DefaultConfig("x.db")
	good.Resolve = positions(1)
	tests := []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"ok", func(*Config) {}, ""},
		{"no path", func(c *Config) { c.Path = "" }, "path"},
		{"min above max", func(c *Config) { c.MinSessionTimeout = time.Hour }, "bounds"},
		{"default outside", func(c *Config) { c.DefaultSessionTimeout = time.Millisecond }, "default session timeout"},
		{"no members", func(c *Config) { c.MaxMembers = 0 }, "max members"},
		{"no resolver", func(c *Config) { c.Resolve = nil }, "Resolve"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			tt.mod(&c)
			err := c.Validate()
			if (tt.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("Validate = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestOffsetRecord(t *testing.T) {
	for _, r := range []offsetRec{{}, {Offset: 1 << 62, Time: -5, Epoch: 3, Member: "worker-1"}} {
		got, err := decodeOffsetRec(r.encode())
		if err != nil || got != r {
			t.Fatalf("round trip %+v: %+v, %v", r, got, err)
		}
	}
	for _, b := range [][]byte{nil, {2}, {1}, {1, 1, 1, 1, 5, 'a'}} {
		if _, err := decodeOffsetRec(b); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("decode %x: %v", b, err)
		}
	}
}

func FuzzDecodeOffsetRec(f *testing.F) {
	f.Add(offsetRec{Offset: 10, Time: 1, Epoch: 2, Member: "m"}.encode())
	f.Add([]byte{1, 0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeOffsetRec(b)
		if err != nil {
			return
		}
		if again, err := decodeOffsetRec(r.encode()); err != nil || again != r {
			t.Fatalf("re-decode %+v: %+v %v", r, again, err)
		}
	})
}

// TestCommitsNeverRegress runs members that commit concurrently while they
// join, leave, rejoin and expire (10ms session timeouts, so expiries land
// in the middle of commits being written). Epochs grow with every grant, so
// a lease must start at or after every offset accepted under an earlier
// lease of its shard: a shard granted while its last holder's commit was
// still being written would break that.
func TestCommitsNeverRegress(t *testing.T) {
	c := openTest(t, filepath.Join(t.TempDir(), "groups.db"))
	type commit struct {
		shard         int
		epoch, offset uint64
	}
	var mu sync.Mutex
	var accepted []commit
	starts := map[[2]uint64]uint64{} // (shard, epoch) → the lease's start offset
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 7))
			for {
				select {
				case <-stop:
					return
				default:
				}
				s, err := c.Join(JoinRequest{Group: "g", Stream: "events", Shards: 4, Member: fmt.Sprintf("w%d", w),
					SessionTimeout: 10 * time.Millisecond})
				if err != nil {
					t.Error(err)
					return
				}
				next := map[int]uint64{}
				epoch := map[int]uint64{}
				for range 1 + r.IntN(20) {
					a := s.Assignment()
					var cs []Commit
					mu.Lock()
					for _, l := range a.Leases {
						starts[[2]uint64{uint64(l.Shard), l.Epoch}] = l.Offset
						if epoch[l.Shard] != l.Epoch {
							epoch[l.Shard], next[l.Shard] = l.Epoch, l.Offset
						}
						next[l.Shard] += 1 + uint64(r.IntN(100))
						cs = append(cs, Commit{Shard: l.Shard, Epoch: l.Epoch, Offset: next[l.Shard]})
					}
					mu.Unlock()
					for i, err := range s.Commit(cs) {
						if err == nil {
							mu.Lock()
							accepted = append(accepted, commit{cs[i].Shard, cs[i].Epoch, cs[i].Offset})
							mu.Unlock()
						}
					}
					s.Sync(a.Generation)
					if r.IntN(10) == 0 {
						time.Sleep(time.Duration(r.IntN(15)) * time.Millisecond) // sometimes long enough to expire
					}
				}
				switch r.IntN(3) {
				case 0:
					s.Leave()
				case 1:
					s.Detach()
				}
			}
		}()
	}
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	later := 0
	for _, a := range accepted {
		for key, start := range starts {
			if int(key[0]) == a.shard && key[1] > a.epoch {
				later++
				if start < a.offset {
					t.Fatalf("shard %d: lease of epoch %d starts at %d, below offset %d accepted under epoch %d",
						a.shard, key[1], start, a.offset, a.epoch)
				}
			}
		}
	}
	st := c.Stats()
	t.Logf("%d commits accepted, %d refused, %d expirations, %d later leases checked", len(accepted), st.CommitsRefused, st.Expirations, later)
	if len(accepted) == 0 || later == 0 {
		t.Fatal("the test checked nothing")
	}
}

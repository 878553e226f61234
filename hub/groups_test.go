package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgehub/edgehub/internal/testutil"
	"github.com/edgehub/edgehub/quic"
	"github.com/edgehub/edgehub/sdk"
	"github.com/edgehub/edgehub/store"
)

// Members that must survive a test use a session timeout long enough not to
// expire on a loaded machine; members meant to die use a short one, so the
// test waits little for their shards to move.
const (
	survivorTimeout = 3 * time.Second
	victimTimeout   = 300 * time.Millisecond
)

// groupHub runs a hub whose [groups] allow short session timeouts, with
// streams "orders" (4 shards) and "other".
func groupHub(tb testing.TB) *dpHub {
	tb.Helper()
	return startDataPlane(tb, func(c *Config) {
		c.Groups.MinSessionTimeout = Duration(50 * time.Millisecond)
	}, store.StreamConfig{Name: "orders", Shards: 4}, store.StreamConfig{Name: "other", Shards: 2})
}

func (d *dpHub) adminURL() string { return "http://" + d.h.AdminAddr().String() }

// describeGroup returns GET /v1/groups/{name}.
func describeGroup(tb testing.TB, d *dpHub, name string) (GroupInfo, int) {
	tb.Helper()
	status, body := call(tb, http.MethodGet, d.adminURL()+"/v1/groups/"+name, "")
	var gi GroupInfo
	if status == http.StatusOK {
		if err := json.Unmarshal(body, &gi); err != nil {
			tb.Fatalf("describe: %v\n%s", err, body)
		}
	}
	return gi, status
}

// split reports whether the group's members hold want shards each, with
// no hand-over pending.
func split(tb testing.TB, d *dpHub, want map[string]int) bool {
	tb.Helper()
	gi, _ := describeGroup(tb, d, "billing")
	if len(gi.Members) != len(want) {
		return false
	}
	for _, m := range gi.Members {
		if len(m.Shards) != want[m.ID] || len(m.HandingOver) != 0 {
			return false
		}
	}
	return true
}

type gpos struct {
	shard int
	seq   uint64
}

// groupMember runs a GroupConsumer on its own connection: it takes batches,
// records them as processed and commits after each. With crash set it
// takes one more batch, records it as processed but not committed, and
// closes its connection without leaving: a process killed mid-batch.
type groupMember struct {
	name   string
	c      *sdk.Client
	g      *sdk.GroupConsumer
	cancel context.CancelFunc
	done   chan error
	crash  atomic.Bool

	mu          sync.Mutex
	processed   []gpos
	uncommitted []gpos
	refused     int // commits refused as stale
}

func startMember(tb testing.TB, d *dpHub, name string, timeout time.Duration) *groupMember {
	tb.Helper()
	m := &groupMember{name: name, c: d.client(tb, nil), done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	var err error
	m.g, err = m.c.JoinGroup(testCtx(tb), "billing", "orders", sdk.GroupOptions{
		MemberID: name, SessionTimeout: timeout, CommitInterval: -1, Credit: 64 << 10,
	})
	if err != nil {
		tb.Fatalf("%s: join: %v", name, err)
	}
	go func() { m.done <- m.loop(ctx) }()
	tb.Cleanup(func() {
		m.cancel()
		<-m.done
		// Stops the member's goroutines before the test ends (idempotent).
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		m.g.Close(cctx)
	})
	return m
}

func (m *groupMember) loop(ctx context.Context) error {
	for {
		shard, recs, err := m.g.NextBatch(ctx)
		if err != nil {
			return err
		}
		batch := make([]gpos, len(recs))
		for i, r := range recs {
			batch[i] = gpos{shard, r.Seq}
		}
		m.mu.Lock()
		m.processed = append(m.processed, batch...)
		if m.crash.Load() {
			m.uncommitted = batch
			m.mu.Unlock()
			return m.c.Close() // no Commit, no leave
		}
		m.mu.Unlock()
		if err := m.g.Commit(ctx); err != nil {
			if sdk.CodeOf(err) != sdk.CodeStaleEpoch {
				return err
			}
			m.mu.Lock()
			m.refused++
			m.mu.Unlock()
		}
	}
}

// stop ends the loop and closes the member gracefully (commit, leave).
func (m *groupMember) stop(tb testing.TB) {
	tb.Helper()
	m.cancel()
	if err := <-m.done; err != nil && !errors.Is(err, context.Canceled) {
		tb.Fatalf("%s: %v", m.name, err)
	}
	m.done <- nil // for the cleanup
	if err := m.g.Close(testCtx(tb)); err != nil {
		tb.Fatalf("%s: close: %v", m.name, err)
	}
}

// tally counts how often each position was processed, over members.
func tally(ms ...*groupMember) map[gpos]int {
	out := map[gpos]int{}
	for _, m := range ms {
		m.mu.Lock()
		for _, p := range m.processed {
			out[p]++
		}
		m.mu.Unlock()
	}
	return out
}

// orderProducer returns a producer on "orders", closed before its client.
func orderProducer(tb testing.TB, d *dpHub) *sdk.Producer {
	tb.Helper()
	p, err := d.client(tb, nil).Producer(testCtx(tb), "orders", sdk.ProducerOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { p.Close(context.Background()) })
	return p
}

// produceOrders produces n records keyed over the shards and returns their
// positions.
func produceOrders(tb testing.TB, p *sdk.Producer, from, n int) []gpos {
	tb.Helper()
	ctx := testCtx(tb)
	fs := make([]*sdk.Future, n)
	for i := range n {
		v := fmt.Appendf(nil, "order-%d", from+i)
		var err error
		if fs[i], err = p.SendFuture(ctx, sdk.Record{Key: v, Value: v}); err != nil {
			tb.Fatal(err)
		}
	}
	out := make([]gpos, n)
	for i, f := range fs {
		pos, err := f.Wait(ctx)
		if err != nil {
			tb.Fatal(err)
		}
		out[i] = gpos{pos.Shard, pos.Seq}
	}
	return out
}

// covered waits until every produced position has been processed.
func covered(tb testing.TB, produced []gpos, ms ...*groupMember) map[gpos]int {
	tb.Helper()
	var seen map[gpos]int
	testutil.Eventually(tb, fmt.Sprintf("%d records processed", len(produced)), func() bool {
		seen = tally(ms...)
		for _, p := range produced {
			if seen[p] == 0 {
				return false
			}
		}
		return true
	})
	return seen
}

// TestGroupShareAndTakeOver: two members split the shards; one leaves and
// the other continues from its commits with nothing lost or repeated; a
// third joins, takes half, and dies mid-batch without leaving; after its
// session timeout the survivor takes its shards back from its last commit,
// redelivering exactly the batch it had not committed.
func TestGroupShareAndTakeOver(t *testing.T) {
	d := groupHub(t)
	p := orderProducer(t, d)
	produced := produceOrders(t, p, 0, 400)

	a := startMember(t, d, "a", survivorTimeout)
	b := startMember(t, d, "b", survivorTimeout)
	testutil.Eventually(t, "a and b holding two shards each", func() bool { return split(t, d, map[string]int{"a": 2, "b": 2}) })
	produced = append(produced, produceOrders(t, p, 400, 400)...)
	seen := covered(t, produced, a, b)
	for pos, n := range seen {
		if n != 1 {
			t.Fatalf("record %+v processed %d times while members joined", pos, n)
		}
	}
	// Both did work after the split.
	for _, m := range []*groupMember{a, b} {
		if len(tally(m)) == 0 {
			t.Fatalf("%s processed nothing", m.name)
		}
	}

	// a leaves: b continues a's shards from a's commits.
	a.stop(t)
	testutil.Eventually(t, "b holding every shard", func() bool { return split(t, d, map[string]int{"b": 4}) })
	produced = append(produced, produceOrders(t, p, 800, 400)...)
	seen = covered(t, produced, a, b)
	for pos, n := range seen {
		if n != 1 {
			t.Fatalf("record %+v processed %d times across a graceful leave", pos, n)
		}
	}

	// c joins, works, and is killed mid-batch.
	c := startMember(t, d, "c", victimTimeout)
	testutil.Eventually(t, "b and c holding two shards each", func() bool { return split(t, d, map[string]int{"b": 2, "c": 2}) })
	produced = append(produced, produceOrders(t, p, 1200, 400)...)
	covered(t, produced, a, b, c)
	if len(tally(c)) == 0 {
		t.Fatal("c processed nothing")
	}
	c.crash.Store(true)
	produced = append(produced, produceOrders(t, p, 1600, 400)...)
	select {
	case err := <-c.done:
		if err != nil {
			t.Fatalf("c: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("c did not take another batch")
	}
	c.done <- nil
	testutil.Eventually(t, "b holding every shard after c's session timeout", func() bool { return split(t, d, map[string]int{"b": 4}) })
	c.mu.Lock()
	lost := slices.Clone(c.uncommitted)
	c.mu.Unlock()
	if len(lost) == 0 {
		t.Fatal("c crashed without a batch in hand")
	}
	// c's uncommitted batch must come again, to b.
	testutil.Eventually(t, "b processing c's uncommitted batch", func() bool {
		seen := tally(b)
		for _, p := range lost {
			if seen[p] == 0 {
				return false
			}
		}
		return true
	})
	seen = covered(t, produced, a, b, c)
	var again []gpos
	for pos, n := range seen {
		switch {
		case n > 2:
			t.Fatalf("record %+v processed %d times", pos, n)
		case n == 2:
			again = append(again, pos)
		}
	}
	slices.SortFunc(again, func(x, y gpos) int { return cmpPos(x, y) })
	if !slices.Equal(again, lost) {
		t.Fatalf("redelivered %v, want exactly c's uncommitted batch %v", again, lost)
	}
	gi, _ := describeGroup(t, d, "billing")
	for _, s := range gi.Shards {
		if s.Owner != "b" || s.State != "assigned" {
			t.Fatalf("shard %+v", s)
		}
	}
	if v := counterValue(t, d.h, "edgehub_group_expirations_total"); v != 1 {
		t.Fatalf("expirations %v, want 1 (c)", v)
	}
}

func cmpPos(x, y gpos) int {
	if x.shard != y.shard {
		return x.shard - y.shard
	}
	switch {
	case x.seq < y.seq:
		return -1
	case x.seq > y.seq:
		return 1
	}
	return 0
}

// rawMember is a member speaking the wire protocol directly.
type rawMember struct {
	st *quic.Stream
}

func joinRaw(tb testing.TB, d *dpHub, member string) *rawMember {
	tb.Helper()
	st, err := d.raw(tb, "").Open(testCtx(tb), quic.OpGroup, &quic.GroupJoin{
		Group: "billing", Stream: "orders", MemberID: member, SessionTimeoutMillis: quic.Millis(survivorTimeout)})
	if err != nil {
		tb.Fatal(err)
	}
	st.SetReadDeadline(time.Now().Add(time.Minute)) // a missing frame fails the test instead of hanging it
	return &rawMember{st: st}
}

func (r *rawMember) assignment(tb testing.TB) quic.GroupAssignment {
	tb.Helper()
	var a quic.GroupAssignment
	if err := r.st.Expect(quic.FrameGroupAssignment, &a); err != nil {
		tb.Fatal(err)
	}
	return a
}

func (r *rawMember) commit(tb testing.TB, offs ...quic.GroupOffset) quic.GroupCommitAck {
	tb.Helper()
	if err := r.st.Send(quic.FrameGroupCommit, &quic.GroupCommit{ID: 7, Offsets: offs}); err != nil {
		tb.Fatal(err)
	}
	var ack quic.GroupCommitAck
	if err := r.st.Expect(quic.FrameGroupCommitAck, &ack); err != nil {
		tb.Fatal(err)
	}
	if ack.ID != 7 || len(ack.Results) != len(offs) {
		tb.Fatalf("ack %+v", ack)
	}
	return ack
}

func leaseFor(tb testing.TB, a quic.GroupAssignment, shard uint32) quic.GroupLease {
	tb.Helper()
	for _, l := range a.Leases {
		if l.Shard == shard {
			return l
		}
	}
	tb.Fatalf("shard %d not in %+v", shard, a)
	return quic.GroupLease{}
}

// TestGroupProtocol drives the group frames by hand: the hand-over waits
// for the holder's SYNC, the holder's final commit is accepted, and after
// the move its epoch is stale.
func TestGroupProtocol(t *testing.T) {
	d := groupHub(t)
	p := orderProducer(t, d)
	produceOrders(t, p, 0, 100)

	x := joinRaw(t, d, "x")
	ax := x.assignment(t)
	if len(ax.Leases) != 4 || ax.Shards != 4 || ax.SessionTimeoutMillis != quic.Millis(survivorTimeout) {
		t.Fatalf("first assignment %+v", ax)
	}
	for _, l := range ax.Leases {
		if l.Offset != 1 {
			t.Fatalf("lease %+v: a new group starts at the earliest record", l)
		}
	}
	if ack := x.commit(t, quic.GroupOffset{Shard: 3, Epoch: leaseFor(t, ax, 3).Epoch, Offset: 5}); ack.Err() != nil {
		t.Fatal(ack.Err())
	}

	y := joinRaw(t, d, "y")
	if ay := y.assignment(t); len(ay.Leases) != 0 {
		t.Fatalf("y got %+v before x handed over", ay)
	}
	ax2 := x.assignment(t)
	if len(ax2.Leases) != 2 || ax2.Generation <= ax.Generation {
		t.Fatalf("x's second assignment %+v", ax2)
	}
	var moving quic.GroupLease
	for _, l := range ax.Leases {
		if !slices.ContainsFunc(ax2.Leases, func(k quic.GroupLease) bool { return k.Shard == l.Shard }) {
			moving = l
		}
	}
	// The final commit of a shard being handed over is accepted.
	if ack := x.commit(t, quic.GroupOffset{Shard: moving.Shard, Epoch: moving.Epoch, Offset: 3}); ack.Err() != nil {
		t.Fatalf("final commit: %v", ack.Err())
	}
	if err := x.st.Send(quic.FrameGroupSync, &quic.GroupSync{Generation: ax2.Generation}); err != nil {
		t.Fatal(err)
	}
	ay := y.assignment(t)
	got := leaseFor(t, ay, moving.Shard)
	if got.Offset != 3 || got.Epoch <= ax.Leases[3].Epoch {
		t.Fatalf("y's lease %+v: want the final offset 3 and a new epoch", got)
	}

	tests := []struct {
		name string
		m    *rawMember
		off  quic.GroupOffset
		want quic.Code
	}{
		{"stale epoch", x, quic.GroupOffset{Shard: moving.Shard, Epoch: moving.Epoch, Offset: 4}, quic.CodeStaleEpoch},
		{"new holder", y, quic.GroupOffset{Shard: moving.Shard, Epoch: got.Epoch, Offset: 4}, quic.CodeOK},
		{"another member's epoch", x, quic.GroupOffset{Shard: moving.Shard, Epoch: got.Epoch, Offset: 4}, quic.CodeStaleEpoch},
		{"past the end", y, quic.GroupOffset{Shard: moving.Shard, Epoch: got.Epoch, Offset: 1 << 40}, quic.CodeInvalidArgument},
		{"no such shard", y, quic.GroupOffset{Shard: 9, Epoch: got.Epoch, Offset: 1}, quic.CodeInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ack := tt.m.commit(t, tt.off)
			if ack.Results[0].Code != tt.want {
				t.Fatalf("commit %+v: %s %q, want %s", tt.off, ack.Results[0].Code, ack.Results[0].Message, tt.want)
			}
		})
	}
	gi, _ := describeGroup(t, d, "billing")
	if s := gi.Shards[moving.Shard]; s.Committed != 4 || s.CommittedBy != "y" || s.Owner != "y" {
		t.Fatalf("shard after the commits %+v", s)
	}

	// A frame of another operation ends the session with protocol_error;
	// the member stays (detached) until its session timeout.
	if err := x.st.Send(quic.FrameCredit, &quic.Credit{Bytes: 1}); err != nil {
		t.Fatal(err)
	}
	var ax3 quic.GroupAssignment
	if err := x.st.Expect(quic.FrameGroupAssignment, &ax3); !errors.Is(err, &quic.Error{Code: quic.CodeProtocol}) {
		t.Fatalf("after a stray frame: %v", err)
	}
	// y leaves: it gets a clean end of stream.
	if err := y.st.Send(quic.FrameGroupLeave, &quic.GroupLeave{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := y.st.ReadFrame(); !errors.Is(err, io.EOF) {
		t.Fatalf("after leave: %v", err)
	}
}

// TestGroupJoinRefused: a join the hub cannot serve fails JoinGroup with
// the hub's code.
func TestGroupJoinRefused(t *testing.T) {
	d := startDataPlane(t, func(c *Config) {
		c.Groups.MinSessionTimeout = Duration(50 * time.Millisecond)
		c.Groups.MaxMembers = 1
		c.Auth.Tokens = []TokenGrant{{Name: "reader", Token: "reader-token-0123456789", Consume: []string{"orders", "nope"}}}
	}, store.StreamConfig{Name: "orders", Shards: 2}, store.StreamConfig{Name: "other", Shards: 2})
	reader := d.client(t, func(o *sdk.Options) { o.Token = "reader-token-0123456789" })
	ctx := testCtx(t)
	g, err := reader.JoinGroup(ctx, "billing", "orders", sdk.GroupOptions{MemberID: "first"})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close(ctx)
	tests := []struct {
		name   string
		group  string
		stream string
		opts   sdk.GroupOptions
		want   quic.Code
	}{
		{"no such stream", "billing2", "nope", sdk.GroupOptions{}, quic.CodeNotFound},
		{"not allowed to consume", "billing2", "other", sdk.GroupOptions{}, quic.CodePermissionDenied},
		{"bad group name", "bad name", "orders", sdk.GroupOptions{}, quic.CodeInvalidArgument},
		{"bad member id", "billing", "orders", sdk.GroupOptions{MemberID: "-x"}, quic.CodeInvalidArgument},
		{"session timeout too long", "billing", "orders", sdk.GroupOptions{SessionTimeout: time.Hour}, quic.CodeInvalidArgument},
		{"group full", "billing", "orders", sdk.GroupOptions{MemberID: "second"}, quic.CodeLimit},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			jctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			g, err := reader.JoinGroup(jctx, tt.group, tt.stream, tt.opts)
			if err == nil {
				g.Close(ctx)
				t.Fatal("join succeeded")
			}
			if code := sdk.CodeOf(err); code != tt.want {
				t.Fatalf("join: %v (code %s), want %s", err, code, tt.want)
			}
		})
	}
}

// TestGroupAdminAPI: list, describe with lag, refusals while members are
// connected, reset (also before the first member) and delete.
func TestGroupAdminAPI(t *testing.T) {
	d := groupHub(t)
	base := d.adminURL()
	p := orderProducer(t, d)
	produced := produceOrders(t, p, 0, 200)
	last := map[int]uint64{}
	for _, pos := range produced {
		last[pos.shard] = max(last[pos.shard], pos.seq)
	}

	if status, body := call(t, http.MethodGet, base+"/v1/groups", ""); status != 200 || string(body) != "{\n  \"groups\": []\n}\n" {
		t.Fatalf("empty list: %d %s", status, body)
	}
	// Offsets can be set before the first member joins.
	status, body := call(t, http.MethodPost, base+"/v1/groups/billing/reset", `{"stream": "orders", "to": "latest", "shards": [1]}`)
	if status != 200 {
		t.Fatalf("reset: %d %s", status, body)
	}
	m := startMember(t, d, "m", survivorTimeout)
	testutil.Eventually(t, "m holding every shard", func() bool { return split(t, d, map[string]int{"m": 4}) })
	testutil.Eventually(t, "m caught up", func() bool {
		gi, _ := describeGroup(t, d, "billing")
		return gi.Lag == 0
	})
	for pos := range tally(m) {
		if pos.shard == 1 {
			t.Fatalf("m read shard 1 at %d: the reset put it at the end", pos.seq)
		}
	}
	gi, _ := describeGroup(t, d, "billing")
	if gi.Stream != "orders" || len(gi.Members) != 1 || !gi.Members[0].Connected || gi.Members[0].SessionTimeout.String() != "3s" ||
		len(gi.Shards) != 4 || gi.Shards[2].Committed != last[2]+1 || gi.Shards[2].LastSeq != last[2] || gi.Shards[2].Epoch == 0 {
		t.Fatalf("describe %+v", gi)
	}

	for _, tt := range []struct {
		name, method, path, body string
		status                   int
		code                     string
	}{
		{"delete with a member", http.MethodDelete, "/v1/groups/billing", "", 409, CodeConflict},
		{"reset with a member", http.MethodPost, "/v1/groups/billing/reset", `{"stream": "orders", "to": "earliest"}`, 409, CodeConflict},
		{"describe unknown", http.MethodGet, "/v1/groups/nope", "", 404, CodeNotFound},
		{"delete unknown", http.MethodDelete, "/v1/groups/nope", "", 404, CodeNotFound},
		{"reset without stream", http.MethodPost, "/v1/groups/x/reset", `{"to": "earliest"}`, 400, CodeInvalid},
		{"reset bad position", http.MethodPost, "/v1/groups/x/reset", `{"stream": "orders", "to": "soon"}`, 400, CodeInvalid},
		{"reset bad shard", http.MethodPost, "/v1/groups/x/reset", `{"stream": "orders", "to": "earliest", "shards": [4]}`, 400, CodeInvalid},
		{"reset unknown stream", http.MethodPost, "/v1/groups/x/reset", `{"stream": "nope", "to": "earliest"}`, 404, CodeNotFound},
		{"reset for another stream", http.MethodPost, "/v1/groups/billing/reset", `{"stream": "other", "to": "earliest"}`, 409, CodeConflict},
		{"wrong method", http.MethodPut, "/v1/groups/billing", "", 405, CodeMethod},
	} {
		t.Run(tt.name, func(t *testing.T) {
			status, body := call(t, tt.method, base+tt.path, tt.body)
			var eb ErrorBody
			json.Unmarshal(body, &eb)
			if status != tt.status || eb.Code != tt.code {
				t.Fatalf("%s %s: %d %s", tt.method, tt.path, status, body)
			}
		})
	}

	m.stop(t)
	// Rewind shard 0 to a sequence; the next member reads from there.
	status, body = call(t, http.MethodPost, base+"/v1/groups/billing/reset", `{"stream": "orders", "to": "2", "shards": [0]}`)
	if status != 200 {
		t.Fatalf("reset: %d %s", status, body)
	}
	json.Unmarshal(body, &gi)
	if gi.Shards[0].Committed != 2 || gi.Shards[0].Lag != int64(last[0]-1) || gi.Lag != gi.Shards[0].Lag {
		t.Fatalf("after reset %+v", gi.Shards)
	}
	var list GroupList
	_, body = call(t, http.MethodGet, base+"/v1/groups", "")
	if err := json.Unmarshal(body, &list); err != nil || len(list.Groups) != 1 || list.Groups[0].Members != 0 ||
		list.Groups[0].Lag != gi.Lag || list.Groups[0].Stream != "orders" {
		t.Fatalf("list %s", body)
	}
	n := startMember(t, d, "n", survivorTimeout)
	testutil.Eventually(t, "n rereading shard 0 from 2", func() bool {
		seen := tally(n)
		for seq := uint64(2); seq <= last[0]; seq++ {
			if seen[gpos{0, seq}] == 0 {
				return false
			}
		}
		return true
	})
	if seen := tally(n); len(seen) != int(last[0]-1) || seen[gpos{0, 1}] != 0 {
		t.Fatalf("n read %d records, want shard 0 from 2 to %d only", len(seen), last[0])
	}
	n.stop(t)
	if status, body := call(t, http.MethodDelete, base+"/v1/groups/billing", ""); status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", status, body)
	}
	if _, status := describeGroup(t, d, "billing"); status != 404 {
		t.Fatalf("describe after delete: %d", status)
	}
}

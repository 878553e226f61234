package sdk_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/edgehub/edgehub/hub"
	"github.com/edgehub/edgehub/sdk"
	"github.com/edgehub/edgehub/store"
)

// shortSessions lets members ask for short session timeouts.
func shortSessions(c *hub.Config) { c.Groups.MinSessionTimeout = hub.Duration(50 * time.Millisecond) }

func produceN(t testing.TB, c *sdk.Client, stream string, from, n int) {
	t.Helper()
	ctx := testCtx(t)
	p, err := c.Producer(ctx, stream, sdk.ProducerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := from; i < from+n; i++ {
		if _, err := p.Send(ctx, sdk.Record{Key: fmt.Appendf(nil, "k%d", i), Value: fmt.Appendf(nil, "%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

func describeGroup(t testing.TB, th *testHub, name string) hub.GroupInfo {
	t.Helper()
	resp, err := http.Get("http://" + th.h.AdminAddr().String() + "/v1/groups/" + name)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var gi hub.GroupInfo
	if err := json.NewDecoder(resp.Body).Decode(&gi); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("describe %s: %d %v", name, resp.StatusCode, err)
	}
	return gi
}

// TestGroupConsumerHubRestart restarts the hub under a group member: it
// rejoins, gets new epochs, and continues from its last commit. What it
// returned after that commit is delivered again; nothing else is, and
// nothing is lost.
func TestGroupConsumerHubRestart(t *testing.T) {
	dir := t.TempDir()
	l, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.LocalAddr().String()
	l.Close()
	th, err := startHub(dir, addr, shortSessions, store.StreamConfig{Name: "s", Shards: 2})
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	c := dial(t, th)
	produceN(t, c, "s", 0, 20)
	g, err := c.JoinGroup(ctx, "g", "s", sdk.GroupOptions{MemberID: "m", SessionTimeout: 2 * time.Second, CommitInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close(ctx)
	if got := g.Shards(); !slices.Equal(got, []int{0, 1}) {
		t.Fatalf("shards %v", got)
	}
	seen := map[string]int{}
	afterCommit := map[string]bool{} // returned after the last commit
	next := func() {
		t.Helper()
		m, err := g.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		v := string(m.Record.Value)
		seen[v]++
		afterCommit[v] = true
	}
	for range 10 {
		next()
	}
	if err := g.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	clear(afterCommit)
	for range 4 {
		next()
	}
	uncommitted := len(afterCommit)

	if err := th.stop(); err != nil {
		t.Fatal(err)
	}
	th, err = startHub(dir, addr, shortSessions)
	if err != nil {
		t.Fatal(err)
	}
	defer th.stop()
	produceN(t, c, "s", 20, 1)
	for len(seen) < 21 {
		next()
	}
	twice := 0
	for v, n := range seen {
		switch {
		case n > 2 || (n == 2 && !afterCommit[v]):
			t.Fatalf("%s delivered %d times; only records returned after the last commit may come again", v, n)
		case n == 2:
			twice++
		}
	}
	if twice < uncommitted {
		t.Fatalf("%d records delivered twice, but the %d returned after the commit must all come again", twice, uncommitted)
	}
	gi := describeGroup(t, th, "g")
	if len(gi.Members) != 1 || gi.Members[0].ID != "m" || gi.Epoch < 4 {
		t.Fatalf("after the restart: %+v (epochs must continue above the first grants)", gi)
	}
}

// TestGroupConsumerRebalanceCallbacks: a second member takes half of the
// shards; the first is told which it loses, commits them first, and the
// second is told which it gains and starts after those commits.
func TestGroupConsumerRebalanceCallbacks(t *testing.T) {
	th := newHub(t, shortSessions, store.StreamConfig{Name: "s", Shards: 4})
	ctx := testCtx(t)
	var mu sync.Mutex
	events := map[string][][]int{}
	opts := func(name string) sdk.GroupOptions {
		return sdk.GroupOptions{
			MemberID: name, SessionTimeout: 2 * time.Second, CommitInterval: 10 * time.Millisecond,
			OnAssign: func(s []int) { mu.Lock(); events[name+" assign"] = append(events[name+" assign"], s); mu.Unlock() },
			OnRevoke: func(s []int) { mu.Lock(); events[name+" revoke"] = append(events[name+" revoke"], s); mu.Unlock() },
		}
	}
	c1, c2 := dial(t, th), dial(t, th)
	produceN(t, c1, "s", 0, 40)
	g1, err := c1.JoinGroup(ctx, "g", "s", opts("one"))
	if err != nil {
		t.Fatal(err)
	}
	defer g1.Close(ctx)
	for range 40 {
		if _, err := g1.Next(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// Everything returned is committed within the interval once the
	// application comes back, even while Next waits for more.
	idle, cancelIdle := context.WithCancel(ctx)
	idleDone := make(chan error, 1)
	go func() {
		_, err := g1.Next(idle)
		idleDone <- err
	}()
	deadline := time.Now().Add(30 * time.Second)
	for describeGroup(t, th, "g").Lag != 0 {
		if time.Now().After(deadline) {
			t.Fatal("an idle member did not commit what it processed")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancelIdle()
	if err := <-idleDone; !errors.Is(err, context.Canceled) {
		t.Fatalf("Next with nothing to read: %v", err)
	}

	g2, err := c2.JoinGroup(ctx, "g", "s", opts("two"))
	if err != nil {
		t.Fatal(err)
	}
	defer g2.Close(ctx)
	if len(g2.Shards()) != 0 {
		t.Fatalf("two holds %v before one handed them over", g2.Shards())
	}
	// one gives up two shards the next time it comes back.
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	g1.Next(short)
	cancel()
	produceN(t, c1, "s", 40, 40)
	got := map[string]int{}
	for len(got) < 40 {
		for _, g := range []*sdk.GroupConsumer{g1, g2} {
			short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
			m, err := g.Next(short)
			cancel()
			if err == nil {
				got[string(m.Record.Value)]++
			}
		}
	}
	for v, n := range got {
		if n != 1 {
			t.Fatalf("%s delivered %d times", v, n)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(events) != "map[one assign:[[0 1 2 3]] one revoke:[[2 3]] two assign:[[2 3]]]" {
		t.Fatalf("callbacks %v", events)
	}
	if s1, s2 := g1.Shards(), g2.Shards(); !slices.Equal(s1, []int{0, 1}) || !slices.Equal(s2, []int{2, 3}) {
		t.Fatalf("shards %v and %v", s1, s2)
	}
}

func TestGroupConsumerClose(t *testing.T) {
	th := newHub(t, shortSessions, store.StreamConfig{Name: "s", Shards: 2})
	ctx := testCtx(t)
	c := dial(t, th)
	produceN(t, c, "s", 0, 3)
	g, err := c.JoinGroup(ctx, "g", "s", sdk.GroupOptions{CommitInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Next(ctx); err != nil {
		t.Fatal(err)
	}
	if err := g.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := g.Close(ctx); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := g.Next(ctx); !errors.Is(err, sdk.ErrClosed) {
		t.Fatalf("Next after Close: %v", err)
	}
	if err := g.Commit(ctx); !errors.Is(err, sdk.ErrClosed) {
		t.Fatalf("Commit after Close: %v", err)
	}
	// Close committed the record it returned and left at once.
	gi := describeGroup(t, th, "g")
	if len(gi.Members) != 0 || gi.Lag != 2 {
		t.Fatalf("after Close: %d members, lag %d", len(gi.Members), gi.Lag)
	}
}

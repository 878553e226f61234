package replicate

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/internal/testutil"
	"github.com/edgehub/edgehub/store"
)

// produceValues appends records with the given value prefix at h.
func produceValues(t testing.TB, h *memHub, name, prefix string, n int) []string {
	t.Helper()
	st := stream(t, h, name)
	var recs []record.Record
	var vals []string
	for i := range n {
		v := fmt.Sprintf("%s-%d", prefix, i)
		recs = append(recs, record.Record{Key: fmt.Appendf(nil, "k%d", i), Value: []byte(v)})
		vals = append(vals, v)
	}
	if _, err := st.Append(context.Background(), store.Batch{Shard: -1, Records: recs}); err != nil {
		t.Fatal(err)
	}
	return vals
}

// originValues returns the values h holds of origin hub, sorted.
func originValues(t testing.TB, h *memHub, name, origin string) []string {
	t.Helper()
	st, err := h.store.Stream(name)
	if err != nil {
		return nil
	}
	var out []string
	for s := 0; s < st.Shards(); s++ {
		recs, err := st.Read(s, 1, store.ReadOptions{MaxRecords: 1 << 20, MaxBytes: 1 << 30})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			if r.Origin.Hub == origin || (r.Origin.IsLocal() && h.name == origin) {
				out = append(out, string(r.Value))
			}
		}
	}
	slices.Sort(out)
	return out
}

// A stream deleted and created again at its origin numbers its records
// from 1 again. Before incarnations, peers kept their watermarks of the
// origin and dropped the new records as already applied. Now b (pulling
// from the origin) and c (cut from the origin, pulling through b) notice
// the new incarnation, forget the old positions and pull the new stream
// from its beginning: each ends with the old records it held and every new
// one, each once.
func TestRecreatedOriginIsPulledFromItsBeginning(t *testing.T) {
	net := newMemNet()
	a, b, c := net.addHub(t, "a"), net.addHub(t, "b"), net.addHub(t, "c")
	net.setCut("a", "c", true)
	createStream(t, a, "s", 2, "all")
	old := produceValues(t, a, "s", "old", 300)
	slices.Sort(old)
	for _, h := range []*memHub{b, c} {
		testutil.Eventually(t, h.name+" holds the old records", func() bool { return slices.Equal(originValues(t, h, "s", "a"), old) })
	}
	oldInc := stream(t, a, "s").Incarnation()
	if got := stream(t, b, "s").OriginIncarnation("a"); got != oldInc {
		t.Fatalf("b follows incarnation %q of a's stream, want %q", got, oldInc)
	}

	if err := a.store.DeleteStream(context.Background(), "s"); err != nil {
		t.Fatal(err)
	}
	// a's replicator may recreate it from b's definition first; either
	// way it is a new incarnation.
	createStream(t, a, "s", 2, "all")
	newInc := stream(t, a, "s").Incarnation()
	if newInc == oldInc {
		t.Fatal("the recreated stream kept its incarnation")
	}
	fresh := produceValues(t, a, "s", "new", 40)
	want := slices.Sorted(slices.Values(append(slices.Clone(old), fresh...)))
	for _, h := range []*memHub{b, c} {
		testutil.Eventually(t, h.name+" holds the new incarnation's records too", func() bool {
			return slices.Equal(originValues(t, h, "s", "a"), want)
		})
		if got := stream(t, h, "s").OriginIncarnation("a"); got != newInc {
			t.Fatalf("%s follows incarnation %q, want %q", h.name, got, newInc)
		}
	}
	// More records keep flowing, none twice.
	more := produceValues(t, a, "s", "more", 10)
	want = slices.Sorted(slices.Values(append(want, more...)))
	for _, h := range []*memHub{b, c} {
		testutil.Eventually(t, h.name+" holds the later records", func() bool { return slices.Equal(originValues(t, h, "s", "a"), want) })
	}
	testutil.Eventually(t, "lag drains", func() bool {
		for _, h := range []*memHub{b, c} {
			for _, l := range h.rep.Lag() {
				if l.Records != 0 {
					return false
				}
			}
		}
		return true
	})
}

// A server asked for positions in another incarnation of the origin's
// stream than the one it holds refuses the pull.
func TestPullOfAnotherIncarnationRefused(t *testing.T) {
	net := newMemNet()
	a := net.addHub(t, "a")
	st := createStream(t, a, "s", 1, "all")
	produceValues(t, a, "s", "v", 3)
	var msgs []Msg
	err := a.rep.Serve(context.Background(), PullRequest{Requester: "b", Stream: "s", Origin: store.OriginKey{Hub: "a"},
		Incarnation: "00000000000000000000000000000001"}, collectSender{&msgs})
	if err == nil || len(msgs) != 0 {
		t.Fatalf("pull of another incarnation: %v, %d messages", err, len(msgs))
	}
	err = a.rep.Serve(context.Background(), PullRequest{Requester: "b", Stream: "s", Origin: store.OriginKey{Hub: "a"},
		Incarnation: st.Incarnation()}, collectSender{&msgs})
	if err != nil || len(msgs) == 0 || msgs[0].Type != FramePullRecords {
		t.Fatalf("pull of the held incarnation: %v, %+v", err, msgs)
	}
}

// Which announced incarnation a hub follows: the origin's word wins, a
// relay's only if newer (the origin unreachable), never anyone's for this
// hub's own origins.
func TestSyncIncarnationsChoice(t *testing.T) {
	net := newMemNet()
	h := net.addHub(t, "me")
	st := createStream(t, h, "s", 1, "all")
	ctx := context.Background()
	const (
		old   = "01000000000000000000000000000000"
		newer = "02000000000000000000000000000000"
		older = "00000000000000000000000000000000"
	)
	peer := func(name string, incs map[string]string) Peer {
		return Peer{Name: name, Alive: true, Streams: map[string]PeerStream{"s": {Incarnations: incs}}}
	}
	steps := []struct {
		name  string
		peers []Peer
		hub   string
		want  string
	}{
		{"unknown is adopted", []Peer{peer("relay", map[string]string{"o": old})}, "o", old},
		{"older relay ignored", []Peer{peer("relay", map[string]string{"o": older})}, "o", old},
		{"newer relay followed", []Peer{peer("relay", map[string]string{"o": newer})}, "o", newer},
		{"the origin wins over a newer relay", []Peer{peer("relay", map[string]string{"o": "03000000000000000000000000000000"}),
			peer("o", map[string]string{"o": old})}, "o", old},
		{"plugin origins follow their hub", []Peer{peer("o", map[string]string{"o/plugin/p/in": older})}, "o/plugin/p/in", older},
		{"our own origins are ours", []Peer{peer("o", map[string]string{"me/plugin/p/in": newer, "me": newer})}, "me/plugin/p/in", ""},
	}
	for _, s := range steps {
		if err := h.rep.syncIncarnations(ctx, st, s.peers); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if got := st.OriginIncarnation(s.hub); got != s.want {
			t.Fatalf("%s: follows %q for %s, want %q", s.name, got, s.hub, s.want)
		}
	}
	if got := st.OriginIncarnation("me"); got != "" {
		t.Fatalf("a peer's word recorded for our own origin: %q", got)
	}
}

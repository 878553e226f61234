package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/internal/testutil"
	"github.com/edgehub/edgehub/plugins"
	"github.com/edgehub/edgehub/sdk"
	"github.com/edgehub/edgehub/store"
)

// groupRead joins group g1 on orders, reads n records (failing on more
// within a short grace), commits them and leaves.
func groupRead(tb testing.TB, d *dpHub, n int) []string {
	tb.Helper()
	c := d.client(tb, nil)
	ctx := testCtx(tb)
	g, err := c.JoinGroup(ctx, "g1", "orders", sdk.GroupOptions{MemberID: "m1", SessionTimeout: survivorTimeout, CommitInterval: -1})
	if err != nil {
		tb.Fatalf("join: %v", err)
	}
	var got []string
	for len(got) < n {
		_, recs, err := g.NextBatch(ctx)
		if err != nil {
			tb.Fatalf("group read %d of %d: %v", len(got), n, err)
		}
		for _, r := range recs {
			got = append(got, string(r.Value))
		}
	}
	if err := g.Commit(ctx); err != nil {
		tb.Fatal(err)
	}
	// Nothing more arrives.
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	if _, recs, err := g.NextBatch(short); err == nil {
		tb.Fatalf("group read %d records more than the %d produced", len(recs), n)
	}
	cancel()
	if err := g.Close(ctx); err != nil {
		tb.Fatal(err)
	}
	return got
}

func orderRecords(prefix string, n int) ([]record.Record, []string) {
	var recs []record.Record
	var vals []string
	for i := range n {
		v := fmt.Sprintf("%s-%d", prefix, i)
		recs = append(recs, record.Record{Key: []byte(fmt.Sprintf("k%d", i)), Value: []byte(v)})
		vals = append(vals, v)
	}
	return recs, vals
}

func pluginInfo(tb testing.TB, d *dpHub, name string) plugins.Info {
	tb.Helper()
	_, b := call(tb, "GET", d.adminURL()+"/v1/plugins/"+name, "")
	var info plugins.Info
	if err := json.Unmarshal(b, &info); err != nil {
		tb.Fatalf("plugin describe: %v\n%s", err, b)
	}
	return info
}

// The scenario of issue 8, defect 2: a plugin and a consumer group on a
// stream; records produced, copied and consumed; the stream deleted (with
// force) and created again; 40 records produced. Before incarnations the
// plugin copied only the records after its old checkpoint and the group
// kept its offsets (22/22/22/58), read nothing and showed lag 0. Now the
// plugin copies all 40, the group shows lag 40, reads all 40, and ends at
// lag 0.
func TestStreamRecreatedPluginAndGroupStartOver(t *testing.T) {
	d := groupHub(t)
	base := d.adminURL()
	wasm, err := os.ReadFile(watPassThroughModule)
	if err != nil {
		t.Fatal(err)
	}
	if st, b := deployHTTP(t, base, PluginConfig{Name: "copy", Inputs: []string{"orders"}, Outputs: []string{"copied"}, Start: "earliest",
		Config: PluginParams{"output": "copied"}, CallTimeout: Duration(time.Second)}, wasm); st != http.StatusCreated {
		t.Fatalf("deploy: %d %s", st, b)
	}
	cl := d.client(t, nil)
	recs, oldVals := orderRecords("old", 124)
	produceSDK(t, cl, "orders", recs)
	if got := groupRead(t, d, len(oldVals)); !slices.Equal(slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(oldVals))) {
		t.Fatalf("group read %d records, want the %d produced", len(got), len(oldVals))
	}
	testutil.Eventually(t, "plugin copied", func() bool { return pluginInfo(t, d, "copy").RecordsOut == uint64(len(oldVals)) })
	gi, _ := describeGroup(t, d, "g1")
	if gi.Lag != 0 || gi.Stale {
		t.Fatalf("before the delete: %+v", gi)
	}

	// Refused without force, naming the users.
	st, b := call(t, "DELETE", base+"/v1/streams/orders", "")
	if st != http.StatusConflict || !strings.Contains(string(b), "group g1") || !strings.Contains(string(b), "plugin copy (input)") {
		t.Fatalf("delete without force: %d %s", st, b)
	}
	if st, b := call(t, "DELETE", base+"/v1/streams/orders?force=true", ""); st != http.StatusNoContent {
		t.Fatalf("forced delete: %d %s", st, b)
	}
	testutil.Eventually(t, "plugin waiting", func() bool { return pluginInfo(t, d, "copy").Status == plugins.StatusWaiting })
	if w := pluginInfo(t, d, "copy").Waiting; w != `input stream "orders" was deleted` {
		t.Fatalf("waiting reason %q", w)
	}
	if v := counterValue(t, d.h, "edgehub_plugin_waiting"); v != 1 {
		t.Fatalf("edgehub_plugin_waiting = %v", v)
	}
	if st, b := call(t, "POST", base+"/v1/streams", `{"name":"orders","shards":4}`); st != http.StatusCreated {
		t.Fatalf("create again: %d %s", st, b)
	}
	recs, newVals := orderRecords("new", 40)
	produceSDK(t, cl, "orders", recs)

	// The group's old offsets are void: lag counts all 40.
	gi, _ = describeGroup(t, d, "g1")
	if gi.Lag != 40 || !gi.Stale {
		t.Fatalf("after the recreate: lag %d, stale %v, want 40 and true (%+v)", gi.Lag, gi.Stale, gi.Shards)
	}
	got := groupRead(t, d, 40)
	if !slices.Equal(slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(newVals))) {
		t.Fatalf("group read %v, want the 40 new records", got)
	}
	gi, _ = describeGroup(t, d, "g1")
	if gi.Lag != 0 || gi.Stale {
		t.Fatalf("after reading: %+v", gi)
	}

	// The plugin copied every new record once, after the old ones.
	testutil.Eventually(t, "plugin copied the new stream", func() bool {
		i := pluginInfo(t, d, "copy")
		return i.Status == plugins.StatusRunning && i.Lag == 0 && i.RecordsIn == 40
	})
	out := consumeSDK(t, cl, "copied", len(oldVals)+40)
	var copied []string
	for _, r := range out {
		copied = append(copied, string(r.Value))
	}
	wantAll := slices.Sorted(slices.Values(append(slices.Clone(oldVals), newVals...)))
	if slices.Sort(copied); !slices.Equal(copied, wantAll) {
		t.Fatalf("copied %d records, want %d: each old and new record once", len(copied), len(wantAll))
	}
	var held int64
	for _, s := range mustStream(t, d.h, "copied").Stats() {
		held += s.Records
	}
	if held != int64(len(wantAll)) {
		t.Fatalf("copied stream holds %d records, want %d", held, len(wantAll))
	}
}

// originCount counts h's records of origin hub in stream, and how many of
// them have values with prefix.
func originCount(tb testing.TB, h *Hub, stream, origin, prefix string) (all, prefixed int) {
	tb.Helper()
	st, err := h.Store().Stream(stream)
	if err != nil {
		return 0, 0
	}
	seen := map[string]bool{}
	for s := 0; s < st.Shards(); s++ {
		recs, err := st.Read(s, 1, store.ReadOptions{MaxRecords: 1 << 20, MaxBytes: 1 << 30})
		if err != nil {
			tb.Fatal(err)
		}
		for _, r := range recs {
			if r.Origin.Hub != origin && !(r.Origin.IsLocal() && h.cfg.Hub.Name == origin) {
				continue
			}
			if seen[string(r.Value)] {
				tb.Fatalf("%s holds %q twice", h.cfg.Hub.Name, r.Value)
			}
			seen[string(r.Value)] = true
			all++
			if strings.HasPrefix(string(r.Value), prefix) {
				prefixed++
			}
		}
	}
	return all, prefixed
}

// Two real hubs (memberlist gossip, QUIC pulls): the origin deletes its
// replicated stream and creates it again (the federation's definition may
// recreate it first) and produces 40 records. The peer learns the new
// incarnation by gossip and pulls all 40, keeping the old records once.
func TestFederationRecreatedStreamReplicates(t *testing.T) {
	if testing.Short() {
		t.Skip("federation over loopback")
	}
	n := newFedNet(t)
	a := n.start("hub-a")
	b := n.start("hub-b")
	createReplicated(t, a, "events", 2, "all")
	produceAt(t, a, "events", 500, 8)
	testutil.Eventually(t, "b holds a's records", func() bool { all, _ := originCount(t, b, "events", "hub-a", ""); return all == 500 })

	old := mustStreamEventually(t, a, "events").Incarnation()
	if err := a.Store().DeleteStream(context.Background(), "events"); err != nil {
		t.Fatal(err)
	}
	var st *store.Stream
	testutil.Eventually(t, "events exists again at a", func() bool {
		var err error
		if st, err = a.Store().Stream("events"); err == nil {
			return true
		}
		st, err = a.Store().CreateStream(context.Background(), store.StreamConfig{Name: "events", Shards: 2, Meta: map[string]string{MetaReplicate: "all"}})
		return err == nil
	})
	if st.Incarnation() == old {
		t.Fatal("same incarnation after recreating")
	}
	recs, _ := orderRecords("new", 40)
	if _, err := st.Append(context.Background(), store.Batch{Shard: -1, Records: recs}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "b holds the 40 new records", func() bool {
		all, fresh := originCount(t, b, "events", "hub-a", "new-")
		return all == 540 && fresh == 40
	})
	if got := mustStreamEventually(t, b, "events").OriginIncarnation("hub-a"); got != st.Incarnation() {
		t.Fatalf("b follows incarnation %q of hub-a, want %q", got, st.Incarnation())
	}
}

// A webhook's stream deleted and created again: the webhook stops at once,
// delivers the new stream from its start (earliest) without a restart, and
// after a restart keeps the new positions; positions saved for an old
// incarnation (the stream recreated while the hub was down) start over
// too.
func TestWebhookFollowsRecreatedStream(t *testing.T) {
	var mu sync.Mutex
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var d WebhookDelivery
		if err := json.NewDecoder(r.Body).Decode(&d); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		mu.Lock()
		for _, rec := range d.Records {
			got = append(got, fmt.Sprintf("%s@%d", rec.Value, rec.Seq))
		}
		mu.Unlock()
	}))
	defer srv.Close()
	cfg := testConfig(t)
	cfg.Streams = []StreamConfig{{Name: "alerts", Shards: 1, Replicate: ReplicateLocal}}
	cfg.Webhooks = []WebhookConfig{{Name: "pager", Stream: "alerts", URL: srv.URL, Start: "earliest",
		BackoffMin: Duration(5 * time.Millisecond), BackoffMax: Duration(20 * time.Millisecond)}}
	delivered := func(want ...string) {
		t.Helper()
		testutil.Eventually(t, fmt.Sprintf("deliveries %v", want), func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(got) >= len(want)
		})
		time.Sleep(50 * time.Millisecond)
		mu.Lock()
		defer mu.Unlock()
		if !slices.Equal(got, want) {
			t.Fatalf("delivered %v, want %v", got, want)
		}
	}
	appendValues := func(h *Hub, vals ...string) {
		t.Helper()
		var recs []record.Record
		for _, v := range vals {
			recs = append(recs, record.Record{Value: []byte(v)})
		}
		if _, err := mustStream(t, h, "alerts").Append(context.Background(), store.Batch{Shard: 0, Records: recs}); err != nil {
			t.Fatal(err)
		}
	}
	h, base := startHub(t, cfg)
	appendValues(h, "1", "2", "3")
	delivered("1@1", "2@2", "3@3")
	if st, b := call(t, "DELETE", base+"/v1/streams/alerts", ""); st != http.StatusConflict || !strings.Contains(string(b), "webhook pager") {
		t.Fatalf("delete without force: %d %s", st, b)
	}
	if st, b := call(t, "DELETE", base+"/v1/streams/alerts?force=true", ""); st != http.StatusNoContent {
		t.Fatalf("forced delete: %d %s", st, b)
	}
	if st, b := call(t, "POST", base+"/v1/streams", `{"name":"alerts","shards":1}`); st != http.StatusCreated {
		t.Fatalf("create again: %d %s", st, b)
	}
	appendValues(h, "4", "5")
	delivered("1@1", "2@2", "3@3", "4@1", "5@2")
	h.Close()

	// A restart keeps the new incarnation's positions.
	h, _ = startHub(t, cfg)
	appendValues(h, "6")
	delivered("1@1", "2@2", "3@3", "4@1", "5@2", "6@3")
	h.Close()

	// Recreated while the hub is down: the saved positions are void.
	scfg := storeConfigFor(cfg.Hub.DataDir)
	s, err := store.Open(scfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteStream(context.Background(), "alerts"); err != nil {
		t.Fatal(err)
	}
	st, err := s.CreateStream(context.Background(), store.StreamConfig{Name: "alerts", Shards: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Append(context.Background(), store.Batch{Shard: 0, Records: []record.Record{{Value: []byte("7")}}}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	startHub(t, cfg)
	delivered("1@1", "2@2", "3@3", "4@1", "5@2", "6@3", "7@1")
}

// A positions file whose incarnation is damaged is refused at startup,
// naming the file, rather than read as a recreated stream.
func TestWebhookDamagedPositions(t *testing.T) {
	cfg := testConfig(t)
	cfg.Streams = []StreamConfig{{Name: "alerts", Shards: 1, Replicate: ReplicateLocal}}
	cfg.Webhooks = []WebhookConfig{{Name: "pager", Stream: "alerts", URL: "http://127.0.0.1:1/", Start: "latest"}}
	path := filepath.Join(cfg.Hub.DataDir, "webhooks", "pager.json")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(`{"stream":"alerts","incarnation":"zz","next":{"0":5}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	h, err := New(cfg)
	if err == nil {
		h.Close()
		t.Fatal("a damaged positions file was accepted")
	}
	if !strings.Contains(err.Error(), path) || !errors.Is(err, store.ErrCorrupt) {
		t.Fatalf("error %v: want the file named and ErrCorrupt", err)
	}
}

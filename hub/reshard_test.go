package hub

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/edgehub/edgehub"
	"github.com/edgehub/edgehub/store"
)

// TestAdminReshardAPI drives split, merge and reshard through the admin API
// against one hub, step by step, and checks what describe then shows: the
// parents closed at the sequence they had reached, the children open with
// their ranges, and the refusals with their statuses.
func TestAdminReshardAPI(t *testing.T) {
	h, base := startHub(t, testConfig(t))
	if code, b := call(t, "POST", base+"/v1/streams", `{"name":"s","shards":2}`); code != 201 {
		t.Fatalf("create: %d %s", code, b)
	}
	st, err := h.Store().Stream("s")
	if err != nil {
		t.Fatal(err)
	}
	appendKeyed := func(n int) {
		t.Helper()
		recs := make([]edgehub.Record, n)
		for i := range recs {
			recs[i] = edgehub.Record{Key: fmt.Appendf(nil, "k%d", i), Value: []byte("v")}
		}
		if _, err := st.Append(testCtx(t), store.Batch{Shard: -1, Records: recs}); err != nil {
			t.Fatal(err)
		}
	}
	appendKeyed(100)
	before := st.Stats()

	steps := []struct {
		name, method, path, body string
		status                   int
		code                     string // error code, or "" for success
		contains                 string
	}{
		{name: "split at the midpoint", method: "POST", path: "/v1/streams/s/split", body: `{"shard":0}`, status: 200, contains: `"layout_version": 1`},
		{name: "split a closed shard", method: "POST", path: "/v1/streams/s/split", body: `{"shard":0}`, status: 409, code: CodeConflict, contains: "shard closed"},
		{name: "split an unknown shard", method: "POST", path: "/v1/streams/s/split", body: `{"shard":9}`, status: 400, code: CodeInvalid},
		{name: "split at a bad hash", method: "POST", path: "/v1/streams/s/split", body: `{"shard":1,"at":"xyz"}`, status: 400, code: CodeInvalid, contains: "hex"},
		{name: "split outside the range", method: "POST", path: "/v1/streams/s/split", body: `{"shard":1,"at":"0000000000000001"}`, status: 400, code: CodeInvalid, contains: "outside"},
		{name: "split at a hash", method: "POST", path: "/v1/streams/s/split", body: `{"shard":1,"at":"c000000000000000"}`, status: 200, contains: `"hash_start": "c000000000000000"`},
		{name: "split a missing stream", method: "POST", path: "/v1/streams/nope/split", body: `{"shard":0}`, status: 404, code: CodeNotFound},
		{name: "split unknown field", method: "POST", path: "/v1/streams/s/split", body: `{"shard":1,"colour":"red"}`, status: 400, code: CodeInvalid},
		// Open now: 2 [0, 4000..), 3 [4000.., 8000..), 4 [8000.., c000..), 5 [c000.., max].
		{name: "merge one shard", method: "POST", path: "/v1/streams/s/merge", body: `{"shards":[2]}`, status: 400, code: CodeInvalid, contains: "want two"},
		{name: "merge not adjacent", method: "POST", path: "/v1/streams/s/merge", body: `{"shards":[2,4]}`, status: 400, code: CodeInvalid, contains: "not adjacent"},
		{name: "merge a closed shard", method: "POST", path: "/v1/streams/s/merge", body: `{"shards":[0,2]}`, status: 409, code: CodeConflict},
		{name: "merge", method: "POST", path: "/v1/streams/s/merge", body: `{"shards":[3,4]}`, status: 200, contains: `"open_shards": 3`},
		{name: "reshard to zero", method: "POST", path: "/v1/streams/s/reshard", body: `{"shards":0}`, status: 400, code: CodeInvalid},
		{name: "reshard past the cap", method: "POST", path: "/v1/streams/s/reshard", body: `{"shards":100000}`, status: 409, code: CodeConflict, contains: "too many shards"},
		{name: "reshard", method: "POST", path: "/v1/streams/s/reshard", body: `{"shards":4}`, status: 200, contains: `"open_shards": 4`},
		{name: "describe retired=bad", method: "GET", path: "/v1/streams/s?retired=maybe", status: 400, code: CodeInvalid},
		{name: "patch shard count still refused", method: "PATCH", path: "/v1/streams/s", body: `{"shards":8}`, status: 409, code: CodeConflict, contains: "hub stream reshard"},
	}
	for _, s := range steps {
		status, body := call(t, s.method, base+s.path, s.body)
		if status != s.status {
			t.Fatalf("%s: status %d, want %d: %s", s.name, status, s.status, body)
		}
		if s.code != "" {
			var e ErrorBody
			if err := json.Unmarshal(body, &e); err != nil || e.Code != s.code {
				t.Fatalf("%s: body %s, want code %q", s.name, body, s.code)
			}
		}
		if s.contains != "" && !strings.Contains(string(body), s.contains) {
			t.Fatalf("%s: body %s lacks %q", s.name, body, s.contains)
		}
	}

	// Records appended after the reshards go to open shards only, and the
	// first parents ended where the appends before the first split stopped.
	appendKeyed(100)
	_, body := call(t, "GET", base+"/v1/streams/s", "")
	var info StreamInfo
	if err := json.Unmarshal(body, &info); err != nil {
		t.Fatal(err)
	}
	if info.LayoutVersion != 4 || info.OpenShards != 4 || info.Config.Shards != 2 {
		t.Fatalf("layout version %d, %d open, created with %d; want 4, 4, 2", info.LayoutVersion, info.OpenShards, info.Config.Shards)
	}
	open := 0
	for _, sh := range info.Shards {
		switch sh.State {
		case "open":
			open++
		case "closed":
			if sh.ClosedAt == nil || len(sh.Children) == 0 {
				t.Errorf("closed shard %d: closed_at %v, children %v", sh.Shard, sh.ClosedAt, sh.Children)
			}
			if sh.LastSeq != sh.EndSeq {
				t.Errorf("closed shard %d took appends: last %d, end %d", sh.Shard, sh.LastSeq, sh.EndSeq)
			}
		default:
			t.Errorf("shard %d state %q", sh.Shard, sh.State)
		}
		if sh.Shard < 2 && sh.EndSeq != before[sh.Shard].LastSeq {
			t.Errorf("shard %d closed at %d, held %d before the first split", sh.Shard, sh.EndSeq, before[sh.Shard].LastSeq)
		}
	}
	if open != 4 {
		t.Fatalf("%d open shards listed, want 4: %s", open, body)
	}
	if got := counterValue(t, h, "edgehub_reshards_total"); got != 4 {
		t.Fatalf("edgehub_reshards_total %v, want 4 (two splits, a merge, a reshard)", got)
	}
}

package hub

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/edgehub/edgehub/internal/groups"
	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/plugins"
	"github.com/edgehub/edgehub/quic"
	"github.com/edgehub/edgehub/store"
	"github.com/edgehub/edgehub/wasmhost"
)

// call sends a request to the admin API and returns the status and body.
func call(tb testing.TB, method, url, body string) (int, []byte) {
	tb.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		tb.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set(HeaderAdminClient, "test") // as the CLI does (bodiless POSTs need it)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return resp.StatusCode, b
}

func TestAdminStreamsAPI(t *testing.T) {
	_, base := startHub(t, testConfig(t))
	// Steps run in order against one hub; each checks status and, for
	// errors, the JSON error code.
	steps := []struct {
		name, method, path, body string
		status                   int
		code                     string // error code, or "" for success
		contains                 string // substring of the body
	}{
		{name: "empty list", method: "GET", path: "/v1/streams", status: 200, contains: `"streams": []`},
		{name: "create", method: "POST", path: "/v1/streams", body: `{"name":"orders","shards":4,"retention":"168h","max_bytes":"10GiB"}`, status: 201, contains: `"max_bytes": 10737418240`},
		{name: "create defaults", method: "POST", path: "/v1/streams", body: `{"name":"logs"}`, status: 201, contains: `"tombstone_retention": "24h"`},
		{name: "create existing", method: "POST", path: "/v1/streams", body: `{"name":"orders","shards":4}`, status: 409, code: CodeExists},
		{name: "create bad name", method: "POST", path: "/v1/streams", body: `{"name":"no good"}`, status: 400, code: CodeInvalid, contains: "invalid name"},
		{name: "create too many shards", method: "POST", path: "/v1/streams", body: `{"name":"x","shards":5000}`, status: 400, code: CodeInvalid, contains: "outside 1..1024"},
		{name: "create bad duration", method: "POST", path: "/v1/streams", body: `{"name":"x","retention":"7d"}`, status: 400, code: CodeInvalid, contains: "invalid duration"},
		{name: "create unknown field", method: "POST", path: "/v1/streams", body: `{"name":"x","colour":"red"}`, status: 400, code: CodeInvalid, contains: "colour"},
		{name: "create malformed", method: "POST", path: "/v1/streams", body: `{"name":`, status: 400, code: CodeInvalid},
		{name: "create empty body", method: "POST", path: "/v1/streams", body: ``, status: 400, code: CodeInvalid},
		{name: "create trailing data", method: "POST", path: "/v1/streams", body: `{"name":"x"} {}`, status: 400, code: CodeInvalid},
		{name: "create trailing brace", method: "POST", path: "/v1/streams", body: `{"name":"y"}}`, status: 400, code: CodeInvalid},
		{name: "create huge body", method: "POST", path: "/v1/streams", body: `{"name":"` + strings.Repeat("x", maxRequestBody) + `"}`, status: 413, code: CodeTooLarge},
		{name: "list", method: "GET", path: "/v1/streams", status: 200, contains: `"name": "orders"`},
		{name: "describe", method: "GET", path: "/v1/streams/orders", status: 200, contains: `"hash_end": "ffffffffffffffff"`},
		{name: "describe missing", method: "GET", path: "/v1/streams/nope", status: 404, code: CodeNotFound},
		{name: "patch", method: "PATCH", path: "/v1/streams/orders", body: `{"compact":true,"replicate":["tag:eu"]}`, status: 200, contains: `"replicate": "tag:eu"`},
		{name: "patch keeps other settings", method: "GET", path: "/v1/streams/orders", status: 200, contains: `"retention": "168h"`},
		{name: "patch shard count", method: "PATCH", path: "/v1/streams/orders", body: `{"shards":8}`, status: 409, code: CodeConflict},
		{name: "patch rename", method: "PATCH", path: "/v1/streams/orders", body: `{"name":"other"}`, status: 400, code: CodeInvalid},
		{name: "patch negative", method: "PATCH", path: "/v1/streams/orders", body: `{"retention":"-1h"}`, status: 400, code: CodeInvalid},
		{name: "patch missing", method: "PATCH", path: "/v1/streams/nope", body: `{"compact":true}`, status: 404, code: CodeNotFound},
		{name: "delete", method: "DELETE", path: "/v1/streams/logs", status: 204},
		{name: "delete again", method: "DELETE", path: "/v1/streams/logs", status: 404, code: CodeNotFound},
		{name: "unknown API", method: "GET", path: "/v1/nothing", status: 404, code: CodeNotFound},
		{name: "wrong method", method: "PUT", path: "/v1/streams", status: 405, code: CodeMethod, contains: "allowed: GET, POST"},
		{name: "wrong method on a stream", method: "POST", path: "/v1/streams/orders", status: 405, code: CodeMethod, contains: "allowed: GET, PATCH, DELETE"},
		{name: "status page", method: "GET", path: "/", status: 200, contains: "<title>edgehub</title>"},
		{name: "healthz", method: "GET", path: "/healthz", status: 200, contains: `"name": "test-hub"`},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			status, body := call(t, s.method, base+s.path, s.body)
			if status != s.status {
				t.Fatalf("%s %s = %d %s, want %d", s.method, s.path, status, body, s.status)
			}
			if s.code != "" {
				var eb ErrorBody
				if err := json.Unmarshal(body, &eb); err != nil || eb.Code != s.code || eb.Error == "" {
					t.Errorf("error body %s, want code %q and a message (%v)", body, s.code, err)
				}
			}
			if s.contains != "" && !bytes.Contains(body, []byte(s.contains)) {
				t.Errorf("body %s does not contain %q", body, s.contains)
			}
		})
	}
}

func TestAdminDescribeReportsShards(t *testing.T) {
	h, base := startHub(t, testConfig(t))
	ctx := context.Background()
	st, err := h.Store().CreateStream(ctx, store.StreamConfig{Name: "orders", Shards: 3})
	if err != nil {
		t.Fatal(err)
	}
	// 30 keyed records; count what each shard must hold.
	var recs []record.Record
	want := make([]int64, 3)
	for i := range 30 {
		key := []byte(fmt.Sprintf("key-%d", i))
		recs = append(recs, record.Record{Key: key, Value: []byte("value")})
		want[record.ShardForKey(key, 3)]++
	}
	if _, err := st.Append(ctx, store.Batch{Shard: -1, Records: recs}); err != nil {
		t.Fatal(err)
	}

	status, body := call(t, "GET", base+"/v1/streams/orders", "")
	if status != 200 {
		t.Fatalf("describe = %d %s", status, body)
	}
	var info StreamInfo
	if err := json.Unmarshal(body, &info); err != nil {
		t.Fatal(err)
	}
	if info.Records != 30 || info.Bytes <= 0 || info.Config.Shards != 3 || len(info.Shards) != 3 {
		t.Fatalf("info = %+v", info)
	}
	var bytesSum int64
	for i, sh := range info.Shards {
		lo, hi := record.HashRange(i, 3)
		if sh.Shard != i || sh.HashStart != fmt.Sprintf("%016x", lo) || sh.HashEnd != fmt.Sprintf("%016x", hi) {
			t.Errorf("shard %d range = %s-%s, want %016x-%016x", i, sh.HashStart, sh.HashEnd, lo, hi)
		}
		if sh.Records != want[i] || sh.LastSeq != uint64(want[i]) {
			t.Errorf("shard %d: records %d last %d, want %d", i, sh.Records, sh.LastSeq, want[i])
		}
		if want[i] > 0 && (sh.FirstSeq != 1 || sh.LastIngest == nil) {
			t.Errorf("shard %d: first %d ingest %v", i, sh.FirstSeq, sh.LastIngest)
		}
		bytesSum += sh.Bytes
	}
	if bytesSum != info.Bytes {
		t.Errorf("shard bytes sum %d != stream bytes %d", bytesSum, info.Bytes)
	}

	// The list carries totals without per-shard detail.
	_, body = call(t, "GET", base+"/v1/streams", "")
	var list StreamList
	if err := json.Unmarshal(body, &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Streams) != 1 || list.Streams[0].Records != 30 || list.Streams[0].Shards != nil {
		t.Errorf("list = %+v", list)
	}

	// Metrics read the same state.
	_, metrics := call(t, "GET", base+"/metrics", "")
	for i, n := range want {
		line := fmt.Sprintf(`edgehub_shard_records{shard="%d",stream="orders"} %d`, i, n)
		if !bytes.Contains(metrics, []byte(line+"\n")) {
			t.Errorf("metrics lack %q", line)
		}
		line = fmt.Sprintf(`edgehub_shard_last_sequence{shard="%d",stream="orders"} %d`, i, n)
		if !bytes.Contains(metrics, []byte(line+"\n")) {
			t.Errorf("metrics lack %q", line)
		}
	}
	for _, m := range []string{"edgehub_streams 1\n", `edgehub_hub_info{name="test-hub"`, `edgehub_admin_requests_total{code="200",pattern="GET /v1/streams/{name}"} 1`, "go_goroutines "} {
		if !bytes.Contains(metrics, []byte(m)) {
			t.Errorf("metrics lack %q", m)
		}
	}
}

func TestErrorStatus(t *testing.T) {
	tests := []struct {
		name   string
		err    error
		status int
		code   string
	}{
		{name: "not found", err: fmt.Errorf("x: %w", store.ErrStreamNotFound), status: 404, code: CodeNotFound},
		{name: "exists", err: store.ErrStreamExists, status: 409, code: CodeExists},
		{name: "shards fixed", err: ErrShardsFixed, status: 409, code: CodeConflict},
		{name: "invalid name", err: store.ErrInvalidName, status: 400, code: CodeInvalid},
		{name: "invalid config", err: store.ErrInvalidConfig, status: 400, code: CodeInvalid},
		{name: "record too large", err: store.ErrRecordTooLarge, status: 413, code: CodeTooLarge},
		{name: "body too large", err: &http.MaxBytesError{Limit: 1}, status: 413, code: CodeTooLarge},
		{name: "corrupt", err: &store.CorruptError{File: "f", Shard: -1, Err: io.ErrUnexpectedEOF}, status: 500, code: CodeCorrupt},
		{name: "closed", err: store.ErrClosed, status: 503, code: CodeUnavailable},
		{name: "explicit", err: badRequest("no"), status: 400, code: CodeInvalid},
		{name: "other", err: io.ErrClosedPipe, status: 500, code: CodeInternal},
		{name: "group not found", err: groups.ErrNotFound, status: 404, code: CodeNotFound},
		{name: "group has members", err: groups.ErrActive, status: 409, code: CodeConflict},
		{name: "group invalid", err: groups.ErrInvalid, status: 400, code: CodeInvalid},
		{name: "groups closed", err: groups.ErrClosed, status: 503, code: CodeUnavailable},
		{name: "group wire-only", err: groups.ErrStaleEpoch, status: 500, code: CodeInternal},
		{name: "plugin not found", err: plugins.ErrNotFound, status: 404, code: CodeNotFound},
		{name: "plugin definition", err: plugins.ErrInvalidDefinition, status: 400, code: CodeInvalid},
		{name: "module refused", err: fmt.Errorf("%w: %w", wasmhost.ErrInvalidModule, io.ErrUnexpectedEOF), status: 400, code: CodeInvalid},
		{name: "module init timed out", err: wasmhost.ErrTimeout, status: 400, code: CodeInvalid},
		{name: "plugins corrupt", err: plugins.ErrCorrupt, status: 500, code: CodeCorrupt},
		{name: "canceled", err: context.Canceled, status: 503, code: CodeUnavailable},
		{name: "deadline", err: context.DeadlineExceeded, status: 500, code: CodeInternal},
		{name: "transport", err: quic.ErrClosed, status: 500, code: CodeInternal},
		{name: "explicit wins", err: &apiError{409, CodeInUse, store.ErrStreamNotFound}, status: 409, code: CodeInUse},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, code := errorStatus(tt.err)
			if status != tt.status || code != tt.code {
				t.Errorf("errorStatus = %d %q, want %d %q", status, code, tt.status, tt.code)
			}
		})
	}
}

// DELETE of a stream a consumer group uses is refused with 409 in_use and
// the users listed, unless ?force=true; GET shows the incarnation and the
// users; a stream created again gets a new incarnation.
func TestAdminDeleteStreamInUse(t *testing.T) {
	_, base := startHub(t, testConfig(t))
	if st, b := call(t, "POST", base+"/v1/streams", `{"name":"orders","shards":2}`); st != 201 {
		t.Fatalf("create: %d %s", st, b)
	}
	if st, b := call(t, "POST", base+"/v1/groups/billing/reset", `{"stream":"orders","to":"earliest"}`); st != 200 {
		t.Fatalf("reset (creates the group): %d %s", st, b)
	}
	var info StreamInfo
	_, b := call(t, "GET", base+"/v1/streams/orders", "")
	if err := json.Unmarshal(b, &info); err != nil || len(info.Incarnation) != 32 || fmt.Sprint(info.Users) != "[group billing]" {
		t.Fatalf("describe: %v %s", err, b)
	}
	st, b := call(t, "DELETE", base+"/v1/streams/orders", "")
	var refused StreamInUseBody
	if err := json.Unmarshal(b, &refused); err != nil || st != 409 || refused.Code != CodeInUse || fmt.Sprint(refused.Users) != "[group billing]" {
		t.Fatalf("delete in use: %d %s (%v)", st, b, err)
	}
	if st, _ := call(t, "GET", base+"/v1/streams/orders", ""); st != 200 {
		t.Fatalf("the refused delete deleted the stream: %d", st)
	}
	if st, b := call(t, "DELETE", base+"/v1/streams/orders?force=maybe", ""); st != 400 {
		t.Fatalf("force=maybe: %d %s", st, b)
	}
	if st, b := call(t, "DELETE", base+"/v1/streams/orders?force=true", ""); st != 204 {
		t.Fatalf("forced delete: %d %s", st, b)
	}
	if st, _ := call(t, "DELETE", base+"/v1/streams/orders?force=true", ""); st != 404 {
		t.Fatalf("delete of a deleted stream: %d", st)
	}
	_, b = call(t, "POST", base+"/v1/streams", `{"name":"orders","shards":2}`)
	var again StreamInfo
	if err := json.Unmarshal(b, &again); err != nil || again.Incarnation == info.Incarnation || len(again.Incarnation) != 32 {
		t.Fatalf("recreated: %v, incarnation %q (was %q)", err, again.Incarnation, info.Incarnation)
	}
}

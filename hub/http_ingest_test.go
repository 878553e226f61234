package hub

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/store"
)

// post sends an ingest request and returns the status and body.
func post(tb testing.TB, url, ctype, body string, header map[string]string) (int, []byte) {
	tb.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// ingested returns every record of a stream, shard by shard.
func ingested(tb testing.TB, st *store.Stream) []record.Record {
	tb.Helper()
	var out []record.Record
	for shard := range st.Shards() {
		out = append(out, readAll(tb, st, shard)...)
	}
	return out
}

func ingestHub(tb testing.TB, mod func(*Config)) (*Hub, string) {
	tb.Helper()
	cfg := testConfig(tb)
	cfg.Store.MaxRecordBytes = 1024
	cfg.Streams = []StreamConfig{{Name: "sensors", Shards: 2, Replicate: ReplicateLocal}}
	if mod != nil {
		mod(&cfg)
	}
	h, base := startHub(tb, cfg)
	return h, base + "/v1/streams/sensors/records"
}

func TestHTTPIngest(t *testing.T) {
	h, url := ingestHub(t, nil)
	st := mustStream(t, h, "sensors")
	big := strings.Repeat("x", 1025)

	tests := []struct {
		name, query, ctype, body string
		header                   map[string]string
		status                   int
		contains                 string // in the answer
		stored                   int    // records the request adds
	}{
		{name: "raw with key and headers", query: "?key=t1&time=2026-01-02T15:04:05Z", ctype: "application/json", body: `{"c":21.5}`,
			header: map[string]string{"X-Edgehub-Header-Unit": "C"}, status: 200, contains: `"seq": 1`, stored: 1},
		{name: "raw key header", ctype: "application/octet-stream", body: "\x00\x01", header: map[string]string{HeaderIngestKey: "t2"}, status: 200, stored: 1},
		{name: "raw empty value", query: "?key=e", ctype: "application/octet-stream", status: 200, stored: 1},
		{name: "raw tombstone", query: "?key=t1&tombstone=true", ctype: "application/octet-stream", status: 200, stored: 1},
		{name: "json lines", ctype: ContentTypeNDJSON, status: 200, stored: 3, contains: `"shard"`,
			body: "{\"key\":\"a\",\"value\":\"1\"}\n\n{\"key\":\"b\",\"value_base64\":\"/w==\",\"headers\":[{\"key\":\"h\",\"value\":\"v\"}]}\n{\"key\":\"a\"}\n"},
		{name: "oversized raw", query: "?key=k", ctype: "application/octet-stream", body: big, status: 413, contains: "max_record_bytes 1024"},
		{name: "oversized line", ctype: ContentTypeNDJSON, body: "{\"value\":\"1\"}\n{\"value\":\"" + big + "\"}\n", status: 413, contains: "line 2"},
		{name: "bad line", ctype: ContentTypeNDJSON, body: "{\"value\":\"1\"}\n{\"vaule\":\"2\"}\n{\"value\":\"3\"}\n", status: 400, contains: `line 2: invalid JSON record: json: unknown field \"vaule\"`},
		{name: "not JSON", ctype: ContentTypeNDJSON, body: "{\"value\":\"1\"}\nhello\n", status: 400, contains: "line 2"},
		{name: "no lines", ctype: ContentTypeNDJSON, body: "\n\n", status: 400, contains: "no records"},
		{name: "tombstone with a body", query: "?key=k&tombstone=true", ctype: "application/octet-stream", body: "x", status: 400, contains: "tombstone"},
		{name: "key twice", query: "?key=a", ctype: "application/octet-stream", header: map[string]string{HeaderIngestKey: "b"}, status: 400, contains: "twice"},
		{name: "bad shard", query: "?shard=2", ctype: "application/octet-stream", status: 400, contains: "want 0..1"},
		{name: "idempotent without shard", ctype: "application/octet-stream", header: map[string]string{HeaderProducerID: "7", HeaderProducerSeq: "0"}, status: 400, contains: "must name the shard"},
		{name: "form type from a page", ctype: "text/plain", body: "x", status: 403, contains: "Content-Type"},
		{name: "no type", body: "x", status: 403, contains: "Content-Type"},
	}
	total := 0
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := post(t, url+tt.query, tt.ctype, tt.body, tt.header)
			if status != tt.status || !strings.Contains(string(body), tt.contains) {
				t.Fatalf("%d %s, want %d containing %q", status, body, tt.status, tt.contains)
			}
			if status != 200 {
				var eb ErrorBody
				if err := json.Unmarshal(body, &eb); err != nil || eb.Code == "" {
					t.Fatalf("error body %s: %v", body, err)
				}
			} else {
				var res IngestResult
				if err := json.Unmarshal(body, &res); err != nil || len(res.Records) != tt.stored || res.Stream != "sensors" {
					t.Fatalf("answer %s (%v): want %d positions", body, err, tt.stored)
				}
			}
			total += tt.stored
			if got := len(ingested(t, st)); got != total {
				t.Fatalf("%d records stored, want %d", got, total)
			}
		})
	}

	// What was stored is what was sent.
	byKey := map[string][]record.Record{}
	for _, r := range ingested(t, st) {
		byKey[string(r.Key)] = append(byKey[string(r.Key)], r)
	}
	t1 := byKey["t1"]
	if len(t1) != 2 || string(t1[0].Value) != `{"c":21.5}` || len(t1[0].Headers) != 1 || t1[0].Headers[0].Key != "unit" ||
		string(t1[0].Headers[0].Value) != "C" || t1[0].Time != time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC).UnixNano() || t1[1].Value != nil {
		t.Errorf("t1: %+v", t1)
	}
	if e := byKey["e"]; len(e) != 1 || e[0].Value == nil || len(e[0].Value) != 0 {
		t.Errorf("empty value stored as %+v", e)
	}
	if b := byKey["b"]; len(b) != 1 || !bytes.Equal(b[0].Value, []byte{0xff}) || b[0].Headers[0].Key != "h" {
		t.Errorf("b: %+v", b)
	}
	if a := byKey["a"]; len(a) != 2 || a[1].Value != nil {
		t.Errorf("a: %+v", a)
	}

	// Unknown stream.
	status, body := post(t, strings.Replace(url, "sensors", "nope", 1), "application/octet-stream", "x", nil)
	if status != 404 || !strings.Contains(string(body), `"not_found"`) {
		t.Errorf("unknown stream: %d %s", status, body)
	}
}

func TestHTTPIngestIdempotent(t *testing.T) {
	h, url := ingestHub(t, nil)
	hdr := map[string]string{HeaderProducerID: "42", HeaderProducerSeq: "0"}
	lines := "{\"value\":\"1\"}\n{\"value\":\"2\"}\n"
	var first IngestResult
	for i, want := range []bool{false, true} {
		status, body := post(t, url+"?shard=1", ContentTypeNDJSON, lines, hdr)
		var res IngestResult
		if status != 200 || json.Unmarshal(body, &res) != nil || res.Duplicate != want || len(res.Records) != 2 {
			t.Fatalf("send %d: %d %s", i, status, body)
		}
		if i == 0 {
			first = res
		} else if res.Records[0] != first.Records[0] || res.Records[1] != first.Records[1] {
			t.Fatalf("retry answered %+v, first %+v", res, first)
		}
	}
	if n := len(ingested(t, mustStream(t, h, "sensors"))); n != 2 {
		t.Fatalf("%d records stored, want 2", n)
	}
	// A gap in the producer's sequence is the same 409 as on QUIC.
	hdr[HeaderProducerSeq] = "5"
	if status, body := post(t, url+"?shard=1", ContentTypeNDJSON, lines, hdr); status != 409 || !strings.Contains(string(body), `"conflict"`) {
		t.Fatalf("gap: %d %s", status, body)
	}
}

func TestHTTPIngestAuth(t *testing.T) {
	dir := t.TempDir()
	tokenFile := func(name, tok string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	admin := AdminConfig{Tokens: []AdminToken{
		{Name: "ops", Role: RoleWrite, TokenFile: tokenFile("w", "admin-write-token-0123")},
		{Name: "viewer", Role: RoleRead, TokenFile: tokenFile("r", "admin-read-token-01234")},
	}}
	_, url := ingestHub(t, func(c *Config) {
		c.Admin = admin
		c.Auth.Tokens = []TokenGrant{
			{Name: "device", Token: "device-token-0123456", Produce: []string{"sens*"}},
			{Name: "other", Token: "other-token-0123456789", Produce: []string{"x"}, Consume: []string{"*"}},
		}
	})
	tests := []struct {
		name, auth string
		status     int
		code       string
	}{
		{name: "no token", status: 401, code: CodeUnauthenticated},
		{name: "produce token", auth: "Bearer device-token-0123456", status: 200},
		{name: "token without produce on the stream", auth: "Bearer other-token-0123456789", status: 403, code: CodePermissionDenied},
		{name: "admin write", auth: "Bearer admin-write-token-0123", status: 200},
		{name: "admin read", auth: "Bearer admin-read-token-01234", status: 403, code: CodePermissionDenied},
		{name: "unknown token", auth: "Bearer not-a-token-at-all-0000", status: 401, code: CodeUnauthenticated},
		{name: "not bearer", auth: "Basic dXNlcjpwYXNz", status: 401, code: CodeUnauthenticated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hdr := map[string]string{}
			if tt.auth != "" {
				hdr["Authorization"] = tt.auth
			}
			status, body := post(t, url+"?key=k", "application/octet-stream", "v", hdr)
			if status != tt.status || (tt.code != "" && !strings.Contains(string(body), `"`+tt.code+`"`)) {
				t.Fatalf("%d %s, want %d %s", status, body, tt.status, tt.code)
			}
		})
	}

	// Admin tokens without [auth]: anonymous ingest is refused, an admin
	// write token works.
	_, url = ingestHub(t, func(c *Config) { c.Admin = admin })
	if status, body := post(t, url, "application/octet-stream", "v", nil); status != 401 {
		t.Fatalf("anonymous with admin tokens: %d %s", status, body)
	}
	if status, body := post(t, url, "application/octet-stream", "v", map[string]string{"Authorization": "Bearer admin-write-token-0123"}); status != 200 {
		t.Fatalf("admin write without [auth]: %d %s", status, body)
	}
}

// TestHTTPIngestCurl sends events with the curl binary, as docs/http.md
// shows.
func TestHTTPIngestCurl(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl not installed")
	}
	h, url := ingestHub(t, nil)
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(curl, append([]string{"-sS", "--fail-with-body"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("curl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	out := run("-H", "Content-Type: application/json", "-H", "X-Edgehub-Header-Unit: C", "--data-binary", `{"c":21.5}`, url+"?key=t1")
	if !strings.Contains(out, `"seq": 1`) {
		t.Fatalf("raw: %s", out)
	}
	lines := filepath.Join(t.TempDir(), "events.jsonl")
	os.WriteFile(lines, []byte("{\"key\":\"t1\",\"value\":\"22\"}\n{\"key\":\"t2\",\"value\":\"23\"}\n"), 0o644)
	out = run("-H", "Content-Type: application/x-ndjson", "--data-binary", "@"+lines, url)
	var res IngestResult
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.Records) != 2 {
		t.Fatalf("lines: %s (%v)", out, err)
	}
	if n := len(ingested(t, mustStream(t, h, "sensors"))); n != 3 {
		t.Fatalf("%d records stored, want 3", n)
	}
	// curl's default form type is refused, with a message saying why.
	cmd := exec.Command(curl, "-sS", "--data-binary", "x", url)
	b, _ := cmd.CombinedOutput()
	if !strings.Contains(string(b), "forbidden") || !strings.Contains(string(b), "application/octet-stream") {
		t.Fatalf("form type: %s", b)
	}
}

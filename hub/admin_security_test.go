package hub

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"mime/multipart"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgehub/edgehub/internal/testutil"
)

// rawRequest is an admin request with exactly the given headers: no
// Content-Type or HeaderAdminClient unless listed, like a browser's.
type rawRequest struct {
	method, path string
	body         string
	headers      map[string]string
	host         string // Host header; "" for the listener's address
}

func (rr rawRequest) do(tb testing.TB, client *http.Client, base string) (int, ErrorBody, http.Header) {
	tb.Helper()
	var body io.Reader
	if rr.body != "" {
		body = strings.NewReader(rr.body)
	}
	req, err := http.NewRequest(rr.method, base+rr.path, body)
	if err != nil {
		tb.Fatal(err)
	}
	for k, v := range rr.headers {
		req.Header.Set(k, v)
	}
	if rr.host != "" {
		req.Host = rr.host
	}
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var eb ErrorBody
	if resp.StatusCode >= 300 {
		json.Unmarshal(b, &eb)
	}
	return resp.StatusCode, eb, resp.Header
}

// multipartDeploy is a plugin upload body as a cross-site HTML form could
// send it.
func multipartDeploy(tb testing.TB) (body, contentType string) {
	tb.Helper()
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	fw, _ := mw.CreateFormField("definition")
	fw.Write([]byte(`{"name":"evil","inputs":["x"]}`))
	mf, _ := mw.CreateFormFile("module", "m.wasm")
	mf.Write([]byte("\x00asm\x01\x00\x00\x00"))
	mw.Close()
	return b.String(), mw.FormDataContentType()
}

func streamNames(tb testing.TB, h *Hub) []string {
	var names []string
	for _, st := range h.Store().Streams() {
		names = append(names, st.Name())
	}
	return names
}

// TestAdminRefusesCrossSiteRequests: a web page open on the hub's machine
// can make the browser send requests to the admin API; none of its forged
// requests may change anything. Before the guard, every refused request
// below was served (the text/plain POST created the stream).
func TestAdminRefusesCrossSiteRequests(t *testing.T) {
	cfg := testConfig(t)
	cfg.Admin.AllowedOrigins = []string{"https://ops.example"}
	h, base := startHub(t, cfg)
	u, _ := url.Parse(base)
	port := u.Port()
	deploy, deployType := multipartDeploy(t)
	const evil = "http://evil.example"

	refused := []struct {
		name string
		req  rawRequest
	}{
		{"text/plain POST from another origin", rawRequest{method: "POST", path: "/v1/streams", body: `{"name":"evil"}`,
			headers: map[string]string{"Content-Type": "text/plain", "Origin": evil}}},
		{"text/plain POST without Origin", rawRequest{method: "POST", path: "/v1/streams", body: `{"name":"evil"}`,
			headers: map[string]string{"Content-Type": "text/plain;charset=UTF-8"}}},
		{"form POST without Origin", rawRequest{method: "POST", path: "/v1/streams", body: `{"name":"evil"}`,
			headers: map[string]string{"Content-Type": "application/x-www-form-urlencoded"}}},
		{"POST without a content type", rawRequest{method: "POST", path: "/v1/streams", body: `{"name":"evil"}`}},
		{"JSON POST from another origin", rawRequest{method: "POST", path: "/v1/streams", body: `{"name":"evil"}`,
			headers: map[string]string{"Content-Type": "application/json", "Origin": evil}}},
		{"multipart plugin upload from another origin", rawRequest{method: "POST", path: "/v1/plugins", body: deploy,
			headers: map[string]string{"Content-Type": deployType, "Origin": evil}}},
		{"multipart plugin upload without Origin", rawRequest{method: "POST", path: "/v1/plugins", body: deploy,
			headers: map[string]string{"Content-Type": deployType}}},
		{"DELETE from another origin", rawRequest{method: "DELETE", path: "/v1/streams/keep", headers: map[string]string{"Origin": evil}}},
		{"origin null", rawRequest{method: "POST", path: "/v1/streams", body: `{"name":"evil"}`,
			headers: map[string]string{"Content-Type": "application/json", "Origin": "null"}}},
		{"same host, other scheme", rawRequest{method: "POST", path: "/v1/streams", body: `{"name":"evil"}`,
			headers: map[string]string{"Content-Type": "application/json", "Origin": "https://127.0.0.1:" + port}}},
		{"cross-site GET without Origin", rawRequest{method: "GET", path: "/v1/streams", headers: map[string]string{"Sec-Fetch-Site": "cross-site"}}},
		{"DNS rebinding GET", rawRequest{method: "GET", path: "/v1/streams", host: "evil.example:" + port}},
		{"DNS rebinding POST", rawRequest{method: "POST", path: "/v1/streams", body: `{"name":"evil"}`, host: "evil.example:" + port,
			headers: map[string]string{"Content-Type": "application/json"}}},
		{"DNS rebinding to the default port", rawRequest{method: "GET", path: "/metrics", host: "evil.example"}},
		{"DNS rebinding, same-origin Origin", rawRequest{method: "POST", path: "/v1/streams", body: `{"name":"evil"}`, host: "evil.example:" + port,
			headers: map[string]string{"Content-Type": "application/json", "Origin": "http://evil.example:" + port}}},
	}
	if _, err := h.Store().CreateStream(t.Context(), StreamConfig{Name: "keep", Shards: 1}.StoreStreamConfig()); err != nil {
		t.Fatal(err)
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			status, eb, _ := tt.req.do(t, nil, base)
			if status != http.StatusForbidden || eb.Code != CodeForbidden {
				t.Fatalf("status %d, code %q (%s); want 403 %s", status, eb.Code, eb.Error, CodeForbidden)
			}
			if names := streamNames(t, h); len(names) != 1 || names[0] != "keep" {
				t.Fatalf("streams after a refused request: %v, want [keep]", names)
			}
		})
	}
	if got := counterValue(t, h, "edgehub_admin_refused_total"); got != float64(len(refused)) {
		t.Errorf("edgehub_admin_refused_total = %v, want %d", got, len(refused))
	}
	if status, b := call(t, "GET", base+"/v1/plugins", ""); status != 200 || strings.Contains(string(b), "evil") {
		t.Fatalf("plugins after the refused uploads: %d %s", status, b)
	}

	served := []struct {
		name   string
		req    rawRequest
		status int
	}{
		{"same-origin JSON POST (the status page)", rawRequest{method: "POST", path: "/v1/streams", body: `{"name":"a"}`,
			headers: map[string]string{"Content-Type": "application/json; charset=utf-8", "Origin": "http://127.0.0.1:" + port}}, 201},
		{"a program's POST with the admin header", rawRequest{method: "POST", path: "/v1/streams", body: `{"name":"b"}`,
			headers: map[string]string{HeaderAdminClient: "curl"}}, 201},
		{"localhost", rawRequest{method: "GET", path: "/v1/streams", host: "localhost:" + port}, 200},
		{"LOCALHOST", rawRequest{method: "GET", path: "/v1/streams", host: "LOCALHOST:" + port}, 200},
		{"ipv6 loopback name", rawRequest{method: "GET", path: "/v1/streams", host: "[::1]:" + port}, 200},
		{"configured origin", rawRequest{method: "POST", path: "/v1/streams", body: `{"name":"c"}`,
			headers: map[string]string{"Content-Type": "application/json", "Origin": "https://ops.example"}}, 201},
		{"same-origin fetch", rawRequest{method: "GET", path: "/v1/streams", headers: map[string]string{"Sec-Fetch-Site": "same-origin"}}, 200},
		{"DELETE without a content type", rawRequest{method: "DELETE", path: "/v1/streams/a"}, 204},
	}
	for _, tt := range served {
		t.Run(tt.name, func(t *testing.T) {
			if status, eb, _ := tt.req.do(t, nil, base); status != tt.status {
				t.Fatalf("status %d (%s %s), want %d", status, eb.Code, eb.Error, tt.status)
			}
		})
	}

	t.Run("CORS preflight of a configured origin", func(t *testing.T) {
		status, _, hdr := rawRequest{method: "OPTIONS", path: "/v1/streams", headers: map[string]string{
			"Origin": "https://ops.example", "Access-Control-Request-Method": "POST",
			"Access-Control-Request-Headers": "content-type"}}.do(t, nil, base)
		if status != http.StatusNoContent || hdr.Get("Access-Control-Allow-Origin") != "https://ops.example" ||
			!strings.Contains(hdr.Get("Access-Control-Allow-Headers"), "Content-Type") {
			t.Fatalf("preflight: %d %v", status, hdr)
		}
		status, eb, hdr := rawRequest{method: "OPTIONS", path: "/v1/streams", headers: map[string]string{
			"Origin": evil, "Access-Control-Request-Method": "POST"}}.do(t, nil, base)
		if status != http.StatusForbidden || eb.Code != CodeForbidden || hdr.Get("Access-Control-Allow-Origin") != "" {
			t.Fatalf("preflight from another origin: %d %q %v", status, eb.Code, hdr)
		}
	})
}

// TestAdminTokens: with [[admin.token]]s, no token is 401, a read token
// cannot change anything, a write token can, and no token is ever logged.
func TestAdminTokens(t *testing.T) {
	const readTok, writeTok = "read-token-0123456789", "write-token-0123456789"
	dir := t.TempDir()
	readFile := filepath.Join(dir, "read.token")
	if err := os.WriteFile(readFile, []byte(readTok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TEST_HUB_WRITE_TOKEN", writeTok)
	cfg := testConfig(t)
	var logs testutil.SyncBuffer
	cfg.Logger = slog.New(slog.NewTextHandler(io.MultiWriter(&logs, tbWriter{t}), &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg.Admin.Tokens = []AdminToken{
		{Name: "dash", Role: RoleRead, TokenFile: readFile},
		{Name: "ops", Role: RoleWrite, TokenEnv: "TEST_HUB_WRITE_TOKEN"},
	}
	h, base := startHub(t, cfg)
	if _, err := h.Store().CreateStream(t.Context(), StreamConfig{Name: "keep", Shards: 1}.StoreStreamConfig()); err != nil {
		t.Fatal(err)
	}
	json := map[string]string{"Content-Type": "application/json"}
	with := func(tok string, hdr map[string]string) map[string]string {
		out := map[string]string{"Authorization": "Bearer " + tok}
		for k, v := range hdr {
			out[k] = v
		}
		return out
	}
	tests := []struct {
		name   string
		req    rawRequest
		status int
		code   string
	}{
		{"no token", rawRequest{method: "GET", path: "/v1/streams"}, 401, CodeUnauthenticated},
		{"no token, create", rawRequest{method: "POST", path: "/v1/streams", body: `{"name":"x"}`, headers: json}, 401, CodeUnauthenticated},
		{"no token, metrics", rawRequest{method: "GET", path: "/metrics"}, 401, CodeUnauthenticated},
		{"unknown token", rawRequest{method: "GET", path: "/v1/streams", headers: with("not-a-token-0123456789", nil)}, 401, CodeUnauthenticated},
		{"not a bearer token", rawRequest{method: "GET", path: "/v1/streams", headers: map[string]string{"Authorization": "Basic " + readTok}}, 401, CodeUnauthenticated},
		{"read token lists", rawRequest{method: "GET", path: "/v1/streams", headers: with(readTok, nil)}, 200, ""},
		{"read token scrapes metrics", rawRequest{method: "GET", path: "/metrics", headers: with(readTok, nil)}, 200, ""},
		{"read token cannot create", rawRequest{method: "POST", path: "/v1/streams", body: `{"name":"x"}`, headers: with(readTok, json)}, 403, CodePermissionDenied},
		{"read token cannot change", rawRequest{method: "PATCH", path: "/v1/streams/keep", body: `{"compact":true}`, headers: with(readTok, json)}, 403, CodePermissionDenied},
		{"read token cannot delete", rawRequest{method: "DELETE", path: "/v1/streams/keep", headers: with(readTok, nil)}, 403, CodePermissionDenied},
		{"read token cannot deploy", rawRequest{method: "POST", path: "/v1/plugins", body: `x`, headers: with(readTok, map[string]string{HeaderAdminClient: "t"})}, 403, CodePermissionDenied},
		{"healthz needs no token", rawRequest{method: "GET", path: "/healthz"}, 200, ""},
		{"the status page's HTML needs no token", rawRequest{method: "GET", path: "/"}, 200, ""},
		{"write token creates", rawRequest{method: "POST", path: "/v1/streams", body: `{"name":"made"}`, headers: with(writeTok, json)}, 201, ""},
		{"write token deletes", rawRequest{method: "DELETE", path: "/v1/streams/made", headers: with(writeTok, nil)}, 204, ""},
		{"a token does not lift the origin check", rawRequest{method: "POST", path: "/v1/streams", body: `{"name":"x"}`,
			headers: with(writeTok, map[string]string{"Content-Type": "application/json", "Origin": "http://evil.example"})}, 403, CodeForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, eb, hdr := tt.req.do(t, nil, base)
			if status != tt.status || eb.Code != tt.code {
				t.Fatalf("status %d code %q (%s), want %d %q", status, eb.Code, eb.Error, tt.status, tt.code)
			}
			if status == 401 && !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("401 without a Bearer challenge: %q", hdr.Get("WWW-Authenticate"))
			}
			if names := streamNames(t, h); slices.Contains(names, "x") || !slices.Contains(names, "keep") {
				t.Fatalf("streams: %v: a refused request changed them", names)
			}
		})
	}
	st, err := h.Store().Stream("keep")
	if err != nil || st.Config().Compact {
		t.Fatalf("stream keep after a read token's PATCH: %v, compact %v", err, err == nil && st.Config().Compact)
	}
	for _, tok := range []string{readTok, writeTok} {
		if strings.Contains(logs.String(), tok) {
			t.Errorf("a token appears in the hub's log")
		}
	}
	if !strings.Contains(logs.String(), "admin request refused") {
		t.Error("refusals were not logged")
	}
}

// TestAdminConfigSecurity: an exposed admin API needs tokens (or the
// scary opt-out), and token problems are reported by key without the token.
func TestAdminConfigSecurity(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.token")
	short := filepath.Join(dir, "short.token")
	os.WriteFile(good, []byte("a-long-enough-admin-token\n"), 0o600)
	os.WriteFile(short, []byte("short\n"), 0o600)
	t.Setenv("TEST_HUB_EMPTY", "")
	tests := []struct {
		name string
		toml string
		want []string // substrings of the one problem; nil = valid
	}{
		{"exposed without tokens", "[listen]\nadmin = \"0.0.0.0:7441\"\n",
			[]string{"listen.admin:", "[[admin.token]]", "admin.insecure_allow_unauthenticated = true"}},
		{"exposed on an address without tokens", "[listen]\nadmin = \"10.1.2.3:7441\"\n", []string{"listen.admin:"}},
		{"exposed, explicitly unauthenticated", "[listen]\nadmin = \"0.0.0.0:7441\"\n[admin]\ninsecure_allow_unauthenticated = true\n", nil},
		{"exposed with a token", "[listen]\nadmin = \"0.0.0.0:7441\"\n[[admin.token]]\nname = \"ops\"\nrole = \"write\"\ntoken_file = \"" + good + "\"\n", nil},
		{"loopback without tokens", "[listen]\nadmin = \"localhost:7441\"\n", nil},
		{"missing token file", "[[admin.token]]\nname = \"ops\"\nrole = \"read\"\ntoken_file = \"" + filepath.Join(dir, "nope") + "\"\n",
			[]string{"admin.token[0].token_file:", "no such file"}},
		{"short token", "[[admin.token]]\nname = \"ops\"\nrole = \"read\"\ntoken_file = \"" + short + "\"\n",
			[]string{"admin.token[0].token_file:", "at least 16"}},
		{"unset variable", "[[admin.token]]\nname = \"ops\"\nrole = \"read\"\ntoken_env = \"TEST_HUB_EMPTY\"\n",
			[]string{"admin.token[0].token_env:", "TEST_HUB_EMPTY is not set"}},
		{"no source", "[[admin.token]]\nname = \"ops\"\nrole = \"read\"\n", []string{"admin.token[0].token_file:", "token_file or token_env"}},
		{"bad role", "[[admin.token]]\nname = \"ops\"\nrole = \"admin\"\ntoken_file = \"" + good + "\"\n", []string{"admin.token[0].role:", `"admin"`}},
		{"bad origin", "[admin]\nallowed_origins = [\"https://ops.example/path\"]\n", []string{"admin.allowed_origins[0]:"}},
		{"cert without key", "[admin]\ncert_file = \"x.pem\"\n", []string{"admin.cert_file:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig("hub.toml", []byte(tt.toml))
			if tt.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || len(flatten(err)) != 1 {
				t.Fatalf("ParseConfig = %v, want one problem", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%q does not contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "a-long-enough-admin-token") {
				t.Error("the error shows the token")
			}
		})
	}
	t.Run("hub.New", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.Listen.Admin = "0.0.0.0:0"
		h, err := New(cfg)
		if err == nil {
			h.Close()
			t.Fatal("New started an unauthenticated admin API on 0.0.0.0")
		}
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Key != "listen.admin" {
			t.Fatalf("New = %v, want a listen.admin problem", err)
		}
	})
}

// TestAdminTLS: [admin] tls serves HTTPS with the data plane's (here
// self-signed) certificate; plain HTTP is not answered with data.
func TestAdminTLS(t *testing.T) {
	cfg := testConfig(t)
	cfg.Admin.TLS = true
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		h.Close()
	})
	base := h.AdminURL()
	if !strings.HasPrefix(base, "https://") {
		t.Fatalf("AdminURL = %s, want https", base)
	}
	pem, err := os.ReadFile(filepath.Join(cfg.Hub.DataDir, SelfSignedCertFile))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	testutil.Eventually(t, "the TLS admin API to answer", func() bool {
		resp, err := client.Get(base + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	if status, eb, _ := (rawRequest{method: "POST", path: "/v1/streams", body: `{"name":"tls"}`,
		headers: map[string]string{"Content-Type": "application/json"}}).do(t, client, base); status != 201 {
		t.Fatalf("create over TLS: %d %s", status, eb.Error)
	}
	resp, err := http.Get("http://" + h.AdminAddr().String() + "/v1/streams")
	if err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 || strings.Contains(string(b), `"tls"`) {
			t.Fatalf("plain HTTP served: %d %s", resp.StatusCode, b)
		}
	}
}

// FuzzAdminGuard feeds arbitrary Host, Origin and Authorization values
// through the guard's checks: they come from the network and must never
// panic, and a Host or Origin naming a foreign domain is never allowed.
func FuzzAdminGuard(f *testing.F) {
	for _, s := range [][3]string{
		{"127.0.0.1:7441", "http://127.0.0.1:7441", "Bearer read-token-0123456789"},
		{"evil.example:7441", "http://evil.example", "Bearer "},
		{"[::1]:7441", "null", "Basic x"},
		{"[::1", "http://[::1]:7441/path?q", "bearer  read-token-0123456789  "},
		{"", "https://ops.example", ""},
	} {
		f.Add(s[0], s[1], s[2])
	}
	addr := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 7441}
	tokFile := filepath.Join(f.TempDir(), "t")
	os.WriteFile(tokFile, []byte("read-token-0123456789"), 0o600)
	g, err := newAdminGuard(AdminConfig{AllowedOrigins: []string{"https://ops.example"},
		Tokens: []AdminToken{{Name: "r", Role: RoleRead, TokenFile: tokFile}}},
		"127.0.0.1:7441", addr, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, host, origin, auth string) {
		okHost := g.hostAllowed(host, "80")
		okOrigin, _ := g.originAllowed(origin)
		if okHost && strings.Contains(strings.ToLower(host), "evil") {
			t.Fatalf("Host %q allowed", host)
		}
		if okOrigin && strings.Contains(strings.ToLower(origin), "evil") {
			t.Fatalf("Origin %q allowed", origin)
		}
		r := &http.Request{Header: http.Header{"Authorization": []string{auth}}}
		if tok, err := g.authenticate(r); err == nil && tok.name != "r" {
			t.Fatalf("authenticated as %q", tok.name)
		}
	})
}

package hub

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgehub/edgehub/internal/plugintest"
	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/internal/testutil"
	"github.com/edgehub/edgehub/plugins"
	"github.com/edgehub/edgehub/sdk"
	"github.com/edgehub/edgehub/store"
)

const watPassThroughModule = "../examples/wat-passthrough/passthrough.wasm"

// deployHTTP posts a multipart deploy to the admin API.
func deployHTTP(tb testing.TB, base string, def PluginConfig, wasm []byte) (int, []byte) {
	tb.Helper()
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	dj, _ := json.Marshal(def)
	fw, _ := mw.CreateFormField("definition")
	fw.Write(dj)
	mf, _ := mw.CreateFormFile("module", "m.wasm")
	mf.Write(wasm)
	mw.Close()
	req, err := http.NewRequest(http.MethodPost, base+"/v1/plugins", &body)
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set(HeaderAdminClient, "test") // multipart is a form's type: the hub wants this header
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func TestPluginAdminAPI(t *testing.T) {
	cfg := testConfig(t)
	cfg.Streams = []StreamConfig{{Name: "in", Shards: 2, Replicate: ReplicateLocal}}
	h, base := startHub(t, cfg)
	wasm, err := os.ReadFile(watPassThroughModule)
	if err != nil {
		t.Fatal(err)
	}
	def := PluginConfig{Name: "copy", Inputs: []string{"in"}, Outputs: []string{"out"}, Start: "earliest",
		Config: PluginParams{"output": "out"}, CallTimeout: Duration(time.Second)}

	status, body := deployHTTP(t, base, def, wasm)
	if status != http.StatusCreated {
		t.Fatalf("deploy: %d %s", status, body)
	}
	var info plugins.Info
	if err := json.Unmarshal(body, &info); err != nil || info.Version != 1 || info.Status != plugins.StatusRunning || info.CallTimeout != time.Second {
		t.Fatalf("deploy answer %+v (%v)", info, err)
	}
	in := mustStream(t, h, "in")
	if _, err := in.Append(context.Background(), store.Batch{Shard: -1, Records: []record.Record{{Key: []byte("a"), Value: []byte("1")}}}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "plugin output", func() bool {
		code, b := call(t, "GET", base+"/v1/plugins/copy", "")
		json.Unmarshal(b, &info)
		return code == 200 && info.RecordsOut == 1
	})

	tests := []struct {
		name, method, path, body string
		status                   int
		contains                 string
	}{
		{name: "list", method: "GET", path: "/v1/plugins", status: 200, contains: `"name": "copy"`},
		{name: "describe missing", method: "GET", path: "/v1/plugins/nope", status: 404, contains: "not_found"},
		{name: "logs", method: "GET", path: "/v1/plugins/copy/logs?n=5", status: 200, contains: "deployed version 1"},
		{name: "bad logs n", method: "GET", path: "/v1/plugins/copy/logs?n=x", status: 400},
		{name: "pause", method: "POST", path: "/v1/plugins/copy/pause", body: `{"reason":"maintenance"}`, status: 200, contains: `"status": "paused"`},
		{name: "pause reason kept", method: "GET", path: "/v1/plugins/copy", status: 200, contains: `"pause_reason": "maintenance"`},
		{name: "resume", method: "POST", path: "/v1/plugins/copy/resume", status: 200, contains: `"status": "running"`},
		{name: "metrics", method: "GET", path: "/metrics", status: 200, contains: `edgehub_plugin_records_out_total{input="in",plugin="copy",shard=`},
		{name: "delete missing", method: "DELETE", path: "/v1/plugins/nope", status: 404},
		{name: "deploy not multipart", method: "POST", path: "/v1/plugins", body: `{}`, status: 400, contains: "multipart"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, b := call(t, tt.method, base+tt.path, tt.body)
			if code != tt.status || !strings.Contains(string(b), tt.contains) {
				t.Fatalf("%s %s: %d %s; want %d containing %q", tt.method, tt.path, code, b, tt.status, tt.contains)
			}
		})
	}

	resp, err := http.Get(base + "/v1/plugins/copy/module")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.Header.Get("Content-Type") != "application/wasm" || !bytes.Equal(got, wasm) {
		t.Fatalf("module download: %s, %d bytes", resp.Header.Get("Content-Type"), len(got))
	}

	// Refused deploys: bad module, bad definition, init rejecting config.
	for _, bad := range []struct {
		name   string
		def    PluginConfig
		wasm   []byte
		status int
		msg    string
	}{
		{"not wasm", def, []byte("nope"), 400, "invalid module"},
		{"missing input", PluginConfig{Name: "x", Inputs: []string{"missing"}, Config: PluginParams{"output": "o"}}, wasm, 404, "stream not found"},
		{"bad policy", PluginConfig{Name: "x", Inputs: []string{"in"}, OnError: "maybe"}, wasm, 400, "on_error"},
		{"init refuses", PluginConfig{Name: "x", Inputs: []string{"in"}}, wasm, 400, "needs output=STREAM"},
	} {
		t.Run(bad.name, func(t *testing.T) {
			status, body := deployHTTP(t, base, bad.def, bad.wasm)
			if status != bad.status || !strings.Contains(string(body), bad.msg) {
				t.Fatalf("deploy: %d %s, want %d mentioning %q", status, body, bad.status, bad.msg)
			}
		})
	}

	// Upgrade: 200 and version 2.
	status, body = deployHTTP(t, base, def, wasm)
	if status != http.StatusOK || !strings.Contains(string(body), `"version": 2`) {
		t.Fatalf("upgrade: %d %s", status, body)
	}
	if code, b := call(t, "DELETE", base+"/v1/plugins/copy", ""); code != http.StatusNoContent {
		t.Fatalf("delete: %d %s", code, b)
	}
}

func TestPluginConfigDeclared(t *testing.T) {
	dir := t.TempDir()
	wasm, err := os.ReadFile(watPassThroughModule)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "copy.wasm"), wasm, 0o644); err != nil {
		t.Fatal(err)
	}
	toml := fmt.Sprintf(`
[hub]
name = "cfg-hub"
data_dir = %q
[listen]
admin = "127.0.0.1:0"
quic = "127.0.0.1:0"
[[stream]]
name = "in"
[[plugin]]
name = "copy"
module = "copy.wasm"
inputs = ["in"]
outputs = ["out"]
start = "earliest"
memory = "1MiB"
timer_interval = "250ms"
state_quota = "2MiB"
max_state_delta = "64KiB"
[plugin.config]
output = "out"
retries = 3
`, filepath.Join(dir, "data"))
	path := filepath.Join(dir, "hub.toml")
	if err := os.WriteFile(path, []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
	for round := 1; round <= 2; round++ {
		cfg, err := LoadConfig(path)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Logger = testLogger(t)
		h, base := startHub(t, cfg)
		_, b := call(t, "GET", base+"/v1/plugins/copy", "")
		var info plugins.Info
		if err := json.Unmarshal(b, &info); err != nil {
			t.Fatal(err)
		}
		// The second start finds the same module and settings: no upgrade.
		if info.Version != 1 || info.MemoryPages != 16 || info.Config["retries"] != "3" || info.TimerInterval != 250*time.Millisecond ||
			info.StateQuota != 2<<20 || info.MaxStateDelta != 64<<10 {
			t.Fatalf("round %d: %+v", round, info.Definition)
		}
		h.Close()
	}

	bad := strings.Replace(toml, `on_error`, `x`, 1) + "\n[[webhook]]\nname = \"w\"\nstream = \"in\"\nurl = \"ftp://x\"\n"
	bad = strings.Replace(bad, `start = "earliest"`, `start = "sometime"`+"\nbogus = 1", 1)
	_, err = ParseConfig("hub.toml", []byte(bad))
	for _, want := range []string{"plugin[0].bogus: unknown key", "plugin[0]: invalid plugin definition: start", "webhook[0].url"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("config error %v: want it to mention %q", err, want)
		}
	}
}

// Child-process tests: a real `hub` binary.

// child is a `hub serve` process.
type child struct {
	tb    testing.TB
	cmd   *exec.Cmd
	admin string
	quic  string
	log   *testutil.SyncBuffer
	done  chan struct{} // closed when the process has exited
	err   error         // its exit status, set before done closes
	// wasmDir is where TestExampleReadmes builds the example's module.
	wasmDir string
}

func (c *child) wasm(name string) string { return filepath.Join(c.wasmDir, name) }

func startChild(tb testing.TB, config string) *child {
	tb.Helper()
	c := &child{tb: tb, log: &testutil.SyncBuffer{}, done: make(chan struct{})}
	cfg, err := LoadConfig(config)
	if err != nil {
		tb.Fatal(err)
	}
	c.admin, c.quic = cfg.Listen.Admin, cfg.Listen.QUIC
	c.cmd = exec.Command(hubBinary(tb), "serve", "--config", config, "--log-level", "warn")
	c.cmd.Stdout, c.cmd.Stderr = c.log, c.log
	if err := c.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	go func() {
		c.err = c.cmd.Wait()
		close(c.done)
	}()
	tb.Cleanup(func() { c.kill() })
	// A start compiles plugin modules (or loads them from the cache): on a
	// loaded machine that can take seconds, so the bound is generous.
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if resp, err := http.Get("http://" + c.admin + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case <-c.done:
			tb.Fatalf("hub exited during start: %v\n%s", c.err, c.log)
		default:
		}
		if time.Now().After(deadline) {
			tb.Fatalf("hub not healthy after a minute:\n%s", c.log)
		}
	}
	return c
}

// kill sends SIGKILL (a no-op once the process has exited) and waits.
func (c *child) kill() {
	c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.done
}

func (c *child) stop() {
	c.tb.Helper()
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
		if c.err != nil {
			c.tb.Fatalf("hub exited with %v:\n%s", c.err, c.log)
		}
	case <-time.After(60 * time.Second):
		c.tb.Fatalf("hub did not stop:\n%s", c.log)
	}
}

// cli runs the hub command against the child's admin API and data plane.
func (c *child) cli(args ...string) string {
	c.tb.Helper()
	return c.cliIn("", args...)
}

// cliIn is cli with stdin.
func (c *child) cliIn(stdin string, args ...string) string {
	c.tb.Helper()
	cmd := exec.Command(hubBinary(c.tb), args...)
	cmd.Env = append(os.Environ(), "HUB_ADMIN="+c.admin, "HUB_ADDR="+c.quic)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		c.tb.Fatalf("hub %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (c *child) describe(name string) plugins.Info {
	c.tb.Helper()
	_, b := call(c.tb, "GET", "http://"+c.admin+"/v1/plugins/"+name, "")
	var info plugins.Info
	json.Unmarshal(b, &info)
	return info
}

func writeHubToml(tb testing.TB, dir, extra string) string {
	tb.Helper()
	toml := fmt.Sprintf(`
[hub]
name = "plugin-hub"
data_dir = %q
[listen]
admin = %q
quic = %q
%s
`, filepath.Join(dir, "data"), testutil.FreeAddr(tb, "tcp"), testutil.FreeAddr(tb, "udp"), extra)
	path := filepath.Join(dir, "hub.toml")
	if err := os.WriteFile(path, []byte(toml), 0o644); err != nil {
		tb.Fatal(err)
	}
	return path
}

func dialChild(tb testing.TB, c *child) *sdk.Client {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := sdk.Dial(ctx, c.quic, sdk.Options{Insecure: true, Logger: quietTestLogger()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cl.Close() })
	return cl
}

func produceSDK(tb testing.TB, cl *sdk.Client, stream string, recs []record.Record) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p, err := cl.Producer(ctx, stream, sdk.ProducerOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	var futs []*sdk.Future
	for _, r := range recs {
		f, err := p.SendFuture(ctx, r)
		if err != nil {
			tb.Fatal(err)
		}
		futs = append(futs, f)
	}
	for _, f := range futs {
		if _, err := f.Wait(ctx); err != nil {
			tb.Fatal(err)
		}
	}
	if err := p.Close(ctx); err != nil {
		tb.Fatal(err)
	}
}

// consumeSDK reads n records of stream from the earliest.
func consumeSDK(tb testing.TB, cl *sdk.Client, stream string, n int) []record.Record {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sub, err := cl.Subscribe(ctx, stream, sdk.ConsumeOptions{From: sdk.FromEarliest()})
	if err != nil {
		tb.Fatal(err)
	}
	defer sub.Close()
	var out []record.Record
	for len(out) < n {
		m, err := sub.Next(ctx)
		if err != nil {
			tb.Fatalf("consume %s: %v after %d of %d records", stream, err, len(out), n)
		}
		out = append(out, m.Record.Clone())
	}
	return out
}

func reading(sensor string, t time.Time, v float64) record.Record {
	return record.Record{Key: []byte(sensor), Value: fmt.Appendf(nil, `{"value":%g}`, v), Time: t.UnixNano()}
}

// TestPluginExamplesEndToEnd runs the examples in a `hub serve` process,
// deployed with `hub plugin deploy`, fed and read over QUIC with the SDK, and
// an alert delivered to a webhook.
func TestPluginExamplesEndToEnd(t *testing.T) {
	dir := t.TempDir()
	received := make(chan WebhookDelivery, 16)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var d WebhookDelivery
		if err := json.NewDecoder(r.Body).Decode(&d); err != nil || r.Header.Get(HeaderDelivery) == "" {
			http.Error(w, "bad delivery", 400)
			return
		}
		received <- d
	}))
	defer hook.Close()
	config := writeHubToml(t, dir, fmt.Sprintf(`
[[stream]]
name = "readings"
shards = 2
[[stream]]
name = "alerts"
shards = 1
[[webhook]]
name = "pager"
stream = "alerts"
url = %q
`, hook.URL))
	c := startChild(t, config)
	mods := map[string]string{}
	for _, ex := range []string{"aggregate", "alert", "derive"} {
		mods[ex] = plugintest.Build(t, "examples/"+ex)
	}
	out := c.cli("plugin", "deploy", mods["derive"], "--name", "derive", "--input", "readings", "--output", "fahrenheit",
		"--from", "earliest", "--config", "scale=1.8", "--config", "offset=32", "--config", "unit=F", "--config", "output=fahrenheit",
		"--config", "site.s=plant-7")
	if !strings.Contains(out, "plugin derive deployed: version 1") {
		t.Fatalf("deploy output: %s", out)
	}
	manifest := filepath.Join(dir, "alert.toml")
	os.WriteFile(manifest, []byte(fmt.Sprintf("name = \"alert\"\nmodule = %q\ninputs = [\"readings\"]\noutputs = [\"alerts\"]\nstart = \"earliest\"\n[config]\nthreshold = 80\ndebounce = \"1m\"\n", mods["alert"])), 0o644)
	c.cli("plugin", "deploy", "--manifest", manifest)
	c.cli("plugin", "deploy", mods["aggregate"], "--name", "agg", "--input", "readings", "--output", "aggregates",
		"--from", "earliest", "--config", "window=10s", "--config", "lateness=0s", "--config", "idle=1h", "--timer-interval", "50ms")
	if out := c.cli("plugin", "list"); !strings.Contains(out, "agg") || !strings.Contains(out, "running") {
		t.Fatalf("plugin list:\n%s", out)
	}

	cl := dialChild(t, c)
	base := time.Now().Truncate(10 * time.Second).Add(-time.Minute)
	var recs []record.Record
	for i := 0; i < 10; i++ {
		recs = append(recs, reading("s1", base.Add(time.Duration(i)*time.Second), float64(20+i)))
		recs = append(recs, reading("s2", base.Add(time.Duration(i)*time.Second), float64(40-i)))
	}
	recs = append(recs, reading("s1", base.Add(11*time.Second), 95)) // alert, and closes the first window
	recs = append(recs, reading("s2", base.Add(11*time.Second), 10))
	t0 := time.Now()
	produceSDK(t, cl, "readings", recs)

	// The alert reaches the webhook.
	select {
	case d := <-received:
		t.Logf("alert delivered to the webhook %s after the produce was acknowledged", time.Since(t0))
		if len(d.Records) != 1 || !strings.Contains(string(d.Records[0].Value), `"kind":"threshold"`) {
			t.Fatalf("webhook delivery %+v", d)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no webhook delivery")
	}

	derived := consumeSDK(t, cl, "fahrenheit", len(recs))
	for _, r := range derived {
		var m map[string]any
		if err := json.Unmarshal(r.Value, &m); err != nil || m["unit"] != "F" || m["site"] != "plant-7" {
			t.Fatalf("derived record %s", r.Value)
		}
	}
	aggs := consumeSDK(t, cl, "aggregates", 2)
	for _, r := range aggs {
		var m map[string]any
		json.Unmarshal(r.Value, &m)
		want := map[string][3]float64{"s1": {10, 20, 29}, "s2": {10, 31, 40}}[string(r.Key)]
		if m["count"] != want[0] || m["min"] != want[1] || m["max"] != want[2] {
			t.Fatalf("aggregate %s, want count/min/max %v", r.Value, want)
		}
	}
	// The same with the CLI only: produce lines, consume the derived stream.
	c.cliIn("s9|{\"value\": 100}\ns9|{\"value\": -300}\ns9|{\"value\": 0}\n", "produce", "readings", "--key-sep", "|", "--insecure")
	out = c.cli("consume", "fahrenheit", "--from", "earliest", "-n", fmt.Sprint(len(recs)+3), "--follow", "--format", "value", "--insecure")
	var fromCLI []float64
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("hub consume printed %q: %v", l, err)
		}
		if strings.HasPrefix(fmt.Sprint(m["source"]), "readings/") && len(fromCLI) < 3 && m["site"] == "plant-7" {
			if v, ok := m["value"].(float64); ok && (v == 212 || v == -508 || v == 32) {
				fromCLI = append(fromCLI, v)
			}
		}
	}
	slices.Sort(fromCLI)
	if !slices.Equal(fromCLI, []float64{-508, 32, 212}) {
		t.Fatalf("records produced with hub produce, derived and read with hub consume: %v\n%s", fromCLI, out)
	}

	desc := c.cli("plugin", "describe", "agg")
	for _, want := range []string{"Status:", "running", "CHECKPOINT", "State:", "TIME/CALL"} {
		if !strings.Contains(desc, want) {
			t.Fatalf("describe lacks %q:\n%s", want, desc)
		}
	}
	c.cli("plugin", "pause", "alert", "--reason", "test")
	if info := c.describe("alert"); info.Status != plugins.StatusPaused || info.PauseReason != "test" {
		t.Fatalf("after pause: %s %q", info.Status, info.PauseReason)
	}
	c.cli("plugin", "resume", "alert")
	if logs := c.cli("plugin", "logs", "derive"); !strings.Contains(logs, "deployed version 1") {
		t.Fatalf("logs:\n%s", logs)
	}
	c.cli("plugin", "delete", "derive", "--yes")
	if out := c.cli("plugin", "list"); strings.Contains(out, "derive") {
		t.Fatalf("derive still listed:\n%s", out)
	}
	c.stop()
}

// TestPluginCrashExactlyOnce kills `hub serve` with SIGKILL while the
// aggregate example is working, restarts it, and checks that every window
// aggregate is emitted exactly once with exact statistics: nothing
// double-counted, duplicated or lost.
func TestPluginCrashExactlyOnce(t *testing.T) {
	dir := t.TempDir()
	agg := plugintest.Build(t, "examples/aggregate")
	config := writeHubToml(t, dir, fmt.Sprintf(`
[[stream]]
name = "readings"
shards = 2
[[plugin]]
name = "agg"
module = %q
inputs = ["readings"]
outputs = ["aggregates"]
start = "earliest"
batch_records = 50
timer_interval = "20ms"
[plugin.config]
window = "1s"
lateness = "0s"
idle = "2s"
`, agg))
	const (
		sensors = 20
		waves   = 3
		perWave = 12000 // readings per wave, 10 ms of event time apart per sensor
	)
	base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	type win struct {
		key   string
		start int64
	}
	type stat struct{ count, min, max, sum float64 }
	want := map[win]*stat{}
	var all [][]record.Record
	for w := 0; w < waves; w++ {
		var recs []record.Record
		for i := 0; i < perWave; i++ {
			n := w*perWave + i
			key := fmt.Sprintf("sensor-%02d", n%sensors)
			ts := base.Add(time.Duration(n/sensors) * 10 * time.Millisecond)
			v := float64((n*7919)%1000) / 10
			recs = append(recs, reading(key, ts, v))
			k := win{key, ts.Truncate(time.Second).UnixNano()}
			s := want[k]
			if s == nil {
				s = &stat{min: v, max: v}
				want[k] = s
			}
			s.count++
			s.sum += v
			s.min, s.max = min(s.min, v), max(s.max, v)
		}
		all = append(all, recs)
	}

	kills := 0
	for w := 0; w < waves; w++ {
		c := startChild(t, config)
		cl := dialChild(t, c)
		produceSDK(t, cl, "readings", all[w])
		cl.Close()
		target := uint64((w + 1) * perWave)
		// Kill while the plugin is mid-way through the wave.
		var seen uint64
		for {
			info := c.describe("agg")
			seen = info.RecordsIn
			if seen > target-uint64(perWave)+uint64(perWave/10) || info.Lag == 0 && seen >= target {
				break
			}
			time.Sleep(2 * time.Millisecond)
		}
		c.kill()
		if seen < target {
			kills++
		}
		t.Logf("wave %d: SIGKILL with %d of %d records committed by the plugin", w, seen, target)
	}
	if kills == 0 {
		t.Fatal("the plugin finished every wave before the kill: the test proved nothing")
	}
	// Restart and let the plugin finish; the idle timer closes the last
	// windows.
	c := startChild(t, config)
	for deadline := time.Now().Add(3 * time.Minute); ; time.Sleep(50 * time.Millisecond) {
		info := c.describe("agg")
		if info.Lag == 0 && info.StateKeys <= 2 && info.RecordsIn == uint64(waves*perWave) && info.RecordsOut == uint64(len(want)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("plugin did not finish: %+v\n%s", info, c.log)
		}
	}
	c.stop()

	st, err := store.Open(storeConfigFor(filepath.Join(dir, "data")))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	out, err := st.Stream("aggregates")
	if err != nil {
		t.Fatal(err)
	}
	got := map[win]int{}
	origins := map[record.Origin]bool{}
	for shard := 0; shard < out.Shards(); shard++ {
		recs, err := out.Read(shard, 1, store.ReadOptions{MaxRecords: 1 << 20, MaxBytes: 1 << 30})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			if origins[r.Origin] {
				t.Fatalf("origin %+v stored twice", r.Origin)
			}
			origins[r.Origin] = true
			var m struct {
				Key            string
				WindowStart    time.Time `json:"window_start"`
				Count          float64
				Min, Max, Mean float64
			}
			if err := json.Unmarshal(r.Value, &m); err != nil {
				t.Fatal(err)
			}
			k := win{m.Key, m.WindowStart.UnixNano()}
			got[k]++
			s := want[k]
			if s == nil {
				t.Fatalf("aggregate for unknown window %+v", k)
			}
			if m.Count != s.count || m.Min != s.min || m.Max != s.max || !near(m.Mean, s.sum/s.count) {
				t.Fatalf("window %+v: count %v min %v max %v mean %v, want %v %v %v %v", k, m.Count, m.Min, m.Max, m.Mean,
					s.count, s.min, s.max, s.sum/s.count)
			}
		}
	}
	var missing []win
	for k := range want {
		if got[k] == 0 {
			missing = append(missing, k)
		}
		if got[k] > 1 {
			t.Fatalf("window %+v emitted %d times", k, got[k])
		}
	}
	if len(missing) > 0 {
		slices.SortFunc(missing, func(a, b win) int { return int(a.start - b.start) })
		t.Fatalf("%d of %d windows never emitted, first %+v", len(missing), len(want), missing[0])
	}
	t.Logf("%d windows, each emitted once with exact statistics, across %d kills", len(want), kills)
}

func near(a, b float64) bool {
	d := a - b
	return d < 1e-9 && d > -1e-9
}

func storeConfigFor(dir string) store.Config {
	c := store.DefaultConfig(dir)
	c.Logger = quietTestLogger()
	return c
}

// TestWebhookRetriesAndResumes: a failing endpoint gets the same delivery
// again with backoff until it answers 2xx; after a restart only records not
// yet acknowledged are sent.
func TestWebhookRetriesAndResumes(t *testing.T) {
	var mu sync.Mutex
	failures := 2
	var got []string
	var ids []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer s3cret" {
			http.Error(w, "no token", http.StatusUnauthorized)
			return
		}
		if failures > 0 {
			failures--
			http.Error(w, "try later", http.StatusServiceUnavailable)
			return
		}
		var d WebhookDelivery
		if err := json.NewDecoder(r.Body).Decode(&d); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		ids = append(ids, r.Header.Get(HeaderDelivery))
		for _, rec := range d.Records {
			got = append(got, string(rec.Value)+"/"+rec.ValueBase64)
		}
	}))
	defer srv.Close()
	cfg := testConfig(t)
	cfg.Streams = []StreamConfig{{Name: "alerts", Shards: 1, Replicate: ReplicateLocal}}
	cfg.Webhooks = []WebhookConfig{{Name: "pager", Stream: "alerts", URL: srv.URL, Header: map[string]string{"Authorization": "Bearer s3cret"},
		Start: "earliest", BackoffMin: Duration(5 * time.Millisecond), BackoffMax: Duration(20 * time.Millisecond)}}
	delivered := func(n int) []string {
		t.Helper()
		var out []string
		testutil.Eventually(t, fmt.Sprintf("%d deliveries", n), func() bool {
			mu.Lock()
			defer mu.Unlock()
			out = slices.Clone(got)
			return len(got) >= n
		})
		return out
	}
	h, _ := startHub(t, cfg)
	s := mustStream(t, h, "alerts")
	if _, err := s.Append(context.Background(), store.Batch{Shard: 0, Records: []record.Record{{Value: []byte(`{"a":1}`)}, {Value: []byte{0xff, 0}}}}); err != nil {
		t.Fatal(err)
	}
	if d := delivered(2); !slices.Equal(d, []string{`{"a":1}/`, "//wA="}) {
		t.Fatalf("delivered %v", d)
	}
	// The receiver has the records once the hub has read its answer and
	// saved the position; a stop before that resends them (at least once).
	posFile := filepath.Join(cfg.Hub.DataDir, "webhooks", "pager.json")
	testutil.Eventually(t, "position saved", func() bool {
		b, _ := os.ReadFile(posFile)
		return strings.Contains(string(b), `"next":{"0":3}`)
	})
	h.Close()

	h2, _ := startHub(t, cfg)
	s = mustStream(t, h2, "alerts")
	if _, err := s.Append(context.Background(), store.Batch{Shard: 0, Records: []record.Record{{Value: []byte(`3`)}}}); err != nil {
		t.Fatal(err)
	}
	d := delivered(3)
	time.Sleep(100 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 3 || d[2] != "3/" {
		t.Fatalf("after restart delivered %v: acknowledged records must not be sent again", got)
	}
	if ids[0] != "alerts/0/1-2" || ids[1] != "alerts/0/3-3" {
		t.Fatalf("delivery ids %v", ids)
	}
}

// TestHostilePluginLeavesHubServing deploys a module that loops, bombs its
// memory, traps and emits to an undeclared stream, and checks the hub keeps
// answering and ingesting while the plugin's policy deals with each record.
func TestHostilePluginLeavesHubServing(t *testing.T) {
	cfg := testConfig(t)
	cfg.Streams = []StreamConfig{{Name: "in", Shards: 1, Replicate: ReplicateLocal}, {Name: "other", Shards: 2, Replicate: ReplicateLocal}}
	h, base := startHub(t, cfg)
	wasm, err := os.ReadFile("../wasmhost/testdata/hostile.wasm")
	if err != nil {
		t.Fatal(err)
	}
	status, body := deployHTTP(t, base, PluginConfig{Name: "hostile", Inputs: []string{"in"}, Outputs: []string{"out"}, Start: "earliest",
		OnError: "dead-letter", DeadLetter: "dead", CallTimeout: Duration(300 * time.Millisecond), Memory: 2 << 20}, wasm)
	if status != http.StatusCreated {
		t.Fatalf("deploy: %d %s", status, body)
	}
	in, other := mustStream(t, h, "in"), mustStream(t, h, "other")
	var recs []record.Record
	for _, v := range []string{"L", "M", "T", "U", "ok", "L", "T", "ok"} {
		recs = append(recs, record.Record{Key: []byte("k"), Value: []byte(v)})
	}
	if _, err := in.Append(context.Background(), store.Batch{Shard: 0, Records: recs}); err != nil {
		t.Fatal(err)
	}
	// While the plugin works through its deadlines, the hub serves.
	for i := 0; i < 20; i++ {
		if code, _ := call(t, "GET", base+"/healthz", ""); code != http.StatusOK {
			t.Fatalf("healthz %d while the plugin misbehaves", code)
		}
		if _, err := other.Append(context.Background(), store.Batch{Shard: -1, Records: []record.Record{{Value: []byte("x")}}}); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, "policy applied to every record", func() bool {
		_, b := call(t, "GET", base+"/v1/plugins/hostile", "")
		var info plugins.Info
		json.Unmarshal(b, &info)
		return info.Lag == 0 && info.DeadLettered == 6 && info.RecordsOut == 2 && info.Status == plugins.StatusQuarantined
	})
	if _, b := call(t, "GET", base+"/metrics", ""); !strings.Contains(string(b), `edgehub_plugin_dead_lettered_total{input="in",plugin="hostile",shard="0"} 6`) {
		t.Fatal("metrics do not show the dead letters")
	}
}

// TestPluginQuarantineShownAndRemembered: `hub plugin list` and `describe`
// say that a looping plugin is quarantined and why, and a restarted hub
// still has it quarantined before it has made a single call.
func TestPluginQuarantineShownAndRemembered(t *testing.T) {
	dir := t.TempDir()
	config := writeHubToml(t, dir, "[[stream]]\nname = \"in\"\nshards = 1\n")
	c := startChild(t, config)
	hostile, err := filepath.Abs("../wasmhost/testdata/hostile.wasm")
	if err != nil {
		t.Fatal(err)
	}
	c.cli("plugin", "deploy", hostile, "--name", "loop", "--input", "in", "--output", "out", "--from", "earliest", "--call-timeout", "30s",
		"--state-quota", "2MiB", "--max-state-delta", "64KiB")
	if info := c.describe("loop"); info.StateQuota != 2<<20 || info.MaxStateDelta != 64<<10 {
		t.Fatalf("state limits from the deploy flags: quota %d, per call %d", info.StateQuota, info.MaxStateDelta)
	}
	c.cliIn("k|L\n", "produce", "in", "--key-sep", "|", "--insecure")
	testutil.Eventually(t, "quarantine", func() bool { return c.describe("loop").Status == plugins.StatusQuarantined })
	list := c.cli("plugin", "list")
	if !strings.Contains(list, "quarantined") || !strings.Contains(list, "slot lease") {
		t.Fatalf("plugin list does not show the quarantine and its reason:\n%s", list)
	}
	if desc := c.cli("plugin", "describe", "loop"); !strings.Contains(desc, "Quarantined:") || !strings.Contains(desc, "In a call on in/0 since") ||
		!strings.Contains(desc, "2.0MiB quota, 64.0KiB per call") {
		t.Fatalf("describe:\n%s", desc)
	}
	var infos []plugins.Info
	if err := json.Unmarshal([]byte(c.cli("plugin", "list", "--json")), &infos); err != nil || len(infos) != 1 ||
		infos[0].Status != plugins.StatusQuarantined || !infos[0].Shards[0].Quarantined {
		t.Fatalf("plugin list --json: %+v (%v)", infos, err)
	}
	since := infos[0].Shards[0].QuarantinedSince
	c.stop()
	c = startChild(t, config)
	testutil.Eventually(t, "runners started", func() bool { return c.describe("loop").Status != plugins.StatusStopped })
	// The same quarantine, not a new one: it was remembered.
	if info := c.describe("loop"); info.Status != plugins.StatusQuarantined || !info.Shards[0].QuarantinedSince.Equal(since) {
		t.Fatalf("after restart: status %q, quarantined since %s, want since %s", info.Status, info.Shards[0].QuarantinedSince, since)
	}
	c.stop()
}

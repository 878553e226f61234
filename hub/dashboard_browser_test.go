package hub

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/internal/testutil"
	"github.com/edgehub/edgehub/sdk"
)

// The dashboard in a real browser: Debian's chromium, headless, driven over
// the DevTools protocol (chromedp). Without chromium the tests skip, as the
// WAT tests do without wat2wasm; .ci/run installs it.

// chromiumPath finds a Chromium or Chrome binary, or skips the test.
func chromiumPath(tb testing.TB) string {
	tb.Helper()
	if p := os.Getenv("EDGEHUB_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	tb.Skip("chromium not found (apt-get install chromium, or EDGEHUB_CHROMIUM=path): the dashboard's browser tests skip")
	return ""
}

// browser starts a headless chromium for the test and returns a context for
// chromedp.Run. Uncaught exceptions of the page are collected: the test
// fails on any (a script blocked by the CSP, a typo in a render function).
func browser(tb testing.TB, width, height int) context.Context {
	tb.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(tb)),
		chromedp.NoSandbox, // CI runs as root, where chromium's sandbox refuses to start
		chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(width, height),
		chromedp.UserDataDir(tb.TempDir()),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	if err := chromedp.Do(ctx); err != nil { // starts the browser and opens the tab
		cancel()
		cancelAlloc()
		tb.Fatalf("start chromium: %v", err)
	}
	var mu sync.Mutex
	var problems []string
	done := make(chan struct{})
	messages := chromedp.Console(ctx)
	go func() {
		defer close(done)
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.IsException() || strings.Contains(m.Text, "Content Security Policy") {
				mu.Lock()
				problems = append(problems, m.String())
				mu.Unlock()
			}
		}
	}()
	tb.Cleanup(func() {
		cancel()
		cancelAlloc()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, p := range problems {
			tb.Errorf("dashboard page: %s", p)
		}
	})
	return ctx
}

// pageState is what the test reads off the page, by the same selectors a
// person's eye would go to.
type pageState struct {
	Status       string `json:"status"`
	Records      string `json:"records"`       // the stream's record count cell
	Shards       int    `json:"shards"`        // rows of the shard table
	LastSeqs     string `json:"last_seqs"`     // the shard table's last sequences
	Tail         string `json:"tail"`          // text of the live tail
	ChartPoints  int    `json:"chart_points"`  // points of the records/s chart's line
	ChartYs      string `json:"chart_ys"`      // distinct y coordinates of that line
	SparkPoints  int    `json:"spark_points"`  // points of the stream's records/s sparkline
	PluginState  string `json:"plugin_state"`  // the plugin's state badge
	PluginIn     string `json:"plugin_in"`     // its records in
	GroupMembers string `json:"group_members"` // the group's member chips
	Federation   string `json:"federation"`    // text of the federation picture
	HubFacts     string `json:"hub_facts"`
	AuthShown    bool   `json:"auth_shown"`
}

const readPageState = `(() => {
  const q = s => document.querySelector(s), txt = s => (q(s) || {}).textContent || "";
  const line = q("#chart-records path.line");
  const d = line ? line.getAttribute("d") : "";
  const ys = new Set([...d.matchAll(/[ML][\d.]+,([\d.]+)/g)].map(m => m[1]));
  const spark = q('tr[data-stream="%s"] td.rrate path');
  return JSON.stringify({
    status: txt("#status"),
    records: txt('tr[data-stream="%s"] td.records'),
    shards: document.querySelectorAll("#shards tr").length,
    last_seqs: [...document.querySelectorAll("#shards td.last-seq")].map(e => e.textContent.replaceAll(",", "")).join("|"),
    tail: txt("#tail"),
    chart_points: line ? +line.dataset.points : 0,
    chart_ys: [...ys].join(","),
    spark_points: spark ? +spark.dataset.points : 0,
    plugin_state: txt('tr[data-plugin="%s"] td.state .badge'),
    plugin_in: txt('tr[data-plugin="%s"] td.in'),
    group_members: txt('tr[data-group="%s"] td.members'),
    federation: txt("#federation"),
    hub_facts: txt("#hub-facts"),
    auth_shown: !q("#auth").hidden,
  });
})()`

func readPage(tb testing.TB, ctx context.Context, stream, plugin, group string) pageState {
	tb.Helper()
	js := fmt.Sprintf(readPageState, stream, stream, plugin, plugin, group)
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[string](js))
	if err != nil {
		tb.Fatalf("read the page: %v", err)
	}
	var st pageState
	if err := json.Unmarshal([]byte(raw), &st); err != nil {
		tb.Fatalf("page state %q: %v", raw, err)
	}
	return st
}

// waitPage polls the page until cond holds, failing after the generous
// deadline with the last state seen.
func waitPage(tb testing.TB, ctx context.Context, what string, read func() pageState, cond func(pageState) bool) pageState {
	tb.Helper()
	var last pageState
	ok := false
	deadline := time.Now().Add(testutil.Deadline)
	for time.Now().Before(deadline) {
		if last = read(); cond(last) {
			ok = true
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !ok {
		tb.Fatalf("dashboard: %s: not seen; last state %+v", what, last)
	}
	return last
}

func TestDashboardInBrowser(t *testing.T) {
	ctx := browser(t, 1400, 1000)
	cfg := testConfig(t)
	cfg.Hub.Site = "shop-12"
	cfg.Streams = []StreamConfig{
		{Name: "orders", Shards: 2, Replicate: ReplicateLocal},
		{Name: "copies", Shards: 1, Replicate: ReplicateLocal},
	}
	h, base := startHub(t, cfg)
	wasm, err := os.ReadFile(watPassThroughModule)
	if err != nil {
		t.Fatal(err)
	}
	if code, body := deployHTTP(t, base, PluginConfig{Name: "copy", Inputs: []string{"orders"}, Outputs: []string{"copies"},
		Start: "earliest", Config: PluginParams{"output": "copies"}}, wasm); code != 201 {
		t.Fatalf("deploy: %d %s", code, body)
	}

	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/#stream=orders")); err != nil {
		t.Fatal(err)
	}
	read := func() pageState { return readPage(t, ctx, "orders", "copy", "billing") }
	before := waitPage(t, ctx, "the page live with the empty stream and the plugin", read, func(s pageState) bool {
		return strings.HasPrefix(s.Status, "live") && s.Records == "0" && s.PluginState == "running" &&
			s.Shards == 2 && strings.Contains(s.HubFacts, h.QUICAddr().String()) && strings.Contains(s.Federation, "test-hub")
	})
	if !strings.Contains(before.Tail, "no records yet") || before.AuthShown {
		t.Errorf("before producing: %+v", before)
	}

	// Produce over QUIC, as a device would, and join a consumer group.
	dctx, dcancel := context.WithTimeout(context.Background(), testutil.Deadline)
	defer dcancel()
	cl, err := sdk.Dial(dctx, h.QUICAddr().String(), sdk.Options{Insecure: true, Logger: quietTestLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var recs []record.Record
	for i := range 25 {
		recs = append(recs, record.Record{Key: fmt.Appendf(nil, "sensor-%d", i%5), Value: fmt.Appendf(nil, "reading-%d", i)})
	}
	produceSDK(t, cl, "orders", recs)
	gctx, gcancel := context.WithTimeout(context.Background(), testutil.Deadline)
	defer gcancel()
	member, err := cl.JoinGroup(gctx, "billing", "orders", sdk.GroupOptions{MemberID: "worker-1"})
	if err != nil {
		t.Fatal(err)
	}
	defer member.Close(context.Background())

	after := waitPage(t, ctx, "the records, the tail, the plugin's input, the group's member and a chart with a rise", read, func(s pageState) bool {
		return s.Records == "25" && strings.Contains(s.Tail, "reading-24") && s.PluginIn == "25" &&
			strings.Contains(s.GroupMembers, "worker-1") && s.ChartPoints >= 2 && strings.Contains(s.ChartYs, ",") && s.SparkPoints >= 2
	})
	var seqs []int
	for _, f := range strings.Split(after.LastSeqs, "|") {
		n, _ := strconv.Atoi(f)
		seqs = append(seqs, n)
	}
	if len(seqs) != 2 || seqs[0]+seqs[1] != 25 {
		t.Errorf("shard last sequences %q, want two summing to 25", after.LastSeqs)
	}
}

// With [[admin.token]]s the page asks for a token and shows the data once
// given one; the API refuses it nothing else.
func TestDashboardInBrowserWithToken(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: TestDashboardNeedsToken covers the rules without a browser")
	}
	ctx := browser(t, 1200, 800)
	cfg := testConfig(t)
	cfg.Streams = []StreamConfig{{Name: "orders", Shards: 1, Replicate: ReplicateLocal}}
	cfg.Admin.Tokens = []AdminToken{{Name: "viewer", Role: RoleRead, TokenFile: writeToken(t, "read-secret-123456")}}
	_, base := startHub(t, cfg)
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/")); err != nil {
		t.Fatal(err)
	}
	read := func() pageState { return readPage(t, ctx, "orders", "", "") }
	waitPage(t, ctx, "the token form", read, func(s pageState) bool { return s.AuthShown && s.Status == "admin token needed" })
	if err := chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.ID("auth-token"), "read-secret-123456"),
		chromedp.Click(chromedp.CSS("#auth button")), // a person's click: form.submit() would skip the page's handler
	); err != nil {
		t.Fatal(err)
	}
	waitPage(t, ctx, "the streams after the token", read, func(s pageState) bool {
		return !s.AuthShown && strings.HasPrefix(s.Status, "live") && s.Records == "0"
	})
}

// The federation picture: two federated hubs; the second's dashboard draws
// both members and a pull link from the first, labelled with its lag.
func TestDashboardFederationInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: TestDashboardInBrowser covers the page; TestFederationThreeHubsConverge covers /v1/peers")
	}
	ctx := browser(t, 1200, 900)
	n := newFedNet(t)
	a := n.start("hub-a", "edge")
	b := n.start("hub-b", "core")
	createReplicated(t, a, "events", 2, "all")
	produceAt(t, a, "events", 300, 16)
	if err := chromedp.Do(ctx, chromedp.Navigate("http://"+b.AdminAddr().String()+"/")); err != nil {
		t.Fatal(err)
	}
	const js = `JSON.stringify({
  members: [...document.querySelectorAll("#federation g.node")].map(g => g.dataset.member + ":" + g.getAttribute("class")).sort().join(" "),
  pull: !!document.querySelector('#federation line.link.pull[data-peer="hub-a"]'),
  label: [...document.querySelectorAll("#federation text.lag")].map(e => e.textContent).join(" "),
  summary: document.getElementById("fed-summary").textContent,
})`
	var last string
	ok := false
	for deadline := time.Now().Add(testutil.Deadline); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		raw, err := chromedp.Run(ctx, chromedp.Evaluate[string](js))
		if err != nil {
			t.Fatal(err)
		}
		last = raw
		var st struct {
			Members, Label, Summary string
			Pull                    bool
		}
		if err := json.Unmarshal([]byte(raw), &st); err != nil {
			t.Fatal(err)
		}
		if st.Members == "hub-a:node alive hub-b:node alive self" && st.Pull && strings.Contains(st.Label, "behind") &&
			strings.HasPrefix(st.Summary, "2 members · 2 alive") {
			ok = true
			break
		}
	}
	if !ok {
		t.Fatalf("federation picture: last state %s", last)
	}
}

// TestDashboardScreenshot writes docs/dashboard.png: three federated hubs
// (two edges and a region, as hub demo runs them), devices producing at the
// edges and at the region over QUIC, a plugin and a consumer group at the
// region, whose dashboard is photographed. It runs only when asked:
//
//	EDGEHUB_DASHBOARD_SCREENSHOT=../docs/dashboard.png go test -run TestDashboardScreenshot ./hub
func TestDashboardScreenshot(t *testing.T) {
	out := os.Getenv("EDGEHUB_DASHBOARD_SCREENSHOT")
	if out == "" {
		t.Skip("set EDGEHUB_DASHBOARD_SCREENSHOT=path.png to write the dashboard's screenshot")
	}
	ctx := browser(t, 1440, 1300)
	n := newFedNet(t)
	region := n.start("region-eu", "core")
	edgeA := n.start("edge-lyon", "edge")
	edgeB := n.start("edge-porto", "edge")
	createReplicated(t, edgeA, "sensors", 4, "all")
	base := "http://" + region.AdminAddr().String()
	mustStreamEventually(t, region, "sensors")
	if code, body := call(t, "POST", base+"/v1/streams", `{"name":"readings","shards":2,"retention":"24h"}`); code != 201 {
		t.Fatalf("create readings: %d %s", code, body)
	}
	if code, body := call(t, "POST", base+"/v1/streams", `{"name":"audit","shards":1,"compact":true}`); code != 201 {
		t.Fatalf("create audit: %d %s", code, body)
	}
	wasm, err := os.ReadFile(watPassThroughModule)
	if err != nil {
		t.Fatal(err)
	}
	if code, body := deployHTTP(t, base, PluginConfig{Name: "normalize", Inputs: []string{"sensors"}, Outputs: []string{"readings"},
		Start: "earliest", Config: PluginParams{"output": "readings"}}, wasm); code != 201 {
		t.Fatalf("deploy: %d %s", code, body)
	}
	dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer dcancel()
	cl, err := sdk.Dial(dctx, region.QUICAddr().String(), sdk.Options{Insecure: true, Logger: quietTestLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for _, id := range []string{"alerter-1", "alerter-2"} {
		m, err := cl.JoinGroup(dctx, "alerting", "readings", sdk.GroupOptions{MemberID: id})
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for {
				if _, err := m.Next(dctx); err != nil {
					return
				}
			}
		}()
		defer m.Close(context.Background())
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/#stream=sensors")); err != nil {
		t.Fatal(err)
	}
	// 40 s of traffic whose rate rises and falls, so the charts have a shape.
	start := time.Now()
	for i := 0; time.Since(start) < 40*time.Second; i++ {
		k := 20 + int(15*math.Sin(float64(i)/6))
		produceAt(t, edgeA, "sensors", 3*k, 48)
		produceAt(t, edgeB, "sensors", 2*k, 48)
		var recs []record.Record
		for j := range k {
			recs = append(recs, reading(fmt.Sprintf("sensor-%02d", j%12), time.Now(), 20+float64(j%7)/2))
		}
		produceSDK(t, cl, "sensors", recs)
		produceSDK(t, cl, "audit", []record.Record{{Key: fmt.Appendf(nil, "door-%d", i%3), Value: []byte(`{"open":true}`)}})
		time.Sleep(500 * time.Millisecond)
	}
	read := func() pageState { return readPage(t, ctx, "sensors", "normalize", "alerting") }
	waitPage(t, ctx, "three members and a live page", read, func(s pageState) bool {
		return strings.Contains(s.Federation, "edge-lyon") && strings.Contains(s.Federation, "edge-porto") &&
			strings.HasPrefix(s.Status, "live") && strings.Contains(s.GroupMembers, "alerter-2")
	})
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s (%d bytes)", out, len(png))
}

package hub

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/internal/testutil"
	"github.com/edgehub/edgehub/sdk"
)

// TestMetricsLint scrapes /metrics of two running, federated hubs with every
// part active (streams, produce over QUIC, a plugin, a consumer group,
// replication, the admin guard) and fails on any problem the Prometheus
// linter (what `promtool check metrics` runs) finds.
func TestMetricsLint(t *testing.T) {
	n := newFedNet(t)
	a := n.start("lint-a")
	b := n.start("lint-b")
	createReplicated(t, a, "events", 2, "all")
	produceAt(t, a, "events", 50, 8)
	converged(t, "events", 50, a, b)

	baseA := "http://" + a.AdminAddr().String()
	wasm, err := os.ReadFile(watPassThroughModule)
	if err != nil {
		t.Fatal(err)
	}
	def := PluginConfig{Name: "copy", Inputs: []string{"events"}, Outputs: []string{"copied"}, Start: "earliest",
		Config: PluginParams{"output": "copied"}, CallTimeout: Duration(time.Second)}
	if status, body := deployHTTP(t, baseA, def, wasm); status != http.StatusCreated {
		t.Fatalf("deploy: %d %s", status, body)
	}
	d := &dpHub{h: a, addr: a.QUICAddr().String(), ca: a.cfg.Hub.DataDir + "/" + SelfSignedCertFile}
	cl := d.client(t, nil)
	ctx := testCtx(t)
	p, err := cl.Producer(ctx, "events", sdk.ProducerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Send(ctx, record.Record{Key: []byte("k"), Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	p.Close(ctx)
	g, err := cl.JoinGroup(ctx, "lint", "events", sdk.GroupOptions{MemberID: "m1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := g.NextBatch(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close(context.Background()) })
	testutil.Eventually(t, "plugin output", func() bool {
		return scrapeMetric(t, baseA, "edgehub_plugin_records_out_total", `plugin="copy"`) == 51
	})

	// The families each hub must show, with their types: the lint must see
	// every part, and these are the types the conventions ask for.
	want := map[*Hub]map[string]string{
		a: {
			"edgehub_shard_last_sequence":              "gauge",
			"edgehub_plugin_call_duration_seconds":     "histogram",
			"edgehub_plugin_records_in_total":          "counter",
			"edgehub_produce_append_seconds":           "histogram",
			"edgehub_group_members":                    "gauge",
			"edgehub_admin_requests_total":             "counter",
			"edgehub_replication_served_records_total": "counter",
		},
		b: {
			"edgehub_shard_last_sequence":       "gauge",
			"edgehub_replication_lag_records":   "gauge",
			"edgehub_replication_records_total": "counter",
			"edgehub_federation_members":        "gauge",
		},
	}
	for _, h := range []*Hub{a, b} {
		body := scrape(t, "http://"+h.AdminAddr().String())
		types := metricTypes(body)
		for name, typ := range want[h] {
			if types[name] != typ {
				t.Errorf("%s: %s has type %q, want %q", h.cfg.Hub.Name, name, types[name], typ)
			}
		}
		problems, err := promlint.New(bytes.NewReader(body)).Lint()
		if err != nil {
			t.Fatalf("%s: lint: %v", h.cfg.Hub.Name, err)
		}
		var msgs []string
		for _, p := range problems {
			msgs = append(msgs, fmt.Sprintf("%s: %s", p.Metric, p.Text))
		}
		if len(msgs) > 0 {
			t.Errorf("%s: /metrics has %d problems:\n%s", h.cfg.Hub.Name, len(msgs), strings.Join(msgs, "\n"))
		}
	}
	// The histogram counts the plugin's calls.
	if n := scrapeMetric(t, baseA, "edgehub_plugin_call_duration_seconds_count", `plugin="copy"`); n < 1 {
		t.Errorf("plugin call histogram counts %v calls", n)
	}
}

// scrape returns the body of base's /metrics.
func scrape(tb testing.TB, base string) []byte {
	tb.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		tb.Fatalf("GET /metrics: %d %v", resp.StatusCode, err)
	}
	return body
}

// metricTypes reads the "# TYPE name type" lines of a text exposition.
func metricTypes(body []byte) map[string]string {
	types := map[string]string{}
	for _, line := range strings.Split(string(body), "\n") {
		if f := strings.Fields(line); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			types[f[2]] = f[3]
		}
	}
	return types
}

package hub

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/internal/testutil"
	"github.com/edgehub/edgehub/store"
)

func getJSON(tb testing.TB, url string, v any) int {
	tb.Helper()
	code, body := call(tb, "GET", url, "")
	if code == http.StatusOK {
		if err := json.Unmarshal(body, v); err != nil {
			tb.Fatalf("GET %s: %v in %s", url, err, body)
		}
	}
	return code
}

func TestDashboardHubInfo(t *testing.T) {
	cfg := testConfig(t)
	cfg.Hub.Site, cfg.Hub.Region = "shop-12", "eu"
	cfg.Streams = []StreamConfig{{Name: "orders", Shards: 3, Replicate: ReplicateLocal}}
	h, base := startHub(t, cfg)
	appendN(t, mustStream(t, h, "orders"), 0, 7)

	var info HubInfo
	if code := getJSON(t, base+"/v1/hub", &info); code != 200 {
		t.Fatalf("GET /v1/hub: %d", code)
	}
	abs, _ := filepath.Abs(cfg.Hub.DataDir)
	if info.Name != "test-hub" || info.Site != "shop-12" || info.Region != "eu" || info.Version == "" ||
		info.DataDir != abs || info.Sync != "always" || !info.Ready || info.Federated || info.AdminAuth {
		t.Errorf("hub info %+v", info)
	}
	if info.Streams != 1 || info.Records != 7 || info.Bytes <= 0 {
		t.Errorf("streams %d, records %d, bytes %d; want 1 stream of 7 records", info.Streams, info.Records, info.Bytes)
	}
	if info.Disk.DataBytes <= info.Bytes || info.Disk.Files < 2 {
		t.Errorf("disk %+v: want at least the stream's file and the identity, more than the %d record bytes", info.Disk, info.Bytes)
	}
	if info.Disk.FSTotalBytes == 0 || info.Disk.FSFreeBytes > info.Disk.FSTotalBytes {
		t.Errorf("file system space %+v", info.Disk)
	}
	if info.Listen.QUIC != h.QUICAddr().String() || info.Listen.Admin != h.AdminAddr().String() {
		t.Errorf("listen %+v, want quic %s admin %s", info.Listen, h.QUICAddr(), h.AdminAddr())
	}
	if info.UptimeSeconds <= 0 || time.Since(info.Started) < 0 {
		t.Errorf("started %v, uptime %v", info.Started, info.UptimeSeconds)
	}
}

// appendN appends records from..to-1 one commit each, keyed key-i, valued
// v-i.
func appendN(tb testing.TB, st *store.Stream, from, to int) {
	tb.Helper()
	for i := from; i < to; i++ {
		rec := record.Record{Key: fmt.Appendf(nil, "key-%d", i), Value: fmt.Appendf(nil, "v-%d", i)}
		if _, err := st.Append(context.Background(), store.Batch{Shard: -1, Records: []record.Record{rec}}); err != nil {
			tb.Fatal(err)
		}
	}
}

func TestDashboardRates(t *testing.T) {
	cfg := testConfig(t)
	cfg.Streams = []StreamConfig{{Name: "orders", Shards: 2, Replicate: ReplicateLocal}, {Name: "idle", Shards: 1, Replicate: ReplicateLocal}}
	h, base := startHub(t, cfg)
	var rl RateList
	// Wait for a first interval, so every append below falls after the
	// first sample and is counted.
	testutil.Eventually(t, "a first rate point", func() bool {
		return getJSON(t, base+"/v1/rates", &rl) == 200 && len(rl.Streams) == 2 && len(rl.Streams[1].T) > 0
	})
	if rl.Interval != Duration(defaultRateEvery) || rl.Window != Duration(defaultRateEvery*rateKeep) {
		t.Errorf("interval %v, window %v", rl.Interval, rl.Window)
	}
	orders := mustStream(t, h, "orders")
	appendN(t, orders, 0, 40)
	var bytes int64
	for _, s := range orders.Stats() {
		bytes += s.Bytes
	}
	var got StreamRate
	testutil.Eventually(t, "the appends in the rates", func() bool {
		if getJSON(t, base+"/v1/rates?stream=orders", &rl) != 200 || len(rl.Streams) != 1 {
			return false
		}
		got = rl.Streams[0]
		// The stream was empty at the first sample: integrated over its
		// intervals, the rate gives back all that was appended (to within
		// the millisecond rounding of the times; one record less is 1).
		return math.Abs(sumAfterAppends(got)-40) < 0.1
	})
	if got.Name != "orders" || len(got.T) != len(got.Records) || len(got.T) != len(got.Bytes) {
		t.Fatalf("rates %+v", got)
	}
	if !slices.IsSorted(got.T) {
		t.Errorf("times not in order: %v", got.T)
	}
	if r, b := sumAfterAppends(got), sumBytes(got); math.Abs(r-40) > 0.1 || math.Abs(b-float64(bytes)) > 0.01*float64(bytes) {
		t.Errorf("integrated rates: %.3f records, %.1f bytes; want 40 records, %d bytes", r, b, bytes)
	}
	if code, body := call(t, "GET", base+"/v1/rates?stream=nope", ""); code != 404 || !strings.Contains(string(body), CodeNotFound) {
		t.Errorf("rates of a missing stream: %d %s", code, body)
	}
}

// sumAfterAppends integrates a stream's records/s over its points (each
// point's rate times its interval, the first starting at From).
func sumAfterAppends(sr StreamRate) float64 { return integrateRates(sr, sr.Records) }
func sumBytes(sr StreamRate) float64        { return integrateRates(sr, sr.Bytes) }

func integrateRates(sr StreamRate, v []float64) float64 {
	sum := 0.0
	for i := range sr.T {
		start := sr.From
		if i > 0 {
			start = sr.T[i-1]
		}
		dt := float64(sr.T[i]-start) / 1000
		sum += v[i] * dt
	}
	return sum
}

func TestDashboardTail(t *testing.T) {
	cfg := testConfig(t)
	cfg.Streams = []StreamConfig{{Name: "orders", Shards: 3, Replicate: ReplicateLocal}, {Name: "empty", Shards: 1, Replicate: ReplicateLocal},
		{Name: "big", Shards: 1, Replicate: ReplicateLocal}}
	h, base := startHub(t, cfg)
	orders := mustStream(t, h, "orders")
	appendN(t, orders, 0, 30)
	var tail Tail
	if code := getJSON(t, base+"/v1/streams/orders/tail?n=5", &tail); code != 200 {
		t.Fatalf("tail: %d", code)
	}
	var vals []string
	for i, r := range tail.Records {
		vals = append(vals, r.Value)
		if i > 0 && r.IngestTime.Before(tail.Records[i-1].IngestTime) {
			t.Errorf("tail not in ingest order: %+v", tail.Records)
		}
		if r.Seq == 0 || r.Key == "" || r.ValueSize != len(r.Value) || r.Tombstone || r.Truncated {
			t.Errorf("tail record %+v", r)
		}
	}
	slices.Sort(vals)
	if want := []string{"v-25", "v-26", "v-27", "v-28", "v-29"}; !slices.Equal(vals, want) {
		t.Errorf("tail values %v, want %v", vals, want)
	}
	// One shard: its own last records, all of them when there are fewer.
	if getJSON(t, base+"/v1/streams/orders/tail?shard=1&n=1000", &tail) != 200 {
		t.Fatal("tail of shard 1")
	}
	stats := orders.Stats()
	if int64(len(tail.Records)) != stats[1].Records || tail.Records[len(tail.Records)-1].Seq != stats[1].LastSeq {
		t.Errorf("shard 1 tail: %d records ending at %d, shard has %d ending at %d",
			len(tail.Records), tail.Records[len(tail.Records)-1].Seq, stats[1].Records, stats[1].LastSeq)
	}
	for _, r := range tail.Records {
		if r.Shard != 1 {
			t.Errorf("shard=1 tail has a record of shard %d", r.Shard)
		}
	}
	if getJSON(t, base+"/v1/streams/empty/tail", &tail) != 200 || tail.Records == nil || len(tail.Records) != 0 {
		t.Errorf("tail of an empty stream: %+v", tail)
	}

	// Values as the page shows them: binary as base64, long ones cut (text
	// at a rune boundary), tombstones, headers, producer time, origin.
	odd := mustStream(t, h, "empty")
	at := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	recs := []record.Record{
		{Key: []byte("bin"), Value: []byte{0xff, 0x00, 0xfe}},
		{Key: []byte("long"), Value: []byte("ééééé"), Headers: []record.Header{{Key: "h", Value: []byte("x")}}, Time: at.UnixNano()},
		{Key: []byte("gone")},
	}
	if _, err := odd.Append(context.Background(), store.Batch{Shard: 0, Records: recs}); err != nil {
		t.Fatal(err)
	}
	if getJSON(t, base+"/v1/streams/empty/tail?max_value=5", &tail) != 200 || len(tail.Records) != 3 {
		t.Fatalf("tail: %+v", tail)
	}
	bin, long, gone := tail.Records[0], tail.Records[1], tail.Records[2]
	if bin.Value != "" || bin.ValueBase64 != "/wD+" || bin.ValueSize != 3 || bin.Truncated {
		t.Errorf("binary value shown as %+v", bin)
	}
	if long.Value != "éé" || !long.Truncated || long.ValueSize != 10 || long.Time == nil || !long.Time.Equal(at) ||
		len(long.Headers) != 1 || long.Headers[0] != (TailHeader{Key: "h", Value: "x"}) {
		t.Errorf("long value shown as %+v", long)
	}
	if !gone.Tombstone || gone.Value != "" || gone.ValueBase64 != "" {
		t.Errorf("tombstone shown as %+v", gone)
	}

	// Large records: a shard's last sequences take several reads (each
	// stops at 1 MiB of chunks), and the newest is still shown.
	big := mustStream(t, h, "big")
	for i := range 8 {
		rec := record.Record{Key: []byte("k"), Value: append(fmt.Appendf(nil, "big-%d-", i), make([]byte, 300<<10)...)}
		if _, err := big.Append(context.Background(), store.Batch{Shard: 0, Records: []record.Record{rec}}); err != nil {
			t.Fatal(err)
		}
	}
	if getJSON(t, base+"/v1/streams/big/tail?n=5&max_value=8", &tail) != 200 || len(tail.Records) != 5 {
		t.Fatalf("tail of large records: %d records", len(tail.Records))
	}
	for i, r := range tail.Records {
		if want := fmt.Sprintf("big-%d-", i+3); !strings.HasPrefix(r.Value, want) || r.Seq != uint64(i+4) || !r.Truncated || r.ValueSize < 300<<10 {
			t.Errorf("large record %d: seq %d value %q (%d bytes, truncated %v), want seq %d starting %q", i, r.Seq, r.Value, r.ValueSize, r.Truncated, i+4, want)
		}
	}

	for _, bad := range []struct {
		path string
		code int
	}{
		{"/v1/streams/nope/tail", 404},
		{"/v1/streams/orders/tail?n=0", 400},
		{"/v1/streams/orders/tail?n=1001", 400},
		{"/v1/streams/orders/tail?n=x", 400},
		{"/v1/streams/orders/tail?shard=3", 400},
		{"/v1/streams/orders/tail?max_value=70000", 400},
	} {
		if code, body := call(t, "GET", base+bad.path, ""); code != bad.code {
			t.Errorf("GET %s: %d %s, want %d", bad.path, code, body, bad.code)
		}
	}
}

func TestDashboardPage(t *testing.T) {
	_, base := startHub(t, testConfig(t))
	resp, err := http.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	csp := resp.Header.Get("Content-Security-Policy")
	if resp.StatusCode != 200 || !strings.Contains(csp, "script-src 'sha256-") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("GET /: %d, CSP %q", resp.StatusCode, csp)
	}
	// Offline: everything inline, nothing fetched from elsewhere.
	for _, bad := range []string{"<script src", `<link rel="stylesheet"`, "http://", "https://", "//cdn"} {
		if strings.Contains(dashboardPage, bad) {
			t.Errorf("the page contains %q: it must work offline, from the hub alone", bad)
		}
	}
	for _, want := range []string{"<title>edgehub</title>", `id="streams"`, `id="chart-records"`, `id="federation"`, "/v1/rates"} {
		if !strings.Contains(dashboardPage, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
}

// The dashboard's endpoints are admin API routes like the others: a token
// is needed for data, not for the page.
func TestDashboardNeedsToken(t *testing.T) {
	cfg := testConfig(t)
	cfg.Admin.Tokens = []AdminToken{{Name: "viewer", Role: RoleRead, TokenFile: writeToken(t, "read-secret-123456")}}
	_, base := startHub(t, cfg)
	for _, p := range []string{"/v1/hub", "/v1/rates", "/v1/streams/x/tail"} {
		if code, _ := call(t, "GET", base+p, ""); code != http.StatusUnauthorized {
			t.Errorf("GET %s without a token: %d, want 401", p, code)
		}
	}
	if code, _ := call(t, "GET", base+"/", ""); code != 200 {
		t.Errorf("GET / without a token: %d, want 200 (the page holds no data)", code)
	}
	req, _ := http.NewRequest("GET", base+"/v1/hub", nil)
	req.Header.Set("Authorization", "Bearer read-secret-123456")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("GET /v1/hub with a read token: %d", resp.StatusCode)
	}
}

func TestShowBytes(t *testing.T) {
	tests := []struct {
		name      string
		in        []byte
		max       int
		text, b64 string
		cut       bool
	}{
		{name: "text", in: []byte("hello"), max: 10, text: "hello"},
		{name: "empty", in: []byte{}, max: 10},
		{name: "cut text", in: []byte("hello"), max: 3, text: "hel", cut: true},
		{name: "cut before a split rune", in: []byte("aé"), max: 2, text: "a", cut: true},
		{name: "binary", in: []byte{0xff}, max: 10, b64: "/w=="},
		{name: "cut binary", in: []byte{0xff, 1, 2}, max: 2, b64: "/wE=", cut: true},
		{name: "zero max", in: []byte("x"), max: 0, cut: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			text, b64, cut := showBytes(tt.in, tt.max)
			if text != tt.text || b64 != tt.b64 || cut != tt.cut {
				t.Errorf("showBytes(%q, %d) = %q, %q, %v; want %q, %q, %v", tt.in, tt.max, text, b64, cut, tt.text, tt.b64, tt.cut)
			}
		})
	}
}

// writeToken writes an admin token file and returns its path.
func writeToken(tb testing.TB, tok string) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "token")
	if err := os.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}

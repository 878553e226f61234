package cli

import (
	"bytes"
	"encoding/json"
	"github.com/edgehub/edgehub/internal/recordjson"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgehub/edgehub/internal/record"
)

var quicAddrRE = regexp.MustCompile(`msg="data plane listening" addr=(\S+)`)

// quicAddr finds the data plane's address in the server's log.
func (s *server) quicAddr(tb testing.TB) string {
	tb.Helper()
	m := quicAddrRE.FindStringSubmatch(s.logs())
	if m == nil {
		tb.Fatalf("no data plane address in the log:\n%s", s.logs())
	}
	return m[1]
}

// TestEndToEndProduceConsume drives `hub produce` and `hub consume` against
// a `hub serve` child. The CLI runs next to the hub's hub-data directory and
// is given no --ca: it must find and trust the self-signed certificate.
func TestEndToEndProduceConsume(t *testing.T) {
	base := t.TempDir()
	s := startServer(t, filepath.Join(base, "hub-data"))
	env := []string{"HUB_ADDR=" + s.quicAddr(t), "HUB_ADMIN=" + s.admin}
	if code, _, errOut := runHubIn(t, base, env, "stream", "create", "events", "--shards", "3"); code != 0 {
		t.Fatalf("stream create: %s", errOut)
	}
	code, _, errOut := runHubStdin(t, base, "a:1\nb:2\nc:3\nd:4\n", env,
		"produce", "events", "--key-sep", ":", "--header", "src=cli", "--header", "v=1")
	if code != 0 || !strings.Contains(errOut, "acked 4 records") {
		t.Fatalf("produce: %d %s", code, errOut)
	}

	tests := []struct {
		name string
		args []string
		want []string // values, in any order across shards
	}{
		{"all values", []string{"consume", "events"}, []string{"1", "2", "3", "4"}},
		{"count", []string{"consume", "events", "-n", "2"}, nil},
		{"from latest", []string{"consume", "events", "--from", "latest"}, []string{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runHubIn(t, base, env, tc.args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			lines := strings.Fields(out)
			if tc.want == nil {
				if len(lines) != 2 {
					t.Fatalf("got %q, want 2 lines", out)
				}
				return
			}
			got := append([]string{}, lines...)
			if strings.Join(slices.Sorted(slices.Values(got)), ",") != strings.Join(tc.want, ",") {
				t.Fatalf("got %q, want %v", out, tc.want)
			}
		})
	}

	code, out, errOut := runHubIn(t, base, env, "consume", "events", "--format", "json")
	if code != 0 {
		t.Fatalf("consume json: %s", errOut)
	}
	keys := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var r recordjson.Record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		if r.Stream != "events" || r.Seq == 0 || r.Key == nil || r.Value == nil || len(r.Headers) == 0 || r.Headers[0].Key == nil || *r.Headers[0].Key != "src" || r.Headers[0].Value == nil || *r.Headers[0].Value != "cli" || r.Time == "" || r.IngestTime == "" {
			t.Fatalf("json record %s", line)
		}
		keys[*r.Key] = *r.Value
	}
	if len(keys) != 4 || keys["c"] != "3" {
		t.Fatalf("keys %v", keys)
	}

	// --key puts every line under one key, so in one shard; --shard reads
	// only that shard.
	if code, _, errOut := runHubStdin(t, base, "k1\nk2\n", env, "produce", "events", "--key", "fixed"); code != 0 {
		t.Fatalf("produce --key: %s", errOut)
	}
	shard := record.ShardForKey([]byte("fixed"), 3)
	code, out, errOut = runHubIn(t, base, env, "consume", "events", "--shard", strconv.Itoa(shard), "--format", "json")
	if code != 0 {
		t.Fatalf("consume --shard: %s", errOut)
	}
	var fixed []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var r recordjson.Record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		if r.Shard == nil || *r.Shard != shard {
			t.Fatalf("--shard %d printed %s", shard, line)
		}
		if r.Key != nil && *r.Key == "fixed" {
			fixed = append(fixed, *r.Value)
		}
	}
	if strings.Join(fixed, ",") != "k1,k2" {
		t.Fatalf("records under key fixed: %v", fixed)
	}

	// A follower sees records produced after it started.
	follow := exec.Command(hubBin(t), "consume", "events", "--from", "latest", "--follow", "-n", "1")
	follow.Dir, follow.Env = base, append(os.Environ(), env...)
	var fout bytes.Buffer
	follow.Stdout = &fout
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- follow.Wait() }()
	// Produce until the follower, which may still be subscribing, has seen
	// a record.
	for i := 0; ; i++ {
		runHubStdin(t, base, "live-"+strconv.Itoa(i)+"\n", env, "produce", "events")
		select {
		case err := <-done:
			if err != nil || !strings.HasPrefix(fout.String(), "live-") {
				t.Fatalf("follower: %v %q", err, fout.String())
			}
			return
		case <-time.After(200 * time.Millisecond):
		}
		if i > 100 {
			follow.Process.Kill()
			t.Fatal("follower saw nothing")
		}
	}
}

func TestEndToEndProduceErrors(t *testing.T) {
	base := t.TempDir()
	s := startServer(t, filepath.Join(base, "hub-data"))
	env := []string{"HUB_ADDR=" + s.quicAddr(t)}
	tests := []struct {
		name string
		dir  string
		args []string
		code int
		msg  string
	}{
		{"missing stream", base, []string{"produce", "nope"}, 1, "not_found"},
		{"no certificate to trust", t.TempDir(), []string{"consume", "x"}, 1, "--ca"},
		{"insecure works", t.TempDir(), []string{"consume", "nope", "--insecure"}, 1, "not_found"},
		{"bad --from", base, []string{"consume", "x", "--from", "yesterday"}, 2, "invalid --from"},
		{"key and key-sep", base, []string{"produce", "x", "--key", "k", "--key-sep", ":"}, 2, "exclude each other"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := runHubStdin(t, tc.dir, "x\n", env, tc.args...)
			if code != tc.code || !strings.Contains(errOut, tc.msg) {
				t.Fatalf("exit %d, stderr %q; want %d and %q", code, errOut, tc.code, tc.msg)
			}
		})
	}
}

// TestBench runs both benchmarks against an in-process hub and checks the
// summary line scripts parse.
func TestBench(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a benchmark")
	}
	for _, args := range [][]string{
		{"bench", "produce", "--self", "--count", "5000", "--producers", "2"},
		{"bench", "produce", "--self", "--count", "300", "--rate", "1000", "--producers", "1"},
		{"bench", "consume", "--self", "--count", "5000", "--consumers", "2"},
	} {
		t.Run(strings.Join(args[1:], " "), func(t *testing.T) {
			code, out, errOut := capture(t, args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			fields := map[string]string{}
			for _, kv := range strings.Fields(out) {
				k, v, _ := strings.Cut(kv, "=")
				fields[k] = v
			}
			want := []string{"records_per_s", "mb_per_s", "records", "errors"}
			if args[1] == "produce" {
				want = append(want, "p50_us", "p99_us", "p999_us")
			}
			for _, k := range want {
				if _, err := strconv.ParseFloat(fields[k], 64); err != nil {
					t.Fatalf("summary %q: %s missing or not a number", out, k)
				}
			}
			if fields["errors"] != "0" || fields["records"] == "0" {
				t.Fatalf("summary %q", out)
			}
		})
	}
}

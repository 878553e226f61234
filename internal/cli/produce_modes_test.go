package cli

import (
	"context"
	"encoding/json"
	"github.com/edgehub/edgehub/internal/recordjson"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgehub/edgehub/sdk"
)

// TestEndToEndProduceModes drives `hub produce` against a `hub serve` child:
// each input mode, read back with consume --format '%k|%K|%S|%s|%T|%h' so a
// tombstone, an empty value and a missing key are told apart, and the
// refusals, each naming its line.
func TestEndToEndProduceModes(t *testing.T) {
	base := t.TempDir()
	s := startServer(t, filepath.Join(base, "hub-data"))
	env := []string{"HUB_ADDR=" + s.quicAddr(t), "HUB_ADMIN=" + s.admin}
	input := filepath.Join(base, "input.txt")
	writeFile(t, input, "f1\nf2\n")
	const ts = "--timestamp=2026-05-01T12:00:00Z"
	const t0 = "2026-05-01T12:00:00Z"
	tests := []struct {
		name  string
		in    string
		args  []string
		code  int
		acked string
		msg   string // in stderr
		want  string // consume of the stream afterwards, one shard
	}{
		{name: "values", in: "v1\n\nv3\n", args: []string{ts}, acked: "acked 3 records",
			want: "|-1|2|v1|" + t0 + "|\n|-1|0||" + t0 + "|\n|-1|2|v3|" + t0 + "|\n"},
		{name: "key separator, empty value kept", in: "a:1\nb:\n", args: []string{"--key-sep", ":", ts, "--header", "h=1"}, acked: "acked 2 records",
			want: "a|1|1|1|" + t0 + "|h=1\nb|1|0||" + t0 + "|h=1\n"},
		{name: "null turns empty values into tombstones", in: "a:1\nb:\n", args: []string{"--key-sep", ":", "--null", ts}, acked: "acked 2 records",
			want: "a|1|1|1|" + t0 + "|\nb|1|-1||" + t0 + "|\n"},
		{name: "a line without the separator", in: "a:1\nnokey\nc:3\n", args: []string{"--key-sep", ":", ts}, code: 1, acked: "acked 1 record\n",
			msg:  `hub produce: stdin line 2: no key separator ":" in it (--allow-keyless sends such lines without a key) (line 1 is stored; resume with tail -n +2)`,
			want: "a|1|1|1|" + t0 + "|\n"}, // the lines before the bad one stand
		{name: "allow keyless", in: "a:1\nnokey\n", args: []string{"--key-sep", ":", "--allow-keyless", ts}, acked: "acked 2 records",
			want: "a|1|1|1|" + t0 + "|\n|-1|5|nokey|" + t0 + "|\n"},
		{name: "one key", in: "x\ny\n", args: []string{"--key", "k", ts}, acked: "acked 2 records",
			want: "k|1|1|x|" + t0 + "|\nk|1|1|y|" + t0 + "|\n"},
		{name: "from a file", args: []string{"--file", input, ts}, acked: "acked 2 records",
			want: "|-1|2|f1|" + t0 + "|\n|-1|2|f2|" + t0 + "|\n"},
		{name: "json", in: `{"key":"a","value":"1","time":"2026-05-01T12:00:01Z","headers":[{"key":"h","value":"x"},{"key":"h","value_base64":"/w=="}]}` + "\n" +
			`{"key":"t"}` + "\n" + `{"value":""}` + "\n" + `{"stream":"other","shard":3,"seq":9,"key_base64":"/w==","value_base64":"AA==","ingest_time":"2020-01-01T00:00:00Z","origin":{"hub":"h","shard":1,"seq":2}}` + "\n",
			args: []string{"--format", "json"}, acked: "acked 4 records",
			want: "a|1|1|1|2026-05-01T12:00:01Z|h=x,h=\xff\nt|1|-1||*|\n|-1|0||*|\n\xff|1|1|\x00|*|\n"},
		{name: "json time from --timestamp", in: `{"value":"v"}` + "\n", args: []string{"--format", "json", ts}, acked: "acked 1 record\n",
			want: "|-1|1|v|" + t0 + "|\n"},
		{name: "json unknown field", in: `{"value":"v"}` + "\n" + `{"valeu":"v"}` + "\n", args: []string{"--format", "json"}, code: 1, acked: "acked 1 record\n",
			msg: `hub produce: stdin line 2: invalid JSON record: json: unknown field "valeu"`},
		{name: "json key twice", in: `{"key":"a","key_base64":"YQ=="}` + "\n", args: []string{"--format", "json"}, code: 1, acked: "acked 0 records",
			msg: "stdin line 1: invalid JSON record: both key and key_base64 (nothing was sent)"},
		{name: "json not JSON", in: "plain\n", args: []string{"--format", "json"}, code: 1, msg: "stdin line 1: invalid JSON record"},
		{name: "too long a line", in: "ok\n" + strings.Repeat("x", 100) + "\n", args: []string{"--max-line", "50"}, code: 1, acked: "acked 1 record\n",
			msg: "hub produce: stdin line 2: longer than 50 bytes, the --max-line: raise it (up to 1048577, what the hub's max_record_bytes 1048576 allows) (line 1 is stored; resume with tail -n +2)"},
		{name: "a line of --max-line bytes", in: strings.Repeat("x", 50) + "\n", args: []string{"--max-line", "50", ts}, acked: "acked 1 record\n",
			want: "|-1|50|" + strings.Repeat("x", 50) + "|" + t0 + "|\n"},
		{name: "no such shard", in: "x\n", args: []string{"--shard", "3"}, code: 1, msg: "hub produce: stream p has 1 shard: no shard 3"},
		{name: "keyless without key-sep", in: "x\n", args: []string{"--allow-keyless"}, code: 2, msg: "--allow-keyless goes with --key-sep"},
		{name: "json with key-sep", in: "x\n", args: []string{"--format", "json", "--key-sep", ":"}, code: 2, msg: "do not apply"},
		{name: "bad timestamp", in: "x\n", args: []string{"--timestamp", "noon"}, code: 2, msg: `invalid --timestamp "noon"`},
		{name: "missing file", args: []string{"--file", filepath.Join(base, "nope")}, code: 1, msg: "no such file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			runHubIn(t, base, env, "stream", "delete", "p", "--yes")
			if code, _, errOut := runHubIn(t, base, env, "stream", "create", "p"); code != 0 {
				t.Fatalf("stream create: %s", errOut)
			}
			code, _, errOut := runHubStdin(t, base, tc.in, env, append([]string{"produce", "p"}, tc.args...)...)
			if code != tc.code || !strings.Contains(errOut, tc.acked) || !strings.Contains(errOut, tc.msg) {
				t.Fatalf("exit %d, stderr %q; want %d, %q and %q", code, errOut, tc.code, tc.acked, tc.msg)
			}
			if tc.code != 0 && tc.want == "" {
				return
			}
			_, out, _ := runHubIn(t, base, env, "consume", "p", "--format", `%k|%K|%S|%s|%T|%h\n`)
			if !matchStars(tc.want, out) {
				t.Fatalf("consumed\n%q\nwant\n%q", out, tc.want)
			}
		})
	}

	// What consume --format json prints replays as is, shard by shard.
	c, err := sdk.Dial(context.Background(), s.quicAddr(t), sdk.Options{CAFile: filepath.Join(base, "hub-data", "tls", "cert.pem")})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, name := range []string{"src", "dst"} {
		if code, _, errOut := runHubIn(t, base, env, "stream", "create", name, "--shards", "3"); code != 0 {
			t.Fatalf("stream create: %s", errOut)
		}
	}
	bin := []byte{0xff, 0x00, 0xc3}
	var recs []sdk.Record
	for i, r := range []sdk.Record{
		{Key: []byte("a"), Value: []byte("text")},
		{Key: []byte("b")}, // tombstone
		{Key: []byte("c"), Value: []byte{}},
		{Key: bin, Value: bin, Headers: []sdk.Header{{Key: "h", Value: bin}, {Key: "h", Value: []byte("2")}, {Key: "\xfe", Value: nil}}},
		{Key: []byte("d"), Value: []byte(`{"json":"in a string","tab":"\t"}`)},
	} {
		r.Time = tourTime(i)
		recs = append(recs, r)
	}
	p, err := c.Producer(context.Background(), "src", sdk.ProducerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if _, err := p.Send(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
	p.Close(context.Background())
	_, dump, errOut := runHubIn(t, base, env, "consume", "src", "--format", "json")
	if strings.Count(dump, "\n") != len(recs) {
		t.Fatalf("consume src: %s%s", dump, errOut)
	}
	if code, _, errOut := runHubStdin(t, base, dump, env, "produce", "dst", "--format", "json"); code != 0 || !strings.Contains(errOut, "acked 5 records") {
		t.Fatalf("replay: exit %d: %s", code, errOut)
	}
	_, again, _ := runHubIn(t, base, env, "consume", "dst", "--format", "json")
	norm := func(s string) string {
		var lines []string
		for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
			var r recordjson.Record
			if err := json.Unmarshal([]byte(l), &r); err != nil {
				t.Fatalf("%q: %v", l, err)
			}
			r.Stream, r.IngestTime = "", ""
			b, _ := json.Marshal(r)
			lines = append(lines, string(b))
		}
		return strings.Join(lines, "\n")
	}
	if norm(again) != norm(dump) {
		t.Fatalf("replayed records differ (stream and ingest time aside):\n%s\nwant\n%s", norm(again), norm(dump))
	}
}

// matchStars reports whether got equals want where each * in want stands
// for any run of characters other than a newline or |.
func matchStars(want, got string) bool {
	if want == "" || got == "" {
		return want == got
	}
	if want[0] == '*' {
		for i := 0; i <= len(got); i++ {
			if matchStars(want[1:], got[i:]) {
				return true
			}
			if i < len(got) && (got[i] == '\n' || got[i] == '|') {
				return false
			}
		}
		return false
	}
	return want[0] == got[0] && matchStars(want[1:], got[1:])
}

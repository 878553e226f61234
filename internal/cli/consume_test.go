package cli

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgehub/edgehub/internal/testutil"
	"github.com/edgehub/edgehub/sdk"
)

// tourTime is a fixed record time: t0 plus n seconds.
func tourTime(n int) int64 {
	return time.Date(2026, 5, 1, 12, 0, n, 0, time.UTC).UnixNano()
}

// produceTo sends recs to shard of stream through a real SDK client.
func produceTo(tb testing.TB, c *sdk.Client, stream string, shard int, recs ...sdk.Record) {
	tb.Helper()
	p, err := c.Producer(context.Background(), stream, sdk.ProducerOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	for _, r := range recs {
		if _, err := p.SendTo(context.Background(), shard, r); err != nil {
			tb.Fatal(err)
		}
	}
	if err := p.Close(context.Background()); err != nil {
		tb.Fatal(err)
	}
}

// TestEndToEndConsumeFormats drives `hub consume` against a `hub serve`
// child holding records with known times in three shards of two streams:
// kcat-style format verbs, --merge by time across shards and streams,
// patterns, --last per shard, relative --from, and the refusals.
func TestEndToEndConsumeFormats(t *testing.T) {
	base := t.TempDir()
	s := startServer(t, filepath.Join(base, "hub-data"))
	env := []string{"HUB_ADDR=" + s.quicAddr(t), "HUB_ADMIN=" + s.admin}
	for _, args := range [][]string{{"a", "--shards", "2"}, {"b"}, {"other"}, {"back", "--shards", "2"}} {
		if code, _, errOut := runHubIn(t, base, env, append([]string{"stream", "create"}, args...)...); code != 0 {
			t.Fatalf("stream create %v: %s", args, errOut)
		}
	}
	c, err := sdk.Dial(context.Background(), s.quicAddr(t), sdk.Options{CAFile: filepath.Join(base, "hub-data", "tls", "cert.pem")})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	produceTo(t, c, "a", 0,
		sdk.Record{Key: []byte("x"), Value: []byte("a0-1"), Time: tourTime(1), Headers: []sdk.Header{{Key: "h", Value: []byte("1")}, {Key: "g", Value: []byte("2")}}},
		sdk.Record{Value: []byte("a0-4"), Time: tourTime(4)})
	produceTo(t, c, "a", 1,
		sdk.Record{Value: []byte("a1-2"), Time: tourTime(2)},
		sdk.Record{Key: []byte("y"), Time: tourTime(5)}) // a tombstone
	produceTo(t, c, "b", 0,
		sdk.Record{Value: []byte("b0-3"), Time: tourTime(3)},
		sdk.Record{Value: []byte{}, Time: tourTime(6)}) // an empty value

	// Producers' times may go backwards within a shard.
	produceTo(t, c, "back", 0, sdk.Record{Value: []byte("3"), Time: tourTime(3)}, sdk.Record{Value: []byte("1"), Time: tourTime(1)})
	produceTo(t, c, "back", 1, sdk.Record{Value: []byte("2"), Time: tourTime(2)})

	merged := "a/0/1 a0-1\na/1/1 a1-2\nb/0/1 b0-3\na/0/2 a0-4\na/1/2 \nb/0/2 \n"
	tests := []struct {
		name string
		args []string
		code int
		out  string // exact stdout
		msg  string // in stderr
	}{
		{name: "merge by time across shards and streams", args: []string{"a", "b", "--merge", "--format", `%t/%p/%o %s\n`}, out: merged},
		// As documented: each shard in sequence order, shards interleaved by
		// the time of their next record.
		{name: "merge keeps a shard's order when its times go backwards", args: []string{"back", "--merge", "--format", `%p/%o %s\n`}, out: "1/1 2\n0/1 3\n0/2 1\n"},
		{name: "a pattern", args: []string{"?", "--merge", "--format", `%t/%p/%o %s\n`}, out: merged},
		{name: "a pattern and a name, repeats dropped", args: []string{"a", "[ab]", "--merge", "--format", `%t/%p/%o %s\n`}, out: merged},
		{name: "count over merged streams", args: []string{"a", "b", "--merge", "-n", "2"}, out: "a0-1\na1-2\n"},
		{name: "every verb", args: []string{"a", "--shard", "0", "-n", "1", "--format", `%t %p %o %T %k %K %s %v %S [%h] %O 100%%\t|\n`},
			out: "a 0 1 2026-05-01T12:00:01Z x 1 a0-1 a0-1 4 [h=1,g=2] - 100%\t|\n"},
		{name: "a tombstone and no key", args: []string{"a", "b", "--merge", "--last", "1", "--format", `%k|%K|%S|%s\n`},
			out: "|-1|4|a0-4\ny|1|-1|\n|-1|0|\n"},
		{name: "last per shard", args: []string{"a", "--last", "1", "--merge", "--format", `%p %o\n`}, out: "0 2\n1 2\n"},
		{name: "last 0 prints none", args: []string{"a", "--last", "0"}, out: ""},
		{name: "last 0 merged prints none", args: []string{"a", "--last", "0", "--merge"}, out: ""},
		{name: "negative count", args: []string{"a", "-n", "-1"}, code: 2, msg: "hub consume: invalid -n -1: want a number of records (0: no limit)"},
		{name: "last more than a shard holds", args: []string{"b", "--last", "5"}, out: "b0-3\n\n"},
		{name: "relative from", args: []string{"a", "--from", "-1h", "--merge"}, out: "a0-1\na1-2\na0-4\n\n"},
		{name: "from latest", args: []string{"a", "--from", "latest"}, out: ""},
		{name: "empty stream", args: []string{"other", "--format", "json"}, out: ""},
		{name: "unknown verb", args: []string{"a", "--format", "%x"}, code: 2, msg: "hub consume: invalid --format \"%x\": unknown verb %x"},
		{name: "no verb", args: []string{"a", "--format", "jsno"}, code: 2, msg: "want value, json or a format with %-verbs"},
		{name: "pattern matching nothing", args: []string{"z*"}, code: 1, msg: `hub consume: no stream matches "z*"`},
		{name: "group with a pattern", args: []string{"a*", "--group", "g"}, code: 2, msg: "--group reads one stream"},
		{name: "group with merge", args: []string{"a", "--group", "g", "--merge"}, code: 2, msg: "do not apply to --group"},
		{name: "from and last", args: []string{"a", "--from", "earliest", "--last", "1"}, code: 2, msg: "exclude each other"},
		{name: "bad relative from", args: []string{"a", "--from", "-1y"}, code: 2, msg: "negative Go duration"},
		{name: "shard out of range", args: []string{"a", "--shard", "5", "--merge"}, code: 1, msg: "stream a has 2 shards: no shard 5"},
		{name: "no stream", args: nil, code: 2, msg: "missing stream NAME"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runHubIn(t, base, env, append([]string{"consume"}, tc.args...)...)
			if code != tc.code || !strings.Contains(errOut, tc.msg) {
				t.Fatalf("exit %d, stderr %q; want %d and %q", code, errOut, tc.code, tc.msg)
			}
			if tc.code == 0 && out != tc.out {
				t.Fatalf("stdout:\n%q\nwant\n%q", out, tc.out)
			}
		})
	}

	// --merge --follow: the stored records in time order, then what is
	// committed after it caught up, as it arrives.
	follow := exec.Command(hubBin(t), "consume", "a", "b", "--merge", "--follow", "-n", "7", "--format", `%t %s\n`)
	follow.Dir, follow.Env = base, append(os.Environ(), env...)
	var fout testutil.SyncBuffer
	follow.Stdout = &fout
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- follow.Wait() }()
	testutil.Eventually(t, "the follower prints the 6 stored records", func() bool { return strings.Count(fout.String(), "\n") == 6 })
	produceTo(t, c, "b", 0, sdk.Record{Value: []byte("live"), Time: tourTime(0)})
	select {
	case err := <-done:
		if want := "a a0-1\na a1-2\nb b0-3\na a0-4\na \nb \nb live\n"; err != nil || fout.String() != want {
			t.Fatalf("follower: %v\n%q\nwant\n%q", err, fout.String(), want)
		}
	case <-time.After(90 * time.Second):
		follow.Process.Kill()
		t.Fatalf("follower did not stop after 7 records: %q", fout.String())
	}
}

package cli

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"path"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/edgehub/edgehub/hub"
	"github.com/edgehub/edgehub/internal/recordjson"
	"github.com/edgehub/edgehub/sdk"
)

func init() {
	register("consume", "print a stream's records", consume)
}

// shardFlags collects repeated --shard N.
type shardFlags []int

func (s *shardFlags) String() string { return "" }
func (s *shardFlags) Set(v string) error {
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return fmt.Errorf("shard %q: want a shard number", v)
	}
	*s = append(*s, n)
	return nil
}

// parseFrom reads --from: earliest, latest, a sequence, an RFC 3339 time
// or a time relative to now (-1h, -30m: a negative Go duration).
func parseFrom(v string, now time.Time) (sdk.Start, error) {
	if rel, ok := strings.CutPrefix(v, "-"); ok {
		d, err := time.ParseDuration(rel)
		if err != nil || d <= 0 {
			return sdk.Start{}, usagef("invalid --from %q: a relative position is a negative Go duration such as -1h or -90s", v)
		}
		return sdk.FromTime(now.Add(-d)), nil
	}
	switch v {
	case "earliest", "":
		return sdk.FromEarliest(), nil
	case "latest":
		return sdk.FromLatest(), nil
	}
	if n, err := strconv.ParseUint(v, 10, 64); err == nil {
		return sdk.FromSeq(n), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return sdk.FromTime(t), nil
	}
	return sdk.Start{}, usagef("invalid --from %q: want earliest, latest, a sequence number, an RFC 3339 time or -DURATION (-1h)", v)
}

// toJSON is a line of --format json (internal/recordjson, documented in
// README.md): nothing is altered, a tombstone has no value, bytes that are
// not UTF-8 are base64.
func toJSON(m sdk.Message) recordjson.Record {
	j := recordjson.Encode(m.Record)
	j.Stream, j.Shard, j.Seq = m.Stream, &m.Shard, m.Record.Seq
	return j
}

const consumeSynopsis = "consume STREAM|PATTERN... [--from POSITION | --last N] [--shard N]... [--merge] [-n COUNT] [--follow] [--format value|json|FORMAT] [--group NAME [--member ID]]"

// consumeNote follows the flags in `hub consume --help`.
const consumeNote = `
Streams: several names, or shell-style patterns ('sensor*', 'site-?'), which
the admin API's stream list resolves when consume starts (--admin flags);
--follow does not pick up streams created later.

Positions (--from, --last) apply to each shard. -n counts records in all.
Without --merge, records print as they arrive: in sequence order within a
shard, shards and streams interleaved. --merge prints the stored records of
all shards and streams merged by time (the %T below): each shard's records
keep their sequence order and the shards are interleaved by the time of
their next record (ties by stream and shard in the order given), so the
output is in time order when each shard's times do not go backwards (times
given by producers, --timestamp, may); with --follow, records committed
after consume has caught up print as they arrive.

Format verbs (--format, as in kcat; no newline is added: end with \n):
  %s, %v  value (nothing for a tombstone)   %S  value length (-1: tombstone)
  %k      key (nothing without a key)       %K  key length (-1: no key)
  %t      stream    %p  shard    %o  sequence
  %T      time: the producer's, else the ingest time (RFC 3339, UTC)
  %I      ingest time (RFC 3339, UTC)
  %h      headers as k=v,k=v
  %O      origin hub/shard/sequence of a replicated record (- if local)
  %%      a percent sign; \n, \t, \r and \\ are escapes
Example: hub consume sensors --format '%T %k %s\n'
`

func consume(ctx context.Context, args []string) error {
	fs := newFlags("consume", consumeSynopsis)
	usage := fs.Usage
	fs.Usage = func() { usage(); io.WriteString(stderr, consumeNote) }
	df := addDataFlags(fs)
	admin := addAdminFlags(fs, "admin-")
	from := fs.String("from", "", "start `POSITION` in each shard: earliest (default), latest, a sequence number, an RFC 3339 time, or -DURATION before now (-1h, -15m)")
	last := fs.Uint64("last", 0, "start `N` sequences before the end of each shard (per shard: 4 shards print up to 4×N records; 0: none, with --follow only new ones)")
	var shards shardFlags
	fs.Var(&shards, "shard", "read only shard `N` (repeatable; default all)")
	count := fs.Int64("n", 0, "stop after `COUNT` records in all (0: no limit)")
	follow := fs.Bool("follow", false, "keep waiting for new records (default: stop at the end)")
	fs.BoolVar(follow, "f", false, "short for --follow")
	merge := fs.Bool("merge", false, "merge the records of all shards and streams by time (each shard in sequence order), not as they arrive")
	format := fs.String("format", "value", "output `FORMAT`: value (one value a line), json (one object a line) or a string of %-verbs (below)")
	group := fs.String("group", "", "consume as a member of consumer `GROUP` (shards shared with its members, offsets committed; see docs/groups.md)")
	member := fs.String("member", "", "member `ID` in --group (default: unique per process)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("missing stream NAME (or a pattern such as 'sensor*')")
	}
	lastSet := false
	fs.Visit(func(f *flag.Flag) { lastSet = lastSet || f.Name == "last" })
	if *from != "" && lastSet {
		return usagef("--from and --last exclude each other")
	}
	if *count < 0 {
		return usagef("invalid -n %d: want a number of records (0: no limit)", *count)
	}
	fromArg := *from
	if lastSet && *last == 0 {
		fromArg = "latest" // the last 0 records: none, as tail -n 0 prints
	}
	start, err := parseFrom(fromArg, time.Now())
	if err != nil {
		return err
	}
	pr, err := newPrinter(stdout, *format)
	if err != nil {
		return err
	}
	if *group != "" {
		switch {
		case len(shards) > 0:
			return usagef("--shard and --group exclude each other: the group assigns the shards")
		case *merge, lastSet:
			return usagef("--merge and --last do not apply to --group: the group's committed offsets say where each shard starts")
		case len(pos) > 1 || isPattern(pos[0]):
			return usagef("--group reads one stream, not %s", strings.Join(pos, " "))
		}
	}
	streams, err := resolveStreams(ctx, pos, admin)
	if err != nil {
		return err
	}
	c, err := df.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if *group != "" {
		return consumeGroup(ctx, c, streams[0], *group, *member, start, *count, *follow, pr)
	}
	var sources []sdk.ConsumeOptions
	var names []string
	for _, st := range streams {
		if !*merge && *last == 0 {
			sources, names = append(sources, sdk.ConsumeOptions{Shards: shards, From: start}), append(names, st)
			continue
		}
		// One subscription a shard: each has its own start (--last) and
		// its own position in the merge.
		info, err := c.Info(ctx, st)
		if err != nil {
			return err
		}
		list := []int(shards)
		if len(list) == 0 {
			for i := range info.Shards {
				list = append(list, i)
			}
		}
		for _, sh := range list {
			if sh >= len(info.Shards) {
				return fmt.Errorf("stream %s has %d shard%s: no shard %d", st, len(info.Shards), plural(len(info.Shards)), sh)
			}
			from := start
			if b := info.Shards[sh]; *last > 0 && b.Last >= *last {
				from = sdk.FromSeq(b.Last - *last + 1)
			}
			sources, names = append(sources, sdk.ConsumeOptions{Shards: []int{sh}, From: from}), append(names, st)
		}
	}
	return runSources(ctx, c, names, sources, *merge, *follow, *count, pr)
}

// isPattern reports whether a stream argument is a pattern (stream names
// cannot contain the pattern characters).
func isPattern(s string) bool { return strings.ContainsAny(s, "*?[") }

// resolveStreams expands the patterns among args with the admin API's
// stream list, keeping the order given (each pattern's matches sorted) and
// dropping repeats.
func resolveStreams(ctx context.Context, args []string, admin *adminFlags) ([]string, error) {
	if !slices.ContainsFunc(args, isPattern) {
		return args, nil
	}
	c, err := newAdminClient(admin.options())
	if err != nil {
		return nil, err
	}
	var list hub.StreamList
	if err := c.get(ctx, "/v1/streams", &list); err != nil {
		return nil, fmt.Errorf("list streams for %s: %w", strings.Join(args, " "), err)
	}
	var out []string
	seen := map[string]bool{}
	for _, a := range args {
		if !isPattern(a) {
			if !seen[a] {
				out, seen[a] = append(out, a), true
			}
			continue
		}
		var matched []string
		for _, s := range list.Streams {
			ok, err := path.Match(a, s.Name)
			if err != nil {
				return nil, usagef("invalid pattern %q: %v", a, err)
			}
			if ok {
				matched = append(matched, s.Name)
			}
		}
		if len(matched) == 0 {
			return nil, fmt.Errorf("no stream matches %q", a)
		}
		slices.Sort(matched)
		for _, m := range matched {
			if !seen[m] {
				out, seen[m] = append(out, m), true
			}
		}
	}
	return out, nil
}

// feedItem is what a subscription's goroutine hands the printer: a
// record, the news that it has caught up, or the error that ended it.
type feedItem struct {
	m        sdk.Message
	caughtUp bool
	err      error
}

// feed reads sub into out until ctx ends or, without follow, it has caught
// up. It reports catching up once, after the records stored when it opened.
func feed(ctx context.Context, sub *sdk.Subscription, follow bool, out chan<- feedItem) {
	send := func(it feedItem) bool {
		select {
		case out <- it:
			return true
		case <-ctx.Done():
			return false
		}
	}
	caught := false
	for {
		if !caught && sub.CaughtUp() {
			caught = true
			if !send(feedItem{caughtUp: true}) || !follow {
				return
			}
		}
		m, err := sub.Next(ctx)
		if err != nil {
			send(feedItem{err: err})
			return
		}
		// The record's bytes may share the subscription's buffers.
		r := &m.Record
		r.Key, r.Value = bytes.Clone(r.Key), bytes.Clone(r.Value)
		r.Headers = slices.Clone(r.Headers)
		for i := range r.Headers {
			r.Headers[i].Value = bytes.Clone(r.Headers[i].Value)
		}
		if !send(feedItem{m: m}) {
			return
		}
	}
}

// recordTime is what --merge orders by and %T prints: the producer's time,
// else the ingest time.
func recordTime(r *sdk.Record) int64 {
	if r.Time != 0 {
		return r.Time
	}
	return r.IngestTime
}

// runSources subscribes to each source (streams[i] with opts[i]) and
// prints their records: as they arrive, or merged in time order.
func runSources(ctx context.Context, c *sdk.Client, streams []string, opts []sdk.ConsumeOptions, merge, follow bool, count int64, pr *printer) (err error) {
	fctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var subs []*sdk.Subscription
	defer func() {
		// A subscription is not safe for concurrent use: stop the feeds
		// before closing what they read.
		cancel()
		wg.Wait()
		for _, sub := range subs {
			sub.Close()
		}
	}()
	chs := make([]chan feedItem, len(opts))
	for i, o := range opts {
		sub, err := c.Subscribe(ctx, streams[i], o)
		if err != nil {
			return err
		}
		subs = append(subs, sub)
		chs[i] = make(chan feedItem, 256)
		wg.Go(func() { feed(fctx, sub, follow, chs[i]) })
	}
	defer func() {
		if ferr := pr.flush(); ferr != nil && err == nil {
			err = ferr
		}
	}()
	heads := make([]*sdk.Message, len(chs))
	caught := make([]bool, len(chs))
	// take handles one item of source i; it returns the error that ends
	// the command, nil when interrupted.
	var stop bool
	take := func(i int, it feedItem) error {
		switch {
		case it.err != nil:
			stop = true
			if errors.Is(it.err, context.Canceled) {
				return nil // interrupted: what was printed stands
			}
			return it.err
		case it.caughtUp:
			caught[i] = true
		default:
			heads[i] = &it.m
		}
		return nil
	}
	// wait takes an item from one of the sources in which, flushing the
	// output first if nothing is ready.
	wait := func(which []int) error {
		if pr.buffered() > 0 && !slices.ContainsFunc(which, func(i int) bool { return len(chs[i]) > 0 }) {
			if err := pr.flush(); err != nil {
				return err
			}
		}
		cases := []reflect.SelectCase{{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ctx.Done())}}
		for _, i := range which {
			cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(chs[i])})
		}
		k, v, _ := reflect.Select(cases)
		if k == 0 {
			stop = true
			return nil
		}
		return take(which[k-1], v.Interface().(feedItem))
	}
	for n := int64(0); count == 0 || n < count; {
		// Sources that may still deliver without blocking the output:
		// all of them as they arrive; with --merge, every source must
		// show its next record (or have caught up) before one is printed.
		var need []int
		for i := range chs {
			if heads[i] == nil && !caught[i] {
				need = append(need, i)
			}
		}
		if merge && len(need) > 0 {
			if err := wait(need); err != nil || stop {
				return err
			}
			continue
		}
		if follow {
			for i := range chs {
				if heads[i] == nil && caught[i] {
					select {
					case it := <-chs[i]:
						if err := take(i, it); err != nil || stop {
							return err
						}
					default:
					}
				}
			}
		}
		best := -1
		for i, h := range heads {
			if h != nil && (best < 0 || recordTime(&h.Record) < recordTime(&heads[best].Record)) {
				best = i
			}
		}
		if best >= 0 {
			if err := pr.print(*heads[best]); err != nil {
				return err
			}
			heads[best] = nil
			n++
			continue
		}
		// Nothing ready.
		var live []int
		for i := range chs {
			if follow || !caught[i] {
				live = append(live, i)
			}
		}
		if len(live) == 0 {
			return nil
		}
		if err := wait(live); err != nil || stop {
			return err
		}
	}
	return nil
}

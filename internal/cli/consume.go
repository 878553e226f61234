package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

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

// parseFrom reads --from: earliest, latest, a sequence or an RFC 3339 time.
func parseFrom(v string) (sdk.Start, error) {
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
	return sdk.Start{}, usagef("invalid --from %q: want earliest, latest, a sequence number or an RFC 3339 time", v)
}

// jsonRecord is one line of --format json (documented in README.md,
// "Output of consume --format json"). Keys and values that are not UTF-8
// are given base64-encoded in key_base64 / value_base64 instead, so no byte
// is changed on the way. A tombstone (no value) has neither value nor
// value_base64; an empty value is "value":"". Headers are a list, in the
// record's order, repeated keys kept.
type jsonRecord struct {
	Stream      string       `json:"stream"`
	Shard       int          `json:"shard"`
	Seq         uint64       `json:"seq"`
	Key         *string      `json:"key,omitempty"`
	KeyBase64   []byte       `json:"key_base64,omitempty"`
	Value       *string      `json:"value,omitempty"`
	ValueBase64 []byte       `json:"value_base64,omitempty"`
	Headers     []jsonHeader `json:"headers,omitempty"`
	Time        string       `json:"time,omitempty"`
	IngestTime  string       `json:"ingest_time"`
	Origin      *jsonOrigin  `json:"origin,omitempty"`
}

type jsonHeader struct {
	Key         *string `json:"key,omitempty"`
	KeyBase64   []byte  `json:"key_base64,omitempty"`
	Value       *string `json:"value,omitempty"`
	ValueBase64 []byte  `json:"value_base64,omitempty"`
}

type jsonOrigin struct {
	Hub   string `json:"hub"`
	Shard uint32 `json:"shard"`
	Seq   uint64 `json:"seq"`
}

func toJSON(m sdk.Message) jsonRecord {
	r := m.Record
	j := jsonRecord{Stream: m.Stream, Shard: m.Shard, Seq: r.Seq, IngestTime: time.Unix(0, r.IngestTime).UTC().Format(time.RFC3339Nano)}
	if r.Key != nil {
		if utf8.Valid(r.Key) {
			s := string(r.Key)
			j.Key = &s
		} else {
			j.KeyBase64 = r.Key
		}
	}
	if r.Value != nil {
		if utf8.Valid(r.Value) {
			s := string(r.Value)
			j.Value = &s
		} else {
			j.ValueBase64 = r.Value
		}
	}
	for _, h := range r.Headers {
		var jh jsonHeader
		if utf8.ValidString(h.Key) {
			k := h.Key
			jh.Key = &k
		} else {
			jh.KeyBase64 = []byte(h.Key)
		}
		if utf8.Valid(h.Value) {
			s := string(h.Value)
			jh.Value = &s
		} else {
			jh.ValueBase64 = h.Value
		}
		j.Headers = append(j.Headers, jh)
	}
	if r.Time != 0 {
		j.Time = time.Unix(0, r.Time).UTC().Format(time.RFC3339Nano)
	}
	if !r.Origin.IsLocal() {
		j.Origin = &jsonOrigin{r.Origin.Hub, r.Origin.Shard, r.Origin.Seq}
	}
	return j
}

func consume(ctx context.Context, args []string) error {
	fs := newFlags("consume", "consume STREAM [--from earliest|latest|SEQ|RFC3339] [--shard N | --group NAME [--member ID]] [-n COUNT] [--follow] [--format value|json]")
	df := addDataFlags(fs)
	from := fs.String("from", "earliest", "start `POSITION`: earliest, latest, a sequence number or an RFC 3339 time")
	var shards shardFlags
	fs.Var(&shards, "shard", "read only shard `N` (repeatable; default all)")
	count := fs.Int64("n", 0, "stop after `COUNT` records (0: no limit)")
	follow := fs.Bool("follow", false, "keep waiting for new records (default: stop at the end)")
	fs.BoolVar(follow, "f", false, "short for --follow")
	format := fs.String("format", "value", "output `FORMAT`: value (one value per line) or json (one object per line)")
	group := fs.String("group", "", "consume as a member of consumer `GROUP` (shards shared with its members, offsets committed; see docs/groups.md)")
	member := fs.String("member", "", "member `ID` in --group (default: unique per process)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 1, "stream NAME"); err != nil {
		return err
	}
	start, err := parseFrom(*from)
	if err != nil {
		return err
	}
	if *format != "value" && *format != "json" {
		return usagef("invalid --format %q: want value or json", *format)
	}
	if *group != "" && len(shards) > 0 {
		return usagef("--shard and --group exclude each other: the group assigns the shards")
	}
	c, err := df.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if *group != "" {
		return consumeGroup(ctx, c, pos[0], *group, *member, start, *count, *follow, *format)
	}
	sub, err := c.Subscribe(ctx, pos[0], sdk.ConsumeOptions{Shards: shards, From: start})
	if err != nil {
		return err
	}
	defer sub.Close()
	w := bufio.NewWriterSize(stdout, 64<<10)
	defer w.Flush()
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	var n int64
	for *count == 0 || n < *count {
		if !*follow && sub.CaughtUp() {
			return nil
		}
		if sub.Buffered() == 0 && w.Buffered() > 0 {
			// The next record may take a while: show what we have.
			if err := w.Flush(); err != nil {
				return err
			}
		}
		m, err := sub.Next(ctx)
		if err != nil {
			if errors.Is(err, context.Canceled) {
				return nil // interrupted: what was printed stands
			}
			return err
		}
		n++
		if *format == "json" {
			if err := enc.Encode(toJSON(m)); err != nil {
				return err
			}
		} else {
			w.Write(m.Record.Value)
			if err := w.WriteByte('\n'); err != nil {
				return err
			}
		}
	}
	return nil
}

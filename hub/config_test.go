package hub

import (
	"errors"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/edgehub/edgehub/store"
)

func TestParseConfigValid(t *testing.T) {
	tests := []struct {
		name  string
		toml  string
		check func(t *testing.T, c Config)
	}{
		{
			name: "empty file gives defaults",
			toml: "",
			check: func(t *testing.T, c Config) {
				want := DefaultConfig()
				want.File = "hub.toml"
				if !reflect.DeepEqual(c, want) {
					t.Errorf("got %+v\nwant %+v", c, want)
				}
			},
		},
		{
			name: "every section",
			toml: `
[hub]
name = "edge-01"
site = "plant 7"
region = "eu-west"
tags = ["factory", "eu"]
data_dir = "/var/lib/edgehub"

[listen]
quic = "0.0.0.0:7440"
admin = "[::1]:0"

[store]
sync = "interval"
sync_interval = "250ms"
max_record_bytes = "4MiB"

[[stream]]
name = "sensors"
shards = 8
retention = "168h"
max_bytes = "10GiB"
replicate = "local"

[[stream]]
name = "alerts"
compact = true
tombstone_retention = "1h30m"
max_bytes = 1048576
replicate = ["tag:region", "tag:cloud", "tag:cloud"]
`,
			check: func(t *testing.T, c Config) {
				if c.Hub.Name != "edge-01" || c.Hub.Site != "plant 7" || c.Hub.Region != "eu-west" ||
					!reflect.DeepEqual(c.Hub.Tags, []string{"factory", "eu"}) || c.Hub.DataDir != "/var/lib/edgehub" {
					t.Errorf("hub = %+v", c.Hub)
				}
				if c.Listen.QUIC != "0.0.0.0:7440" || c.Listen.Admin != "[::1]:0" {
					t.Errorf("listen = %+v", c.Listen)
				}
				so := c.StoreOptions()
				if so.Sync != store.SyncInterval || so.SyncInterval != 250*time.Millisecond || so.MaxRecordBytes != 4<<20 || so.Dir != "/var/lib/edgehub" {
					t.Errorf("store options = %+v", so)
				}
				if len(c.Streams) != 2 {
					t.Fatalf("streams = %+v", c.Streams)
				}
				s0, s1 := c.Streams[0].StoreStreamConfig(), c.Streams[1].StoreStreamConfig()
				want0 := store.StreamConfig{Name: "sensors", Shards: 8, Retention: 168 * time.Hour, MaxBytes: 10 << 30,
					TombstoneRetention: 24 * time.Hour, Meta: map[string]string{"replicate": "local"}}
				want1 := store.StreamConfig{Name: "alerts", Shards: 1, MaxBytes: 1 << 20, Compact: true,
					TombstoneRetention: 90 * time.Minute, Meta: map[string]string{"replicate": "tag:cloud,tag:region"}}
				if !reflect.DeepEqual(s0, want0) {
					t.Errorf("stream 0 = %+v, want %+v", s0, want0)
				}
				if !reflect.DeepEqual(s1, want1) {
					t.Errorf("stream 1 = %+v, want %+v", s1, want1)
				}
			},
		},
		{
			name: "dotted keys and inline tables",
			toml: `hub.name = "dotted"
listen = { admin = "127.0.0.1:9000" }
stream = [{ name = "a", shards = 2 }, { name = "b" }]
`,
			check: func(t *testing.T, c Config) {
				if c.Hub.Name != "dotted" || c.Listen.Admin != "127.0.0.1:9000" || c.Listen.QUIC != DefaultQUICAddr {
					t.Errorf("got hub %+v listen %+v", c.Hub, c.Listen)
				}
				if len(c.Streams) != 2 || c.Streams[0].Shards != 2 || c.Streams[1].Shards != 1 || c.Streams[1].Replicate != ReplicateLocal {
					t.Errorf("streams = %+v", c.Streams)
				}
			},
		},
		{
			name: "zero durations and sizes switch limits off",
			toml: "[[stream]]\nname = \"s\"\nretention = 0\nmax_bytes = 0\n",
			check: func(t *testing.T, c Config) {
				if c.Streams[0].Retention != 0 || c.Streams[0].MaxBytes != 0 {
					t.Errorf("stream = %+v", c.Streams[0])
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseConfig("hub.toml", []byte(tt.toml))
			if err != nil {
				t.Fatalf("ParseConfig: %v", err)
			}
			tt.check(t, c)
		})
	}
}

func TestParseConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		toml string
		// want lists every expected problem, in order, as substrings of
		// its message; the number of problems must match.
		want []string
	}{
		{
			name: "unknown key with line and suggestion",
			toml: "[hub]\nname = \"a\"\ndata_dri = \"x\"\n",
			want: []string{`hub.toml:3: hub.data_dri: unknown key (did you mean "data_dir"?)`},
		},
		{
			name: "unknown table",
			toml: "[hub]\nname = \"a\"\n\n[listne]\nquic = \"x\"\n",
			want: []string{`hub.toml:4: listne: unknown table (did you mean "listen"?)`},
		},
		{
			name: "unknown key in the second stream names its element and line",
			toml: "[[stream]]\nname = \"a\"\n\n[[stream]]\nname = \"b\"\nshard = 3\n",
			want: []string{`hub.toml:6: stream[1].shard: unknown key (did you mean "shards"?)`},
		},
		{
			name: "unknown key in a section owned by another part",
			toml: "[gossip]\nno_such_key = 1\n[tls]\nno_such_key = \"x\"\n",
			want: []string{`hub.toml:2: gossip.no_such_key: unknown key`, `hub.toml:4: tls.no_such_key: unknown key`},
		},
		{
			name: "wrong type",
			toml: "[listen]\n\nadmin = 7441\n",
			want: []string{`hub.toml:3: listen.admin: incompatible types: TOML value has type int64; destination has type string`},
		},
		{
			name: "section of the wrong type",
			toml: "hub = \"edge\"\n",
			want: []string{`hub.toml:1: hub: expected a table, found a string`},
		},
		{
			name: "stream written as a table",
			toml: "[stream]\nname = \"a\"\n",
			want: []string{`hub.toml:1: stream: expected an array of tables ([[stream]]), found a table`},
		},
		{
			name: "bad size",
			toml: "[store]\nmax_record_bytes = \"1 parsec\"\n",
			want: []string{`hub.toml:2: store.max_record_bytes: invalid size "1 parsec"`},
		},
		{
			name: "size out of range",
			toml: "[store]\nmax_record_bytes = \"1TiB\"\n",
			want: []string{`hub.toml:2: store.max_record_bytes: 1TiB outside 1B..64MiB`},
		},
		{
			name: "bad duration",
			toml: "[[stream]]\nname = \"a\"\nretention = \"7d\"\n",
			want: []string{`hub.toml:3: stream[0].retention: invalid duration "7d"`},
		},
		{
			name: "duration without unit",
			toml: "[store]\nsync = \"interval\"\nsync_interval = 100\n",
			want: []string{`hub.toml:3: store.sync_interval: invalid duration 100: write it with a unit, e.g. "100s"`},
		},
		{
			name: "negative duration",
			toml: "[[stream]]\nname = \"a\"\nretention = \"-1h\"\n",
			want: []string{`hub.toml:3: stream[0].retention: -1h is negative`},
		},
		{
			name: "invalid stream name",
			toml: "[[stream]]\nname = \"bad name\"\n",
			want: []string{`hub.toml:2: stream[0].name: invalid name: "bad name"`},
		},
		{
			name: "missing stream name points at the element",
			toml: "[hub]\nname = \"a\"\n[[stream]]\nshards = 2\n",
			want: []string{`hub.toml:3: stream[0].name: invalid name: empty`},
		},
		{
			name: "duplicate stream",
			toml: "[[stream]]\nname = \"a\"\n[[stream]]\nname = \"a\"\n",
			want: []string{`hub.toml:4: stream[1].name: stream "a" is already declared by stream[0]`},
		},
		{
			name: "shards out of range",
			toml: "[[stream]]\nname = \"a\"\nshards = 0\n[[stream]]\nname = \"b\"\nshards = 1025\n",
			want: []string{`hub.toml:3: stream[0].shards: 0 outside 1..1024`, `hub.toml:6: stream[1].shards: 1025 outside 1..1024`},
		},
		{
			name: "bad replication policy",
			toml: "[[stream]]\nname = \"a\"\nreplicate = [\"tag:eu\", \"region\"]\n[[stream]]\nname = \"b\"\nreplicate = \"some\"\n",
			want: []string{`hub.toml:3: stream[0].replicate: invalid replication policy item "region"`,
				`hub.toml:6: stream[1].replicate: invalid replication policy item "some"`},
		},
		{
			name: "bad listen addresses and sync",
			toml: "[listen]\nquic = \"nope\"\nadmin = \"127.0.0.1:99999\"\n[store]\nsync = \"sometimes\"\n",
			want: []string{`hub.toml:2: listen.quic: "nope" is not host:port`, `hub.toml:3: listen.admin: "127.0.0.1:99999": port "99999" is not a number`,
				`hub.toml:5: store.sync: "sometimes" is not one of "always", "interval"`},
		},
		{
			name: "interval sync needs a positive interval",
			toml: "[store]\nsync = \"interval\"\nsync_interval = \"0s\"\n",
			want: []string{`hub.toml:3: store.sync_interval: 0s must be positive`},
		},
		{
			name: "bad tag and hub name",
			toml: "[hub]\nname = \"my hub\"\ntags = [\"ok\", \"not ok\"]\n",
			want: []string{`hub.toml:2: hub.name: invalid name`, `hub.toml:3: hub.tags[1]: invalid name: "not ok"`},
		},
		{
			name: "syntax error",
			toml: "[hub]\nname = \"a\"\nsite = \n",
			want: []string{`hub.toml:3: `},
		},
		{
			name: "duplicate key",
			toml: "[hub]\nname = \"a\"\nname = \"b\"\n",
			want: []string{`hub.toml:3: Key 'hub.name' has already been defined`},
		},
		{
			name: "multi-line values do not confuse the line finder",
			toml: "[hub]\ntags = [\n  \"a\",\n  \"b\",\n]\nsite = \"\"\"\n[fake]\nbogus = 1\n\"\"\"\nbogus = 2 # here\n",
			want: []string{`hub.toml:10: hub.bogus: unknown key`},
		},
		{
			name: "all problems at once, sorted by line",
			toml: `[hub]
name = "edge 1"
tagz = ["a"]
data_dir = 5

[[stream]]
name = "ok"
shards = "four"
retention = "7d"
colour = "red"

[[stream]]
name = "ok"
max_bytes = -5

[nonsense]
x = 1
`,
			want: []string{
				`hub.toml:2: hub.name: invalid name`,
				`hub.toml:3: hub.tagz: unknown key (did you mean "tags"?)`,
				`hub.toml:4: hub.data_dir: incompatible types`,
				`hub.toml:8: stream[0].shards: incompatible types`,
				`hub.toml:9: stream[0].retention: invalid duration "7d"`,
				`hub.toml:10: stream[0].colour: unknown key`,
				`hub.toml:13: stream[1].name: stream "ok" is already declared by stream[0]`,
				`hub.toml:14: stream[1].max_bytes: invalid size -5: negative`,
				`hub.toml:16: nonsense: unknown table`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig("hub.toml", []byte(tt.toml))
			if err == nil {
				t.Fatal("ParseConfig succeeded, want errors")
			}
			got := flatten(err)
			for _, e := range got {
				if !errors.As(e, new(*ConfigError)) {
					t.Errorf("problem %q is a %T, want *ConfigError", e, e)
				}
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d problems, want %d:\n%v", len(got), len(tt.want), err)
			}
			for i, w := range tt.want {
				if !strings.Contains(got[i].Error(), w) {
					t.Errorf("problem %d = %q, want it to contain %q", i, got[i], w)
				}
			}
		})
	}
}

func TestConfigErrorWrapsCause(t *testing.T) {
	_, err := ParseConfig("x.toml", []byte("[[stream]]\nname = \"-bad\"\n"))
	if !errors.Is(err, store.ErrInvalidName) {
		t.Fatalf("err = %v, want it to wrap store.ErrInvalidName", err)
	}
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.File != "x.toml" || ce.Line != 2 || ce.Key != "stream[0].name" {
		t.Fatalf("ConfigError = %+v", ce)
	}
}

func TestInSection(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want []string
	}{
		{name: "nil", err: nil, want: nil},
		{name: "plain error goes to the section", err: errors.New("boom"), want: []string{"tls: boom"}},
		{name: "field errors get the prefix", err: errors.Join(fieldErrorf("cert_file", "missing"), fieldError("key_file", errors.New("unreadable"))),
			want: []string{"tls.cert_file: missing", "tls.key_file: unreadable"}},
		{name: "nested joins flatten", err: errors.Join(errors.Join(errors.New("a"), fieldErrorf("b", "c"))), want: []string{"tls: a", "tls.b: c"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, e := range flatten(inSection("tls", tt.err)) {
				got = append(got, e.Error())
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestRepoHubToml keeps the documented hub.toml valid and equal to the
// built-in defaults, and its commented [[stream]] example valid.
func TestRepoHubToml(t *testing.T) {
	data, err := os.ReadFile("../hub.toml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseConfig("hub.toml", data)
	if err != nil {
		t.Fatalf("hub.toml: %v", err)
	}
	want := DefaultConfig()
	want.File = "hub.toml"
	// `tags = []` documents an empty list; the default is nil.
	nilEmptySlices(reflect.ValueOf(&c).Elem())
	if !reflect.DeepEqual(c, want) {
		t.Errorf("hub.toml differs from DefaultConfig:\n got %+v\nwant %+v", c, want)
	}

	// Uncomment the example stream and check it decodes to the defaults.
	_, example, ok := strings.Cut(string(data), "# [[stream]]")
	if !ok {
		t.Fatal("hub.toml has no commented [[stream]] example")
	}
	var b strings.Builder
	b.WriteString("[[stream]]\n")
	for _, line := range strings.Split(example, "\n")[1:] {
		if !strings.HasPrefix(line, "#") {
			break // the example ends at the first uncommented line
		}
		if rest, ok := strings.CutPrefix(line, "# "); ok && !strings.HasPrefix(rest, "# ") {
			b.WriteString(rest + "\n")
		}
	}
	c, err = ParseConfig("example", []byte(b.String()))
	if err != nil {
		t.Fatalf("stream example:\n%s\n%v", b.String(), err)
	}
	var def StreamConfig
	def.setDefaults()
	def.Name = c.Streams[0].Name
	// [stream.autosplit] is optional, so its example has no default to
	// equal: it must be present and valid (ParseConfig checked that).
	if c.Streams[0].Autosplit == nil {
		t.Error("the stream example lacks its [stream.autosplit]")
	}
	c.Streams[0].Autosplit = nil
	if !reflect.DeepEqual(c.Streams[0], def) {
		t.Errorf("stream example = %+v, want the defaults %+v", c.Streams[0], def)
	}
}

// TestRepoHubTomlExamples uncomments every commented key and table header
// of hub.toml and checks that the schema knows them all with the right
// types. (Values such as file paths may fail validation; that is fine.)
func TestRepoHubTomlExamples(t *testing.T) {
	data, err := os.ReadFile("../hub.toml")
	if err != nil {
		t.Fatal(err)
	}
	commented := regexp.MustCompile(`^# (\[|[a-z0-9_.]+ = )`)
	var b strings.Builder
	n := 0
	for _, line := range strings.Split(string(data), "\n") {
		if commented.MatchString(line) {
			line = line[2:]
			n++
		}
		b.WriteString(line + "\n")
	}
	if n < 50 {
		t.Fatalf("only %d commented examples found; did hub.toml's comment style change?", n)
	}
	_, err = ParseConfig("hub.toml", []byte(b.String()))
	for _, e := range flatten(err) {
		msg := e.Error()
		for _, bad := range []string{"unknown key", "unknown table", "incompatible types", "expected a", "invalid size", "invalid duration", "already been defined"} {
			if strings.Contains(msg, bad) {
				t.Errorf("documented example does not match the schema: %s", msg)
			}
		}
	}
}

// nilEmptySlices replaces empty slices in v (recursively, settable fields
// only) with nil.
func nilEmptySlices(v reflect.Value) {
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Field(i).CanSet() {
				nilEmptySlices(v.Field(i))
			}
		}
	case reflect.Slice:
		if v.Len() == 0 {
			v.Set(reflect.Zero(v.Type()))
			return
		}
		for i := range v.Len() {
			nilEmptySlices(v.Index(i))
		}
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		name, in string
		want     Size
		str      string
		err      bool
	}{
		{name: "bytes", in: "1048576", want: 1 << 20, str: "1MiB"},
		{name: "binary", in: "10GiB", want: 10 << 30, str: "10GiB"},
		{name: "decimal", in: "512MB", want: 512e6, str: "512MB"},
		{name: "lower case and space", in: " 4 kib ", want: 4096, str: "4KiB"},
		{name: "B suffix", in: "100B", want: 100, str: "100B"},
		{name: "fraction", in: "1.5GiB", want: 3 << 29, str: "1536MiB"},
		{name: "zero", in: "0", want: 0, str: "0"},
		{name: "tebibytes", in: "2TiB", want: 2 << 40, str: "2TiB"},
		{name: "odd bytes", in: "1001", want: 1001, str: "1001B"},
		{name: "unknown unit", in: "10XB", err: true},
		{name: "no number", in: "GiB", err: true},
		{name: "negative", in: "-1", err: true},
		{name: "empty", in: "", err: true},
		{name: "overflow", in: "9000000TiB", err: true},
		{name: "int overflow", in: "99999999999999999999", err: true},
		{name: "two dots", in: "1.2.3MB", err: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseSize(tt.in)
			if tt.err {
				if err == nil {
					t.Fatalf("ParseSize(%q) = %d, want an error", tt.in, got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
			}
			if got.String() != tt.str {
				t.Errorf("String() = %q, want %q", got.String(), tt.str)
			}
			if back, err := ParseSize(got.String()); err != nil || back != got {
				t.Errorf("ParseSize(String()) = %d, %v; want %d", back, err, got)
			}
		})
	}
}

func TestDurationString(t *testing.T) {
	tests := []struct {
		name string
		in   time.Duration
		want string
	}{
		{name: "hours", in: 168 * time.Hour, want: "168h"},
		{name: "hours and minutes", in: 90 * time.Minute, want: "1h30m"},
		{name: "minutes", in: 5 * time.Minute, want: "5m"},
		{name: "seconds kept", in: time.Hour + time.Second, want: "1h0m1s"},
		{name: "millis", in: 250 * time.Millisecond, want: "250ms"},
		{name: "zero", in: 0, want: "0s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Duration(tt.in).String()
			if got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
			if back, err := ParseDuration(got); err != nil || time.Duration(back) != tt.in {
				t.Errorf("ParseDuration(%q) = %v, %v", got, back, err)
			}
		})
	}
}

func TestReplicate(t *testing.T) {
	tests := []struct {
		name string
		in   any // string or []any, as TOML gives them
		want Replicate
		tags []string
		err  bool
	}{
		{name: "local", in: "local", want: ReplicateLocal},
		{name: "empty is local", in: "", want: ReplicateLocal},
		{name: "all", in: "all", want: ReplicateAll},
		{name: "one tag as string", in: "tag:eu", want: "tag:eu", tags: []string{"eu"}},
		{name: "list sorted and deduplicated", in: []any{"tag:b", "tag:a", "tag:b"}, want: "tag:a,tag:b", tags: []string{"a", "b"}},
		{name: "empty list", in: []any{}, err: true},
		{name: "all inside a list", in: []any{"all"}, err: true},
		{name: "bad tag name", in: []any{"tag:no good"}, err: true},
		{name: "not a string", in: []any{int64(3)}, err: true},
		{name: "integer", in: int64(1), err: true},
		{name: "unknown word", in: "everywhere", err: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r Replicate
			err := r.UnmarshalTOML(tt.in)
			if tt.err {
				if err == nil {
					t.Fatalf("got %q, want an error", r)
				}
				return
			}
			if err != nil || r != tt.want {
				t.Fatalf("got %q, %v; want %q", r, err, tt.want)
			}
			if !reflect.DeepEqual(r.Tags(), tt.tags) {
				t.Errorf("Tags() = %q, want %q", r.Tags(), tt.tags)
			}
			if back, err := ParseReplicate(string(r)); err != nil || back != r {
				t.Errorf("ParseReplicate(%q) = %q, %v", r, back, err)
			}
		})
	}
}

// configKeys returns every key the schema of t accepts, as dotted paths
// ("plugin.max_wait"; an array of tables contributes its element's keys).
// A type that decodes itself (toml.Unmarshaler) or a map is one key.
func configKeys(t reflect.Type, prefix string) []string {
	unmarshaler := reflect.TypeFor[toml.Unmarshaler]()
	var keys []string
	for i := range t.NumField() {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if tag == "" || tag == "-" {
			continue
		}
		ft := f.Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct && !reflect.PointerTo(ft).Implements(unmarshaler) {
			keys = append(keys, configKeys(ft, prefix+tag+".")...)
			continue
		}
		keys = append(keys, prefix+tag)
	}
	return keys
}

// TestRepoHubTomlListsEveryKey: every key the configuration accepts is
// shown in hub.toml (set, or as a commented example under its table header)
// and listed in docs/config.md's index of keys, and the index names no key
// the schema lacks. A new key fails here until both document it.
func TestRepoHubTomlListsEveryKey(t *testing.T) {
	// Keys the decoder accepts because a type is shared, but validation
	// refuses: not documented, and checked to be refused.
	refused := map[string]string{"auth.anonymous.name": "[auth.anonymous]\nname = \"x\"\n"}
	for k, file := range refused {
		if _, err := ParseConfig("hub.toml", []byte(file)); err == nil || !strings.Contains(err.Error(), k[len("auth."):]) {
			t.Errorf("%s: want a refusal naming the key, got %v", k, err)
		}
	}
	keys := slices.DeleteFunc(configKeys(reflect.TypeFor[Config](), ""), func(k string) bool { return refused[k] != "" })
	if len(keys) < 90 {
		t.Fatalf("only %d keys found in the schema; did configKeys break?", len(keys))
	}

	data, err := os.ReadFile("../hub.toml")
	if err != nil {
		t.Fatal(err)
	}
	header := regexp.MustCompile(`^(?:# )?\[\[?([a-z0-9_.]+)\]\]?`)
	key := regexp.MustCompile(`^(?:# )?([a-z0-9_]+) = `)
	inToml := map[string]bool{}
	section := ""
	for _, line := range strings.Split(string(data), "\n") {
		if m := header.FindStringSubmatch(line); m != nil {
			section = m[1] + "."
			inToml[m[1]] = true // a table is its key too: [plugin.config]
		} else if m := key.FindStringSubmatch(line); m != nil {
			inToml[section+m[1]] = true
		}
	}

	doc, err := os.ReadFile("../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	_, index, ok := strings.Cut(string(doc), "\n## Index of keys\n")
	if !ok {
		t.Fatal(`docs/config.md has no "## Index of keys" section`)
	}
	index, _, _ = strings.Cut(index, "\n## ")
	// Rows: | `[section]` or `[[section]]` | `key`, `key`, ... | see |
	row := regexp.MustCompile("(?m)^\\| `\\[\\[?([a-z0-9_.]+)\\]\\]?` \\| ([^|]*) \\|")
	word := regexp.MustCompile("`([a-z0-9_]+)`")
	inDoc := map[string]bool{}
	for _, m := range row.FindAllStringSubmatch(index, -1) {
		for _, w := range word.FindAllStringSubmatch(m[2], -1) {
			inDoc[m[1]+"."+w[1]] = true
		}
	}

	for _, k := range keys {
		if !inToml[k] {
			t.Errorf("hub.toml does not show key %s (add it with its default, commented if it has none)", k)
		}
		if !inDoc[k] {
			t.Errorf("docs/config.md's index of keys does not list %s", k)
		}
		delete(inDoc, k)
	}
	for k := range inDoc {
		t.Errorf("docs/config.md's index of keys lists %s, which the configuration does not accept", k)
	}
}

package stricttoml

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// limit is decoded in one piece by its own UnmarshalTOML, like hub.Size.
type limit int64

func (l *limit) UnmarshalTOML(v any) error {
	n, ok := v.(int64)
	if !ok || n < 0 {
		return fmt.Errorf("invalid limit %v", v)
	}
	*l = limit(n)
	return nil
}

type item struct {
	Name  string `toml:"name"`
	Count int    `toml:"count"`
	Sub   struct {
		K int `toml:"k"`
	} `toml:"sub"`
}

type schema struct {
	Name   string `toml:"name"`
	Server struct {
		Addr string `toml:"addr"`
		Port int    `toml:"port"`
	} `toml:"server"`
	Items  []item   `toml:"item"`
	Tags   []string `toml:"tags"`
	Limit  limit    `toml:"limit"`
	Limits []limit  `toml:"limits"`
	Opt    *opt     `toml:"opt"`
	Skip   string   `toml:"-"`
	//lint:ignore U1000 an unexported field is not part of the schema, even with a tag
	hidden string `toml:"hidden"`
}

// opt is an optional table: nil unless the document has [opt].
type opt struct {
	A int `toml:"a"`
	B int `toml:"b"`
}

// itemDefaults is the defaults hook: every new [[item]] starts with Count 7,
// an [opt] with B 3.
func itemDefaults(elem any) {
	if it, ok := elem.(*item); ok {
		it.Count = 7
	}
	if o, ok := elem.(*opt); ok {
		o.B = 3
	}
}

func decode(t testing.TB, doc string) (schema, []error) {
	t.Helper()
	d, err := Parse(doc)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	s := schema{Name: "default"}
	return s, d.Decode(&s, itemDefaults)
}

func TestDecodeValid(t *testing.T) {
	s, errs := decode(t, `tags = ["a", "b"]
limit = 5
limits = [1, 2]

[server]
addr = "x"

[[item]]
name = "one"

[[item]]
name = "two"
count = 3
sub.k = 9
`)
	if len(errs) > 0 {
		t.Fatalf("problems: %v", errs)
	}
	if s.Name != "default" {
		t.Errorf("Name = %q: a key the document does not mention must keep its value", s.Name)
	}
	if s.Server.Addr != "x" || s.Limit != 5 || len(s.Limits) != 2 || strings.Join(s.Tags, ",") != "a,b" {
		t.Errorf("decoded %+v", s)
	}
	if len(s.Items) != 2 || s.Items[0].Count != 7 || s.Items[1].Count != 3 || s.Items[1].Sub.K != 9 {
		t.Errorf("items = %+v, want the defaults hook's Count 7 where count is not given", s.Items)
	}
}

// TestDecodeOptionalTable: a pointer to a struct is nil when the document
// lacks its table, and otherwise starts from the defaults hook; its keys
// are checked like any table's.
func TestDecodeOptionalTable(t *testing.T) {
	if s, errs := decode(t, "name = \"x\"\n"); len(errs) > 0 || s.Opt != nil {
		t.Fatalf("without [opt]: %+v, %v; want nil", s.Opt, errs)
	}
	s, errs := decode(t, "[opt]\na = 1\n")
	if len(errs) > 0 || s.Opt == nil || s.Opt.A != 1 || s.Opt.B != 3 {
		t.Fatalf("[opt] a = 1: %+v, %v; want {A:1 B:3}", s.Opt, errs)
	}
	if s, errs := decode(t, "[opt]\n"); len(errs) > 0 || s.Opt == nil || s.Opt.B != 3 {
		t.Fatalf("empty [opt]: %+v, %v; want the defaults", s.Opt, errs)
	}
	if s, errs := decode(t, "opt = 1\n"); len(errs) != 1 || s.Opt != nil || !strings.HasPrefix(errs[0].Error(), `line 1: opt: expected a table`) {
		t.Fatalf("opt = 1: %+v, %v; want nil and one problem", s.Opt, errs)
	}
	_, errs = decode(t, "[opt]\na = 1\nc = 2\n")
	if len(errs) != 1 || !strings.HasPrefix(errs[0].Error(), `line 3: opt.c: unknown key`) {
		t.Fatalf("unknown key in [opt]: %v", errs)
	}
}

func TestDecodeProblems(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		// want lists every problem in order as "line key: message" prefixes.
		want []string
	}{
		{
			name: "unknown key with suggestion",
			doc:  "[server]\naddr = \"a\"\nprot = 1\n",
			want: []string{`line 3: server.prot: unknown key (did you mean "port"?)`},
		},
		{
			name: "unknown table",
			doc:  "name = \"a\"\n\n[sever]\naddr = \"x\"\n",
			want: []string{`line 3: sever: unknown table (did you mean "server"?)`},
		},
		{
			name: "unknown key in the second element names its element and line",
			doc:  "[[item]]\nname = \"a\"\n[[item]]\nname = \"b\"\ncout = 1\n",
			want: []string{`line 5: item[1].cout: unknown key (did you mean "count"?)`},
		},
		{
			name: "unknown key in a nested table of an element",
			doc:  "[[item]]\nname = \"a\"\n[item.sub]\nj = 1\n",
			want: []string{`line 4: item[0].sub.j: unknown key (did you mean "k"?)`},
		},
		{
			name: "fields without a tag or unexported are not in the schema",
			doc:  "Skip = \"x\"\nhidden = \"y\"\n",
			want: []string{`line 1: Skip: unknown key`, `line 2: hidden: unknown key`},
		},
		{
			name: "wrong type",
			doc:  "[server]\n\nport = \"80\"\n",
			want: []string{`line 3: server.port: incompatible types: TOML value has type string; destination has type integer`},
		},
		{
			name: "a table of the wrong type",
			doc:  "server = 1\n",
			want: []string{`line 1: server: expected a table, found an integer`},
		},
		{
			name: "an array of tables written as a table",
			doc:  "[item]\nname = \"a\"\n",
			want: []string{`line 1: item: expected an array of tables ([[item]]), found a table`},
		},
		{
			name: "an Unmarshaler's refusal without the decoder's prefix",
			doc:  "limit = -1\nlimits = [1, \"x\"]\n",
			want: []string{`line 1: limit: invalid limit -1`, `line 2: limits: invalid limit x`},
		},
		{
			name: "multi-line values do not confuse the line finder",
			doc:  "tags = [\n  \"a\",\n]\nname = \"\"\"\n[fake]\nbogus = 1\n\"\"\"\nbogus = 2 # here\n",
			want: []string{`line 8: bogus: unknown key`},
		},
		{
			name: "empty and dotted quoted keys are named as TOML quotes them",
			doc:  "\"\" = 0\n[server]\n\"po.rt\" = 1\n\"prot\" = 2\n",
			want: []string{
				`line 1: "": unknown key`,
				`line 3: server."po.rt": unknown key`,
				`line 4: server.prot: unknown key (did you mean "port"?)`,
			},
		},
		{
			name: "every problem, in the order of the walk",
			doc:  "zzz = 1\n[server]\nport = \"x\"\naddr = 2\n[[item]]\ncount = \"n\"\n",
			want: []string{
				`line 6: item[0].count: incompatible types`,
				`line 4: server.addr: incompatible types`,
				`line 3: server.port: incompatible types`,
				`line 1: zzz: unknown key`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, errs := decode(t, tt.doc)
			for _, e := range errs {
				if !errors.As(e, new(*Error)) {
					t.Errorf("problem %q is a %T, want *Error", e, e)
				}
			}
			if len(errs) != len(tt.want) {
				t.Fatalf("got %d problems, want %d:\n%v", len(errs), len(tt.want), errors.Join(errs...))
			}
			for i, w := range tt.want {
				if !strings.HasPrefix(errs[i].Error(), w) {
					t.Errorf("problem %d = %q, want it to start with %q", i, errs[i], w)
				}
			}
		})
	}
}

func TestParseSyntaxError(t *testing.T) {
	for _, doc := range []string{"name = \"a\"\nport = \n", "a = 1\na = 2\n"} {
		d, err := Parse(doc)
		var e *Error
		if d != nil || !errors.As(err, &e) || e.Line != 2 || e.Key != "" {
			t.Errorf("Parse(%q) = %v, %#v; want an *Error at line 2 without a key", doc, d, err)
		}
	}
}

func TestDocLine(t *testing.T) {
	d, err := Parse("name = \"a\"\n[[item]]\nname = \"x\"\n[[item]]\ncount = 2\n")
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]int{
		"name":          1,
		"item[0].name":  3,
		"item[1].count": 5,
		"item[1].name":  4, // absent: its element's line
		"item":          2, // the array as a whole: its first element
		"server.port":   0,
	} {
		if got := d.Line(key); got != want {
			t.Errorf("Line(%q) = %d, want %d", key, got, want)
		}
	}
}

func TestDecodeNeedsAStructPointer(t *testing.T) {
	d, err := Parse("a = 1\n")
	if err != nil {
		t.Fatal(err)
	}
	var s schema
	if errs := d.Decode(s, nil); len(errs) != 1 {
		t.Fatalf("Decode into a struct value = %v, want one problem", errs)
	}
}

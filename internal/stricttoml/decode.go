package stricttoml

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/edgehub/edgehub/internal/suggest"
)

// Error is one problem in a document: the line and key it concerns and what
// is wrong.
type Error struct {
	Line int    // 0 when unknown
	Key  string // dotted path such as "stream[1].shards"; "" for the whole document
	Err  error
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Err.Error())
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// Doc is a parsed TOML document.
type Doc struct {
	md    toml.MetaData
	top   map[string]toml.Primitive
	lines lineIndex
}

// Parse parses doc. A syntax error is returned as an *Error with its line.
func Parse(doc string) (*Doc, error) {
	// Decode the document into one Primitive per top-level key, so Decode
	// can walk it key by key and report every problem instead of stopping
	// at the first.
	var top map[string]toml.Primitive
	md, err := toml.Decode(doc, &top)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, &Error{Line: pe.Position.Line, Err: fmt.Errorf("%s", pe.Message)}
		}
		return nil, &Error{Err: err}
	}
	return &Doc{md: md, top: top, lines: indexLines(doc)}, nil
}

// Line returns the line that defines key (a dotted path as in Error.Key), or
// of its closest ancestor defined in the document, or 0.
func (d *Doc) Line(key string) int { return d.lines.find(key) }

// Decode decodes the document into the struct v points to and returns every
// problem, each an *Error, in the order the walk met them. Fields the
// document does not mention keep their values. When defaults is not nil it
// is called with a pointer to each new element of an array of tables before
// the element is decoded, so the element can start from its defaults.
func (d *Doc) Decode(v any, defaults func(elem any)) []error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.Elem().Kind() != reflect.Struct {
		return []error{&Error{Err: fmt.Errorf("decode into %T: want a pointer to a struct", v)}}
	}
	dec := &decoder{md: d.md, lines: d.lines, defaults: defaults, reported: map[string]bool{}}
	dec.fields("", d.top, rv.Elem())
	dec.checkUndecoded()
	return dec.errs
}

// decoder walks the destination struct, decoding each key on its own so
// that one bad value does not hide the next.
type decoder struct {
	md       toml.MetaData
	lines    lineIndex
	defaults func(any)
	errs     []error
	reported map[string]bool // index-free paths of keys reported as unknown
}

var (
	unmarshalerType     = reflect.TypeFor[toml.Unmarshaler]()
	textUnmarshalerType = reflect.TypeFor[interface{ UnmarshalText([]byte) error }]()
)

// isLeaf reports whether values of t are decoded in one piece.
func isLeaf(t reflect.Type) bool {
	if optionalTable(t) {
		return false
	}
	pt := reflect.PointerTo(t)
	if pt.Implements(unmarshalerType) || pt.Implements(textUnmarshalerType) {
		return true
	}
	switch t.Kind() {
	case reflect.Struct:
		return false
	case reflect.Slice:
		return isLeaf(t.Elem())
	}
	return true
}

// optionalTable reports whether t is a pointer to a struct decoded key by
// key (a table the document may leave out: [stream.autosplit]).
func optionalTable(t reflect.Type) bool {
	return t.Kind() == reflect.Pointer && t.Elem().Kind() == reflect.Struct && !isLeaf(t.Elem())
}

func (d *decoder) fail(key string, err error) {
	e := &Error{Key: key, Line: d.lines.find(key)}
	var pe toml.ParseError
	if errors.As(err, &pe) {
		if e.Line == 0 {
			e.Line = pe.Position.Line
		}
		e.Err = errors.New(pe.Message)
		if u := errors.Unwrap(pe); u != nil {
			e.Err = u
		}
	} else {
		e.Err = errors.New(tomlPrefix.ReplaceAllString(err.Error(), ""))
	}
	d.errs = append(d.errs, e)
}

var tomlPrefix = regexp.MustCompile(`^toml: (line \d+ )?(\(last key "[^"]*"\): )?`)

// unknown reports a key that is not part of the schema, suggesting the
// closest known key of the same table.
func (d *decoder) unknown(key string, known []string) {
	d.reported[stripIndexes(key)] = true
	what := "unknown key"
	if t := d.md.Type(splitKey(stripIndexes(key))...); t == "Hash" || t == "ArrayHash" {
		what = "unknown table"
	}
	name := key[lastSep(key, ".")+1:]
	if parts := splitKey(name); len(parts) == 1 {
		name = parts[0]
	}
	if s := suggest.Closest(name, known); s != "" {
		what += fmt.Sprintf(" (did you mean %q?)", s)
	}
	d.errs = append(d.errs, &Error{Line: d.lines.find(key), Key: key, Err: errors.New(what)})
}

// table decodes the TOML table in prim into the struct rv; false if prim
// is not a table.
func (d *decoder) table(path string, prim toml.Primitive, rv reflect.Value) bool {
	// The TOML decoder silently ignores a non-table value decoded into a
	// map, so check the kind first.
	var raw any
	if err := d.md.PrimitiveDecode(prim, &raw); err != nil {
		d.fail(path, err)
		return false
	}
	if _, ok := raw.(map[string]any); !ok {
		d.reported[stripIndexes(path)] = true
		d.fail(path, fmt.Errorf("expected a table, found %s", tomlKind(raw)))
		return false
	}
	var m map[string]toml.Primitive
	if err := d.md.PrimitiveDecode(prim, &m); err != nil {
		d.fail(path, err)
		return false
	}
	d.fields(path, m, rv)
	return true
}

// isArrayOfTables reports whether v is [[x]] elements or an array of inline
// tables (possibly empty).
func isArrayOfTables(v any) bool {
	switch v := v.(type) {
	case []map[string]any:
		return true
	case []any:
		for _, e := range v {
			if _, ok := e.(map[string]any); !ok {
				return false
			}
		}
		return true
	}
	return false
}

// tomlKind names the kind of a raw TOML value for messages.
func tomlKind(v any) string {
	switch v.(type) {
	case map[string]any:
		return "a table"
	case []map[string]any:
		return "an array of tables"
	case []any:
		return "an array"
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	}
	return "a date or time"
}

// fields decodes the keys of a table into the struct rv.
func (d *decoder) fields(path string, m map[string]toml.Primitive, rv reflect.Value) {
	fields := map[string]int{}
	var known []string
	t := rv.Type()
	for i := range t.NumField() {
		tag, _, _ := strings.Cut(t.Field(i).Tag.Get("toml"), ",")
		if tag != "" && tag != "-" && t.Field(i).IsExported() {
			fields[tag] = i
			known = append(known, tag)
		}
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		key := joinKey(path, quoteKey(k))
		i, ok := fields[k]
		if !ok {
			d.unknown(key, known)
			continue
		}
		d.value(key, m[k], rv.Field(i))
	}
}

func (d *decoder) value(key string, prim toml.Primitive, fv reflect.Value) {
	t := fv.Type()
	switch {
	case isLeaf(t):
		if err := d.md.PrimitiveDecode(prim, fv.Addr().Interface()); err != nil {
			d.fail(key, err)
		}
	case t.Kind() == reflect.Struct:
		d.table(key, prim, fv)
	case optionalTable(t):
		// An optional table: nil when the document lacks it, else a new
		// value that starts from its defaults, like an element of [[x]].
		ev := reflect.New(t.Elem())
		if d.defaults != nil {
			d.defaults(ev.Interface())
		}
		if d.table(key, prim, ev.Elem()) {
			fv.Set(ev)
		}
	case t.Kind() == reflect.Slice:
		var raw any
		if err := d.md.PrimitiveDecode(prim, &raw); err != nil {
			d.fail(key, err)
			return
		}
		if !isArrayOfTables(raw) {
			d.reported[stripIndexes(key)] = true
			d.fail(key, fmt.Errorf("expected an array of tables ([[%s]]), found %s", key, tomlKind(raw)))
			return
		}
		var elems []toml.Primitive
		if err := d.md.PrimitiveDecode(prim, &elems); err != nil {
			d.fail(key, err)
			return
		}
		out := reflect.MakeSlice(t, 0, len(elems))
		for i, p := range elems {
			ev := reflect.New(t.Elem())
			if d.defaults != nil {
				d.defaults(ev.Interface())
			}
			d.table(fmt.Sprintf("%s[%d]", key, i), p, ev.Elem())
			out = reflect.Append(out, ev.Elem())
		}
		fv.Set(out)
	}
}

// checkUndecoded reports keys the walk did not consume and did not already
// report (a safety net: e.g. keys inside a value some section decodes itself).
func (d *decoder) checkUndecoded() {
	for _, k := range d.md.Undecoded() {
		path := k.String()
		covered := false
		for p := path; ; {
			if d.reported[p] {
				covered = true
				break
			}
			i := lastSep(p, ".")
			if i < 0 {
				break
			}
			p = p[:i]
		}
		if covered || d.md.Type(k...) == "Hash" || d.md.Type(k...) == "ArrayHash" {
			continue
		}
		d.unknown(path, nil)
	}
}

// quoteKey renders one key part as TOML writes it, quoted unless it is a
// bare key, so a path names "" or "a.b" unambiguously.
func quoteKey(k string) string { return toml.Key{k}.String() }

// lastSep returns the index of the last byte of seps in key outside quotes,
// or -1.
func lastSep(key, seps string) int {
	last := -1
	var q byte
	for i := 0; i < len(key); i++ {
		switch c := key[i]; {
		case q != 0:
			if c == '\\' && q == '"' {
				i++
			} else if c == q {
				q = 0
			}
		case c == '"' || c == '\'':
			q = c
		case strings.IndexByte(seps, c) >= 0:
			last = i
		}
	}
	return last
}

func joinKey(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

var indexRE = regexp.MustCompile(`\[\d+\]`)

func stripIndexes(key string) string { return indexRE.ReplaceAllString(key, "") }

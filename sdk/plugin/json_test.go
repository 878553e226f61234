package plugin

import (
	"bytes"
	"encoding/json"
	"testing"
)

func TestNumberField(t *testing.T) {
	tests := []struct {
		name, doc, field string
		want             float64
		ok               bool
	}{
		{name: "simple", doc: `{"value":21.5}`, field: "value", want: 21.5, ok: true},
		{name: "after others", doc: ` { "sensor" : "s\"1", "tags": {"value": 3}, "list": [1, "]", {"a":[]}], "ok": true, "value" : -1e3 } `, field: "value", want: -1000, ok: true},
		{name: "missing", doc: `{"other":1}`, field: "value"},
		{name: "string value", doc: `{"value":"21"}`, field: "value"},
		{name: "not an object", doc: `[{"value":1}]`, field: "value"},
		{name: "nested only", doc: `{"a":{"value":1}}`, field: "value"},
		{name: "truncated", doc: `{"value":`, field: "value"},
		{name: "garbage", doc: `{"value" 1}`, field: "value"},
		{name: "null", doc: `{"value":null}`, field: "value"},
		{name: "escaped key", doc: `{"valu\u0065":1}`, field: "value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := NumberField([]byte(tt.doc), tt.field)
			if ok != tt.ok || got != tt.want {
				t.Fatalf("NumberField(%s, %q) = %v, %v; want %v, %v", tt.doc, tt.field, got, ok, tt.want, tt.ok)
			}
		})
	}
}

// FuzzNumberField checks NumberField against encoding/json on valid
// documents, and that it never panics on anything.
func FuzzNumberField(f *testing.F) {
	f.Add([]byte(`{"value":21.5,"x":"y"}`))
	f.Add([]byte(`{"a":[1,{"value":2}],"value":-3}`))
	f.Fuzz(func(t *testing.T, doc []byte) {
		got, ok := NumberField(doc, "value")
		var m map[string]any
		if json.Unmarshal(doc, &m) != nil {
			return
		}
		want, isNum := m["value"].(float64)
		// encoding/json keeps the last of duplicate keys; NumberField the
		// first: compare only documents with one key "value". Spelled with
		// escapes ("valu\u0065") it never matches, as documented.
		switch n, plain := countKey(doc, "value"); {
		case n != 1:
		case !plain && ok:
			t.Fatalf("%s: NumberField matched an escaped key", doc)
		case plain && isNum && !ok:
			t.Fatalf("%s: NumberField missed %v", doc, want)
		case ok && (!isNum || got != want):
			t.Fatalf("%s: NumberField = %v, encoding/json %v", doc, got, m["value"])
		}
	})
}

// countKey counts the top-level keys of doc that decode to key, and reports
// whether the last of them is spelled without escapes.
func countKey(doc []byte, key string) (n int, plain bool) {
	dec := json.NewDecoder(bytes.NewReader(doc))
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('{') {
		return 0, false
	}
	for dec.More() {
		start := dec.InputOffset()
		k, err := dec.Token()
		if err != nil {
			return 0, false
		}
		if k == key {
			n++
			raw := bytes.TrimLeft(doc[start:dec.InputOffset()], ", \t\r\n")
			plain = string(raw) == `"`+key+`"`
		}
		var v json.RawMessage
		if dec.Decode(&v) != nil {
			return 0, false
		}
	}
	return n, plain
}

func TestField(t *testing.T) {
	doc := []byte(`{"a": "x\"y", "b" : {"c":[1,2]} ,"n":-2.5e1}`)
	for name, want := range map[string]string{"a": `"x\"y"`, "b": `{"c":[1,2]}`, "n": `-2.5e1`} {
		got, ok := Field(doc, name)
		if !ok || string(got) != want {
			t.Errorf("Field(%q) = %q, %v; want %q", name, got, ok, want)
		}
	}
	if _, ok := Field(doc, "c"); ok {
		t.Error("nested key found at the top level")
	}
}

package stricttoml

import (
	"errors"
	"strings"
	"testing"
)

// FuzzDecode checks that any document either fails to parse with one
// *Error, or decodes with every problem an *Error that names its key and a
// line of the document; never a panic.
func FuzzDecode(f *testing.F) {
	for _, seed := range []string{
		"",
		"name = \"a\"\ntags = [\"x\"]\n",
		"[[item]]\nname = \"s\"\ncount = 4\n[item.sub]\nk = 1\n",
		"item = [{ name = \"a\" }]\nserver.addr = \"b\"\n",
		"[server]\nport = \"x\"\nprot = 1\n",
		"name = \"\"\"\n[x]\n\"\"\"\nbogus = 1\n",
		"[item]\nname = 1\n[[server]]\n",
		"limit = -1\nlimits = [1, \"x\"]\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		doc := string(data)
		lines := strings.Count(doc, "\n") + 1
		d, err := Parse(doc)
		if err != nil {
			if !errors.As(err, new(*Error)) {
				t.Fatalf("Parse error %q is a %T, want *Error", err, err)
			}
			return
		}
		var s schema
		for _, e := range d.Decode(&s, itemDefaults) {
			var se *Error
			if !errors.As(e, &se) || se.Key == "" || se.Line < 0 || se.Line > lines {
				t.Fatalf("problem %q (%#v) does not name a key and a line of the %d-line document", e, e, lines)
			}
		}
	})
}

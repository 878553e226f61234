package stricttoml

import "testing"

func TestIndexLines(t *testing.T) {
	doc := `# comment [not.a.table]
top = 1
[hub] # trailing comment
name = "x" # = not a key
"quoted.key" = 2
a.b.c = 3
arr = [
  "[x]",
  { k = 1 },
]
ml = '''
y = 1
'''
after = 4

[[stream]]
name = "a"
[stream.sub]
k = 1
[[stream]]
name = "b"
`
	want := map[string]int{
		"top": 2, "hub": 3, "hub.name": 4, `hub."quoted.key"`: 5, "hub.a": 6, "hub.a.b.c": 6,
		"hub.arr": 7, "hub.ml": 11, "hub.after": 14,
		"stream[0]": 16, "stream[0].name": 17, "stream[0].sub": 18, "stream[0].sub.k": 19,
		"stream[1]": 20, "stream[1].name": 21,
	}
	ix := indexLines(doc)
	for k, n := range want {
		if ix[k] != n {
			t.Errorf("line of %q = %d, want %d", k, ix[k], n)
		}
	}
	for _, k := range []string{"hub.y", "y", "not.a.table", "hub.k", "hub.quoted.key"} {
		if n, ok := ix[k]; ok {
			t.Errorf("%q indexed at line %d; it is inside a string, array or comment", k, n)
		}
	}
	if got := ix.find("stream[1].shards"); got != 20 {
		t.Errorf("find of an absent key = %d, want its element's line 20", got)
	}
	if got := ix.find(`hub."quoted.key".x`); got != 5 {
		t.Errorf("find below a quoted key = %d, want 5", got)
	}
}

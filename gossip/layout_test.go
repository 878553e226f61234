package gossip

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/edgehub/edgehub/internal/names"
	"github.com/edgehub/edgehub/internal/testutil"
)

// A layout entry is a definition entry to the entry codec, so a hub from
// before layouts decodes, merges and relays a message holding one; its name
// is no valid stream and its spec no definition (JSON), so such a hub
// ignores it.
func TestLayoutEntryIsAnOldDefinition(t *testing.T) {
	long := strings.Repeat("s", names.MaxLength)
	origin := strings.Repeat("o", names.MaxLength)
	es := append(sampleEntries(),
		&entry{kind: kindDef, hub: "edge-1", stream: layoutStream("temps", "core"), version: 50,
			def: encodeLayoutDef("core", Layout{Version: 3, Spec: []byte{1, 2, 3}})},
		&entry{kind: kindDef, hub: "edge-1", stream: layoutStream(long, origin), version: 51,
			def: encodeLayoutDef(origin, Layout{Version: 1 << 40, Spec: nil})})
	got, err := decodeEntries(appendEntries(nil, es))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, es) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, es)
	}
	for _, e := range got[len(got)-2:] {
		if names.Validate(e.stream) == nil {
			t.Errorf("layout entry name %q is a valid stream name", e.stream)
		}
		var v map[string]any
		if json.Unmarshal(e.def.Spec, &v) == nil {
			t.Errorf("layout spec %q decodes as JSON", e.def.Spec)
		}
		stream, o, l, isLayout, ok := layoutEntry(e)
		if !isLayout || !ok || o == "" || stream == "" {
			t.Fatalf("layoutEntry(%+v) = %q %q %+v %t %t", e, stream, o, l, isLayout, ok)
		}
	}
	if _, o, l, _, _ := layoutEntry(got[len(got)-2]); o != "core" || l.Version != 3 || string(l.Spec) != "\x01\x02\x03" {
		t.Fatalf("layout: %q %+v", o, l)
	}
	for _, e := range got[:len(got)-2] {
		if _, _, _, isLayout, _ := layoutEntry(e); isLayout {
			t.Fatalf("%+v read as a layout", e)
		}
	}
}

func TestDecodeLayoutDefRejects(t *testing.T) {
	good := encodeLayoutDef("core", Layout{Version: 1, Spec: []byte{9}})
	tests := []struct {
		name string
		spec []byte
	}{
		{name: "empty", spec: nil},
		{name: "json", spec: []byte(`{"shards":2}`)},
		{name: "carrier version", spec: append([]byte{layoutMarker, 2}, good.Spec[2:]...)},
		{name: "empty origin", spec: []byte{layoutMarker, layoutCarrier, 0}},
		{name: "truncated origin", spec: good.Spec[:4]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := decodeLayoutDef(Def{Version: 1, Spec: tt.spec}); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	// An entry whose name does not match its origin is skipped.
	e := &entry{kind: kindDef, hub: "h", stream: layoutStream("s", "other"), def: good}
	if _, _, _, isLayout, ok := layoutEntry(e); !isLayout || ok {
		t.Fatalf("mismatched name: layout %t ok %t", isLayout, ok)
	}
}

func FuzzDecodeLayoutDef(f *testing.F) {
	f.Add(uint64(3), encodeLayoutDef("core", Layout{Version: 3, Spec: []byte{1, 0, 2}}).Spec)
	f.Add(uint64(0), encodeLayoutDef("a", Layout{}).Spec)
	f.Add(uint64(1), []byte(`{"name":"s"}`))
	f.Fuzz(func(t *testing.T, version uint64, spec []byte) {
		origin, l, err := decodeLayoutDef(Def{Version: version, Spec: spec})
		if err != nil {
			return
		}
		o2, l2, err := decodeLayoutDef(encodeLayoutDef(origin, l))
		if err != nil || o2 != origin || l2.Version != l.Version || string(l2.Spec) != string(l.Spec) {
			t.Fatalf("re-decode: %q %+v %v, want %q %+v", o2, l2, err, origin, l)
		}
	})
}

// Layouts travel between real members, beside the definition and vectors of
// their stream, and a newer publication replaces an older one.
func TestLayoutsSpread(t *testing.T) {
	ctx := context.Background()
	a := newMember(t, "a", memberOpts{})
	b := newMember(t, "b", memberOpts{})
	if _, err := b.Join(ctx, a.Addr()); err != nil {
		t.Fatal(err)
	}
	a.PublishDef("temps", Def{Version: 5, Spec: []byte(`{"shards":2}`)})
	a.PublishLayout("temps", "a", Layout{Version: 1, Spec: []byte("one")})
	a.PublishLayout("temps", "c", Layout{Version: 7, Spec: []byte("c's")})
	testutil.Eventually(t, "b learns a's layouts", func() bool {
		v := b.Streams()["temps"]
		return v.Layouts["a"]["a"].Version == 1 && string(v.Layouts["a"]["c"].Spec) == "c's"
	})
	a.PublishLayout("temps", "a", Layout{Version: 2, Spec: []byte("two")})
	testutil.Eventually(t, "b learns the newer layout", func() bool {
		l := b.Streams()["temps"].Layouts["a"]["a"]
		return l.Version == 2 && string(l.Spec) == "two"
	})
	for name, v := range b.Streams() {
		if name != "temps" {
			t.Errorf("stream %q in the view", name)
		}
		if len(v.Defs) != 1 {
			t.Errorf("defs %+v: a layout was read as a definition", v.Defs)
		}
	}
}

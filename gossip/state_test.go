package gossip

import (
	"errors"
	"reflect"
	"testing"
)

func sampleEntries() []*entry {
	return []*entry{
		{kind: kindDef, hub: "edge-1", stream: "temps", version: 42, def: Def{Version: 7, Spec: []byte(`{"name":"temps","shards":4}`)}},
		{kind: kindDef, hub: "edge-2", stream: "gone", version: 1, def: Def{Version: 9, Deleted: true}},
		{kind: kindVector, hub: "edge-1", stream: "temps", origin: "edge-2", version: 43, vector: Vector{Seqs: []uint64{0, 1, 1 << 40, 5}}},
		{kind: kindVector, hub: "edge-1", stream: "temps", origin: "edge-3", version: 44,
			vector: Vector{Seqs: []uint64{}, Incarnation: "0192f3a4b5c6d7e8f901122334455667"}},
	}
}

func TestEntriesRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		es   []*entry
	}{
		{name: "empty", es: []*entry{}},
		{name: "mixed", es: sampleEntries()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeEntries(appendEntries(nil, tt.es))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.es) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, tt.es)
			}
		})
	}
}

func TestDecodeEntriesRejects(t *testing.T) {
	good := appendEntries(nil, sampleEntries())
	tests := []struct {
		name string
		buf  []byte
	}{
		{name: "empty", buf: nil},
		{name: "wrong type", buf: append([]byte{9}, good[1:]...)},
		{name: "wrong version", buf: append([]byte{msgEntries, 3}, good[2:]...)},
		{name: "long incarnation", buf: appendEntries(nil, []*entry{{kind: kindVector, hub: "h", stream: "s", origin: "o", version: 1,
			vector: Vector{Seqs: []uint64{1}, Incarnation: string(make([]byte, maxIncLen+1))}}})},
		{name: "truncated", buf: good[:len(good)-1]},
		{name: "trailing", buf: append(append([]byte(nil), good...), 0)},
		{name: "huge count", buf: []byte{msgEntries, msgVersion1, 0xff, 0xff, 0xff, 0xff, 0x0f}},
		{name: "empty hub", buf: appendEntries(nil, []*entry{{kind: kindDef, stream: "s", version: 1}})},
		{name: "unknown kind", buf: appendEntries(nil, []*entry{{kind: 9, hub: "h", stream: "s", version: 1}})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := decodeEntries(tt.buf); !errors.Is(err, ErrBadMessage) {
				t.Fatalf("err = %v, want ErrBadMessage", err)
			}
		})
	}
}

// A version 1 message (from a hub before incarnations) still decodes: its
// vectors have no incarnation.
func TestDecodeVersion1(t *testing.T) {
	v1 := []byte{msgEntries, msgVersion1, 1, kindVector, 1, 'h', 1, 's', 1, 1, 'o', 3, 1, 2, 3}
	es, err := decodeEntries(v1)
	if err != nil || len(es) != 1 || es[0].vector.Incarnation != "" || len(es[0].vector.Seqs) != 3 || es[0].vector.Seqs[2] != 3 {
		t.Fatalf("version 1: %+v, %v", es, err)
	}
}

func TestTableMergeIsLastWriterWins(t *testing.T) {
	tab := table{}
	v := func(version uint64, seq uint64) *entry {
		return &entry{kind: kindVector, hub: "a", stream: "s", origin: "b", version: version, vector: Vector{Seqs: []uint64{seq}}}
	}
	tests := []struct {
		name     string
		e        *entry
		wantNews bool
		wantSeq  uint64
	}{
		{name: "first", e: v(5, 50), wantNews: true, wantSeq: 50},
		{name: "older", e: v(4, 40), wantNews: false, wantSeq: 50},
		{name: "same version", e: v(5, 99), wantNews: false, wantSeq: 50},
		{name: "newer", e: v(6, 60), wantNews: true, wantSeq: 60},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tab.merge(tt.e); got != tt.wantNews {
				t.Fatalf("merge news = %v, want %v", got, tt.wantNews)
			}
			if got := tab[tt.e.key()].vector.Seqs[0]; got != tt.wantSeq {
				t.Fatalf("seq = %d, want %d", got, tt.wantSeq)
			}
		})
	}
}

func TestNodeMetaRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		m    NodeMeta
	}{
		{name: "zero", m: NodeMeta{}},
		{name: "full", m: NodeMeta{Site: "berlin-1", Region: "eu-central", Tags: []string{"edge", "gpu"}, QUIC: "10.0.0.1:7443"}},
		{name: "pins", m: NodeMeta{QUIC: "10.0.0.1:7443", CertPins: [][32]byte{{1, 2, 3}, {4: 5}}}},
		{name: "leaving with pins", m: NodeMeta{Site: "s", CertPins: [][32]byte{{9}}, leaving: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeNodeMeta(tt.m.encode())
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.m) {
				t.Fatalf("got %+v, want %+v", got, tt.m)
			}
		})
	}
}

// TestNodeMetaFields: version 2 metadata skips fields it does not know (a
// newer hub's), refuses malformed pins, and metadata without pins stays
// version 1, which hubs from before pins read.
func TestNodeMetaFields(t *testing.T) {
	if b := (NodeMeta{Site: "s"}).encode(); b[0] != metaVersion1 {
		t.Fatalf("metadata without pins is version %d, want %d", b[0], metaVersion1)
	}
	pin := [32]byte{7}
	b := NodeMeta{Site: "s", CertPins: [][32]byte{pin}}.encode()
	future := append(append([]byte{}, b...), 99, 3, 'x', 'y', 'z') // an unknown field
	got, err := decodeNodeMeta(future)
	if err != nil || len(got.CertPins) != 1 || got.CertPins[0] != pin || got.Site != "s" {
		t.Fatalf("decode with an unknown field: %+v, %v", got, err)
	}
	short := append(append([]byte{}, b[:len(b)-34]...), metaCertPin, 31)
	short = append(short, make([]byte, 31)...)
	if _, err := decodeNodeMeta(short); !errors.Is(err, ErrBadMessage) {
		t.Fatalf("31-byte pin: %v, want ErrBadMessage", err)
	}
	many := NodeMeta{CertPins: make([][32]byte, MaxCertPins+1)}.encode()
	if _, err := decodeNodeMeta(many); !errors.Is(err, ErrBadMessage) {
		t.Fatalf("%d pins: %v, want ErrBadMessage", MaxCertPins+1, err)
	}
	if _, err := decodeNodeMeta(append(append([]byte{}, b...), 1, 40)); !errors.Is(err, ErrBadMessage) {
		t.Fatalf("field running past the end: %v, want ErrBadMessage", err)
	}
}

func FuzzDecodeEntries(f *testing.F) {
	f.Add(appendEntries(nil, sampleEntries()))
	f.Add(appendEntries(nil, nil))
	f.Add([]byte{msgEntries, msgVersion1, 1, kindVector, 1, 'h', 1, 's', 1, 1, 'o', 3, 1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		es, err := decodeEntries(b)
		if err != nil {
			return
		}
		// What decodes must re-encode to an equivalent message.
		again, err := decodeEntries(appendEntries(nil, es))
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if !reflect.DeepEqual(again, es) {
			t.Fatalf("re-encode changed entries")
		}
	})
}

func FuzzDecodeNodeMeta(f *testing.F) {
	f.Add(NodeMeta{Site: "s", Region: "r", Tags: []string{"a", "b"}, QUIC: "127.0.0.1:1"}.encode())
	f.Add(NodeMeta{}.encode())
	f.Add(NodeMeta{QUIC: "127.0.0.1:1", CertPins: [][32]byte{{1}, {2}}}.encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeNodeMeta(b)
		if err != nil {
			return
		}
		again, err := decodeNodeMeta(m.encode())
		if err != nil || !reflect.DeepEqual(again, m) {
			t.Fatalf("re-decode: %+v %v, want %+v", again, err, m)
		}
	})
}

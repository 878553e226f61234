//go:build !wasip1

package plugin

import (
	"bytes"
	"encoding/binary"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

// encodeBatch is the ABI v1 batch encoding (see docs/plugin-abi.md),
// written independently of the host's encoder on purpose.
func encodeBatch(stream string, shard uint32, recs []Record, extraHeader, extraPerRecord int) []byte {
	le := binary.LittleEndian
	b := le.AppendUint32(nil, uint32(16+len(stream)+extraHeader))
	b = le.AppendUint32(b, uint32(len(recs)))
	b = le.AppendUint32(b, shard)
	b = le.AppendUint32(b, uint32(len(stream)))
	b = append(b, stream...)
	b = append(b, make([]byte, extraHeader)...)
	for _, r := range recs {
		var body []byte
		body = le.AppendUint64(body, r.Seq)
		body = le.AppendUint64(body, uint64(r.IngestTime))
		body = appendOutput(body, &Output{Key: r.Key, Value: r.Value, Headers: r.Headers, Time: r.Time})
		body = append(body, make([]byte, extraPerRecord)...)
		b = le.AppendUint32(b, uint32(len(body)))
		b = append(b, body...)
	}
	return b
}

func encodeConfig(kv ...string) []byte {
	le := binary.LittleEndian
	b := le.AppendUint32(nil, uint32(len(kv)/2))
	for _, s := range kv {
		b = le.AppendUint32(b, uint32(len(s)))
		b = append(b, s...)
	}
	return b
}

func resetNative(t *testing.T) {
	t.Helper()
	native.Lock()
	native.state = map[string][]byte{}
	native.emitted = nil
	native.logs = nil
	native.Unlock()
	t.Cleanup(func() { initFn, recordFn, batchFn, timerFn = nil, nil, nil, nil })
}

func TestDecodeBatch(t *testing.T) {
	recs := []Record{
		{Seq: 7, IngestTime: 70, Time: 700, Key: []byte("k"), Value: []byte("v"), Headers: []Header{{Key: "a", Value: []byte("1")}}},
		{Seq: 8, Key: nil, Value: nil},
		{Seq: 9, Key: []byte{}, Value: []byte{}},
	}
	tests := []struct {
		name                  string
		extraHdr, extraRecord int
	}{
		{name: "v1"},
		{name: "newer host adds fields", extraHdr: 8, extraRecord: 12},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeBatch(encodeBatch("in", 3, recs, tt.extraHdr, tt.extraRecord), nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(recs) {
				t.Fatalf("%d records", len(got))
			}
			for i, g := range got {
				w := recs[i]
				if g.Stream != "in" || g.Shard != 3 || g.Seq != w.Seq || g.Time != w.Time || g.IngestTime != w.IngestTime ||
					string(g.Key) != string(w.Key) || (g.Key == nil) != (w.Key == nil) ||
					string(g.Value) != string(w.Value) || (g.Value == nil) != (w.Value == nil) || len(g.Headers) != len(w.Headers) {
					t.Errorf("record %d = %+v, want %+v", i, g, w)
				}
			}
		})
	}
}

func TestDispatch(t *testing.T) {
	resetNative(t)
	var cfg Config
	OnInit(func(c Config) error { cfg = c; return nil })
	OnRecord(func(r *Record) error {
		if string(r.Value) == "bad" {
			return errors.New("bad value")
		}
		n, _ := State.Get(r.Key)
		State.Set(r.Key, append(n, 'x'))
		return Emit("out", Output{Key: r.Key, Value: r.Value})
	})
	OnTimer(func(now time.Time) error {
		for k := range State.Keys([]byte("a")) {
			State.Delete(k)
		}
		return Emit("out", Output{Value: []byte(now.UTC().Format(time.RFC3339))})
	})
	if rc := handleInit(encodeConfig("output", "out", "n", "3")); rc != 0 || cfg.String("output", "") != "out" {
		t.Fatalf("init rc %d cfg %v", rc, cfg)
	}
	if n, err := cfg.Int("n", 0); n != 3 || err != nil {
		t.Fatalf("Int: %d %v", n, err)
	}
	if _, err := cfg.Duration("n", 0); err == nil {
		t.Fatal("Duration of \"3\" should fail (no unit)")
	}
	batch := encodeBatch("in", 0, []Record{{Seq: 1, Key: []byte("a1")}, {Seq: 2, Key: []byte("b")}, {Seq: 3, Key: []byte("a1")}}, 0, 0)
	if rc := handleBatch(batch); rc != 0 {
		t.Fatalf("batch rc %d, logs %v", rc, native.logs)
	}
	var inputs []uint32
	for _, e := range native.emitted {
		inputs = append(inputs, e.Input)
	}
	if !slices.Equal(inputs, []uint32{0, 1, 2}) {
		t.Fatalf("emits attributed to %v", inputs)
	}
	if string(native.state["a1"]) != "xx" || string(native.state["b"]) != "x" {
		t.Fatalf("state %v", native.state)
	}
	if rc := handleTimer(time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC).UnixNano()); rc != 0 {
		t.Fatalf("timer rc %d", rc)
	}
	if _, ok := native.state["a1"]; ok || len(native.state) != 1 {
		t.Fatalf("timer left state %v", native.state)
	}
	if rc := handleBatch(encodeBatch("in", 0, []Record{{Seq: 9, Value: []byte("bad")}}, 0, 0)); rc != 1 {
		t.Fatalf("failing handler: rc %d", rc)
	}
	if last := native.logs[len(native.logs)-1]; !strings.Contains(last, "record 9") || !strings.Contains(last, "bad value") {
		t.Fatalf("error log %q", last)
	}
	if err := Emit("out", Output{}); !errors.Is(err, ErrNoRecord) {
		t.Fatalf("Emit outside a handler: %v", err)
	}
}

func TestDecodeRejects(t *testing.T) {
	good := encodeBatch("in", 0, []Record{{Seq: 1, Key: []byte("k"), Value: []byte("v"), Headers: []Header{{Key: "h", Value: []byte("x")}}}}, 0, 0)
	for n := 0; n < len(good); n++ {
		if _, err := decodeBatch(good[:n], nil); err == nil {
			t.Fatalf("prefix of %d bytes decoded", n)
		}
	}
	cfg := encodeConfig("k", "v")
	for n := 1; n < len(cfg); n++ {
		if _, err := decodeConfig(cfg[:n]); err == nil {
			t.Fatalf("config prefix of %d bytes decoded", n)
		}
	}
}

func FuzzDecodeBatch(f *testing.F) {
	f.Add(encodeBatch("in", 1, []Record{{Seq: 1, Key: []byte("k"), Value: []byte("v"), Headers: []Header{{Key: "h", Value: []byte("x")}}}}, 0, 0))
	f.Add(encodeBatch("", 0, []Record{{Seq: 2}}, 4, 4))
	// Empty is not nil: an empty key with a tombstone, a keyless empty value.
	f.Add(encodeBatch("s", 3, []Record{{Seq: 1, Key: []byte{}}, {Seq: 2, Value: []byte{}, Headers: []Header{{Value: []byte{}}}}}, 0, 0))
	f.Fuzz(func(t *testing.T, b []byte) {
		recs, err := decodeBatch(b, nil)
		if err != nil {
			return
		}
		// What decodes, encoded again as the host writes it, decodes to the
		// same records: no field is lost, moved or confused (a nil key or
		// value stays nil, an empty one stays empty). decodeBatch reuses its
		// header storage, so keep a deep copy of the first result.
		first := make([]Record, len(recs))
		for i, r := range recs {
			first[i] = r
			first[i].Key, first[i].Value = cloneNullable(r.Key), cloneNullable(r.Value)
			first[i].Headers = nil
			for _, h := range r.Headers {
				first[i].Headers = append(first[i].Headers, Header{Key: h.Key, Value: slices.Clone(h.Value)})
			}
		}
		var stream string
		var shard uint32
		if len(first) > 0 {
			stream, shard = first[0].Stream, first[0].Shard
		}
		enc := encodeBatch(stream, shard, first, 0, 0)
		// The host's encoding is the shortest: one as long as the input has
		// no room for padding, so it is the input, byte for byte.
		if len(enc) == len(b) && !bytes.Equal(enc, b) {
			t.Fatalf("decoded and encoded again, the batch differs:\n%x\n%x", b, enc)
		}
		again, err := decodeBatch(enc, nil)
		if err != nil {
			t.Fatalf("re-encoded batch of %d records does not decode: %v", len(first), err)
		}
		if len(again) != len(first) {
			t.Fatalf("%d records, %d after a round trip", len(first), len(again))
		}
		for i := range first {
			a, b := first[i], again[i]
			if a.Stream != b.Stream || a.Shard != b.Shard || a.Seq != b.Seq || a.IngestTime != b.IngestTime || a.Time != b.Time ||
				!sameNullable(a.Key, b.Key) || !sameNullable(a.Value, b.Value) || len(a.Headers) != len(b.Headers) {
				t.Fatalf("record %d changed in a round trip:\n%+v\n%+v", i, a, b)
			}
			for j := range a.Headers {
				if a.Headers[j].Key != b.Headers[j].Key || !bytes.Equal(a.Headers[j].Value, b.Headers[j].Value) {
					t.Fatalf("record %d header %d changed in a round trip: %+v, %+v", i, j, a.Headers[j], b.Headers[j])
				}
			}
		}
	})
}

func cloneNullable(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte{}, b...)
}

func sameNullable(a, b []byte) bool { return (a == nil) == (b == nil) && bytes.Equal(a, b) }

func FuzzDecodeConfig(f *testing.F) {
	f.Add(encodeConfig("a", "1", "b", ""))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		cfg, err := decodeConfig(b)
		if err == nil && len(cfg) > len(b)/8 {
			t.Fatalf("%d entries from %d bytes", len(cfg), len(b))
		}
	})
}

func TestConfigOutputs(t *testing.T) {
	tests := []struct {
		name string
		c    Config
		want []string
	}{
		{name: "none", c: Config{"output": "x"}, want: nil},
		{name: "one", c: Config{"outputs": "a"}, want: []string{"a"}},
		{name: "several in order", c: Config{"outputs": "b,a"}, want: []string{"b", "a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.c.Outputs(); !slices.Equal(got, tt.want) {
				t.Errorf("Outputs() = %q, want %q", got, tt.want)
			}
		})
	}
}

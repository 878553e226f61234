package wasmhost

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os/exec"
	"strings"
	"testing"
)

func TestOutputRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		rec  OutputRecord
	}{
		{name: "empty", rec: OutputRecord{}},
		{name: "nil key empty value", rec: OutputRecord{Value: []byte{}}},
		{name: "full", rec: OutputRecord{Time: -5, Key: []byte("k"), Value: []byte("v"),
			Headers: []Header{{Key: []byte("a"), Value: []byte("1")}, {Key: []byte{}, Value: nil}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			enc := AppendOutput(nil, tt.rec)
			got, err := DecodeOutput(enc, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got.Time != tt.rec.Time || !bytes.Equal(got.Key, tt.rec.Key) || (got.Key == nil) != (tt.rec.Key == nil) ||
				!bytes.Equal(got.Value, tt.rec.Value) || (got.Value == nil) != (tt.rec.Value == nil) || len(got.Headers) != len(tt.rec.Headers) {
				t.Fatalf("got %+v, want %+v", got, tt.rec)
			}
			// Every prefix is rejected, never misread.
			for i := 0; i < len(enc); i++ {
				if _, err := DecodeOutput(enc[:i], nil); !errors.Is(err, ErrABI) {
					t.Fatalf("prefix of %d bytes: err %v", i, err)
				}
			}
		})
	}
}

// TestBatchTailIsAnOutput pins the property the WAT pass-through relies on:
// an input record after its first 20 bytes is an output record.
func TestBatchTailIsAnOutput(t *testing.T) {
	recs := inputs("a", "bb")
	b := AppendBatch(nil, "stream", 7, recs)
	if got := binary.LittleEndian.Uint32(b); got != BatchHeaderLen+6 {
		t.Fatalf("header_len %d", got)
	}
	off := int(binary.LittleEndian.Uint32(b))
	for i, r := range recs {
		n := int(binary.LittleEndian.Uint32(b[off:]))
		if seq := binary.LittleEndian.Uint64(b[off+4:]); seq != r.Seq {
			t.Fatalf("record %d seq %d", i, seq)
		}
		out, err := DecodeOutput(b[off+RecordPrefixLen:off+4+n], nil)
		if err != nil || !bytes.Equal(out.Value, r.Value) || out.Time != r.Time {
			t.Fatalf("record %d: %+v, %v", i, out, err)
		}
		off += 4 + n
	}
	if off != len(b) {
		t.Fatalf("%d trailing bytes", len(b)-off)
	}
}

func FuzzDecodeOutput(f *testing.F) {
	f.Add(AppendOutput(nil, OutputRecord{Time: 1, Key: []byte("k"), Value: []byte("v"), Headers: []Header{{Key: []byte("h"), Value: []byte("x")}}}))
	f.Add(AppendOutput(nil, OutputRecord{}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeOutput(b, nil)
		if err != nil {
			if !errors.Is(err, ErrABI) {
				t.Fatalf("error %v does not wrap ErrABI", err)
			}
			return
		}
		// A decoded record re-encodes to the same bytes.
		if enc := AppendOutput(nil, r); !bytes.Equal(enc, b) {
			t.Fatalf("re-encoding differs:\n%x\n%x", enc, b)
		}
	})
}

// TestLeafPackage keeps wasmhost a leaf: it knows nothing of the store, the
// wire protocol or the rest of edgehub.
func TestLeafPackage(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, p := range strings.Fields(string(out)) {
		if strings.HasPrefix(p, "github.com/edgehub/edgehub/") && p != "github.com/edgehub/edgehub/wasmhost" {
			t.Errorf("wasmhost depends on %s", p)
		}
	}
}

package recordjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/edgehub/edgehub/internal/record"
)

func TestDecode(t *testing.T) {
	ts := time.Date(2026, 1, 2, 15, 4, 5, 500, time.UTC)
	tests := []struct {
		name, line string
		want       record.Record
		err        string
	}{
		{name: "text", line: `{"key":"k","value":"v"}`, want: record.Record{Key: []byte("k"), Value: []byte("v")}},
		{name: "tombstone", line: `{"key":"k"}`, want: record.Record{Key: []byte("k")}},
		{name: "empty value", line: `{"value":""}`, want: record.Record{Value: []byte{}}},
		{name: "base64", line: `{"key_base64":"/w==","value_base64":"AAE="}`, want: record.Record{Key: []byte{0xff}, Value: []byte{0, 1}}},
		{name: "headers and time", line: `{"value":"v","headers":[{"key":"unit","value":"C"},{"key":"unit","value_base64":"/w=="},{"key":"e"}],"time":"2026-01-02T15:04:05.0000005Z"}`,
			want: record.Record{Value: []byte("v"), Time: ts.UnixNano(), Headers: []record.Header{{Key: "unit", Value: []byte("C")}, {Key: "unit", Value: []byte{0xff}}, {Key: "e", Value: []byte{}}}}},
		{name: "consume's own fields ignored", line: `{"stream":"s","shard":1,"seq":9,"key":"k","value":"v","ingest_time":"2026-01-02T15:04:05Z","origin":{"hub":"a","shard":0,"seq":3}}`,
			want: record.Record{Key: []byte("k"), Value: []byte("v")}},
		{name: "unknown field", line: `{"key":"k","vaule":"v"}`, err: `unknown field "vaule"`},
		{name: "both forms", line: `{"value":"v","value_base64":"AA=="}`, err: "both value and value_base64"},
		{name: "bad base64", line: `{"value_base64":"!!"}`, err: "illegal base64"},
		{name: "bad time", line: `{"value":"v","time":"yesterday"}`, err: `time "yesterday"`},
		{name: "time out of range", line: `{"value":"v","time":"3000-01-01T00:00:00Z"}`, err: "outside the years"},
		{name: "header without key", line: `{"value":"v","headers":[{"value":"x"}]}`, err: "headers[0] has no key"},
		{name: "trailing data", line: `{"value":"v"} {}`, err: "data after the object"},
		{name: "trailing bracket", line: `{"value":"v"}]`, err: "data after the object"},
		{name: "not an object", line: `"v"`, err: "cannot unmarshal"},
		{name: "truncated", line: `{"value":"v"`, err: "unexpected EOF"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Decode([]byte(tt.line))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || !errors.Is(err, ErrInvalid) {
					t.Fatalf("Decode(%s) = %v, want an ErrInvalid mentioning %q", tt.line, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !equal(got, tt.want) {
				t.Fatalf("Decode(%s) = %+v, want %+v", tt.line, got, tt.want)
			}
		})
	}
}

// equal compares what Decode produces, nil and empty apart.
func equal(a, b record.Record) bool {
	same := func(x, y []byte) bool { return (x == nil) == (y == nil) && bytes.Equal(x, y) }
	if !same(a.Key, b.Key) || !same(a.Value, b.Value) || a.Time != b.Time || len(a.Headers) != len(b.Headers) {
		return false
	}
	for i := range a.Headers {
		if a.Headers[i].Key != b.Headers[i].Key || !bytes.Equal(a.Headers[i].Value, b.Headers[i].Value) {
			return false
		}
	}
	return true
}

// FuzzDecode: any line decodes to an error or to a record that encodes and
// decodes to itself, and Decode never panics.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"key":"k","value":"v"}`, `{"key":"k"}`, `{"value":""}`, `{"key_base64":"/w==","value_base64":"AAE="}`,
		`{"value":"v","headers":[{"key":"unit","value":"C"}],"time":"2026-01-02T15:04:05.5+02:00"}`,
		`{"stream":"s","shard":1,"seq":9,"key":"k","value":"v","ingest_time":"2026-01-02T15:04:05Z","origin":{"hub":"a","shard":0,"seq":3}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		r, err := Decode(line)
		if err != nil {
			return
		}
		if !json.Valid(line) {
			t.Fatalf("%q decoded, but it is not one JSON value", line)
		}
		again, err := json.Marshal(Encode(r))
		if err != nil {
			t.Fatalf("encode %+v: %v", r, err)
		}
		r2, err := Decode(again)
		if err != nil {
			t.Fatalf("re-decode of %s (from %q): %v", again, line, err)
		}
		if !equal(r, r2) {
			t.Fatalf("round trip of %q: %+v, then %+v", line, r, r2)
		}
	})
}

package cli

import (
	"encoding/json"
	"github.com/edgehub/edgehub/internal/recordjson"
	"testing"

	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/sdk"
)

// TestConsumeJSONLosesNothing: --format json tells a tombstone from an empty
// value, keeps binary keys, values and headers byte for byte (base64), and
// keeps repeated header keys in order. Headers used to be a map of strings:
// a repeated key kept only its last value and binary header bytes became
// U+FFFD.
func TestConsumeJSONLosesNothing(t *testing.T) {
	bin := []byte{0xff, 0x00, 0xfe}
	for _, tc := range []struct {
		name string
		rec  record.Record
		want string
	}{
		{"tombstone", record.Record{Key: []byte("k")},
			`{"key":"k"}`},
		{"empty value", record.Record{Key: []byte("k"), Value: []byte{}},
			`{"key":"k","value":""}`},
		{"no key", record.Record{Value: []byte("v")},
			`{"value":"v"}`},
		{"binary", record.Record{Key: bin, Value: bin},
			`{"key_base64":"/wD+","value_base64":"/wD+"}`},
		{"headers", record.Record{Value: []byte("v"), Headers: []record.Header{
			{Key: "a", Value: []byte("1")}, {Key: "a", Value: []byte("2")}, {Key: "b", Value: bin}, {Key: "\xff", Value: []byte{}}}},
			`{"value":"v","headers":[{"key":"a","value":"1"},{"key":"a","value":"2"},{"key":"b","value_base64":"/wD+"},{"key_base64":"/w==","value":""}]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j := toJSON(sdk.Message{Stream: "s", Record: tc.rec})
			// Compare the fields under test only.
			j.Stream, j.IngestTime = "", ""
			b, err := json.Marshal(struct {
				Key         *string             `json:"key,omitempty"`
				KeyBase64   []byte              `json:"key_base64,omitempty"`
				Value       *string             `json:"value,omitempty"`
				ValueBase64 []byte              `json:"value_base64,omitempty"`
				Headers     []recordjson.Header `json:"headers,omitempty"`
			}{j.Key, j.KeyBase64, j.Value, j.ValueBase64, j.Headers})
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tc.want {
				t.Fatalf("got  %s\nwant %s", b, tc.want)
			}
		})
	}
}

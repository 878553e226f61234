// Package recordjson is the JSON form of a record that `hub consume
// --format json` prints and HTTP ingest (and so anything that replays
// consume's output) reads: one object per record, one per line.
//
// # Basics
//
// A key or value that is valid UTF-8 is a string ("key", "value"); any other
// is base64 ("key_base64", "value_base64"), so no byte changes on the way. A
// record without "value" and "value_base64" is a tombstone; "value": "" is
// an empty value. Headers are a list of {key, value} objects in the
// record's order, repeated keys kept, with the same base64 rule. "time" is
// the producer's time in RFC 3339 (absent: unset).
//
// # Caveats
//
// Decode accepts the fields consume adds (stream, shard, seq, ingest_time,
// origin) and ignores them: the storing hub assigns them. Any other field is
// an error, so a misspelt "vaule" is never a silent tombstone.
package recordjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
	"unicode/utf8"

	"github.com/edgehub/edgehub/internal/record"
)

// Record is one line.
type Record struct {
	Stream      string   `json:"stream,omitempty"`
	Shard       *int     `json:"shard,omitempty"`
	Seq         uint64   `json:"seq,omitempty"`
	Key         *string  `json:"key,omitempty"`
	KeyBase64   []byte   `json:"key_base64,omitempty"`
	Value       *string  `json:"value,omitempty"`
	ValueBase64 []byte   `json:"value_base64,omitempty"`
	Headers     []Header `json:"headers,omitempty"`
	Time        string   `json:"time,omitempty"`
	IngestTime  string   `json:"ingest_time,omitempty"`
	Origin      *Origin  `json:"origin,omitempty"`
}

// Header is one record header.
type Header struct {
	Key         *string `json:"key,omitempty"`
	KeyBase64   []byte  `json:"key_base64,omitempty"`
	Value       *string `json:"value,omitempty"`
	ValueBase64 []byte  `json:"value_base64,omitempty"`
}

// Origin is a replicated record's origin (consume prints it; Decode ignores
// it).
type Origin struct {
	Hub   string `json:"hub"`
	Shard uint32 `json:"shard"`
	Seq   uint64 `json:"seq"`
}

// ErrInvalid: a line that is not a record object.
var ErrInvalid = errors.New("invalid JSON record")

// Encode returns r in the JSON form (Stream, Shard, Seq and IngestTime as
// given; the caller sets what it knows).
func Encode(r record.Record) Record {
	var j Record
	if r.Key != nil {
		j.Key, j.KeyBase64 = text(r.Key)
	}
	if r.Value != nil {
		j.Value, j.ValueBase64 = text(r.Value)
	}
	for _, h := range r.Headers {
		var jh Header
		jh.Key, jh.KeyBase64 = text([]byte(h.Key))
		jh.Value, jh.ValueBase64 = text(h.Value)
		j.Headers = append(j.Headers, jh)
	}
	if r.Time != 0 {
		j.Time = time.Unix(0, r.Time).UTC().Format(time.RFC3339Nano)
	}
	if r.IngestTime != 0 {
		j.IngestTime = time.Unix(0, r.IngestTime).UTC().Format(time.RFC3339Nano)
	}
	if !r.Origin.IsLocal() {
		j.Origin = &Origin{r.Origin.Hub, r.Origin.Shard, r.Origin.Seq}
	}
	return j
}

// text is b as a string if it is UTF-8, else as base64 bytes. An empty b
// is "" (not absent).
func text(b []byte) (*string, []byte) {
	if utf8.Valid(b) {
		s := string(b)
		return &s, nil
	}
	return nil, b
}

// Decode parses one line into a record to produce: key, value, headers and
// time (sequence, ingest time and origin are the storing hub's). The record
// does not alias line.
func Decode(line []byte) (record.Record, error) {
	var j Record
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		return record.Record{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	// More would miss a stray ']' or '}' after the object.
	if _, err := dec.Token(); err != io.EOF {
		return record.Record{}, fmt.Errorf("%w: data after the object", ErrInvalid)
	}
	var r record.Record
	var err error
	if r.Key, err = pick("key", j.Key, j.KeyBase64); err != nil {
		return record.Record{}, err
	}
	if r.Value, err = pick("value", j.Value, j.ValueBase64); err != nil {
		return record.Record{}, err
	}
	for i, h := range j.Headers {
		k, err := pick(fmt.Sprintf("headers[%d].key", i), h.Key, h.KeyBase64)
		if err != nil {
			return record.Record{}, err
		}
		v, err := pick(fmt.Sprintf("headers[%d].value", i), h.Value, h.ValueBase64)
		if err != nil {
			return record.Record{}, err
		}
		if k == nil {
			return record.Record{}, fmt.Errorf("%w: headers[%d] has no key", ErrInvalid, i)
		}
		if v == nil {
			v = []byte{}
		}
		r.Headers = append(r.Headers, record.Header{Key: string(k), Value: v})
	}
	if j.Time != "" {
		t, err := time.Parse(time.RFC3339Nano, j.Time)
		if err != nil {
			return record.Record{}, fmt.Errorf("%w: time %q: want RFC 3339, like 2026-01-02T15:04:05.5Z", ErrInvalid, j.Time)
		}
		if y := t.UTC().Year(); y < 1678 || y > 2261 {
			return record.Record{}, fmt.Errorf("%w: time %q: outside the years 1678..2261 that Unix nanoseconds hold", ErrInvalid, j.Time)
		}
		if r.Time = t.UnixNano(); r.Time == 0 {
			// 0 means unset: the epoch itself is one nanosecond off.
			r.Time = 1
		}
	}
	return r, nil
}

// pick is the string or the base64 form of a field, nil when neither is
// given; both is an error.
func pick(name string, s *string, b []byte) ([]byte, error) {
	switch {
	case s != nil && b != nil:
		return nil, fmt.Errorf("%w: both %s and %s_base64", ErrInvalid, name, name)
	case s != nil:
		return append([]byte{}, *s...), nil
	case b != nil:
		return b, nil
	}
	return nil, nil
}

package record

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math/rand/v2"
	"reflect"
	"runtime"
	"testing"
)

func sampleRecords() []Record {
	return []Record{
		{Seq: 10, Key: []byte("k1"), Value: []byte("v1"), Time: 5, IngestTime: 1000},
		{Seq: 11, Key: nil, Value: []byte{}, IngestTime: 1001, Headers: []Header{{Key: "h", Value: []byte("x")}, {Key: "", Value: []byte{}}}},
		{Seq: 13, Key: []byte("k1"), Value: nil, Time: -7, IngestTime: 999, Origin: Origin{Hub: "site-a", Shard: 3, Seq: 77}},
		{Seq: 14, Key: []byte{}, Value: []byte("v"), IngestTime: 2000, Origin: Origin{Hub: "site-b", Shard: 0, Seq: 1}},
		{Seq: 20, Value: bytes.Repeat([]byte("z"), 300), Origin: Origin{Hub: "site-a", Shard: 3, Seq: 78}},
	}
}

func TestBatchRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		recs []Record
	}{
		{name: "mixed", recs: sampleRecords()},
		{name: "single", recs: []Record{{Value: []byte("only")}}},
		{name: "unassigned", recs: []Record{{Key: []byte("a"), Value: []byte("1")}, {Key: []byte("b"), Value: []byte("2")}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			buf, err := AppendBatch([]byte("prefix"), tc.recs)
			if err != nil {
				t.Fatal(err)
			}
			if string(buf[:6]) != "prefix" {
				t.Fatalf("prefix clobbered: %q", buf[:6])
			}
			got, err := DecodeBatch(buf[6:], nil)
			if err != nil {
				t.Fatal(err)
			}
			for i := range got {
				// Header values decode as non-nil empty slices; normalise.
				for j := range got[i].Headers {
					if len(got[i].Headers[j].Value) == 0 {
						got[i].Headers[j].Value = tc.recs[i].Headers[j].Value
					}
				}
			}
			if !reflect.DeepEqual(got, tc.recs) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, tc.recs)
			}
			info, err := ReadInfo(buf[6:])
			if err != nil {
				t.Fatal(err)
			}
			if info.Count != len(tc.recs) || info.BaseSeq != tc.recs[0].Seq || info.LastSeq != tc.recs[len(tc.recs)-1].Seq {
				t.Fatalf("info %+v", info)
			}
		})
	}
}

func TestBatchNilVsEmpty(t *testing.T) {
	buf, err := AppendBatch(nil, []Record{{Key: nil, Value: nil}, {Key: []byte{}, Value: []byte{}}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeBatch(buf, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got[0].Key != nil || got[0].Value != nil {
		t.Errorf("nil key/value decoded as %q/%q", got[0].Key, got[0].Value)
	}
	if got[1].Key == nil || got[1].Value == nil {
		t.Errorf("empty key/value decoded as nil")
	}
}

func TestBatchRejectsCorruption(t *testing.T) {
	good, err := AppendBatch(nil, sampleRecords())
	if err != nil {
		t.Fatal(err)
	}
	for i := range good {
		bad := bytes.Clone(good)
		bad[i] ^= 0x40
		if _, err := DecodeBatch(bad, nil); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("flip byte %d: err = %v, want ErrCorrupt", i, err)
		}
	}
	for n := 0; n < len(good); n++ {
		if _, err := DecodeBatch(good[:n], nil); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("truncated to %d: err = %v, want ErrCorrupt", n, err)
		}
	}
}

// TestBatchHostileCounts: a checksummed batch whose header or origin count
// cannot fit in its bytes is corrupt, and decoding it allocates in
// proportion to its size, not to the count (65535 headers claimed by a
// 20-byte batch allocated 2.5 MiB).
func TestBatchHostileCounts(t *testing.T) {
	seal := func(b []byte) []byte { return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli)) }
	head := []byte{Magic, Version, 0, 1, 0, 0, 0, 0} // one record, seq 0, ingest 0
	tests := []struct {
		name  string
		batch []byte
	}{
		{"headers", seal(append(append(bytes.Clone(head), 0), 0, 0, 0, 0, 0, 0xff, 0xff, 0x03))},
		{"origins", seal(append(bytes.Clone(head), 0xff, 0xff, 0x03))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := DecodeBatch(tt.batch, nil); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("err = %v, want ErrCorrupt", err)
			}
			const runs = 100
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			for range runs {
				DecodeBatch(tt.batch, nil)
			}
			runtime.ReadMemStats(&after)
			if per := (after.TotalAlloc - before.TotalAlloc) / runs; per > 64<<10 {
				t.Fatalf("decoding a %d-byte batch allocated %d bytes", len(tt.batch), per)
			}
		})
	}
}

func TestBatchEncodeErrors(t *testing.T) {
	if _, err := AppendBatch(nil, nil); !errors.Is(err, ErrEmpty) {
		t.Errorf("empty: %v", err)
	}
	if _, err := AppendBatch(nil, []Record{{Seq: 5}, {Seq: 4}}); err == nil {
		t.Error("out-of-order sequences encoded")
	}
}

func FuzzDecodeBatch(f *testing.F) {
	good, _ := AppendBatch(nil, sampleRecords())
	f.Add(good)
	one, _ := AppendBatch(nil, []Record{{Value: []byte("x")}})
	f.Add(one)
	f.Add([]byte{Magic, Version, 0, 1, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecode(t, data)
		// Nearly every mutation breaks the checksum: decode the body under
		// a valid one too, so the fuzzer reaches the decoder behind it.
		if len(data) > trailerLen {
			body := data[:len(data)-trailerLen]
			checkDecode(t, binary.LittleEndian.AppendUint32(bytes.Clone(body), crc32.Checksum(body, castagnoli)))
		}
	})
}

// checkDecode: data decodes as ErrCorrupt, or to records that re-encode and
// decode to the same records.
func checkDecode(t *testing.T, data []byte) {
	recs, err := DecodeBatch(data, nil)
	if err != nil {
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("error does not wrap ErrCorrupt: %v", err)
		}
		return
	}
	// Whatever decodes must re-encode and decode to the same records.
	again, err := AppendBatch(nil, recs)
	if err != nil {
		t.Fatalf("re-encode: %v", err)
	}
	back, err := DecodeBatch(again, nil)
	if err != nil {
		t.Fatalf("decode re-encoded: %v", err)
	}
	if len(back) != len(recs) {
		t.Fatalf("re-decoded %d records, want %d", len(back), len(recs))
	}
	for i := range recs {
		if back[i].Seq != recs[i].Seq || !bytes.Equal(back[i].Value, recs[i].Value) || back[i].Origin != recs[i].Origin {
			t.Fatalf("record %d differs after re-encode", i)
		}
	}
}

func BenchmarkEncode128(b *testing.B) {
	recs := make([]Record, 1000)
	for i := range recs {
		recs[i] = Record{Seq: uint64(i + 1), Key: []byte("sensor-0001"), Value: bytes.Repeat([]byte("v"), 128), IngestTime: int64(i)}
	}
	var buf []byte
	b.SetBytes(128 * 1000)
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = AppendBatch(buf[:0], recs)
	}
}

func BenchmarkDecode128(b *testing.B) {
	recs := make([]Record, 1000)
	for i := range recs {
		recs[i] = Record{Seq: uint64(i + 1), Key: []byte("sensor-0001"), Value: bytes.Repeat([]byte("v"), 128), IngestTime: int64(i)}
	}
	buf, _ := AppendBatch(nil, recs)
	dst := make([]Record, 0, 1000)
	b.SetBytes(128 * 1000)
	b.ReportAllocs()
	for b.Loop() {
		dst, _ = DecodeBatch(buf, dst[:0])
	}
}

// TestProducerLen checks ProducerLen against the encoder, and
// MaxEncodingOverhead and BatchHeaderMax against the worst cases.
func TestProducerLen(t *testing.T) {
	manyHeaders := make([]Header, maxHeaders)
	for i := range manyHeaders {
		manyHeaders[i] = Header{Key: "", Value: nil}
	}
	bigHeaders := make([]Header, 3)
	for i := range bigHeaders {
		bigHeaders[i] = Header{Key: string(make([]byte, 300)), Value: make([]byte, 20000)}
	}
	tests := []struct {
		name string
		recs []Record
	}{
		{"empty", []Record{{}}},
		{"value", []Record{{Value: []byte("hello")}}},
		{"empty key and value", []Record{{Key: []byte{}, Value: []byte{}}}},
		{"negative time", []Record{{Time: -1 << 62, Value: make([]byte, 200)}}},
		{"time", []Record{{Time: 1764633600123456789, Key: []byte("k"), Value: make([]byte, 1<<20)}}},
		{"headers", []Record{{Headers: bigHeaders, Value: make([]byte, 127)}, {Value: make([]byte, 128)}}},
		{"65536 empty headers", []Record{{Headers: manyHeaders}}},
		{"headers of 128 bytes", []Record{{Headers: []Header{{Key: string(make([]byte, 128)), Value: make([]byte, 128)}}}}},
		{"key of 16384 bytes", []Record{{Key: make([]byte, 16384), Value: make([]byte, 127)}}},
		{"many records", make([]Record, 1000)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			enc, err := AppendBatch(nil, tc.recs)
			if err != nil {
				t.Fatal(err)
			}
			sum := 0
			for i := range tc.recs {
				sum += ProducerLen(&tc.recs[i])
			}
			if hdr := len(enc) - sum; hdr <= 0 || hdr > BatchHeaderMax {
				t.Fatalf("batch of %d bytes, records %d: header %d outside 1..%d", len(enc), sum, hdr, BatchHeaderMax)
			}
			if len(tc.recs) == 1 {
				p := tc.recs[0].PayloadSize()
				if over := len(enc) - p; over > MaxEncodingOverhead(p) {
					t.Fatalf("overhead %d above MaxEncodingOverhead(%d) = %d", over, p, MaxEncodingOverhead(p))
				}
			}
		})
	}
}

// TestMaxEncodingOverheadRandom checks the bound on random records whose
// field lengths cluster around the varint steps.
func TestMaxEncodingOverheadRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	length := func() int {
		steps := []int{0, 1, 127, 128, 129, 16383, 16384, 16385}
		return max(0, steps[rng.IntN(len(steps))]+rng.IntN(3)-1)
	}
	for i := 0; i < 2000; i++ {
		r := Record{Time: rng.Int64() - 1<<62, Value: make([]byte, length())}
		if rng.IntN(2) == 0 {
			r.Key = make([]byte, length())
		}
		for range rng.IntN(6) {
			r.Headers = append(r.Headers, Header{Key: string(make([]byte, length())), Value: make([]byte, length())})
		}
		enc, err := AppendBatch(nil, []Record{r})
		if err != nil {
			t.Fatal(err)
		}
		p := r.PayloadSize()
		if over := len(enc) - p; over > MaxEncodingOverhead(p) {
			t.Fatalf("record %d: overhead %d above MaxEncodingOverhead(%d) = %d", i, over, p, MaxEncodingOverhead(p))
		}
		if len(enc) > ProducerLen(&r)+BatchHeaderMax {
			t.Fatalf("record %d: batch of %d bytes above ProducerLen %d + BatchHeaderMax", i, len(enc), ProducerLen(&r))
		}
	}
}

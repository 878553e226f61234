package wasmhost

import (
	"encoding/binary"
	"fmt"
	"slices"
)

// ABI v1 names. The import module's name carries the major version: a guest
// built for v1 imports "edgehub_v1"; a future v2 host may offer both modules.
// Within a version, changes are additive only (new imports, new optional
// exports, new trailing fields announced by a length). docs/plugin-abi.md is
// the normative description; these constants must agree with it.
const (
	ImportModule = "edgehub_v1"

	ExportMemory = "memory"
	ExportAlloc  = "eh_alloc"
	ExportInit   = "eh_init"
	ExportBatch  = "eh_on_batch"
	ExportTimer  = "eh_on_timer"
	// ExportStateMerge resolves a keyed-state conflict when a merge of
	// input shards finds one key in two parents with different values
	// (docs/plugin-abi.md, "eh_state_merge").
	ExportStateMerge = "eh_state_merge"
	ExportReactor    = "_initialize" // WASI reactor start (Go c-shared, TinyGo, wasi-libc)

	importWASI = "wasi_snapshot_preview1"
)

// Encoding constants of ABI v1.
const (
	// BatchHeaderLen is the size of the fixed part of a batch header (before
	// the stream name). Guests must use the header_len field, not this value,
	// to find the first record: later versions may add header fields.
	BatchHeaderLen = 16
	// RecordPrefixLen is the part of an input record before its
	// output-compatible tail: record_len (4), seq (8), ingest_time (8).
	// v1 never appends to a record, so the tail is exactly an output
	// record (the pass-through shortcut of docs/plugin-abi.md).
	RecordPrefixLen = 20
	// OutputFixedLen is the fixed part of an output record: time (8),
	// key_len (4), value_len (4), header_count (4).
	OutputFixedLen = 20

	// MaxOutputsPerInput bounds the records one input record may emit: an
	// output's origin sequence is inputSeq<<16 | outputIndex, and index
	// 0xFFFF is reserved for the dead-letter copy of the input.
	MaxOutputsPerInput = 1<<16 - 1
	// MaxStateKey and MaxStateValue bound keyed state entries.
	MaxStateKey   = 1024
	MaxStateValue = 1 << 20
	// MaxLogLine truncates a guest log message.
	MaxLogLine = 4096
)

// Level is a guest log level, as passed to the log import.
type Level int32

// Log levels of the log import.
const (
	LevelDebug Level = 0
	LevelInfo  Level = 1
	LevelWarn  Level = 2
	LevelError Level = 3
)

// Header is one record header as it crosses the ABI.
type Header struct {
	Key   []byte
	Value []byte
}

// InputRecord is one record handed to eh_on_batch.
type InputRecord struct {
	Seq        uint64
	IngestTime int64
	Time       int64
	Key        []byte // nil is encoded as length -1
	Value      []byte // nil (a tombstone) is encoded as length -1
	Headers    []Header
}

// OutputRecord is one record passed to the emit import. Its slices alias the
// buffer it was decoded from.
type OutputRecord struct {
	Time    int64
	Key     []byte
	Value   []byte
	Headers []Header
}

// AppendBatch appends the ABI v1 encoding of an input batch to dst:
//
//	u32 header_len  bytes from the start of the batch to its first record
//	u32 count       records in the batch
//	u32 shard       input shard
//	u32 stream_len  then stream_len bytes of the input stream's name
//	count × record:
//	  u32 record_len  bytes of the record after this field
//	  u64 seq
//	  i64 ingest_time
//	  --- output-compatible tail (an OutputRecord encoding) ---
//	  i64 time
//	  i32 key_len     -1 = no key
//	  i32 value_len   -1 = no value (tombstone)
//	  u32 header_count
//	  key bytes, value bytes
//	  header_count × (u32 key_len, key bytes, u32 value_len, value bytes)
//
// All integers are little endian.
func AppendBatch(dst []byte, stream string, shard uint32, recs []InputRecord) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, uint32(BatchHeaderLen+len(stream)))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(recs)))
	dst = binary.LittleEndian.AppendUint32(dst, shard)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(stream)))
	dst = append(dst, stream...)
	for i := range recs {
		r := &recs[i]
		at := len(dst)
		dst = append(dst, 0, 0, 0, 0)
		dst = binary.LittleEndian.AppendUint64(dst, r.Seq)
		dst = binary.LittleEndian.AppendUint64(dst, uint64(r.IngestTime))
		dst = AppendOutput(dst, OutputRecord{Time: r.Time, Key: r.Key, Value: r.Value, Headers: r.Headers})
		binary.LittleEndian.PutUint32(dst[at:], uint32(len(dst)-at-4))
	}
	return dst
}

// AppendOutput appends the ABI v1 encoding of an output record (the tail of
// an input record) to dst.
func AppendOutput(dst []byte, r OutputRecord) []byte {
	dst = binary.LittleEndian.AppendUint64(dst, uint64(r.Time))
	dst = binary.LittleEndian.AppendUint32(dst, nullableLen(r.Key))
	dst = binary.LittleEndian.AppendUint32(dst, nullableLen(r.Value))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(r.Headers)))
	dst = append(dst, r.Key...)
	dst = append(dst, r.Value...)
	for _, h := range r.Headers {
		dst = binary.LittleEndian.AppendUint32(dst, uint32(len(h.Key)))
		dst = append(dst, h.Key...)
		dst = binary.LittleEndian.AppendUint32(dst, uint32(len(h.Value)))
		dst = append(dst, h.Value...)
	}
	return dst
}

func nullableLen(b []byte) uint32 {
	if b == nil {
		return ^uint32(0) // -1
	}
	return uint32(len(b))
}

// DecodeOutput decodes an output record passed to emit. Trailing bytes are an
// error: v1 defines no trailing fields for outputs. hdrs is reused for the
// headers when it has room.
func DecodeOutput(buf []byte, hdrs []Header) (OutputRecord, error) {
	if len(buf) < OutputFixedLen {
		return OutputRecord{}, fmt.Errorf("%w: output record of %d bytes (min %d)", ErrABI, len(buf), OutputFixedLen)
	}
	var r OutputRecord
	r.Time = int64(binary.LittleEndian.Uint64(buf))
	keyLen := int32(binary.LittleEndian.Uint32(buf[8:]))
	valLen := int32(binary.LittleEndian.Uint32(buf[12:]))
	nh := binary.LittleEndian.Uint32(buf[16:])
	rest := buf[OutputFixedLen:]
	var ok bool
	if r.Key, rest, ok = takeNullable(rest, keyLen); !ok {
		return OutputRecord{}, fmt.Errorf("%w: output key length %d with %d bytes left", ErrABI, keyLen, len(rest))
	}
	if r.Value, rest, ok = takeNullable(rest, valLen); !ok {
		return OutputRecord{}, fmt.Errorf("%w: output value length %d with %d bytes left", ErrABI, valLen, len(rest))
	}
	// Each header takes at least 8 bytes: a count beyond that cannot be honest.
	if uint64(nh)*8 > uint64(len(rest)) {
		return OutputRecord{}, fmt.Errorf("%w: %d headers in %d bytes", ErrABI, nh, len(rest))
	}
	if nh > 0 {
		r.Headers = slices.Grow(hdrs[:0], int(nh))[:nh]
		for i := range r.Headers {
			var k, v []byte
			if k, rest, ok = takeSized(rest); !ok {
				return OutputRecord{}, fmt.Errorf("%w: header %d key runs past the record", ErrABI, i)
			}
			if v, rest, ok = takeSized(rest); !ok {
				return OutputRecord{}, fmt.Errorf("%w: header %d value runs past the record", ErrABI, i)
			}
			r.Headers[i] = Header{Key: k, Value: v}
		}
	}
	if len(rest) != 0 {
		return OutputRecord{}, fmt.Errorf("%w: %d trailing bytes after output record", ErrABI, len(rest))
	}
	return r, nil
}

func takeNullable(b []byte, n int32) (field, rest []byte, ok bool) {
	switch {
	case n == -1:
		return nil, b, true
	case n < 0 || int(n) > len(b):
		return nil, b, false
	}
	return b[:n:n], b[n:], true
}

func takeSized(b []byte) (field, rest []byte, ok bool) {
	if len(b) < 4 {
		return nil, b, false
	}
	n := binary.LittleEndian.Uint32(b)
	b = b[4:]
	if uint64(n) > uint64(len(b)) {
		return nil, b, false
	}
	return b[:n:n], b[n:], true
}

// AppendConfig appends the ABI v1 encoding of a plugin's config, passed to
// eh_init, to dst: u32 count, then count × (u32 key_len, key, u32 value_len,
// value), sorted by key.
func AppendConfig(dst []byte, cfg map[string]string) []byte {
	keys := make([]string, 0, len(cfg))
	for k := range cfg {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(keys)))
	for _, k := range keys {
		dst = binary.LittleEndian.AppendUint32(dst, uint32(len(k)))
		dst = append(dst, k...)
		dst = binary.LittleEndian.AppendUint32(dst, uint32(len(cfg[k])))
		dst = append(dst, cfg[k]...)
	}
	return dst
}

// AppendMergeRequest appends eh_state_merge's argument: u32 key_len, key,
// u32 a_len, a, u32 b_len, b (docs/plugin-abi.md).
func AppendMergeRequest(dst, key, a, b []byte) []byte {
	for _, f := range [][]byte{key, a, b} {
		dst = binary.LittleEndian.AppendUint32(dst, uint32(len(f)))
		dst = append(dst, f...)
	}
	return dst
}

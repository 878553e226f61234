package record

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/edgehub/edgehub/internal/wire"
)

// Batch encoding, version 1. The same bytes are a store chunk on disk and a
// record batch on the wire, so a consumer can be served without re-encoding.
//
//	byte     magic (0xEB)
//	byte     version (1)
//	byte     flags (reserved, must be 0)
//	uvarint  count            number of records (> 0)
//	uvarint  baseSeq          Seq of the first record (0 if unassigned)
//	uvarint  lastDelta        Seq of the last record minus baseSeq
//	varint   baseIngest       IngestTime of the first record
//	varint   maxIngestDelta   largest IngestTime minus baseIngest
//	uvarint  nOrigins         origin hub table, referenced by records
//	  nOrigins × (uvarint len, bytes)
//	count × record:
//	  uvarint seqDelta        Seq - baseSeq
//	  varint  ingestDelta     IngestTime - baseIngest
//	  varint  time            producer Time
//	  uvarint keyLen+1        0 = nil key
//	  bytes   key
//	  uvarint valueLen+1      0 = nil value (tombstone)
//	  bytes   value
//	  uvarint nHeaders
//	    nHeaders × (uvarint keyLen, bytes, uvarint valueLen, bytes)
//	  uvarint originIdx       0 = local; i = origin table entry i-1
//	  if originIdx > 0: uvarint originShard, uvarint originSeq
//	uint32   CRC-32C (Castagnoli, little endian) of every byte before it
const (
	Magic   = 0xEB
	Version = 1

	headerMin  = 3 + 5 + 1
	trailerLen = 4
	// minRecordLen is the fewest bytes one encoded record can take; it bounds
	// allocations made from an untrusted count.
	minRecordLen = 7
	maxOrigins   = 1 << 16
	maxHeaders   = 1 << 16
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Sentinel errors of the batch codec.
var (
	// ErrCorrupt is wrapped by every decoding failure: bad magic, version,
	// checksum, or a field that runs past the buffer.
	ErrCorrupt = errors.New("record: corrupt batch")
	// ErrEmpty is returned when encoding a batch with no records.
	ErrEmpty = errors.New("record: empty batch")
)

// AppendBatch appends the encoding of recs to dst and returns the extended
// slice. recs must not be empty.
func AppendBatch(dst []byte, recs []Record) ([]byte, error) {
	if len(recs) == 0 {
		return dst, ErrEmpty
	}
	start := len(dst)
	base, last := recs[0].Seq, recs[len(recs)-1].Seq
	if last < base {
		return dst, fmt.Errorf("record: encode: sequences out of order (%d after %d)", last, base)
	}
	baseIngest, maxIngest := recs[0].IngestTime, recs[0].IngestTime
	for i := range recs {
		maxIngest = max(maxIngest, recs[i].IngestTime)
	}
	dst = append(dst, Magic, Version, 0)
	dst = binary.AppendUvarint(dst, uint64(len(recs)))
	dst = binary.AppendUvarint(dst, base)
	dst = binary.AppendUvarint(dst, last-base)
	dst = binary.AppendVarint(dst, baseIngest)
	dst = binary.AppendVarint(dst, maxIngest-baseIngest)

	// Origin table: batches usually carry zero or one foreign origin, so a
	// linear scan beats a map.
	var origins []string
	for i := range recs {
		if h := recs[i].Origin.Hub; h != "" && indexOf(origins, h) < 0 {
			origins = append(origins, h)
		}
	}
	if len(origins) > maxOrigins {
		return dst[:start], fmt.Errorf("record: encode: %d origins in one batch (max %d)", len(origins), maxOrigins)
	}
	dst = binary.AppendUvarint(dst, uint64(len(origins)))
	for _, o := range origins {
		dst = binary.AppendUvarint(dst, uint64(len(o)))
		dst = append(dst, o...)
	}
	for i := range recs {
		r := &recs[i]
		if r.Seq < base || (i > 0 && r.Seq < recs[i-1].Seq) {
			return dst[:start], fmt.Errorf("record: encode: sequences out of order at record %d", i)
		}
		if len(r.Headers) > maxHeaders {
			return dst[:start], fmt.Errorf("record: encode: %d headers (max %d)", len(r.Headers), maxHeaders)
		}
		dst = binary.AppendUvarint(dst, r.Seq-base)
		dst = binary.AppendVarint(dst, r.IngestTime-baseIngest)
		dst = binary.AppendVarint(dst, r.Time)
		dst = appendNullable(dst, r.Key)
		dst = appendNullable(dst, r.Value)
		dst = binary.AppendUvarint(dst, uint64(len(r.Headers)))
		for _, h := range r.Headers {
			dst = binary.AppendUvarint(dst, uint64(len(h.Key)))
			dst = append(dst, h.Key...)
			dst = binary.AppendUvarint(dst, uint64(len(h.Value)))
			dst = append(dst, h.Value...)
		}
		if r.Origin.Hub == "" {
			dst = append(dst, 0)
		} else {
			dst = binary.AppendUvarint(dst, uint64(indexOf(origins, r.Origin.Hub)+1))
			dst = binary.AppendUvarint(dst, uint64(r.Origin.Shard))
			dst = binary.AppendUvarint(dst, r.Origin.Seq)
		}
	}
	sum := crc32.Checksum(dst[start:], castagnoli)
	return binary.LittleEndian.AppendUint32(dst, sum), nil
}

// MaxEncodingOverhead bounds what AppendBatch adds to the PayloadSize p
// of a record alone in a batch as a producer sends it (sequence, ingest
// time and origin 0): the batch header and checksum and the record's fixed
// fields take at most 64 bytes, and a length prefix takes more than the
// byte PayloadSize counts for it only for a field of at least 128 bytes,
// by at most 1 byte per 128. A BATCH frame that holds p +
// MaxEncodingOverhead(p) bytes of records holds any record of size p.
func MaxEncodingOverhead(p int) int { return 64 + p/128 }

// BatchHeaderMax bounds the bytes a producer batch adds to its records'
// ProducerLen: its header and checksum.
const BatchHeaderMax = 3 + binary.MaxVarintLen64 + 5 + 1 + trailerLen

// ProducerLen is the exact number of bytes r takes in a batch sent by a
// producer: sequence and ingest deltas 0, a local origin.
func ProducerLen(r *Record) int {
	n := 2 + varintLen(r.Time) + nullableLen(r.Key) + nullableLen(r.Value) + uvarintLen(uint64(len(r.Headers))) + 1
	for _, h := range r.Headers {
		n += uvarintLen(uint64(len(h.Key))) + len(h.Key) + uvarintLen(uint64(len(h.Value))) + len(h.Value)
	}
	return n
}

func uvarintLen(v uint64) int {
	n := 1
	for ; v >= 0x80; v >>= 7 {
		n++
	}
	return n
}

func varintLen(v int64) int { return uvarintLen(uint64(v<<1) ^ uint64(v>>63)) }

func nullableLen(b []byte) int {
	if b == nil {
		return 1
	}
	return uvarintLen(uint64(len(b))+1) + len(b)
}

func indexOf(s []string, v string) int {
	for i := range s {
		if s[i] == v {
			return i
		}
	}
	return -1
}

func appendNullable(dst, b []byte) []byte {
	if b == nil {
		return append(dst, 0)
	}
	dst = binary.AppendUvarint(dst, uint64(len(b))+1)
	return append(dst, b...)
}

// Info is what a batch's header says, read without decoding its records.
type Info struct {
	Count      int
	BaseSeq    uint64
	LastSeq    uint64
	BaseIngest int64
	MaxIngest  int64 // largest IngestTime in the batch
}

// ReadInfo verifies buf's checksum and returns its header.
func ReadInfo(buf []byte) (Info, error) {
	d, err := newDecoder(buf)
	if err != nil {
		return Info{}, err
	}
	return d.info, nil
}

// DecodeBatch verifies buf's checksum and appends its records to dst.
// The records' byte slices alias buf.
func DecodeBatch(buf []byte, dst []Record) ([]Record, error) {
	d, err := newDecoder(buf)
	if err != nil {
		return dst, err
	}
	origins := make([]string, d.count(maxOrigins, 1))
	for i := range origins {
		// The encoder names only foreign hubs: an empty name would decode
		// as a local record that carries an origin shard and sequence.
		if origins[i] = string(d.Next(d.UvarintMax(uint64(len(d.Buf))))); origins[i] == "" {
			d.Fail("origin %d has no hub name", i)
		}
	}
	if d.Err != nil {
		return dst, d.Err
	}
	if cap(dst)-len(dst) < d.info.Count {
		// Grow geometrically: callers decode chunk after chunk into one
		// slice, and exact growth would copy it again for every chunk.
		grown := make([]Record, len(dst), max(len(dst)+d.info.Count, 2*cap(dst)))
		copy(grown, dst)
		dst = grown
	}
	prev := d.info.BaseSeq
	for i := 0; i < d.info.Count && d.Err == nil; i++ {
		var r Record
		r.Seq = d.info.BaseSeq + d.Uvarint()
		r.IngestTime = d.info.BaseIngest + d.Varint()
		if r.IngestTime > d.info.MaxIngest {
			d.Fail("record %d: ingest time above the batch's maximum", i)
			break
		}
		r.Time = d.Varint()
		r.Key = d.nullable()
		r.Value = d.nullable()
		if nh := d.count(maxHeaders, 2); nh > 0 {
			r.Headers = make([]Header, nh)
			for j := range r.Headers {
				r.Headers[j].Key = string(d.Next(d.UvarintMax(uint64(len(d.Buf)))))
				r.Headers[j].Value = d.Next(d.UvarintMax(uint64(len(d.Buf))))
			}
		}
		if oi := d.Uvarint(); oi > 0 {
			if oi > uint64(len(origins)) {
				d.Fail("origin index %d of %d", oi, len(origins))
				break
			}
			r.Origin.Hub = origins[oi-1]
			shard := d.Uvarint()
			if shard > 1<<32-1 {
				d.Fail("origin shard %d", shard)
				break
			}
			r.Origin.Shard = uint32(shard)
			r.Origin.Seq = d.Uvarint()
		}
		if r.Seq < prev || r.Seq > d.info.LastSeq {
			d.Fail("record %d: sequence %d outside [%d, %d]", i, r.Seq, prev, d.info.LastSeq)
			break
		}
		prev = r.Seq
		dst = append(dst, r)
	}
	if d.Err == nil && len(d.Buf) != 0 {
		d.Fail("%d trailing bytes", len(d.Buf))
	}
	if d.Err == nil && len(dst) > 0 && dst[len(dst)-1].Seq != d.info.LastSeq {
		d.Fail("last sequence %d, header says %d", dst[len(dst)-1].Seq, d.info.LastSeq)
	}
	if d.Err != nil {
		return dst, d.Err
	}
	return dst, nil
}

// decoder reads fields from a checksummed batch; see wire.Reader for the
// sticky-error rules.
type decoder struct {
	wire.Reader
	info Info
}

func newDecoder(buf []byte) (decoder, error) {
	if len(buf) < headerMin+trailerLen {
		return decoder{}, fmt.Errorf("%w: %d bytes is too short", ErrCorrupt, len(buf))
	}
	if buf[0] != Magic {
		return decoder{}, fmt.Errorf("%w: bad magic 0x%02x", ErrCorrupt, buf[0])
	}
	if buf[1] != Version {
		return decoder{}, fmt.Errorf("%w: unsupported version %d", ErrCorrupt, buf[1])
	}
	if buf[2] != 0 {
		return decoder{}, fmt.Errorf("%w: unknown flags 0x%02x", ErrCorrupt, buf[2])
	}
	body := buf[:len(buf)-trailerLen]
	want := binary.LittleEndian.Uint32(buf[len(body):])
	if got := crc32.Checksum(body, castagnoli); got != want {
		return decoder{}, fmt.Errorf("%w: checksum 0x%08x, want 0x%08x", ErrCorrupt, got, want)
	}
	d := decoder{Reader: wire.Reader{Buf: body[3:], Sentinel: ErrCorrupt}}
	count := d.Uvarint()
	d.info.BaseSeq = d.Uvarint()
	lastDelta := d.Uvarint()
	d.info.BaseIngest = d.Varint()
	d.info.MaxIngest = d.info.BaseIngest + d.Varint()
	switch {
	case d.Err != nil:
		return decoder{}, d.Err
	case count == 0:
		return decoder{}, fmt.Errorf("%w: zero records", ErrCorrupt)
	case count > uint64(len(d.Buf)/minRecordLen+1):
		return decoder{}, fmt.Errorf("%w: %d records cannot fit in %d bytes", ErrCorrupt, count, len(d.Buf))
	case d.info.BaseSeq+lastDelta < d.info.BaseSeq:
		return decoder{}, fmt.Errorf("%w: sequence range overflows", ErrCorrupt)
	}
	d.info.Count = int(count)
	d.info.LastSeq = d.info.BaseSeq + lastDelta
	return d, nil
}

// count reads the number of elements of a table (at most max) and bounds it
// by the bytes left at minSize bytes per element: a hostile count cannot
// force an allocation beyond the batch's size (a 65536-header count in a
// 20-byte record allocated 2.5 MiB before failing).
func (d *decoder) count(max uint64, minSize int) int {
	n := d.UvarintMax(max)
	if d.Err == nil && n > uint64(len(d.Buf)/minSize) {
		d.Fail("count %d cannot fit in %d bytes", n, len(d.Buf))
		return 0
	}
	return int(n)
}

// nullable reads a field written by appendNullable: 0 is nil, n+1 is n bytes.
func (d *decoder) nullable() []byte {
	n := d.Uvarint()
	if n == 0 || d.Err != nil {
		return nil
	}
	return d.Next(n - 1)
}

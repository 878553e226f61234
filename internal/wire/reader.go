package wire

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Reader decodes fields from Buf. After the first failure every read returns
// a zero value, Buf is empty and Err holds the failure. Integers are Go's
// encoding/binary varints (unsigned LEB128, zig-zag signed); length-prefixed
// fields are a uvarint length followed by the bytes.
//
// Decoders embed a Reader and read Buf and Err directly (to check for
// trailing bytes or to take the rest of a payload).
type Reader struct {
	// Buf is what is left to read.
	Buf []byte
	// Err is the first failure, nil while decoding succeeds.
	Err error
	// Sentinel is wrapped by every failure: "<Sentinel>: <message>".
	Sentinel error
	// What, if set, names the message being decoded: failures read
	// "<Sentinel>: <What>: <message>".
	What string
}

// Fail records a failure unless one is recorded already, and empties Buf so
// later reads fail fast.
func (r *Reader) Fail(format string, args ...any) {
	if r.Err == nil {
		msg := fmt.Sprintf(format, args...)
		if r.What != "" {
			r.Err = fmt.Errorf("%w: %s: %s", r.Sentinel, r.What, msg)
		} else {
			r.Err = fmt.Errorf("%w: %s", r.Sentinel, msg)
		}
	}
	r.Buf = nil
}

// Byte reads one byte.
func (r *Reader) Byte() byte {
	if r.Err != nil {
		return 0
	}
	if len(r.Buf) == 0 {
		r.Fail("truncated")
		return 0
	}
	b := r.Buf[0]
	r.Buf = r.Buf[1:]
	return b
}

// Uvarint reads an unsigned varint.
func (r *Reader) Uvarint() uint64 {
	if r.Err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.Buf)
	if n <= 0 {
		r.Fail("bad uvarint")
		return 0
	}
	r.Buf = r.Buf[n:]
	return v
}

// Varint reads a zig-zag signed varint.
func (r *Reader) Varint() int64 {
	if r.Err != nil {
		return 0
	}
	v, n := binary.Varint(r.Buf)
	if n <= 0 {
		r.Fail("bad varint")
		return 0
	}
	r.Buf = r.Buf[n:]
	return v
}

// UvarintMax reads an unsigned varint that must not exceed max.
func (r *Reader) UvarintMax(max uint64) uint64 {
	v := r.Uvarint()
	if v > max {
		r.Fail("value %d exceeds %d", v, max)
		return 0
	}
	return v
}

// Uint32 reads an unsigned varint that must fit in 32 bits; field names it
// in the failure.
func (r *Reader) Uint32(field string) uint32 {
	v := r.Uvarint()
	if v > math.MaxUint32 {
		r.Fail("%s %d out of range", field, v)
		return 0
	}
	return uint32(v)
}

// Next returns the next n bytes, aliasing Buf (capped, so appending to the
// result cannot overwrite what follows).
func (r *Reader) Next(n uint64) []byte {
	if r.Err != nil {
		return nil
	}
	if n > uint64(len(r.Buf)) {
		r.Fail("field of %d bytes runs past the end", n)
		return nil
	}
	b := r.Buf[:n:n]
	r.Buf = r.Buf[n:]
	return b
}

// Bytes reads a length-prefixed field of at most max bytes (max <= 0: no
// limit other than the bytes left), aliasing Buf.
func (r *Reader) Bytes(max int) []byte {
	n := r.Uvarint()
	if r.Err != nil {
		return nil
	}
	if max > 0 && n <= uint64(len(r.Buf)) && n > uint64(max) {
		r.Fail("field of %d bytes exceeds %d", n, max)
		return nil
	}
	return r.Next(n)
}

// String reads a length-prefixed field as a string, copied out of Buf.
func (r *Reader) String(max int) string { return string(r.Bytes(max)) }

// Count reads an element count and bounds it by the bytes left at minSize
// bytes per element, so a hostile count cannot force a large allocation.
func (r *Reader) Count(minSize int) int {
	n := r.Uvarint()
	if r.Err != nil {
		return 0
	}
	if n > uint64(len(r.Buf)/minSize) {
		r.Fail("count %d cannot fit in %d bytes", n, len(r.Buf))
		return 0
	}
	return int(n)
}

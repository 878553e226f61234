package quic

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Payload encoding helpers. Integers are unsigned LEB128 varints ("uvarint")
// or zig-zag signed varints ("varint"), as Go's encoding/binary writes them;
// strings and byte fields are a uvarint length followed by the bytes.

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

func appendBytes(dst, b []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

// decoder reads payload fields; after the first failure every read returns a
// zero value and err keeps the first failure, so decoders check once.
type decoder struct {
	buf  []byte
	what string
	err  error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s: %s", ErrMalformed, d.what, fmt.Sprintf(format, args...))
	}
	d.buf = nil
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.buf)
	if n <= 0 {
		d.fail("bad uvarint")
		return 0
	}
	d.buf = d.buf[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.buf)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.buf = d.buf[n:]
	return v
}

func (d *decoder) u32(field string) uint32 {
	v := d.uvarint()
	if v > math.MaxUint32 {
		d.fail("%s %d out of range", field, v)
		return 0
	}
	return uint32(v)
}

func (d *decoder) byte1() byte {
	if d.err != nil {
		return 0
	}
	if len(d.buf) == 0 {
		d.fail("truncated")
		return 0
	}
	b := d.buf[0]
	d.buf = d.buf[1:]
	return b
}

// bytes returns a length-prefixed field, aliasing the payload.
func (d *decoder) bytes(max int) []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.buf)) {
		d.fail("field of %d bytes runs past the end", n)
		return nil
	}
	if max > 0 && n > uint64(max) {
		d.fail("field of %d bytes exceeds %d", n, max)
		return nil
	}
	b := d.buf[:n:n]
	d.buf = d.buf[n:]
	return b
}

func (d *decoder) string(max int) string { return string(d.bytes(max)) }

// count reads a uvarint element count and bounds it by the bytes left, at
// minSize bytes per element, so a hostile count cannot force an allocation.
func (d *decoder) count(minSize int) int {
	n := d.uvarint()
	if d.err != nil {
		return 0
	}
	if n > uint64(len(d.buf)/minSize) {
		d.fail("count %d cannot fit in %d bytes", n, len(d.buf))
		return 0
	}
	return int(n)
}

// done finishes decoding. Trailing bytes are allowed: later revisions of the
// protocol append fields, and older receivers ignore them.
func (d *decoder) done() error { return d.err }

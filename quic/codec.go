package quic

import (
	"encoding/binary"
	"math"

	"github.com/edgehub/edgehub/internal/wire"
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

// decoder reads payload fields; see wire.Reader for the sticky-error rules.
// Every failure wraps ErrMalformed and names the frame.
type decoder struct {
	wire.Reader
}

func newDecoder(p []byte, what string) decoder {
	return decoder{wire.Reader{Buf: p, Sentinel: ErrMalformed, What: what}}
}

// shard decodes a varint shard of a BATCH or datagram: any int32 (range
// checks against the stream are the hub's, with invalid_argument); a value
// beyond int32 is malformed.
func (d *decoder) shard() int32 {
	v := d.Varint()
	if v < math.MinInt32 || v > math.MaxInt32 {
		d.Fail("shard %d out of range", v)
		return 0
	}
	return int32(v)
}

// done finishes decoding. Trailing bytes are allowed: later revisions of the
// protocol append fields, and older receivers ignore them.
func (d *decoder) done() error { return d.Err }

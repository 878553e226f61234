package gossip

import (
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/edgehub/edgehub/internal/wire"
)

// NodeMeta is what a hub says about itself in its memberlist alive
// messages. Its encoding must fit memberlist.MetaMaxSize (512 bytes).
type NodeMeta struct {
	Site   string
	Region string
	Tags   []string
	// QUIC is the host:port of the hub's QUIC data plane, which peers dial
	// to pull records.
	QUIC string

	// leaving is set in the last metadata a member sends before a graceful
	// leave.
	leaving bool
}

// HasTag reports whether m carries tag.
func (m NodeMeta) HasTag(tag string) bool { return slices.Contains(m.Tags, tag) }

const metaVersion1 = 1

// encode is: byte version, string site, string region, uvarint n, n × string
// tag, string quic (strings: uvarint length, bytes), byte flags (1 =
// leaving).
func (m NodeMeta) encode() []byte {
	b := []byte{metaVersion1}
	b = appendString(b, m.Site)
	b = appendString(b, m.Region)
	b = binary.AppendUvarint(b, uint64(len(m.Tags)))
	for _, t := range m.Tags {
		b = appendString(b, t)
	}
	b = appendString(b, m.QUIC)
	flags := byte(0)
	if m.leaving {
		flags |= 1
	}
	return append(b, flags)
}

// decodeNodeMeta parses NodeMeta.encode. Unknown trailing bytes are errors:
// a newer version must bump the version byte.
func decodeNodeMeta(b []byte) (NodeMeta, error) {
	d := wire.Reader{Buf: b, Sentinel: ErrBadMessage}
	if v := d.Byte(); v != metaVersion1 {
		return NodeMeta{}, fmt.Errorf("%w: node meta version %d", ErrBadMessage, v)
	}
	var m NodeMeta
	m.Site = d.String(maxNameLen)
	m.Region = d.String(maxNameLen)
	n := d.Uvarint()
	if n > uint64(len(d.Buf)) {
		d.Fail("%d tags", n)
	}
	if d.Err == nil && n > 0 {
		m.Tags = make([]string, n)
		for i := range m.Tags {
			m.Tags[i] = d.String(maxNameLen)
		}
	}
	m.QUIC = d.String(maxNameLen)
	switch d.Byte() {
	case 0:
	case 1:
		m.leaving = true
	default:
		d.Fail("unknown flags")
	}
	if d.Err == nil && len(d.Buf) != 0 {
		d.Fail("%d trailing bytes", len(d.Buf))
	}
	if d.Err != nil {
		return NodeMeta{}, d.Err
	}
	return m, nil
}

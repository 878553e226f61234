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
	// CertPins are SHA-256 digests of the SubjectPublicKeyInfo of the
	// certificates the hub's data plane serves (its current one; during a
	// renewal it may publish more), at most MaxCertPins. Peers pin them
	// when they dial the hub only if gossip is encrypted: the AES-GCM key
	// is what authenticates them.
	CertPins [][32]byte

	// leaving is set in the last metadata a member sends before a graceful
	// leave.
	leaving bool
}

// HasTag reports whether m carries tag.
func (m NodeMeta) HasTag(tag string) bool { return slices.Contains(m.Tags, tag) }

// MaxCertPins bounds NodeMeta.CertPins: the metadata must fit 512 bytes.
const MaxCertPins = 4

const (
	metaVersion1 = 1
	// metaVersion2 appends optional fields, each (uvarint tag, uvarint
	// length, bytes); decoders skip tags they do not know, so fields can be
	// added without another version.
	metaVersion2 = 2
	metaCertPin  = 1 // field tag: one 32-byte entry of CertPins
)

// encode is: byte version, string site, string region, uvarint n, n × string
// tag, string quic (strings: uvarint length, bytes), byte flags (1 =
// leaving), then (version 2) fields until the end: uvarint tag, uvarint
// length, bytes. Metadata without fields is written as version 1, which
// hubs from before version 2 read.
func (m NodeMeta) encode() []byte {
	version := byte(metaVersion1)
	if len(m.CertPins) > 0 {
		version = metaVersion2
	}
	b := []byte{version}
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
	b = append(b, flags)
	for _, p := range m.CertPins {
		b = binary.AppendUvarint(b, metaCertPin)
		b = binary.AppendUvarint(b, uint64(len(p)))
		b = append(b, p[:]...)
	}
	return b
}

// decodeNodeMeta parses NodeMeta.encode. Version 1 has no trailing bytes;
// version 2 fields with unknown tags are skipped.
func decodeNodeMeta(b []byte) (NodeMeta, error) {
	d := wire.Reader{Buf: b, Sentinel: ErrBadMessage}
	version := d.Byte()
	if version != metaVersion1 && version != metaVersion2 {
		return NodeMeta{}, fmt.Errorf("%w: node meta version %d", ErrBadMessage, version)
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
	for version >= metaVersion2 && d.Err == nil && len(d.Buf) > 0 {
		tag := d.Uvarint()
		val := d.Bytes(0)
		switch {
		case d.Err != nil:
		case tag == metaCertPin && len(val) == 32 && len(m.CertPins) < MaxCertPins:
			m.CertPins = append(m.CertPins, [32]byte(val))
		case tag == metaCertPin:
			d.Fail("certificate pin of %d bytes, or more than %d", len(val), MaxCertPins)
		}
	}
	if d.Err == nil && len(d.Buf) != 0 {
		d.Fail("%d trailing bytes", len(d.Buf))
	}
	if d.Err != nil {
		return NodeMeta{}, d.Err
	}
	return m, nil
}

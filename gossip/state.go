package gossip

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strings"

	"github.com/edgehub/edgehub/internal/wire"
)

// Def is one hub's published definition of a replicated stream.
type Def struct {
	// Version orders definitions of the same stream across hubs: the
	// highest wins (ties broken by Spec bytes), so every hub converges on
	// one definition.
	Version uint64
	// Deleted marks a definition withdrawn by its publisher.
	Deleted bool
	// Spec is opaque to gossip (the hub stores a JSON stream config).
	Spec []byte
}

// Newer reports whether d should replace o as the definition of a stream.
func (d Def) Newer(o Def) bool {
	if d.Version != o.Version {
		return d.Version > o.Version
	}
	return string(d.Spec) > string(o.Spec)
}

// Vector is one hub's progress on one origin hub of one stream: Seqs[s] is
// the highest contiguous origin sequence of origin shard s it holds.
type Vector struct {
	Seqs []uint64
	// Incarnation is the incarnation of the origin's stream these
	// sequences count in (hex; "" if the publisher knows none). A stream
	// deleted and created again at its origin numbers from 1 again under a
	// new incarnation.
	Incarnation string
}

// entry kinds on the wire.
const (
	kindDef    = 1
	kindVector = 2
)

// entry is the unit of gossip state: one key, one value, one version.
type entry struct {
	kind    byte
	hub     string // publisher
	stream  string
	origin  string // kindVector only
	version uint64 // publisher's clock
	def     Def
	vector  Vector
}

func (e *entry) key() string {
	if e.kind == kindDef {
		return "d\x00" + e.hub + "\x00" + e.stream
	}
	return "v\x00" + e.hub + "\x00" + e.stream + "\x00" + e.origin
}

// Limits on decoded messages: gossip is small metadata, and a decoder fed by
// the network must not allocate what a header claims without the bytes to
// back it.
const (
	maxNameLen  = 255
	maxSpecLen  = 16 << 10
	maxShards   = 1 << 16
	msgEntries  = 1 // message type: a list of entries
	msgVersion1 = 1 // vectors without an incarnation (read, no longer written)
	msgVersion2 = 2 // vectors end with their incarnation
	maxIncLen   = 64
	maxEntries  = 1 << 20
)

// appendEntries encodes entries as one message:
//
//	byte     message type (1 = entries)
//	byte     version (2; version 1 lacks the vector's incarnation)
//	uvarint  count
//	count ×  entry:
//	  byte     kind (1 = def, 2 = vector)
//	  string   publisher hub          (uvarint length, bytes)
//	  string   stream
//	  uvarint  version
//	  def:     byte deleted (0/1), uvarint def version, string spec
//	  vector:  string origin hub, uvarint shards, shards × uvarint seq,
//	           string incarnation (version 2)
func appendEntries(dst []byte, es []*entry) []byte {
	dst = append(dst, msgEntries, msgVersion2)
	dst = binary.AppendUvarint(dst, uint64(len(es)))
	for _, e := range es {
		dst = append(dst, e.kind)
		dst = appendString(dst, e.hub)
		dst = appendString(dst, e.stream)
		dst = binary.AppendUvarint(dst, e.version)
		switch e.kind {
		case kindDef:
			del := byte(0)
			if e.def.Deleted {
				del = 1
			}
			dst = append(dst, del)
			dst = binary.AppendUvarint(dst, e.def.Version)
			dst = appendString(dst, string(e.def.Spec))
		case kindVector:
			dst = appendString(dst, e.origin)
			dst = binary.AppendUvarint(dst, uint64(len(e.vector.Seqs)))
			for _, s := range e.vector.Seqs {
				dst = binary.AppendUvarint(dst, s)
			}
			dst = appendString(dst, e.vector.Incarnation)
		}
	}
	return dst
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// decodeEntries parses a message made by appendEntries. It copies what it
// keeps: memberlist reuses the buffer after NotifyMsg returns.
func decodeEntries(buf []byte) ([]*entry, error) {
	d := wire.Reader{Buf: buf, Sentinel: ErrBadMessage}
	if t := d.Byte(); t != msgEntries {
		return nil, fmt.Errorf("%w: message type %d", ErrBadMessage, t)
	}
	version := d.Byte()
	if version != msgVersion1 && version != msgVersion2 {
		return nil, fmt.Errorf("%w: message version %d", ErrBadMessage, version)
	}
	n := d.Uvarint()
	// An entry takes at least 5 bytes: this bounds the allocation.
	if n > uint64(len(d.Buf))/5 || n > maxEntries {
		return nil, fmt.Errorf("%w: %d entries in %d bytes", ErrBadMessage, n, len(d.Buf))
	}
	es := make([]*entry, 0, n)
	for i := uint64(0); i < n && d.Err == nil; i++ {
		e := &entry{kind: d.Byte()}
		e.hub = d.String(maxNameLen)
		e.stream = d.String(maxNameLen)
		e.version = d.Uvarint()
		switch e.kind {
		case kindDef:
			switch d.Byte() {
			case 0:
			case 1:
				e.def.Deleted = true
			default:
				d.Fail("bad deleted flag")
			}
			e.def.Version = d.Uvarint()
			if s := d.String(maxSpecLen); s != "" {
				e.def.Spec = []byte(s)
			}
		case kindVector:
			e.origin = d.String(maxNameLen)
			ns := d.Uvarint()
			if ns > maxShards || ns > uint64(len(d.Buf)) {
				d.Fail("%d shards", ns)
				break
			}
			e.vector.Seqs = make([]uint64, ns)
			for j := range e.vector.Seqs {
				e.vector.Seqs[j] = d.Uvarint()
			}
			if version >= msgVersion2 {
				e.vector.Incarnation = d.String(maxIncLen)
			}
		default:
			d.Fail("entry kind %d", e.kind)
		}
		if d.Err == nil && (e.hub == "" || e.stream == "" || (e.kind == kindVector && e.origin == "")) {
			d.Fail("entry with an empty name")
		}
		es = append(es, e)
	}
	if d.Err == nil && len(d.Buf) != 0 {
		d.Fail("%d trailing bytes", len(d.Buf))
	}
	if d.Err != nil {
		return nil, d.Err
	}
	return es, nil
}

// table holds every entry known, keyed by entry.key. Not safe for
// concurrent use; Gossip guards it.
type table map[string]*entry

// merge applies e and reports whether it was news (a key not seen, or a
// newer version of one).
func (t table) merge(e *entry) bool {
	k := e.key()
	old, ok := t[k]
	if ok && old.version >= e.version {
		return false
	}
	t[k] = e
	return true
}

// sorted returns the entries in key order, so encodings are deterministic.
func (t table) sorted() []*entry {
	out := make([]*entry, 0, len(t))
	for _, e := range t {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b *entry) int { return strings.Compare(a.key(), b.key()) })
	return out
}

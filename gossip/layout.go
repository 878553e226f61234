package gossip

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"

	"github.com/edgehub/edgehub/internal/wire"
)

// Layout is one publisher's knowledge of an origin hub's shard layout of a
// stream (which shards it split or merged, and where they ended). Spec is
// opaque to gossip (the replicator encodes it); Version is the origin's
// layout version: the publisher relays the highest it knows.
type Layout struct {
	Version uint64
	Spec    []byte
}

// Layouts ride in definition entries, so that hubs from before them merge,
// relay and ignore them (their decoder refuses unknown entry kinds and
// trailing bytes, which would drop a whole push/pull state): the entry's
// stream is layoutStream(stream, origin), a name no stream can have (names
// never hold NUL), and its spec is
//
//	byte 0x00 (not JSON: an older hub's definition decoder refuses it),
//	byte carrier version (1), string origin hub, the layout spec
//
// The origin is hashed into the name because a stream and a hub name may
// each take 128 bytes and an entry's stream at most maxNameLen.
const (
	layoutSep     = "\x00L"
	layoutMarker  = 0x00
	layoutCarrier = 1
	// maxLayoutSpec bounds a layout's spec (a layout of 4096 shard ids of
	// ~50 bytes each is ~200 KiB; gossip carries definitions of up to
	// maxSpecLen, so a larger layout is not published).
	maxLayoutSpec = maxSpecLen - 2 - 1 - maxNameLen
)

func layoutStream(stream, origin string) string {
	h := sha256.Sum256([]byte(origin))
	return stream + layoutSep + hex.EncodeToString(h[:8])
}

// splitLayoutStream returns the stream a layout entry's name belongs to.
func splitLayoutStream(name string) (stream string, ok bool) {
	stream, _, ok = strings.Cut(name, layoutSep)
	return stream, ok && stream != ""
}

func encodeLayoutDef(origin string, l Layout) Def {
	spec := []byte{layoutMarker, layoutCarrier}
	spec = appendString(spec, origin)
	spec = append(spec, l.Spec...)
	return Def{Version: l.Version, Spec: spec}
}

// decodeLayoutDef parses encodeLayoutDef's output (from the network).
func decodeLayoutDef(d Def) (origin string, l Layout, err error) {
	r := wire.Reader{Buf: d.Spec, Sentinel: ErrBadMessage, What: "layout"}
	if m := r.Byte(); r.Err == nil && m != layoutMarker {
		r.Fail("marker %d", m)
	}
	if v := r.Byte(); r.Err == nil && v != layoutCarrier {
		r.Fail("carrier version %d", v)
	}
	origin = r.String(maxNameLen)
	if r.Err == nil && origin == "" {
		r.Fail("empty origin")
	}
	if r.Err != nil {
		return "", Layout{}, r.Err
	}
	return origin, Layout{Version: d.Version, Spec: append([]byte(nil), r.Buf...)}, nil
}

// PublishLayout publishes what we know of origin's layout of stream (our
// own, or the highest version we learned of another hub's). Publishing an
// unchanged layout is a no-op. A layout too large for gossip is not
// published (it is logged).
func (g *Gossip) PublishLayout(stream, origin string, l Layout) {
	if len(l.Spec) > maxLayoutSpec || len(origin) > maxNameLen || len(stream)+len(layoutSep)+16 > maxNameLen {
		g.logger.Warn("gossip: layout too large to publish", "stream", stream, "origin", origin, "bytes", len(l.Spec))
		return
	}
	d := encodeLayoutDef(origin, l)
	g.publish(&entry{kind: kindDef, hub: g.cfg.Name, stream: layoutStream(stream, origin), def: d}, func(old *entry) bool {
		return old.def.Version == d.Version && string(old.def.Spec) == string(d.Spec)
	})
}

// layoutEntry reports whether e carries a layout, and then its stream,
// origin and layout (ok false for a malformed one: it is skipped).
func layoutEntry(e *entry) (stream, origin string, l Layout, isLayout, ok bool) {
	if e.kind != kindDef {
		return "", "", Layout{}, false, false
	}
	stream, isLayout = splitLayoutStream(e.stream)
	if !isLayout {
		return "", "", Layout{}, false, false
	}
	origin, l, err := decodeLayoutDef(e.def)
	if err != nil || layoutStream(stream, origin) != e.stream {
		return "", "", Layout{}, true, false
	}
	return stream, origin, l, true, true
}

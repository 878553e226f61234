package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/edgehub/edgehub/internal/wire"
)

// Origin layouts: what this hub knows of another hub's shard layout of the
// stream (its reshards), so that replication pulls a closed origin shard
// before its children, across restarts and partitions
// (docs/federation.md, "Resharded origins"). Layouts are per hub and never
// replicated as a definition: this is knowledge about an origin, kept
// beside its watermarks.
//
// Meta keys originLayoutPrefix ‖ origin hub → originLayoutVersion ‖
// uvarint len ‖ the origin incarnation the layout belongs to (raw, 0 or
// IncarnationLen bytes) ‖ EncodeOriginLayout. A layout recorded under
// another incarnation than the one the origin's watermarks now count in is
// stale (the origin's stream was deleted and created again) and not
// returned.
var originLayoutPrefix = []byte("origin-layout/")

const originLayoutVersion = 1

// Limits of a decoded layout: ids are never reused, so a stream's layout
// grows with every reshard; the design caps it at 4096 ids.
const maxLayoutShards = 4096

// EncodeOriginLayout encodes l (the shard entries of docs/resharding.md's
// m/layout, without next_id):
//
//	byte 0x01, uvarint layout version, uvarint n, n × (uvarint id, byte
//	state, u64 hash start, u64 hash end, uvarint end, varint closed_at,
//	uvarint #parents, #parents × uvarint id, uvarint #children, #children
//	× uvarint id)
//
// Replication also gossips it.
func EncodeOriginLayout(l Layout) []byte {
	b := []byte{1}
	b = binary.AppendUvarint(b, l.Version)
	b = binary.AppendUvarint(b, uint64(len(l.Shards)))
	for _, sh := range l.Shards {
		b = binary.AppendUvarint(b, uint64(sh.ID))
		b = append(b, byte(sh.State))
		b = binary.BigEndian.AppendUint64(b, sh.HashStart)
		b = binary.BigEndian.AppendUint64(b, sh.HashEnd)
		b = binary.AppendUvarint(b, sh.End)
		b = binary.AppendVarint(b, sh.ClosedAt)
		b = appendIDs(b, sh.Parents)
		b = appendIDs(b, sh.Children)
	}
	return b
}

func appendIDs(b []byte, ids []uint32) []byte {
	b = binary.AppendUvarint(b, uint64(len(ids)))
	for _, id := range ids {
		b = binary.AppendUvarint(b, uint64(id))
	}
	return b
}

// errBadLayout marks an undecodable or inconsistent layout.
var errBadLayout = errors.New("bad layout")

// DecodeOriginLayout parses EncodeOriginLayout's output (untrusted: it
// comes from peers). It checks what a reader of the lineage relies on: ids
// unique, known states, ranges ordered, parents and children naming shards
// of the layout, symmetric, and a shard with parents newer than them.
// Trailing bytes are an error (the encoding has a version byte for
// additions).
func DecodeOriginLayout(b []byte) (Layout, error) {
	d := wire.Reader{Buf: b, Sentinel: errBadLayout, What: "layout"}
	if v := d.Byte(); d.Err == nil && v != 1 {
		d.Fail("encoding version %d", v)
	}
	var l Layout
	l.Version = d.Uvarint()
	n := d.Uvarint()
	// An entry takes at least 21 bytes: this bounds the allocation.
	if d.Err == nil && (n > maxLayoutShards || n > uint64(len(d.Buf))/21) {
		d.Fail("%d shards in %d bytes", n, len(d.Buf))
	}
	if d.Err != nil {
		return Layout{}, d.Err
	}
	l.Shards = make([]ShardLayout, 0, n)
	for i := uint64(0); i < n && d.Err == nil; i++ {
		var sh ShardLayout
		sh.ID = d.Uint32("shard id")
		sh.State = ShardState(d.Byte())
		sh.HashStart = u64At(d.Next(8))
		sh.HashEnd = u64At(d.Next(8))
		sh.End = d.Uvarint()
		sh.ClosedAt = d.Varint()
		sh.Parents = readIDs(&d)
		sh.Children = readIDs(&d)
		l.Shards = append(l.Shards, sh)
	}
	if d.Err == nil && len(d.Buf) != 0 {
		d.Fail("%d trailing bytes", len(d.Buf))
	}
	if d.Err != nil {
		return Layout{}, d.Err
	}
	if err := checkOriginLayout(l); err != nil {
		return Layout{}, fmt.Errorf("%w: %w", errBadLayout, err)
	}
	return l, nil
}

func u64At(b []byte) uint64 {
	if len(b) != 8 {
		return 0 // the reader failed
	}
	return binary.BigEndian.Uint64(b)
}

func readIDs(d *wire.Reader) []uint32 {
	n := d.Count(1)
	if d.Err != nil || n == 0 {
		return nil
	}
	ids := make([]uint32, n)
	for i := range ids {
		ids[i] = d.Uint32("shard id")
	}
	return ids
}

// checkOriginLayout verifies what replication relies on in a layout it did
// not make.
func checkOriginLayout(l Layout) error {
	byID := make(map[uint32]*ShardLayout, len(l.Shards))
	for i := range l.Shards {
		sh := &l.Shards[i]
		if _, dup := byID[sh.ID]; dup {
			return fmt.Errorf("shard %d twice", sh.ID)
		}
		byID[sh.ID] = sh
		switch sh.State {
		case ShardOpen, ShardClosed, ShardRetired:
		default:
			return fmt.Errorf("shard %d: state %d", sh.ID, sh.State)
		}
		if sh.HashStart > sh.HashEnd {
			return fmt.Errorf("shard %d: range %x..%x", sh.ID, sh.HashStart, sh.HashEnd)
		}
	}
	for _, sh := range l.Shards {
		for _, p := range sh.Parents {
			ps, ok := byID[p]
			if !ok || p >= sh.ID || !containsID(ps.Children, sh.ID) || ps.State == ShardOpen {
				return fmt.Errorf("shard %d: parent %d missing, newer, open or not naming it", sh.ID, p)
			}
		}
		for _, c := range sh.Children {
			cs, ok := byID[c]
			if !ok || !containsID(cs.Parents, sh.ID) {
				return fmt.Errorf("shard %d: child %d missing or not naming it", sh.ID, c)
			}
		}
	}
	return nil
}

func containsID(ids []uint32, id uint32) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

// SetOriginLayout records l as what this hub knows of origin hub's layout
// of the stream, for the origin incarnation the stream's watermarks of hub
// now count in; a layout of a higher version than the one recorded wins, a
// lower or equal one is ignored (nil error). It runs as one maintenance
// transaction on the writer; a layout lost in a crash under SyncInterval
// is learned again from peers.
func (s *Stream) SetOriginLayout(ctx context.Context, hub string, l Layout) error {
	if len(hub) == 0 || len(hub) > MaxOriginHubLength {
		return fmt.Errorf("store: set origin layout %q of %q: %w: origin hub length %d", hub, s.name, ErrInvalidConfig, len(hub))
	}
	if err := checkOriginLayout(l); err != nil {
		return fmt.Errorf("store: set origin layout %q of %q: %w: %w", hub, s.name, ErrInvalidConfig, err)
	}
	key := append(bytes.Clone(originLayoutPrefix), hub...)
	fn := func(tx *bolt.Tx) error {
		m := tx.Bucket(bucketMeta)
		inc := s.OriginIncarnation(hub)
		if old, ok := decodeStoredOriginLayout(m.Get(key)); ok && old.inc == inc && old.l.Version >= l.Version {
			return nil
		}
		var incRaw []byte
		if inc != "" {
			var err error
			if incRaw, err = hex.DecodeString(inc); err != nil {
				return fmt.Errorf("origin incarnation %q: %w", inc, err)
			}
		}
		v := []byte{originLayoutVersion}
		v = binary.AppendUvarint(v, uint64(len(incRaw)))
		v = append(v, incRaw...)
		v = append(v, EncodeOriginLayout(l)...)
		return m.Put(key, v)
	}
	if err := s.maintain(ctx, fn, nil); err != nil {
		return fmt.Errorf("store: set origin layout %q of %q: %w", hub, s.name, err)
	}
	return nil
}

// OriginLayouts returns the recorded layouts of other hubs (SetOriginLayout)
// that belong to the origin incarnation their watermarks count in. It reads
// the stream's file (a few small values): callers ask at reconciliation,
// not per record. A value that does not decode is skipped (and logged); the
// next layout learned of that origin replaces it.
func (s *Stream) OriginLayouts() (map[string]Layout, error) {
	out := map[string]Layout{}
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketMeta).Cursor()
		for k, v := c.Seek(originLayoutPrefix); k != nil && bytes.HasPrefix(k, originLayoutPrefix); k, v = c.Next() {
			hub := string(k[len(originLayoutPrefix):])
			o, ok := decodeStoredOriginLayout(v)
			if !ok {
				s.logger.Warn("store: skipping an undecodable origin layout", "origin", hub)
				continue
			}
			if o.inc == s.OriginIncarnation(hub) {
				out[hub] = o.l
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: origin layouts of %q: %w", s.name, err)
	}
	return out, nil
}

type storedOriginLayout struct {
	inc string
	l   Layout
}

func decodeStoredOriginLayout(v []byte) (storedOriginLayout, bool) {
	d := wire.Reader{Buf: v, Sentinel: errBadLayout, What: "origin layout"}
	if d.Byte() != originLayoutVersion {
		return storedOriginLayout{}, false
	}
	raw := d.Bytes(IncarnationLen)
	if d.Err != nil {
		return storedOriginLayout{}, false
	}
	l, err := DecodeOriginLayout(d.Buf)
	if err != nil {
		return storedOriginLayout{}, false
	}
	return storedOriginLayout{inc: hex.EncodeToString(raw), l: l}, true
}

// AdvanceWatermark raises origin k's watermark to seq (never lowers it), in
// one maintenance transaction on the writer: replication completes a closed
// origin shard with it, whose last origin sequences may number records the
// shard replicated from others (none of k's own lies above the last one
// applied). Appends of k's records at or below seq are dropped afterwards,
// as for any watermark. Like appends, it is durable at the commit's fsync
// (under SyncInterval, the next one): losing it in a crash only makes
// replication complete the shard again.
func (s *Stream) AdvanceWatermark(ctx context.Context, k OriginKey, seq uint64) error {
	if len(k.Hub) == 0 || len(k.Hub) > MaxOriginHubLength {
		return fmt.Errorf("store: advance watermark %q/%d of %q: %w: origin hub length %d", k.Hub, k.Shard, s.name, ErrInvalidConfig, len(k.Hub))
	}
	var raised bool
	fn := func(tx *bolt.Tx) error {
		raised = false
		wb := tx.Bucket(bucketWatermarks)
		if v := wb.Get(k.bytes()); len(v) == 8 && binary.BigEndian.Uint64(v) >= seq {
			return nil
		}
		raised = true
		return wb.Put(k.bytes(), u64(seq))
	}
	after := func() {
		if !raised {
			return
		}
		s.wmMu.Lock()
		s.watermarks[k] = max(s.watermarks[k], seq)
		s.wmMu.Unlock()
	}
	if err := s.maintain(ctx, fn, after); err != nil {
		return fmt.Errorf("store: advance watermark %q/%d of %q: %w", k.Hub, k.Shard, s.name, err)
	}
	return nil
}

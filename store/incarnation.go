package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// A stream's incarnation is a 128-bit id drawn when the stream is created
// and kept in its meta bucket. A stream deleted and created again under the
// same name gets a new one: whatever remembers a position in a stream
// (plugin bindings, group offsets, replication watermarks, webhooks) keeps
// the incarnation with it and starts over from the beginning when it no
// longer matches, instead of reading the new stream with stale positions.
//
// Layout: the first 48 bits are the creation time in Unix milliseconds, the
// other 80 random, so that between two incarnations of one stream the later
// one usually compares higher as hex; replication uses that order only to
// pick between relays, never to decide what a record is (see
// docs/federation.md).
var (
	keyIncarnation = []byte("incarnation")
	// Meta keys originIncPrefix ‖ origin hub → incarnation of that
	// origin's stream the watermarks of its shards belong to.
	originIncPrefix = []byte("origin-inc/")
)

// IncarnationLen is the length of an incarnation in bytes; as text it is
// twice as many lowercase hex digits.
const IncarnationLen = 16

func newIncarnation(now time.Time) []byte {
	b := make([]byte, IncarnationLen)
	ms := uint64(now.UnixMilli())
	var t [8]byte
	binary.BigEndian.PutUint64(t[:], ms)
	copy(b, t[2:])
	if _, err := rand.Read(b[6:]); err != nil {
		panic(fmt.Sprintf("store: no randomness for an incarnation: %v", err))
	}
	return b
}

// Incarnation returns the stream's incarnation as 32 hex digits.
func (s *Stream) Incarnation() string { return s.incarnation }

// OriginIncarnation returns the incarnation of origin hub's stream that
// this stream's watermarks and origin index of hub's shards belong to, as
// recorded by SetOriginIncarnation; "" if none was recorded. For this hub's
// own records it is the stream's own incarnation.
func (s *Stream) OriginIncarnation(hub string) string {
	s.wmMu.RLock()
	defer s.wmMu.RUnlock()
	return s.originIncs[hub]
}

// OriginIncarnations returns a copy of every recorded origin incarnation.
func (s *Stream) OriginIncarnations() map[string]string {
	s.wmMu.RLock()
	defer s.wmMu.RUnlock()
	out := make(map[string]string, len(s.originIncs))
	for k, v := range s.originIncs {
		out[k] = v
	}
	return out
}

// SetOriginIncarnation records that records of origin hub now come from
// incarnation inc of its stream. With forget, every watermark and origin
// index entry of hub's shards is removed first, atomically with the record,
// so that the new incarnation's records (whose origin sequences start again
// at 1) are stored instead of being dropped as already applied. Records
// already stored stay; they are no longer served as hub's to pullers.
// It returns how many origin shards were forgotten.
func (s *Stream) SetOriginIncarnation(ctx context.Context, hub, inc string, forget bool) (int, error) {
	return s.resetOrigin(ctx, hub, -1, inc, forget)
}

// ForgetOrigin removes the watermark and origin index entries of one origin
// shard (a plugin restarting its outputs of one input shard), so its
// sequences may start again.
func (s *Stream) ForgetOrigin(ctx context.Context, k OriginKey) error {
	_, err := s.resetOrigin(ctx, k.Hub, int64(k.Shard), "", true)
	return err
}

// resetOrigin forgets hub's shards (all if shard < 0) when forget, and
// records inc as hub's origin incarnation when inc != "".
func (s *Stream) resetOrigin(ctx context.Context, hub string, shard int64, inc string, forget bool) (int, error) {
	if len(hub) == 0 || len(hub) > MaxOriginHubLength {
		return 0, fmt.Errorf("store: reset origin %q of %q: %w: origin hub length %d", hub, s.name, ErrInvalidConfig, len(hub))
	}
	var incRaw []byte
	if inc != "" {
		var err error
		if incRaw, err = hex.DecodeString(inc); err != nil || len(incRaw) != IncarnationLen {
			return 0, fmt.Errorf("store: reset origin %q of %q: %w: incarnation %q is not %d hex bytes", hub, s.name, ErrInvalidConfig, inc, IncarnationLen)
		}
	}
	var gone []OriginKey
	fn := func(tx *bolt.Tx) error {
		gone = gone[:0]
		if forget {
			prefix := append([]byte{byte(len(hub))}, hub...)
			if shard >= 0 {
				prefix = binary.BigEndian.AppendUint32(prefix, uint32(shard))
			}
			wb := tx.Bucket(bucketWatermarks)
			var keys [][]byte
			c := wb.Cursor()
			for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
				ok, rest, err := decodeOriginKey(k)
				if err != nil || len(rest) != 0 || ok.Hub != hub {
					continue // a longer hub name sharing the prefix bytes
				}
				keys = append(keys, bytes.Clone(k))
				gone = append(gone, ok)
			}
			for _, k := range keys {
				if err := wb.Delete(k); err != nil {
					return err
				}
			}
			if err := deletePrefix(tx.Bucket(bucketOrigins), prefix, len(hub)); err != nil {
				return err
			}
		}
		if incRaw != nil {
			return tx.Bucket(bucketMeta).Put(append(bytes.Clone(originIncPrefix), hub...), incRaw)
		}
		return nil
	}
	after := func() {
		s.wmMu.Lock()
		for _, k := range gone {
			delete(s.watermarks, k)
		}
		if inc != "" {
			s.originIncs[hub] = inc
		}
		s.wmMu.Unlock()
	}
	if err := s.maintain(ctx, fn, after); err != nil {
		return 0, fmt.Errorf("store: reset origin %q of %q: %w", hub, s.name, err)
	}
	if forget {
		s.logger.Info("store: origin positions forgotten", "origin", hub, "shard", shard, "shards", len(gone), "incarnation", inc)
	}
	return len(gone), nil
}

// deletePrefix deletes the origin index entries under prefix whose origin
// hub is hubLen bytes long (not a longer name that shares the bytes).
func deletePrefix(b *bolt.Bucket, prefix []byte, hubLen int) error {
	var keys [][]byte
	c := b.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		if len(k) != 1+hubLen+4+8 {
			continue
		}
		keys = append(keys, bytes.Clone(k))
	}
	for _, k := range keys {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// loadIncarnations reads the stream's incarnation and its origins'
// (called from load, in its read transaction).
func (s *Stream) loadIncarnations(m *bolt.Bucket) error {
	v := m.Get(keyIncarnation)
	if v == nil {
		return nil // migrated by ensureIncarnation after load
	}
	var err error
	if s.incarnation, err = decodeIncarnation(v); err != nil {
		return &CorruptError{File: s.path, Shard: -1, Err: err}
	}
	c := m.Cursor()
	for k, v := c.Seek(originIncPrefix); k != nil && bytes.HasPrefix(k, originIncPrefix); k, v = c.Next() {
		hub, inc, err := decodeOriginIncarnation(k, v)
		if err != nil {
			return &CorruptError{File: s.path, Shard: -1, Err: err}
		}
		s.originIncs[hub] = inc
	}
	return nil
}

// decodeIncarnation decodes a stored incarnation into its hex form.
func decodeIncarnation(v []byte) (string, error) {
	if len(v) != IncarnationLen {
		return "", fmt.Errorf("incarnation of %d bytes", len(v))
	}
	return hex.EncodeToString(v), nil
}

// decodeOriginIncarnation decodes a meta entry originIncPrefix ‖ hub →
// incarnation.
func decodeOriginIncarnation(k, v []byte) (hub, inc string, err error) {
	hub = string(k[min(len(k), len(originIncPrefix)):])
	if !bytes.HasPrefix(k, originIncPrefix) || hub == "" || len(hub) > MaxOriginHubLength || len(v) != IncarnationLen {
		return "", "", fmt.Errorf("origin incarnation %q: %d bytes", hub, len(v))
	}
	return hub, hex.EncodeToString(v), nil
}

// ensureIncarnation gives a stream file written before incarnations existed
// its incarnation, once, at open.
func (s *Stream) ensureIncarnation() error {
	if s.incarnation != "" {
		return nil
	}
	inc := newIncarnation(s.st.cfg.Now())
	err := s.updateTx(func(tx *bolt.Tx) error {
		m := tx.Bucket(bucketMeta)
		if v := m.Get(keyIncarnation); v != nil {
			inc = bytes.Clone(v)
			return nil
		}
		return m.Put(keyIncarnation, inc)
	})
	if err != nil {
		return fmt.Errorf("store: open %s: recording an incarnation: %w", s.path, err)
	}
	s.incarnation = hex.EncodeToString(inc)
	s.logger.Info("store: stream given an incarnation (file from before incarnations)", "incarnation", s.incarnation)
	return nil
}

package groups

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/edgehub/edgehub/internal/boltcheck"
	"github.com/edgehub/edgehub/internal/names"
)

// Layout of groups.db:
//
//	meta/version             formatVersion
//	groups/<name>/def        JSON groupDef
//	groups/<name>/incarnation the stream incarnation the offsets belong to
//	                         (also in def; commits check this copy cheaply)
//	groups/<name>/epoch      uint64 big endian: the highest epoch granted
//	groups/<name>/offsets/   uint32 big endian shard → offsetRec
//
// The epoch is written in the transaction that grants leases, before any
// member learns them, so epochs never repeat, even across restarts.
var (
	bucketMeta    = []byte("meta")
	bucketGroups  = []byte("groups")
	bucketOffsets = []byte("offsets")
	keyVersion    = []byte("version")
	keyDef        = []byte("def")
	keyEpoch      = []byte("epoch")
	keyInc        = []byte("incarnation")
)

const formatVersion = 1

// incarnationHexLen is the length of a stream incarnation as text
// (2*store.IncarnationLen, checked by a test: groups does not import the
// store).
const incarnationHexLen = 32

// groupDef is what a group is bound to.
type groupDef struct {
	Stream  string    `json:"stream"`
	Shards  int       `json:"shards"`
	Created time.Time `json:"created"`
	// Incarnation is the incarnation of the stream the offsets belong to
	// ("" in files from before incarnations: adopted at the next join).
	Incarnation string `json:"incarnation,omitempty"`
}

// offsetRec is a shard's committed offset and where it came from.
type offsetRec struct {
	Offset uint64 // next sequence to process; 0: none committed
	Time   int64  // Unix nanoseconds of the commit
	Epoch  uint64 // lease epoch that committed it (0: an administrative reset)
	Member string // committing member, or "" for a reset
}

const offsetRecVersion = 1

func (r offsetRec) encode() []byte {
	b := make([]byte, 0, 32+len(r.Member))
	b = append(b, offsetRecVersion)
	b = binary.AppendUvarint(b, r.Offset)
	b = binary.AppendVarint(b, r.Time)
	b = binary.AppendUvarint(b, r.Epoch)
	b = binary.AppendUvarint(b, uint64(len(r.Member)))
	return append(b, r.Member...)
}

// decodeOffsetRec decodes a stored offsetRec; trailing bytes are allowed
// (later versions append fields).
func decodeOffsetRec(b []byte) (offsetRec, error) {
	var r offsetRec
	bad := func(what string) (offsetRec, error) {
		return offsetRec{}, fmt.Errorf("%w: offset record: %s", ErrCorrupt, what)
	}
	if len(b) == 0 || b[0] != offsetRecVersion {
		return bad("unknown version")
	}
	b = b[1:]
	var n int
	if r.Offset, n = binary.Uvarint(b); n <= 0 {
		return bad("offset")
	}
	b = b[n:]
	if r.Time, n = binary.Varint(b); n <= 0 {
		return bad("time")
	}
	b = b[n:]
	if r.Epoch, n = binary.Uvarint(b); n <= 0 {
		return bad("epoch")
	}
	b = b[n:]
	l, n := binary.Uvarint(b)
	if n <= 0 || l > uint64(len(b)-n) {
		return bad("member")
	}
	r.Member = string(b[n : n+int(l)])
	return r, nil
}

func shardKey(shard int) []byte { return binary.BigEndian.AppendUint32(nil, uint32(shard)) }

func openDB(path string, timeout time.Duration) (*bolt.DB, error) {
	// bbolt crashes on some damage instead of reporting it: look first.
	if err := boltcheck.Check(path); err != nil {
		if errors.Is(err, boltcheck.ErrDamaged) {
			return nil, fmt.Errorf("groups: open %s: %w: %w", path, ErrCorrupt, err)
		}
		return nil, fmt.Errorf("groups: open %s: %w", path, err)
	}
	db, err := bolt.Open(path, 0o644, &bolt.Options{Timeout: timeout, FreelistType: bolt.FreelistMapType})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("groups: open %s: locked by another process: %w", path, err)
		}
		return nil, fmt.Errorf("groups: open %s: %w", path, err)
	}
	// Commits are small and frequent; coalesce concurrent ones briefly.
	db.MaxBatchDelay = time.Millisecond
	err = db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if v := meta.Get(keyVersion); v != nil {
			if len(v) != 8 || binary.BigEndian.Uint64(v) != formatVersion {
				return fmt.Errorf("%w: format version %x, this hub reads %d", ErrCorrupt, v, formatVersion)
			}
		} else if err := meta.Put(keyVersion, binary.BigEndian.AppendUint64(nil, formatVersion)); err != nil {
			return err
		}
		_, err = tx.CreateBucketIfNotExists(bucketGroups)
		return err
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("groups: open %s: %w", path, err)
	}
	return db, nil
}

// stored is one group as loaded from the file.
type stored struct {
	def     groupDef
	epoch   uint64
	offsets map[int]offsetRec
}

func loadGroups(db *bolt.DB) (map[string]stored, error) {
	out := map[string]stored{}
	err := db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketGroups).ForEachBucket(func(name []byte) error {
			b := tx.Bucket(bucketGroups).Bucket(name)
			var s stored
			var err error
			if s.def, err = decodeGroupDef(b.Get(keyDef)); err != nil {
				return fmt.Errorf("group %q: %w", name, err)
			}
			if inc := string(b.Get(keyInc)); inc != s.def.Incarnation {
				return fmt.Errorf("%w: group %q: incarnation %q, definition says %q", ErrCorrupt, name, inc, s.def.Incarnation)
			}
			if v := b.Get(keyEpoch); v != nil {
				if len(v) != 8 {
					return fmt.Errorf("%w: group %q: epoch of %d bytes", ErrCorrupt, name, len(v))
				}
				s.epoch = binary.BigEndian.Uint64(v)
			}
			s.offsets = map[int]offsetRec{}
			if ob := b.Bucket(bucketOffsets); ob != nil {
				err := ob.ForEach(func(k, v []byte) error {
					if len(k) != 4 {
						return fmt.Errorf("%w: group %q: shard key %x", ErrCorrupt, name, k)
					}
					shard := int(binary.BigEndian.Uint32(k))
					// Children of a reshard have ids past the creation count.
					if shard >= maxShards {
						return fmt.Errorf("%w: group %q: offset of shard %d", ErrCorrupt, name, shard)
					}
					r, err := decodeOffsetRec(v)
					if err != nil {
						return fmt.Errorf("group %q shard %d: %w", name, shard, err)
					}
					s.offsets[shard] = r
					return nil
				})
				if err != nil {
					return err
				}
			}
			out[string(name)] = s
			return nil
		})
	})
	return out, err
}

// decodeGroupDef decodes and checks a group's stored definition.
func decodeGroupDef(v []byte) (groupDef, error) {
	var def groupDef
	if err := json.Unmarshal(v, &def); err != nil {
		return groupDef{}, fmt.Errorf("%w: definition: %w", ErrCorrupt, err)
	}
	if def.Shards <= 0 || def.Shards > math.MaxUint16+1 || def.Stream == "" || names.Validate(def.Stream) != nil {
		return groupDef{}, fmt.Errorf("%w: definition %+v", ErrCorrupt, def)
	}
	// An incarnation is lowercase hex (store.Stream.Incarnation; tests
	// use short ones).
	if inc := def.Incarnation; len(inc) > incarnationHexLen || strings.Trim(inc, "0123456789abcdef") != "" {
		return groupDef{}, fmt.Errorf("%w: definition: incarnation %q", ErrCorrupt, inc)
	}
	return def, nil
}

// groupBucket returns the bucket of group name, creating it if asked.
func groupBucket(tx *bolt.Tx, name string, create bool) (*bolt.Bucket, error) {
	gb := tx.Bucket(bucketGroups)
	if create {
		return gb.CreateBucketIfNotExists([]byte(name))
	}
	b := gb.Bucket([]byte(name))
	if b == nil {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	return b, nil
}

func putDef(tx *bolt.Tx, name string, def groupDef) error {
	b, err := groupBucket(tx, name, true)
	if err != nil {
		return err
	}
	v, err := json.Marshal(def)
	if err != nil {
		return err
	}
	if err := b.Put(keyInc, []byte(def.Incarnation)); err != nil {
		return err
	}
	return b.Put(keyDef, v)
}

// sameIncarnation reports whether group name's stored offsets still belong
// to incarnation inc: a commit accepted just before the stream was
// recreated must not land in the offsets of the group that replaced it.
func sameIncarnation(tx *bolt.Tx, name, inc string) bool {
	b, err := groupBucket(tx, name, false)
	return err == nil && string(b.Get(keyInc)) == inc
}

// dropOffsets deletes every committed offset of group name.
func dropOffsets(tx *bolt.Tx, name string) error {
	b, err := groupBucket(tx, name, false)
	if err != nil {
		return err
	}
	if b.Bucket(bucketOffsets) == nil {
		return nil
	}
	return b.DeleteBucket(bucketOffsets)
}

func putEpoch(tx *bolt.Tx, name string, epoch uint64) error {
	b, err := groupBucket(tx, name, false)
	if err != nil {
		return err
	}
	return b.Put(keyEpoch, binary.BigEndian.AppendUint64(nil, epoch))
}

func putOffset(tx *bolt.Tx, name string, shard int, r offsetRec) error {
	b, err := groupBucket(tx, name, false)
	if err != nil {
		return err
	}
	ob, err := b.CreateBucketIfNotExists(bucketOffsets)
	if err != nil {
		return err
	}
	return ob.Put(shardKey(shard), r.encode())
}

func deleteGroup(tx *bolt.Tx, name string) error {
	return tx.Bucket(bucketGroups).DeleteBucket([]byte(name))
}

func deleteOffset(tx *bolt.Tx, name string, shard int) error {
	b, err := groupBucket(tx, name, false)
	if err != nil {
		return err
	}
	ob := b.Bucket(bucketOffsets)
	if ob == nil {
		return nil
	}
	return ob.Delete(shardKey(shard))
}

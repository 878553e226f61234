package plugins

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/edgehub/edgehub/internal/boltcheck"
	"github.com/edgehub/edgehub/store"
)

// Layout of plugins.db (one bbolt file for every plugin, so that a group
// commit covers many runners with one fsync):
//
//	defs                 name → JSON Definition
//	modules              hex SHA-256 → module bytes (shared by definitions)
//	runs/<name>/<input>/<shard>
//	    "cp"             checkpoint (see checkpoint.encode)
//	    state/           keyed state of that input shard: key → value
//	bindings             name ‖ 0 ‖ input → incarnation of the input stream
//	                     the checkpoints belong to (binding.go)
//
// A runner's state and checkpoint change in one transaction: that, and
// outputs being stored before it, is the exactly-once argument.
var (
	bucketDefs    = []byte("defs")
	bucketModules = []byte("modules")
	bucketRuns    = []byte("runs")
	bucketState   = []byte("state")
	keyCheckpoint = []byte("cp")
)

func openDB(dir string, timeout time.Duration) (*bolt.DB, error) {
	path := filepath.Join(dir, "plugins.db")
	// bbolt crashes on some damage instead of reporting it: look first.
	if err := boltcheck.Check(path); err != nil {
		if errors.Is(err, boltcheck.ErrDamaged) {
			return nil, fmt.Errorf("plugins: open %s: %w: %w", path, ErrCorrupt, err)
		}
		return nil, fmt.Errorf("plugins: open %s: %w", path, err)
	}
	db, err := bolt.Open(path, 0o644, &bolt.Options{Timeout: timeout, FreelistType: bolt.FreelistMapType})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("plugins: open %s: locked by another process: %w", path, err)
		}
		return nil, fmt.Errorf("plugins: open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketDefs, bucketModules, bucketRuns, bucketBindings} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("plugins: open %s: %w", path, err)
	}
	return db, nil
}

// checkpoint is a runner's durable progress.
type checkpoint struct {
	Next     uint64 // next input sequence to process
	TimerSeq uint64 // firings whose effects are committed
	// Pending is a timer firing recorded before its outputs were appended;
	// at restart it is replayed with the same time, before any input.
	PendingSeq uint64
	PendingNow int64
	StateBytes int64
	StateKeys  int64
	RecordsIn  uint64
	RecordsOut uint64
	Dead       uint64 // records sent to the dead-letter stream
}

const checkpointVersion = 1

func (c checkpoint) encode() []byte {
	b := make([]byte, 1, 1+9*8)
	b[0] = checkpointVersion
	for _, v := range []uint64{c.Next, c.TimerSeq, c.PendingSeq, uint64(c.PendingNow), uint64(c.StateBytes),
		uint64(c.StateKeys), c.RecordsIn, c.RecordsOut, c.Dead} {
		b = binary.BigEndian.AppendUint64(b, v)
	}
	return b
}

func decodeCheckpoint(b []byte) (checkpoint, error) {
	if len(b) != 1+9*8 || b[0] != checkpointVersion {
		return checkpoint{}, fmt.Errorf("%w: checkpoint of %d bytes, version %d", ErrCorrupt, len(b), firstByte(b))
	}
	v := func(i int) uint64 { return binary.BigEndian.Uint64(b[1+8*i:]) }
	return checkpoint{Next: v(0), TimerSeq: v(1), PendingSeq: v(2), PendingNow: int64(v(3)), StateBytes: int64(v(4)),
		StateKeys: int64(v(5)), RecordsIn: v(6), RecordsOut: v(7), Dead: v(8)}, nil
}

// decodeBinding decodes a binding value: the input stream's incarnation as
// lowercase hex (store.Stream.Incarnation). A damaged value must not read
// as another incarnation: that would drop the plugin's checkpoints and
// start it over.
func decodeBinding(v []byte) (string, error) {
	if len(v) != 2*store.IncarnationLen {
		return "", fmt.Errorf("%w: binding of %d bytes", ErrCorrupt, len(v))
	}
	for _, c := range v {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return "", fmt.Errorf("%w: binding %q is not lowercase hex", ErrCorrupt, v)
		}
	}
	return string(v), nil
}

// corrupt names plugins.db and the damaged value in a *store.CorruptError
// (which still matches ErrCorrupt through err).
func corrupt(db *bolt.DB, what string, err error) error {
	return &store.CorruptError{File: db.Path(), Shard: -1, Err: fmt.Errorf("%s: %w", what, err)}
}

func firstByte(b []byte) int {
	if len(b) == 0 {
		return -1
	}
	return int(b[0])
}

func runKey(input string, shard int) []byte { return []byte(input + "/" + strconv.Itoa(shard)) }

// runBucket returns (creating if asked) the bucket of one runner.
func runBucket(tx *bolt.Tx, plugin string, input string, shard int, create bool) (*bolt.Bucket, error) {
	runs := tx.Bucket(bucketRuns)
	p := runs.Bucket([]byte(plugin))
	if p == nil {
		if !create {
			return nil, nil
		}
		var err error
		if p, err = runs.CreateBucket([]byte(plugin)); err != nil {
			return nil, err
		}
	}
	k := runKey(input, shard)
	r := p.Bucket(k)
	if r == nil && create {
		var err error
		if r, err = p.CreateBucket(k); err != nil {
			return nil, err
		}
		if _, err = r.CreateBucket(bucketState); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// delta is a runner's uncommitted state changes: values by key (nil value =
// delete), with the keys kept sorted for StateNext.
type delta struct {
	vals map[string][]byte
	del  map[string]bool
	keys []string // sorted
}

func newDelta() *delta { return &delta{vals: map[string][]byte{}, del: map[string]bool{}} }

func (d *delta) set(key string, v []byte) {
	if _, ok := d.vals[key]; !ok && !d.del[key] {
		i, _ := slices.BinarySearch(d.keys, key)
		d.keys = slices.Insert(d.keys, i, key)
	}
	delete(d.del, key)
	d.vals[key] = v
}

func (d *delta) remove(key string) {
	if _, ok := d.vals[key]; !ok && !d.del[key] {
		i, _ := slices.BinarySearch(d.keys, key)
		d.keys = slices.Insert(d.keys, i, key)
	}
	delete(d.vals, key)
	d.del[key] = true
}

// get reports the delta's view of key: found says the delta decides it.
func (d *delta) get(key []byte) (v []byte, exists, found bool) {
	if v, ok := d.vals[string(key)]; ok {
		return v, true, true
	}
	if d.del[string(key)] {
		return nil, false, true
	}
	return nil, false, false
}

// next returns the smallest changed key with prefix after after, and whether
// it is deleted.
func (d *delta) next(prefix, after []byte) (key string, deleted, ok bool) {
	i, found := slices.BinarySearch(d.keys, string(after))
	if found {
		i++
	}
	for ; i < len(d.keys); i++ {
		k := d.keys[i]
		if !bytes.HasPrefix([]byte(k), prefix) {
			if k > string(prefix) {
				return "", false, false
			}
			continue
		}
		return k, d.del[k], true
	}
	return "", false, false
}

func (d *delta) empty() bool { return len(d.keys) == 0 }

func (d *delta) reset() {
	clear(d.vals)
	clear(d.del)
	d.keys = d.keys[:0]
}

// apply writes the delta into the state bucket, keeping the size counters.
func (d *delta) apply(st *bolt.Bucket, cp *checkpoint) error {
	for _, k := range d.keys {
		kb := []byte(k)
		old := st.Get(kb)
		if old != nil {
			cp.StateBytes -= int64(len(k) + len(old))
			cp.StateKeys--
		}
		if d.del[k] {
			if old != nil {
				if err := st.Delete(kb); err != nil {
					return err
				}
			}
			continue
		}
		v := d.vals[k]
		if err := st.Put(kb, v); err != nil {
			return err
		}
		cp.StateBytes += int64(len(k) + len(v))
		cp.StateKeys++
	}
	return nil
}

// commitReq is one runner's commit: its state delta and new checkpoint.
type commitReq struct {
	plugin string
	input  string
	shard  int
	cp     checkpoint // updated with the state counters on success
	delta  *delta     // nil: checkpoint only
	err    error
	done   chan struct{}
}

// committer coalesces runners' commits into one transaction (group commit),
// like the store's writer: the first request is committed with every request
// queued behind it.
func (m *Manager) committer() {
	defer close(m.commitDone)
	for {
		var first *commitReq
		select {
		case first = <-m.commits:
		case <-m.commitQuit:
			return
		}
		reqs := []*commitReq{first}
	gather:
		for len(reqs) < 256 {
			select {
			case r := <-m.commits:
				reqs = append(reqs, r)
			default:
				break gather
			}
		}
		// Counters are recomputed from the request on each attempt: a
		// failed transaction leaves nothing behind.
		base := make([]checkpoint, len(reqs))
		for i, r := range reqs {
			base[i] = r.cp
		}
		err := m.db.Update(func(tx *bolt.Tx) error {
			for i, r := range reqs {
				r.cp = base[i]
				rb, err := runBucket(tx, r.plugin, r.input, r.shard, true)
				if err != nil {
					return err
				}
				if r.delta != nil {
					if err := r.delta.apply(rb.Bucket(bucketState), &r.cp); err != nil {
						return err
					}
				}
				if err := rb.Put(keyCheckpoint, r.cp.encode()); err != nil {
					return err
				}
			}
			return nil
		})
		for _, r := range reqs {
			if err != nil {
				r.err = fmt.Errorf("plugins: commit %s %s/%d: %w", r.plugin, r.input, r.shard, err)
			}
			close(r.done)
		}
	}
}

// commit sends a commit to the committer and waits for it.
func (m *Manager) commit(plugin, input string, shard int, cp checkpoint, d *delta) (checkpoint, error) {
	req := &commitReq{plugin: plugin, input: input, shard: shard, cp: cp, delta: d, done: make(chan struct{})}
	select {
	case m.commits <- req:
	case <-m.commitQuit:
		return cp, ErrClosed
	}
	<-req.done
	return req.cp, req.err
}

func loadCheckpoint(db *bolt.DB, plugin, input string, shard int) (cp checkpoint, ok bool, err error) {
	err = db.View(func(tx *bolt.Tx) error {
		rb, err := runBucket(tx, plugin, input, shard, false)
		if err != nil || rb == nil {
			return err
		}
		v := rb.Get(keyCheckpoint)
		if v == nil {
			return nil
		}
		if cp, err = decodeCheckpoint(v); err != nil {
			return corrupt(db, fmt.Sprintf("checkpoint of plugin %q input %q shard %d", plugin, input, shard), err)
		}
		ok = true
		return nil
	})
	return cp, ok, err
}

// loadBinding returns the incarnation plugin's checkpoints of input belong
// to, "" if none is recorded.
func loadBinding(db *bolt.DB, plugin, input string) (string, error) {
	var inc string
	err := db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketBindings).Get(bindingKey(plugin, input))
		if v == nil {
			return nil
		}
		var err error
		if inc, err = decodeBinding(v); err != nil {
			return corrupt(db, fmt.Sprintf("binding of plugin %q input %q", plugin, input), err)
		}
		return nil
	})
	return inc, err
}

func putDefinition(tx *bolt.Tx, d Definition) error {
	raw, err := json.Marshal(d)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketDefs).Put([]byte(d.Name), raw)
}

// gcModules deletes module bytes no definition references.
func gcModules(tx *bolt.Tx) error {
	used := map[string]bool{}
	err := tx.Bucket(bucketDefs).ForEach(func(k, v []byte) error {
		var d Definition
		if err := json.Unmarshal(v, &d); err != nil {
			return fmt.Errorf("%w: definition %q: %w", ErrCorrupt, k, err)
		}
		used[d.SHA256] = true
		return nil
	})
	if err != nil {
		return err
	}
	mb := tx.Bucket(bucketModules)
	var stale [][]byte
	mb.ForEach(func(k, _ []byte) error {
		if !used[string(k)] {
			stale = append(stale, bytes.Clone(k))
		}
		return nil
	})
	for _, k := range stale {
		if err := mb.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

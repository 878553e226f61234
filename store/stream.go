package store

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/edgehub/edgehub/internal/record"
)

// File layout of one stream (one bbolt file, so that records, producer state
// and origin watermarks of every shard commit in one transaction):
//
//	m                 meta: "config" → JSON StreamConfig, "format" → 2 (3
//	                  once resharded), "layout" → encodeLayout (only once
//	                  resharded), "incarnation" → 16 bytes, "origin-inc/" ‖
//	                  hub → 16 bytes (incarnation.go), shardKey(i) →
//	                  shardMeta for every shard not retired
//	c<i>              chunks of shard i: BE uint64 first seq → record batch
//	p                 idempotent producers: BE id ‖ BE shard → producerState
//	w                 origin watermarks: originKey → BE uint64 highest origin seq
//	o                 origin index: originKey ‖ BE origin seq → BE shard ‖ BE seq
var (
	bucketMeta       = []byte("m")
	bucketProducers  = []byte("p")
	bucketWatermarks = []byte("w")
	bucketOrigins    = []byte("o")
	keyConfig        = []byte("config")
	keyFormat        = []byte("format")
	keyLayout        = []byte("layout")
)

// formatVersion 2 dropped the per-shard time index: ingest times never
// decrease within a shard, so SeqAtTime searches the chunks themselves.
// formatResharded (3) is a file with m/layout, written by the first
// reshard: a store before layouts refuses it rather than route by the
// shard count into closed shards.
const (
	formatVersion   = 2
	formatResharded = 3
)

// maxChunkBytes splits a shard's share of one group commit into chunks of
// about this size, so a read never has to copy a huge value to return a few
// records.
const maxChunkBytes = 256 << 10

func chunkBucket(shard int) []byte { return fmt.Appendf(nil, "c%d", shard) }
func shardKey(shard int) []byte    { return fmt.Appendf(nil, "shard/%d", shard) }

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// shardMeta is the persistent state of a shard, rewritten at each commit
// that touches it.
type shardMeta struct {
	Next       uint64 // next sequence to assign
	LastIngest int64
	Bytes      int64 // live chunk bytes
	Records    int64 // live records
}

func (m shardMeta) encode() []byte {
	b := make([]byte, 0, 32)
	b = binary.BigEndian.AppendUint64(b, m.Next)
	b = binary.BigEndian.AppendUint64(b, uint64(m.LastIngest))
	b = binary.BigEndian.AppendUint64(b, uint64(m.Bytes))
	return binary.BigEndian.AppendUint64(b, uint64(m.Records))
}

func decodeShardMeta(b []byte) (shardMeta, error) {
	if len(b) != 32 {
		return shardMeta{}, fmt.Errorf("shard meta is %d bytes, want 32", len(b))
	}
	m := shardMeta{
		Next:       binary.BigEndian.Uint64(b),
		LastIngest: int64(binary.BigEndian.Uint64(b[8:])),
		Bytes:      int64(binary.BigEndian.Uint64(b[16:])),
		Records:    int64(binary.BigEndian.Uint64(b[24:])),
	}
	if m.Next == 0 {
		return shardMeta{}, errors.New("shard meta says the next sequence is 0")
	}
	return m, nil
}

// decodeChunkKey decodes a chunk's key: its first sequence.
func decodeChunkKey(k []byte) (uint64, error) {
	if len(k) != 8 || binary.BigEndian.Uint64(k) == 0 {
		return 0, fmt.Errorf("chunk key %x is not a sequence", k)
	}
	return binary.BigEndian.Uint64(k), nil
}

// decodeWatermark decodes one entry of the watermark bucket.
func decodeWatermark(k, v []byte) (OriginKey, uint64, error) {
	ok, rest, err := decodeOriginKey(k)
	if err != nil || len(rest) != 0 || ok.Hub == "" || len(v) != 8 {
		return OriginKey{}, 0, fmt.Errorf("watermark %x → %x: bad entry", k, v)
	}
	return ok, binary.BigEndian.Uint64(v), nil
}

// decodeOriginEntry decodes one origin-index entry: origin key ‖ BE origin
// seq → BE shard ‖ BE seq.
func decodeOriginEntry(k, v []byte) (o OriginKey, originSeq uint64, shard uint32, seq uint64, err error) {
	o, rest, err := decodeOriginKey(k)
	if err != nil || len(rest) != 8 || o.Hub == "" || len(v) != 12 || binary.BigEndian.Uint64(v[4:]) == 0 {
		return OriginKey{}, 0, 0, 0, fmt.Errorf("origin index entry %x → %x: bad entry", k, v)
	}
	return o, binary.BigEndian.Uint64(rest), binary.BigEndian.Uint32(v), binary.BigEndian.Uint64(v[4:]), nil
}

// shard is the in-memory state of one shard. The writer goroutine owns meta;
// readers see it through the atomics, published after each commit.
type shard struct {
	meta shardMeta // writer-owned

	next    atomic.Uint64 // committed: last sequence is next-1
	first   atomic.Uint64 // first live sequence (== next when empty)
	bytes   atomic.Int64
	records atomic.Int64
	ingest  atomic.Int64 // last ingest time

	committedBytes atomic.Uint64 // encoded bytes appended since open

	mu     sync.Mutex
	notify chan struct{} // closed and replaced when records commit

	// Compaction bookkeeping, owned by the maintenance goroutine.
	compactedNext uint64
	compactedAt   time.Time
}

func (sh *shard) publish(m shardMeta, first uint64) {
	sh.first.Store(first)
	sh.bytes.Store(m.Bytes)
	sh.records.Store(m.Records)
	sh.ingest.Store(m.LastIngest)
	if sh.next.Swap(m.Next) != m.Next {
		sh.mu.Lock()
		close(sh.notify)
		sh.notify = make(chan struct{})
		sh.mu.Unlock()
	}
}

func (sh *shard) changed() <-chan struct{} {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.notify
}

// Stream is one sharded, append-only log in its own bbolt file. It is safe
// for concurrent use.
type Stream struct {
	st     *Store
	name   string
	path   string
	db     *bolt.DB
	logger *slog.Logger
	cfg    atomic.Pointer[StreamConfig]
	// shards is the shard table, indexed by id. Copy-on-write: a reshard
	// (on the writer goroutine) publishes a longer copy; ids only grow.
	shards atomic.Pointer[[]*shard]
	rr     atomic.Uint64 // round-robin cursor for keyless records

	layout   atomic.Pointer[Layout] // published by the writer; never mutated
	layoutMu sync.Mutex
	layoutCh chan struct{} // closed and replaced when the layout changes

	incarnation string // hex; fixed after open

	wmMu       sync.RWMutex
	watermarks map[OriginKey]uint64
	originIncs map[string]string // origin hub → hex incarnation (incarnation.go)

	damage damageSet // damaged chunks found (repair.go)

	commits        atomic.Uint64 // group commits, for metrics
	producerDamage atomic.Int64  // damaged producer entries last logged by expiry
	committed      atomic.Uint64 // records appended by those commits
	committedBytes atomic.Uint64 // encoded chunk bytes those commits wrote
	reqs           chan *request
	quit           chan struct{}
	done           chan struct{} // writer stopped
	maintDone      chan struct{} // maintenance stopped
	maintMu        sync.Mutex    // one retention/compaction pass at a time
	closeOnce      sync.Once
	closeErr       error
	closed         atomic.Bool
}

// OriginKey names one origin shard: a hub (or plugin) and its shard.
type OriginKey struct {
	Hub   string
	Shard uint32
}

func (k OriginKey) bytes() []byte {
	b := make([]byte, 0, 1+len(k.Hub)+4)
	b = append(b, byte(len(k.Hub)))
	b = append(b, k.Hub...)
	return binary.BigEndian.AppendUint32(b, k.Shard)
}

func decodeOriginKey(b []byte) (OriginKey, []byte, error) {
	if len(b) < 1 || len(b) < 1+int(b[0])+4 {
		return OriginKey{}, nil, errors.New("short origin key")
	}
	n := int(b[0])
	return OriginKey{Hub: string(b[1 : 1+n]), Shard: binary.BigEndian.Uint32(b[1+n:])}, b[1+n+4:], nil
}

// MaxOriginHubLength bounds Origin.Hub so origin keys stay small.
const MaxOriginHubLength = 255

// openStream opens the stream file; cfg != nil creates it.
func openStream(s *Store, name string, cfg *StreamConfig) (*Stream, error) {
	path := s.streamPath(name)
	opts := &bolt.Options{
		Timeout:      s.cfg.OpenTimeout,
		FreelistType: bolt.FreelistMapType,
		// Not writing the freelist at each commit saves a page write per
		// commit; bbolt rebuilds it by scanning pages at open (as etcd does).
		NoFreelistSync:  true,
		InitialMmapSize: 64 << 20,
		NoSync:          s.cfg.Sync == SyncInterval,
	}
	if cfg == nil {
		// bbolt cannot report some damage but by crashing: look first.
		if err := precheck(path); err != nil {
			return nil, err
		}
	}
	db, err := openBolt(path, opts)
	if err != nil {
		switch {
		case errors.Is(err, berrors.ErrTimeout):
			return nil, fmt.Errorf("store: open %s: %w", path, ErrLocked)
		case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum),
			errors.Is(err, berrors.ErrVersionMismatch), strings.Contains(err.Error(), "file size too small"),
			strings.Contains(err.Error(), "invalid"):
			return nil, &CorruptError{File: path, Shard: -1, Err: err}
		}
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	st := &Stream{
		st:         s,
		name:       name,
		path:       path,
		db:         db,
		logger:     s.logger.With("stream", name),
		watermarks: map[OriginKey]uint64{},
		originIncs: map[string]string{},
		reqs:       make(chan *request, 1024),
		quit:       make(chan struct{}),
		done:       make(chan struct{}),
		maintDone:  make(chan struct{}),
	}
	if cfg != nil {
		err = st.create(*cfg)
	} else if empty, eerr := st.empty(); eerr == nil && empty {
		err = errInterruptedCreate
	} else if err = st.load(); err == nil {
		err = st.ensureIncarnation()
	}
	if err != nil {
		db.Close()
		return nil, err
	}
	go st.run()
	go st.maintenance()
	return st, nil
}

// openBolt is bolt.Open with a panic on a damaged page (in the opening
// goroutine) turned into a CorruptError.
func openBolt(path string, opts *bolt.Options) (db *bolt.DB, err error) {
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, &CorruptError{File: path, Shard: -1, Err: fmt.Errorf("%v", r)}
		}
	}()
	return bolt.Open(path, 0o644, opts)
}

func (s *Stream) create(cfg StreamConfig) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketMeta) != nil {
			return fmt.Errorf("file exists with a stream in it")
		}
		m, err := tx.CreateBucket(bucketMeta)
		if err != nil {
			return err
		}
		raw, err := json.Marshal(cfg)
		if err != nil {
			return err
		}
		if err := m.Put(keyConfig, raw); err != nil {
			return err
		}
		if err := m.Put(keyFormat, u64(formatVersion)); err != nil {
			return err
		}
		if err := m.Put(keyIncarnation, newIncarnation(s.st.cfg.Now())); err != nil {
			return err
		}
		for _, b := range [][]byte{bucketProducers, bucketWatermarks, bucketOrigins} {
			if _, err := tx.CreateBucket(b); err != nil {
				return err
			}
		}
		for i := 0; i < cfg.Shards; i++ {
			if _, err := tx.CreateBucket(chunkBucket(i)); err != nil {
				return err
			}
			if err := m.Put(shardKey(i), shardMeta{Next: 1}.encode()); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: create stream %q: %w", s.name, err)
	}
	// A creation is acknowledged durable whatever the sync mode: under
	// SyncInterval the commit above was not fsynced.
	if err := s.syncIfRelaxed(); err != nil {
		return fmt.Errorf("store: create stream %q: %w", s.name, err)
	}
	return s.load()
}

// syncIfRelaxed fsyncs the file when commits do not (SyncInterval), for
// changes that are acknowledged durable in every mode.
func (s *Stream) syncIfRelaxed() error {
	if s.st.cfg.Sync != SyncInterval {
		return nil
	}
	return s.db.Sync()
}

// errInterruptedCreate: the stream file is as bbolt initialised it, with
// no transaction ever committed, so the one that creates a stream never did
// (a crash between bbolt's creation of the file and that commit);
// CreateStream had not returned, and the file holds nothing.
var errInterruptedCreate = errors.New("stream file is empty: its creation was interrupted")

// empty reports whether the file is as bbolt initialises it: no committed
// transaction (bbolt's initial meta pages carry transaction ids 0 and 1)
// and no bucket. A file that had commits and lost its buckets is damaged,
// not empty.
func (s *Stream) empty() (empty bool, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	errSome := errors.New("not empty")
	err = s.db.View(func(tx *bolt.Tx) error {
		if tx.ID() > 1 {
			return errSome
		}
		return tx.ForEach(func([]byte, *bolt.Bucket) error { return errSome })
	})
	if errors.Is(err, errSome) {
		return false, nil
	}
	return err == nil, err
}

// load reads the stream's config and shard state and verifies the last chunk
// of every shard, so a damaged file is reported at open rather than at the
// first read.
func (s *Stream) load() (err error) {
	defer func() {
		// bbolt panics on some page corruption; report it as such.
		if r := recover(); r != nil {
			err = &CorruptError{File: s.path, Shard: -1, Err: fmt.Errorf("%v", r)}
		}
	}()
	return s.db.View(func(tx *bolt.Tx) error {
		m := tx.Bucket(bucketMeta)
		if m == nil {
			return &CorruptError{File: s.path, Shard: -1, Err: errors.New("no meta bucket: not a stream file")}
		}
		if f := m.Get(keyFormat); len(f) != 8 || (binary.BigEndian.Uint64(f) != formatVersion && binary.BigEndian.Uint64(f) != formatResharded) {
			return &CorruptError{File: s.path, Shard: -1, Err: fmt.Errorf("unknown format %x", f)}
		}
		var cfg StreamConfig
		if err := json.Unmarshal(m.Get(keyConfig), &cfg); err != nil {
			return &CorruptError{File: s.path, Shard: -1, Err: fmt.Errorf("config: %w", err)}
		}
		if err := cfg.Validate(); err != nil || cfg.Name != s.name {
			return &CorruptError{File: s.path, Shard: -1, Err: fmt.Errorf("config for %q does not match: %v", cfg.Name, err)}
		}
		s.cfg.Store(&cfg)
		if err := s.loadIncarnations(m); err != nil {
			return err
		}
		l, err := s.loadLayout(m, cfg.Shards)
		if err != nil {
			return err
		}
		table := make([]*shard, len(l.Shards))
		for i := range table {
			ls := l.Shards[i]
			if ls.State == ShardRetired {
				// Its chunks and state are gone: it is empty at end+1.
				sh := &shard{meta: shardMeta{Next: ls.End + 1}, notify: make(chan struct{})}
				sh.publish(sh.meta, ls.End+1)
				table[i] = sh
				continue
			}
			meta, err := decodeShardMeta(m.Get(shardKey(i)))
			c := tx.Bucket(chunkBucket(i))
			if err != nil || c == nil {
				return &CorruptError{File: s.path, Shard: -1, Err: fmt.Errorf("shard %d: missing state (%v)", i, err)}
			}
			if ls.State == ShardClosed && meta.Next != ls.End+1 {
				return &CorruptError{File: s.path, Shard: i, Err: fmt.Errorf("closed shard ends at %d, its state says next is %d", ls.End, meta.Next)}
			}
			first := meta.Next
			cur := c.Cursor()
			if k, _ := cur.First(); k != nil {
				if first, err = decodeChunkKey(k); err != nil {
					return &CorruptError{File: s.path, Shard: i, Err: err}
				}
			}
			if k, v := cur.Last(); k != nil {
				seq, err := decodeChunkKey(k)
				if err != nil {
					return &CorruptError{File: s.path, Shard: i, Err: err}
				}
				// A damaged last chunk is quarantined (repair.go), not a
				// damaged file: the stream opens, serves the rest, and a
				// federated hub re-fetches it from peers.
				if info, err := record.ReadInfo(v); err != nil {
					s.noteDamage(i, seq, err)
				} else if info.LastSeq >= meta.Next || info.BaseSeq != seq {
					return &CorruptError{File: s.path, Shard: i, Seq: info.BaseSeq,
						Err: fmt.Errorf("last chunk ends at %d, shard state says next is %d", info.LastSeq, meta.Next)}
				}
			}
			sh := &shard{meta: meta, notify: make(chan struct{})}
			sh.next.Store(meta.Next)
			sh.publish(meta, first)
			table[i] = sh
		}
		s.shards.Store(&table)
		s.layout.Store(&l)
		if s.layoutCh == nil {
			s.layoutCh = make(chan struct{})
		}
		for _, b := range [][]byte{bucketProducers, bucketOrigins, bucketWatermarks} {
			if tx.Bucket(b) == nil {
				return &CorruptError{File: s.path, Shard: -1, Err: fmt.Errorf("no %q bucket", b)}
			}
		}
		return tx.Bucket(bucketWatermarks).ForEach(func(k, v []byte) error {
			ok, wm, err := decodeWatermark(k, v)
			if err != nil {
				return &CorruptError{File: s.path, Shard: -1, Err: err}
			}
			s.watermarks[ok] = wm
			return nil
		})
	})
}

// Name returns the stream's name.
func (s *Stream) Name() string { return s.name }

// Path returns the stream's file, for errors that must name it.
func (s *Stream) Path() string { return s.path }

// Config returns the stream's current definition.
func (s *Stream) Config() StreamConfig {
	c := *s.cfg.Load()
	c.Meta = cloneMap(c.Meta)
	return c
}

// table returns the shard table, indexed by id (retired shards included).
func (s *Stream) table() []*shard { return *s.shards.Load() }

// Shards returns the number of shard ids ever assigned: a valid shard id
// is below it. Before any reshard it is the shard count; after one it
// includes closed and retired shards, so code that must see only the
// shards taking appends uses Layout().Open().
//
// The layout is published after the table it describes, so an id below
// Shards() always has its entry in table().
func (s *Stream) Shards() int { return len(s.layout.Load().Shards) }

// ShardForKey returns the open shard a key routes to now.
func (s *Stream) ShardForKey(key []byte) int {
	return int(s.layout.Load().ShardFor(record.KeyHash(key)))
}

func (s *Stream) update(ctx context.Context, cfg StreamConfig) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("store: update stream: %w", err)
	}
	// Shards is the count at creation, which a reshard never changes.
	if created := s.cfg.Load().Shards; cfg.Shards != created {
		return fmt.Errorf("store: update stream %q: %w: shard count is fixed at %d (reshard to change the open shards)", s.name, ErrInvalidConfig, created)
	}
	raw, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	err = s.maintain(ctx, func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keyConfig, raw)
	}, nil)
	if err == nil {
		err = s.syncIfRelaxed()
	}
	if err != nil {
		return fmt.Errorf("store: update stream %q: %w", s.name, err)
	}
	s.cfg.Store(&cfg)
	return nil
}

// close stops the writer after it has served every queued request, then
// closes the file.
func (s *Stream) close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		close(s.quit)
		<-s.maintDone
		<-s.done
		s.closeErr = s.db.Close()
	})
	return s.closeErr
}

func cloneMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// Watermarks returns a copy of the stream's origin watermarks: for each
// foreign origin shard, the highest origin sequence applied here.
func (s *Stream) Watermarks() map[OriginKey]uint64 {
	s.wmMu.RLock()
	defer s.wmMu.RUnlock()
	out := make(map[OriginKey]uint64, len(s.watermarks))
	for k, v := range s.watermarks {
		out[k] = v
	}
	return out
}

// Watermark returns the highest sequence of origin k applied here.
func (s *Stream) Watermark(k OriginKey) uint64 {
	s.wmMu.RLock()
	defer s.wmMu.RUnlock()
	return s.watermarks[k]
}

// ShardStats describes one shard.
type ShardStats struct {
	Shard      int        `json:"shard"`
	HashStart  uint64     `json:"hash_start"`
	HashEnd    uint64     `json:"hash_end"`
	FirstSeq   uint64     `json:"first_seq"` // first live sequence; > LastSeq when empty
	LastSeq    uint64     `json:"last_seq"`  // 0 before the first record
	Records    int64      `json:"records"`
	Bytes      int64      `json:"bytes"`
	LastIngest int64      `json:"last_ingest_unix_nano"`
	State      ShardState `json:"state"`
	End        uint64     `json:"end_seq"` // last sequence of a closed shard; 0 while open
	Parents    []uint32   `json:"parents,omitempty"`
	Children   []uint32   `json:"children,omitempty"`
}

// Stats returns each shard's current state, by id: closed and retired
// shards included (State says which; listings that show only live shards
// leave retired ones out).
func (s *Stream) Stats() []ShardStats {
	l := s.layout.Load()
	table := s.table()
	out := make([]ShardStats, len(l.Shards))
	for i, ls := range l.Shards {
		sh := table[i]
		out[i] = ShardStats{
			Shard: i, HashStart: ls.HashStart, HashEnd: ls.HashEnd,
			FirstSeq: sh.first.Load(), LastSeq: sh.next.Load() - 1,
			Records: sh.records.Load(), Bytes: sh.bytes.Load(), LastIngest: sh.ingest.Load(),
			State: ls.State, End: ls.End, Parents: ls.Parents, Children: ls.Children,
		}
	}
	return out
}

// CommitStats returns how many group commits the stream made and how many
// records they appended: their ratio is the group-commit batch size.
func (s *Stream) CommitStats() (commits, records uint64) {
	return s.commits.Load(), s.committed.Load()
}

// CommittedBytes returns the encoded bytes the stream's commits appended
// since it was opened (what Bytes grows by before retention and compaction
// take away): its rate is the stream's write rate in bytes.
func (s *Stream) CommittedBytes() uint64 { return s.committedBytes.Load() }

// ShardCommittedBytes returns the encoded bytes the stream's commits
// appended to shard since the stream was opened, as CommittedBytes does for
// the whole stream: its rate is the shard's write rate (0 for an invalid id).
func (s *Stream) ShardCommittedBytes(shard int) uint64 {
	if shard < 0 || shard >= s.Shards() {
		return 0
	}
	return s.table()[shard].committedBytes.Load()
}

// Bounds returns the first live and the last sequence of a shard. An empty
// shard has first == last+1; a retired one is end+1, end.
func (s *Stream) Bounds(shard int) (first, last uint64, err error) {
	if shard < 0 || shard >= s.Shards() {
		return 0, 0, fmt.Errorf("store: stream %q: %w %d of %d", s.name, ErrInvalidShard, shard, s.Shards())
	}
	sh := s.table()[shard]
	return sh.first.Load(), sh.next.Load() - 1, nil
}

// Wait blocks until shard holds a record with sequence seq or later, or ctx
// ends. It never polls: commits wake it. On a closed (or retired) shard it
// returns ErrShardClosed once seq is past the shard's end, which no
// record will ever reach.
func (s *Stream) Wait(ctx context.Context, shard int, seq uint64) error {
	if shard < 0 || shard >= s.Shards() {
		return fmt.Errorf("store: stream %q: %w %d", s.name, ErrInvalidShard, shard)
	}
	sh := s.table()[shard]
	for {
		ch := sh.changed()
		lch := s.LayoutChanged()
		if sh.next.Load() > seq {
			return nil
		}
		if s.closed.Load() {
			return ErrClosed
		}
		if ls := s.layout.Load().Shards[shard]; ls.State != ShardOpen && seq > ls.End {
			return fmt.Errorf("store: stream %q: wait for shard %d at %d: %w at %d", s.name, shard, seq, ErrShardClosed, ls.End)
		}
		select {
		case <-ch:
		case <-lch:
		case <-s.quit:
			return ErrClosed
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Done returns a channel closed when the stream is closed: deleted, or its
// store closed. Whoever holds the stream (plugins, group sessions,
// webhooks) notices a deletion at once through it.
func (s *Stream) Done() <-chan struct{} { return s.quit }

// Changed returns a channel closed at the next commit to shard. Consumers
// watching many shards select on several of them.
func (s *Stream) Changed(shard int) <-chan struct{} { return s.table()[shard].changed() }

package plugin

import (
	"encoding/binary"
	"errors"
	"fmt"
	"iter"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Record is one input record. Its byte slices alias the host's batch buffer
// and are valid only during the handler call.
type Record struct {
	Stream     string // input stream
	Shard      uint32 // input shard
	Seq        uint64 // sequence in the input shard
	IngestTime int64  // Unix nanoseconds, set by the hub
	Time       int64  // producer timestamp, Unix nanoseconds (0 = unset)
	Key        []byte // nil = keyless
	Value      []byte // nil = tombstone
	Headers    []Header
	index      uint32 // position in the batch, for output attribution
}

// Header is a record header.
type Header struct {
	Key   string
	Value []byte
}

// Output is a record to emit.
type Output struct {
	Key     []byte // nil = keyless (the hub spreads keyless records over shards)
	Value   []byte // nil = tombstone
	Headers []Header
	// Time is the output's producer timestamp (Unix nanoseconds). Derived
	// records usually keep their input's Time.
	Time int64
}

// Config is the plugin's configuration (the deploy command's --config pairs
// and the manifest's [config] table). The hub adds "output" (the first
// declared output) and "outputs" (all of them, comma-separated) unless the
// deploy sets them (docs/plugin-abi.md, "Declared outputs").
type Config map[string]string

// Outputs returns the declared output streams in declaration order (the
// "outputs" key), or nil if the plugin declares none.
func (c Config) Outputs() []string {
	if c["outputs"] == "" {
		return nil
	}
	return strings.Split(c["outputs"], ",")
}

// String returns the value of key or def.
func (c Config) String(key, def string) string {
	if v, ok := c[key]; ok {
		return v
	}
	return def
}

// Int returns the integer value of key or def; a malformed value is an error.
func (c Config) Int(key string, def int64) (int64, error) {
	v, ok := c[key]
	if !ok {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return def, fmt.Errorf("config %s: %w", key, err)
	}
	return n, nil
}

// Float returns the float value of key or def.
func (c Config) Float(key string, def float64) (float64, error) {
	v, ok := c[key]
	if !ok {
		return def, nil
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		return def, fmt.Errorf("config %s: %w", key, err)
	}
	return f, nil
}

// Duration returns the duration value of key (time.ParseDuration syntax) or def.
func (c Config) Duration(key string, def time.Duration) (time.Duration, error) {
	v, ok := c[key]
	if !ok {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return def, fmt.Errorf("config %s: %w", key, err)
	}
	return d, nil
}

var (
	initFn   func(Config) error
	recordFn func(*Record) error
	batchFn  func([]Record) error
	timerFn  func(now time.Time) error
)

// OnInit registers the function that receives the plugin's config. It runs
// each time the host creates an instance (at deploy, restart, after a trap),
// so it must only configure, never count.
func OnInit(fn func(Config) error) { initFn = fn }

// OnRecord registers the per-record handler. Emit inside it is attributed to
// the record. A returned error fails the batch and triggers the plugin's
// error policy (retry, dead-letter or pause).
func OnRecord(fn func(*Record) error) { recordFn = fn }

// OnBatch registers a handler for whole batches, used instead of OnRecord.
// Attribute each output to the record it derives from with EmitFor: batch
// boundaries differ on replay, so an output must depend only on its record
// and the state.
func OnBatch(fn func([]Record) error) { batchFn = fn }

// OnTimer registers the timer handler. The hub calls it periodically (the
// plugin's timer interval) with the firing time, which is recorded durably
// before any of its outputs are stored, so a replay after a crash calls it
// with the same now. Windows should close on event time (record timestamps)
// compared to now.
func OnTimer(fn func(now time.Time) error) { timerFn = fn }

// Errors returned by Emit and EmitFor.
var (
	// ErrNoRecord: Emit outside a record or timer handler (e.g. in OnInit).
	ErrNoRecord = errors.New("plugin: emit outside a handler")
)

// Call state.
var (
	emitBuf   []byte
	keyBuf    []byte
	valBuf    []byte
	batchRecs []Record
	batchHdrs []Header
	current   uint32 // input index Emit attributes to
	inHandler bool
)

// Emit sends out to the output stream, attributed to the record being
// handled (in OnTimer, to the firing). The stream must be one the plugin
// declares as an output; emitting elsewhere stops the call and triggers the
// error policy.
func Emit(stream string, out Output) error {
	if !inHandler {
		return ErrNoRecord
	}
	emitBuf = appendOutput(emitBuf[:0], &out)
	hostEmit(stream, emitBuf, current)
	return nil
}

// EmitFor is Emit attributed to r, for OnBatch handlers. Outputs must be
// emitted in input order: an output for an earlier record after one for a
// later record stops the call.
func EmitFor(r *Record, stream string, out Output) error {
	current = r.index
	return Emit(stream, out)
}

// Input returns the input stream and shard this instance serves (one
// instance serves one input shard, for all its calls: a timer handler uses
// it to know its shard). Hubs older than the input_shard and input_stream
// imports refuse a module that calls it.
func Input() (stream string, shard uint32) {
	if !inputKnown {
		inputShard = uint32(hostInputShard())
		buf := make([]byte, 64)
		for {
			n := hostInputStream(buf)
			if int(n) <= len(buf) {
				inputStream = string(buf[:n])
				break
			}
			buf = make([]byte, n)
		}
		inputKnown = true
	}
	return inputStream, inputShard
}

var (
	inputKnown  bool
	inputStream string
	inputShard  uint32
)

// Now returns the host's clock. time.Now inside a guest is a fake clock.
func Now() time.Time { return time.Unix(0, hostNow()) }

// State is the plugin's keyed state for the input shard being handled. Writes
// commit with the input checkpoint, atomically, after the batch's outputs
// are stored.
var State stateStore

type stateStore struct{}

// Get returns a copy of key's value.
func (stateStore) Get(key []byte) ([]byte, bool) {
	for {
		n := hostStateGet(key, valBuf[:cap(valBuf)])
		if n < 0 {
			return nil, false
		}
		if int(n) <= cap(valBuf) {
			return append([]byte(nil), valBuf[:n]...), true
		}
		valBuf = make([]byte, 0, n)
	}
}

// AppendValue appends key's value to dst, the allocation-free form of Get
// for hot paths that reuse a buffer.
func (stateStore) AppendValue(dst, key []byte) ([]byte, bool) {
	for {
		free := dst[len(dst):cap(dst)]
		n := hostStateGet(key, free)
		if n < 0 {
			return dst, false
		}
		if int(n) <= len(free) {
			return dst[:len(dst)+int(n)], true
		}
		dst = slices.Grow(dst, int(n))
	}
}

// Set stores value under key (1 to 1024 bytes; values up to 1 MiB).
func (stateStore) Set(key, value []byte) { hostStateSet(key, value) }

// Delete removes key.
func (stateStore) Delete(key []byte) { hostStateDelete(key) }

// Keys iterates, in byte order, over the keys that start with prefix. Keys
// may be set or deleted during the iteration.
func (stateStore) Keys(prefix []byte) iter.Seq[[]byte] {
	return func(yield func([]byte) bool) {
		var after []byte
		for {
			n := hostStateNext(prefix, after, keyBuf[:cap(keyBuf)])
			if n < 0 {
				return
			}
			if int(n) > cap(keyBuf) {
				keyBuf = make([]byte, 0, n)
				continue
			}
			k := append([]byte(nil), keyBuf[:n]...)
			if !yield(k) {
				return
			}
			after = k
		}
	}
}

// Level is a log level.
type Level int32

// Log levels.
const (
	LevelDebug Level = 0
	LevelInfo  Level = 1
	LevelWarn  Level = 2
	LevelError Level = 3
)

// Log writes msg to the plugin's log (hub plugin logs NAME).
func Log(level Level, msg string) { hostLog(level, msg) }

// Logf formats and logs.
func Logf(level Level, format string, args ...any) { hostLog(level, fmt.Sprintf(format, args...)) }

func handleInit(b []byte) int32 {
	cfg, err := decodeConfig(b)
	if err == nil && initFn != nil {
		err = initFn(cfg)
	}
	if err != nil {
		hostLog(LevelError, "init: "+err.Error())
		return 1
	}
	return 0
}

func handleBatch(b []byte) int32 {
	defer yield()
	recs, err := decodeBatch(b, batchRecs[:0])
	batchRecs = recs
	if err != nil {
		hostLog(LevelError, "decode batch: "+err.Error())
		return 1
	}
	inHandler = true
	defer func() { inHandler = false }()
	current = 0
	switch {
	case batchFn != nil:
		if err := batchFn(recs); err != nil {
			hostLog(LevelError, err.Error())
			return 1
		}
	case recordFn != nil:
		for i := range recs {
			current = uint32(i)
			if i&31 == 31 {
				yield() // let a GC cycle started mid-batch finish
			}
			if err := recordFn(&recs[i]); err != nil {
				hostLog(LevelError, fmt.Sprintf("record %d of shard %d: %v", recs[i].Seq, recs[i].Shard, err))
				return 1
			}
		}
	}
	return 0
}

func handleTimer(now int64) int32 {
	defer yield()
	if timerFn == nil {
		return 0
	}
	inHandler = true
	defer func() { inHandler = false }()
	current = 0
	if err := timerFn(time.Unix(0, now)); err != nil {
		hostLog(LevelError, "timer: "+err.Error())
		return 1
	}
	return 0
}

// yield lets the runtime's other goroutines run. A wasm guest has one
// thread and the host calls in from outside the Go scheduler: unless the
// handler's goroutine yields, the garbage collector's background worker
// never runs, a GC cycle started during a call cannot finish, and an
// allocating plugin grows its memory until it hits the cap. The SDK yields
// every 32 records and after each call; an OnBatch handler that allocates
// a lot per record should call runtime.Gosched now and then itself.
func yield() { runtime.Gosched() }

var errShort = errors.New("truncated")

// decodeBatch decodes an ABI v1 batch (see docs/plugin-abi.md). Records
// alias b; recs is reused.
func decodeBatch(b []byte, recs []Record) ([]Record, error) {
	if len(b) < 16 {
		return recs, fmt.Errorf("batch header: %w", errShort)
	}
	hlen := binary.LittleEndian.Uint32(b)
	count := binary.LittleEndian.Uint32(b[4:])
	shard := binary.LittleEndian.Uint32(b[8:])
	slen := binary.LittleEndian.Uint32(b[12:])
	if uint64(hlen) > uint64(len(b)) || uint64(slen) > uint64(hlen)-16 || hlen < 16 {
		return recs, fmt.Errorf("batch header length %d, stream %d, batch %d bytes", hlen, slen, len(b))
	}
	stream := string(b[16 : 16+slen])
	rest := b[hlen:]
	// Every record takes at least 40 bytes: a larger count is a lie.
	if uint64(count)*40 > uint64(len(rest)) {
		return recs, fmt.Errorf("%d records cannot fit in %d bytes", count, len(rest))
	}
	hdrs := batchHdrs[:0]
	for i := uint32(0); i < count; i++ {
		if len(rest) < 4 {
			return recs, fmt.Errorf("record %d: %w", i, errShort)
		}
		rlen := binary.LittleEndian.Uint32(rest)
		if uint64(rlen) > uint64(len(rest)-4) || rlen < 36 {
			return recs, fmt.Errorf("record %d: length %d with %d bytes left", i, rlen, len(rest)-4)
		}
		rb := rest[4 : 4+rlen]
		rest = rest[4+rlen:]
		r := Record{Stream: stream, Shard: shard, index: i}
		r.Seq = binary.LittleEndian.Uint64(rb)
		r.IngestTime = int64(binary.LittleEndian.Uint64(rb[8:]))
		r.Time = int64(binary.LittleEndian.Uint64(rb[16:]))
		klen := int32(binary.LittleEndian.Uint32(rb[24:]))
		vlen := int32(binary.LittleEndian.Uint32(rb[28:]))
		nh := binary.LittleEndian.Uint32(rb[32:])
		fb := rb[36:]
		var ok bool
		if r.Key, fb, ok = nullable(fb, klen); !ok {
			return recs, fmt.Errorf("record %d: key length %d", i, klen)
		}
		if r.Value, fb, ok = nullable(fb, vlen); !ok {
			return recs, fmt.Errorf("record %d: value length %d", i, vlen)
		}
		if uint64(nh)*8 > uint64(len(fb)) {
			return recs, fmt.Errorf("record %d: %d headers in %d bytes", i, nh, len(fb))
		}
		start := len(hdrs)
		for j := uint32(0); j < nh; j++ {
			var k, v []byte
			if k, fb, ok = sized(fb); !ok {
				return recs, fmt.Errorf("record %d header %d: %w", i, j, errShort)
			}
			if v, fb, ok = sized(fb); !ok {
				return recs, fmt.Errorf("record %d header %d: %w", i, j, errShort)
			}
			hdrs = append(hdrs, Header{Key: string(k), Value: v})
		}
		if nh > 0 {
			r.Headers = hdrs[start:len(hdrs):len(hdrs)]
		}
		// A v1 record ends with its headers (docs/plugin-abi.md,
		// Versioning); bytes left over are skipped, never misread.
		recs = append(recs, r)
	}
	batchHdrs = hdrs
	return recs, nil
}

func nullable(b []byte, n int32) (field, rest []byte, ok bool) {
	if n == -1 {
		return nil, b, true
	}
	if n < 0 || int64(n) > int64(len(b)) {
		return nil, b, false
	}
	return b[:n:n], b[n:], true
}

func sized(b []byte) (field, rest []byte, ok bool) {
	if len(b) < 4 {
		return nil, b, false
	}
	n := binary.LittleEndian.Uint32(b)
	if uint64(n) > uint64(len(b)-4) {
		return nil, b, false
	}
	return b[4 : 4+n : 4+n], b[4+n:], true
}

// decodeConfig decodes the ABI v1 config encoding.
func decodeConfig(b []byte) (Config, error) {
	cfg := Config{}
	if len(b) == 0 {
		return cfg, nil
	}
	if len(b) < 4 {
		return nil, fmt.Errorf("config: %w", errShort)
	}
	n := binary.LittleEndian.Uint32(b)
	b = b[4:]
	if uint64(n)*8 > uint64(len(b)) {
		return nil, fmt.Errorf("config: %d entries in %d bytes", n, len(b))
	}
	for i := uint32(0); i < n; i++ {
		k, rest, ok := sized(b)
		if !ok {
			return nil, fmt.Errorf("config entry %d: %w", i, errShort)
		}
		v, rest, ok := sized(rest)
		if !ok {
			return nil, fmt.Errorf("config entry %d: %w", i, errShort)
		}
		cfg[string(k)] = string(v)
		b = rest
	}
	return cfg, nil
}

// appendOutput appends the ABI v1 output encoding of o. It sizes dst once and
// writes fields in place: on wasm every append's capacity check costs.
func appendOutput(dst []byte, o *Output) []byte {
	n := 20 + len(o.Key) + len(o.Value)
	for _, h := range o.Headers {
		n += 8 + len(h.Key) + len(h.Value)
	}
	at := len(dst)
	dst = slices.Grow(dst, n)[:at+n]
	b := dst[at:]
	binary.LittleEndian.PutUint64(b, uint64(o.Time))
	binary.LittleEndian.PutUint32(b[8:], nullLen(o.Key))
	binary.LittleEndian.PutUint32(b[12:], nullLen(o.Value))
	binary.LittleEndian.PutUint32(b[16:], uint32(len(o.Headers)))
	i := 20 + copy(b[20:], o.Key)
	i += copy(b[i:], o.Value)
	for _, h := range o.Headers {
		binary.LittleEndian.PutUint32(b[i:], uint32(len(h.Key)))
		i += 4 + copy(b[i+4:], h.Key)
		binary.LittleEndian.PutUint32(b[i:], uint32(len(h.Value)))
		i += 4 + copy(b[i+4:], h.Value)
	}
	return dst
}

func nullLen(b []byte) uint32 {
	if b == nil {
		return 0xFFFFFFFF
	}
	return uint32(len(b))
}

//go:build !wasip1

package plugin

import (
	"bytes"
	"slices"
	"sync"
	"time"
)

// Outside a wasm guest the SDK runs against an in-process host, so plugin
// logic (and this package) can be unit-tested natively with go test. It is
// the same dispatch code the wasm exports call; only the imports differ.

// emitted is an output captured by the native host.
type emitted struct {
	Stream string
	Input  uint32 // index of the input record in its batch
	Record []byte // ABI v1 output encoding
}

var native = struct {
	sync.Mutex
	state   map[string][]byte
	emitted []emitted
	logs    []string
}{state: map[string][]byte{}}

func hostEmit(stream string, rec []byte, input uint32) {
	native.Lock()
	defer native.Unlock()
	native.emitted = append(native.emitted, emitted{Stream: stream, Input: input, Record: slices.Clone(rec)})
}

func hostStateGet(key, buf []byte) int32 {
	native.Lock()
	defer native.Unlock()
	v, ok := native.state[string(key)]
	if !ok {
		return -1
	}
	if len(v) <= len(buf) {
		copy(buf, v)
	}
	return int32(len(v))
}

func hostStateSet(key, val []byte) {
	native.Lock()
	defer native.Unlock()
	native.state[string(key)] = slices.Clone(val)
}

func hostStateDelete(key []byte) {
	native.Lock()
	defer native.Unlock()
	delete(native.state, string(key))
}

func hostStateNext(prefix, after, buf []byte) int32 {
	native.Lock()
	defer native.Unlock()
	var best []byte
	for k := range native.state {
		kb := []byte(k)
		if bytes.HasPrefix(kb, prefix) && bytes.Compare(kb, after) > 0 && (best == nil || bytes.Compare(kb, best) < 0) {
			best = kb
		}
	}
	if best == nil {
		return -1
	}
	if len(best) <= len(buf) {
		copy(buf, best)
	}
	return int32(len(best))
}

func hostLog(level Level, msg string) {
	native.Lock()
	defer native.Unlock()
	native.logs = append(native.logs, msg)
}

func hostNow() int64 { return time.Now().UnixNano() }

// nativeInput is what Input reports outside a wasm guest (tests set it).
var nativeInput = struct {
	Stream string
	Shard  uint32
}{Stream: "in"}

func hostInputShard() int32 { return int32(nativeInput.Shard) }

func hostInputStream(buf []byte) int32 {
	n := copy(buf, nativeInput.Stream)
	if len(nativeInput.Stream) > len(buf) {
		return int32(len(nativeInput.Stream))
	}
	return int32(n)
}

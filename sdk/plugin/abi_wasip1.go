//go:build wasip1

package plugin

import "unsafe"

// inputBuf is eh_alloc's buffer: the host writes batches and config here.
var inputBuf []byte

// alloc returns a buffer of n bytes for the host to write into; it stays
// valid until the next call.
func alloc(n uint32) []byte {
	if uint32(cap(inputBuf)) < n {
		inputBuf = make([]byte, n, n+n/4)
	}
	inputBuf = inputBuf[:n]
	return inputBuf
}

// Guest exports of ABI v1.

//go:wasmexport eh_alloc
func ehAlloc(n uint32) unsafe.Pointer {
	return unsafe.Pointer(unsafe.SliceData(alloc(n)))
}

//go:wasmexport eh_init
func ehInit(ptr unsafe.Pointer, n uint32) int32 {
	return handleInit(unsafe.Slice((*byte)(ptr), n))
}

//go:wasmexport eh_on_batch
func ehOnBatch(ptr unsafe.Pointer, n uint32) int32 {
	return handleBatch(unsafe.Slice((*byte)(ptr), n))
}

//go:wasmexport eh_on_timer
func ehOnTimer(now int64) int32 { return handleTimer(now) }

// Host imports of ABI v1.

//go:wasmimport edgehub_v1 emit
func wasmEmit(stream unsafe.Pointer, streamLen uint32, rec unsafe.Pointer, recLen uint32, input uint32)

//go:wasmimport edgehub_v1 state_get
func wasmStateGet(key unsafe.Pointer, keyLen uint32, buf unsafe.Pointer, bufCap uint32) int32

//go:wasmimport edgehub_v1 state_set
func wasmStateSet(key unsafe.Pointer, keyLen uint32, val unsafe.Pointer, valLen uint32)

//go:wasmimport edgehub_v1 state_delete
func wasmStateDelete(key unsafe.Pointer, keyLen uint32)

//go:wasmimport edgehub_v1 state_next
func wasmStateNext(prefix unsafe.Pointer, prefixLen uint32, after unsafe.Pointer, afterLen uint32, buf unsafe.Pointer, bufCap uint32) int32

//go:wasmimport edgehub_v1 log
func wasmLog(level int32, msg unsafe.Pointer, msgLen uint32)

//go:wasmimport edgehub_v1 now
func wasmNow() int64

//go:wasmimport edgehub_v1 input_shard
func wasmInputShard() int32

//go:wasmimport edgehub_v1 input_stream
func wasmInputStream(buf unsafe.Pointer, bufCap uint32) int32

func hostEmit(stream string, rec []byte, input uint32) {
	wasmEmit(unsafe.Pointer(unsafe.StringData(stream)), uint32(len(stream)),
		unsafe.Pointer(unsafe.SliceData(rec)), uint32(len(rec)), input)
}

func hostStateGet(key, buf []byte) int32 {
	return wasmStateGet(unsafe.Pointer(unsafe.SliceData(key)), uint32(len(key)),
		unsafe.Pointer(unsafe.SliceData(buf)), uint32(len(buf)))
}

func hostStateSet(key, val []byte) {
	wasmStateSet(unsafe.Pointer(unsafe.SliceData(key)), uint32(len(key)),
		unsafe.Pointer(unsafe.SliceData(val)), uint32(len(val)))
}

func hostStateDelete(key []byte) {
	wasmStateDelete(unsafe.Pointer(unsafe.SliceData(key)), uint32(len(key)))
}

func hostStateNext(prefix, after, buf []byte) int32 {
	return wasmStateNext(unsafe.Pointer(unsafe.SliceData(prefix)), uint32(len(prefix)),
		unsafe.Pointer(unsafe.SliceData(after)), uint32(len(after)),
		unsafe.Pointer(unsafe.SliceData(buf)), uint32(len(buf)))
}

func hostLog(level Level, msg string) {
	wasmLog(int32(level), unsafe.Pointer(unsafe.StringData(msg)), uint32(len(msg)))
}

func hostNow() int64 { return wasmNow() }

func hostInputShard() int32 { return wasmInputShard() }

func hostInputStream(buf []byte) int32 {
	return wasmInputStream(unsafe.Pointer(unsafe.SliceData(buf)), uint32(len(buf)))
}

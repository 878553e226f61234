// Command summerge is the sum test plugin (package sumcore) with
// eh_state_merge: a running sum only grows, so of two parents' values the
// larger is the later one (the other is a copy a split left behind).
package main

import (
	"encoding/binary"
	"strconv"
	"unsafe"

	"github.com/edgehub/edgehub/plugins/testdata/sumcore"
)

func init() { sumcore.Register() }

func main() {}

//go:wasmimport edgehub_v1 state_set
func stateSet(key unsafe.Pointer, keyLen uint32, val unsafe.Pointer, valLen uint32)

//go:wasmimport edgehub_v1 state_get
func stateGet(key unsafe.Pointer, keyLen uint32, buf unsafe.Pointer, bufCap uint32) int32

//go:wasmimport edgehub_v1 state_delete
func stateDelete(key unsafe.Pointer, keyLen uint32)

//go:wasmexport eh_state_merge
func ehStateMerge(ptr unsafe.Pointer, n uint32) int32 {
	buf := unsafe.Slice((*byte)(ptr), n)
	var f [3][]byte
	for i := range f {
		if len(buf) < 4 {
			return 1
		}
		l := binary.LittleEndian.Uint32(buf)
		if uint32(len(buf)-4) < l {
			return 1
		}
		f[i], buf = buf[4:4+l], buf[4+l:]
	}
	key := f[0]
	switch sumcore.MergeMode {
	case "none":
		return 0
	case "fail":
		return 3
	case "get":
		var buf [16]byte
		stateGet(unsafe.Pointer(&key[0]), uint32(len(key)), unsafe.Pointer(&buf[0]), 16)
	case "other":
		other := []byte("other")
		stateSet(unsafe.Pointer(&other[0]), 5, unsafe.Pointer(&other[0]), 5)
	}
	if string(key) == "drop" {
		stateDelete(unsafe.Pointer(&key[0]), uint32(len(key)))
		return 0
	}
	a, _ := strconv.ParseInt(string(f[1]), 10, 64)
	b, _ := strconv.ParseInt(string(f[2]), 10, 64)
	v := []byte(strconv.FormatInt(max(a, b), 10))
	stateSet(unsafe.Pointer(&key[0]), uint32(len(key)), unsafe.Pointer(&v[0]), uint32(len(v)))
	return 0
}

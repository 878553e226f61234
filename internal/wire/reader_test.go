package wire

import (
	"encoding/binary"
	"errors"
	"math"
	"strings"
	"testing"
)

var errTest = errors.New("test: bad message")

func newTestReader(tb testing.TB, buf []byte, what string) *Reader {
	tb.Helper()
	return &Reader{Buf: buf, Sentinel: errTest, What: what}
}

func TestReaderFields(t *testing.T) {
	var buf []byte
	buf = append(buf, 7)
	buf = binary.AppendUvarint(buf, 300)
	buf = binary.AppendVarint(buf, -5)
	buf = binary.AppendUvarint(buf, math.MaxUint32)
	buf = binary.AppendUvarint(buf, 3)
	buf = append(buf, "abc"...)
	buf = binary.AppendUvarint(buf, 2)
	buf = append(buf, "xy"...)
	buf = append(buf, "rest"...)

	r := newTestReader(t, buf, "")
	if got := r.Byte(); got != 7 {
		t.Fatalf("Byte = %d, want 7", got)
	}
	if got := r.UvarintMax(300); got != 300 {
		t.Fatalf("UvarintMax = %d, want 300", got)
	}
	if got := r.Varint(); got != -5 {
		t.Fatalf("Varint = %d, want -5", got)
	}
	if got := r.Uint32("shard"); got != math.MaxUint32 {
		t.Fatalf("Uint32 = %d, want MaxUint32", got)
	}
	b := r.Bytes(3)
	if string(b) != "abc" || cap(b) != 3 {
		t.Fatalf("Bytes = %q (cap %d), want \"abc\" with cap 3", b, cap(b))
	}
	if got := r.String(0); got != "xy" {
		t.Fatalf("String = %q, want \"xy\"", got)
	}
	if got := r.Next(4); string(got) != "rest" {
		t.Fatalf("Next = %q, want \"rest\"", got)
	}
	if r.Err != nil || len(r.Buf) != 0 {
		t.Fatalf("err = %v, %d bytes left; want nil, 0", r.Err, len(r.Buf))
	}
}

func TestReaderFailures(t *testing.T) {
	tests := []struct {
		name string
		what string
		buf  []byte
		read func(r *Reader)
		want string
	}{
		{name: "byte truncated", buf: nil, read: func(r *Reader) { r.Byte() }, want: "test: bad message: truncated"},
		{name: "named frame", what: "OPEN", buf: nil, read: func(r *Reader) { r.Byte() }, want: "test: bad message: OPEN: truncated"},
		{name: "bad uvarint", buf: []byte{0x80}, read: func(r *Reader) { r.Uvarint() }, want: "test: bad message: bad uvarint"},
		{name: "uvarint overflow", buf: []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, read: func(r *Reader) { r.Uvarint() }, want: "test: bad message: bad uvarint"},
		{name: "bad varint", buf: []byte{0x80}, read: func(r *Reader) { r.Varint() }, want: "test: bad message: bad varint"},
		{name: "uvarint above max", buf: []byte{10}, read: func(r *Reader) { r.UvarintMax(9) }, want: "test: bad message: value 10 exceeds 9"},
		{name: "uint32 out of range", buf: binary.AppendUvarint(nil, math.MaxUint32+1), read: func(r *Reader) { r.Uint32("shard") }, want: "test: bad message: shard 4294967296 out of range"},
		{name: "next past end", buf: []byte{1, 2}, read: func(r *Reader) { r.Next(3) }, want: "test: bad message: field of 3 bytes runs past the end"},
		{name: "bytes past end", buf: []byte{3, 'a'}, read: func(r *Reader) { r.Bytes(0) }, want: "test: bad message: field of 3 bytes runs past the end"},
		{name: "bytes past end checked before max", buf: []byte{3, 'a'}, read: func(r *Reader) { r.Bytes(1) }, want: "test: bad message: field of 3 bytes runs past the end"},
		{name: "bytes above max", buf: []byte{3, 'a', 'b', 'c'}, read: func(r *Reader) { r.Bytes(2) }, want: "test: bad message: field of 3 bytes exceeds 2"},
		{name: "string above max", buf: []byte{3, 'a', 'b', 'c'}, read: func(r *Reader) { r.String(2) }, want: "test: bad message: field of 3 bytes exceeds 2"},
		{name: "count too large", buf: []byte{3, 0, 0, 0, 0, 0}, read: func(r *Reader) { r.Count(2) }, want: "test: bad message: count 3 cannot fit in 5 bytes"},
		{name: "first failure sticks", buf: []byte{0x80}, read: func(r *Reader) { r.Uvarint(); r.Byte(); r.Fail("later") }, want: "test: bad message: bad uvarint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newTestReader(t, tt.buf, tt.what)
			tt.read(r)
			if !errors.Is(r.Err, errTest) {
				t.Fatalf("err = %v, want errors.Is errTest", r.Err)
			}
			if r.Err.Error() != tt.want {
				t.Fatalf("err = %q, want %q", r.Err, tt.want)
			}
			if len(r.Buf) != 0 {
				t.Fatalf("%d bytes left after a failure, want 0", len(r.Buf))
			}
			// Every read after a failure returns a zero value.
			if r.Byte() != 0 || r.Uvarint() != 0 || r.Varint() != 0 || r.Next(0) != nil || r.Bytes(0) != nil || r.String(0) != "" || r.Count(1) != 0 || r.Uint32("x") != 0 {
				t.Fatal("read after a failure returned a non-zero value")
			}
		})
	}
}

func TestReaderCount(t *testing.T) {
	r := newTestReader(t, []byte{2, 0, 0, 0, 0}, "")
	if got := r.Count(2); got != 2 || r.Err != nil {
		t.Fatalf("Count = %d, %v; want 2, nil", got, r.Err)
	}
}

// FuzzReader reads arbitrary input with a sequence of reads chosen by the
// input itself, and checks the Reader's invariants: no panic, reads never
// run past the buffer, and after a failure Buf is empty and every read
// returns a zero value.
func FuzzReader(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7}, []byte("hello"))
	f.Add([]byte{4, 4, 4}, binary.AppendUvarint([]byte{3}, math.MaxUint64))
	f.Add([]byte{6, 5}, []byte{0x80, 0x80})
	f.Fuzz(func(t *testing.T, ops, buf []byte) {
		r := newTestReader(t, buf, "fuzz")
		for _, op := range ops {
			before := len(r.Buf)
			switch op % 9 {
			case 0:
				r.Byte()
			case 1:
				r.Uvarint()
			case 2:
				r.Varint()
			case 3:
				r.UvarintMax(uint64(op))
			case 4:
				r.Uint32("field")
			case 5:
				if b := r.Next(uint64(op % 8)); len(b) > before || cap(b) != len(b) {
					t.Fatalf("Next returned %d bytes (cap %d) of %d", len(b), cap(b), before)
				}
			case 6:
				if b := r.Bytes(int(op % 16)); op%16 > 0 && len(b) > int(op%16) {
					t.Fatalf("Bytes returned %d bytes, max %d", len(b), op%16)
				}
			case 7:
				r.String(0)
			case 8:
				if n := r.Count(1 + int(op%4)); n > before {
					t.Fatalf("Count = %d with %d bytes", n, before)
				}
			}
			if len(r.Buf) > before {
				t.Fatalf("Buf grew from %d to %d bytes", before, len(r.Buf))
			}
			if r.Err != nil {
				if !errors.Is(r.Err, errTest) || !strings.HasPrefix(r.Err.Error(), "test: bad message: fuzz: ") {
					t.Fatalf("err = %v, want errTest with the frame name", r.Err)
				}
				if len(r.Buf) != 0 {
					t.Fatalf("%d bytes left after a failure", len(r.Buf))
				}
				if r.Uvarint() != 0 || r.Byte() != 0 || r.Bytes(0) != nil {
					t.Fatal("read after a failure returned a non-zero value")
				}
			}
		}
	})
}

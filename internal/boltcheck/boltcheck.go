package boltcheck

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
)

// ErrDamaged is wrapped by every error of Check that found damage (not an
// I/O error).
var ErrDamaged = errors.New("damaged bbolt file")

// Check walks the bbolt file at path with plain reads, without mapping it.
// A missing or empty file passes (bbolt creates or initialises it), and so
// does one without a valid meta page (bbolt reports that itself, as an
// error). Damage is reported wrapping ErrDamaged.
func Check(path string) error {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("boltcheck: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("boltcheck: %w", err)
	}
	if fi.Size() == 0 {
		return nil
	}
	m, ok := readMeta(f)
	if !ok {
		return nil
	}
	damaged := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrDamaged, fmt.Sprintf(format, args...))
	}
	if end := int64(m.pgid) * int64(m.pageSize); fi.Size() < end {
		return damaged("file is %d bytes, its pages end at %d: truncated", fi.Size(), end)
	}
	w := &pageWalker{f: f, m: m, seen: map[uint64]bool{}}
	err = w.freelist()
	if err == nil {
		_, err = w.walk(m.root, nil, nil)
	}
	var pe pageError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &pe):
		return damaged("%s", pe)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return damaged("%v", err)
	}
	return fmt.Errorf("boltcheck: %w", err)
}

// Meta is what Check reads from the meta page bbolt would use.
type Meta struct {
	PageSize int
	Root     uint64 // the root bucket's page
	Pages    uint64 // pages in use: the file is at least Pages*PageSize bytes
}

// ReadMeta returns the meta page bbolt would use; ok is false if neither
// meta page is valid.
func ReadMeta(path string) (m Meta, ok bool, err error) {
	f, err := os.Open(path)
	if err != nil {
		return Meta{}, false, fmt.Errorf("boltcheck: %w", err)
	}
	defer f.Close()
	bm, ok := readMeta(f)
	return Meta{PageSize: int(bm.pageSize), Root: bm.root, Pages: bm.pgid}, ok, nil
}

// bbolt's on-disk layout (little endian, as bbolt writes it on the
// platforms edgehub runs on).
const (
	boltMagic        = 0xED0CDAED
	boltVersion      = 2
	noFreelist       = ^uint64(0) // the meta's freelist page with NoFreelistSync
	freelistPageFlag = 0x10
	pageHeaderSize   = 16 // id u64, flags u16, count u16, overflow u32
	pageElemSize     = 16 // branch: pos, ksize u32, pgid u64; leaf: flags, pos, ksize, vsize u32
	branchPageFlag   = 0x01
	leafPageFlag     = 0x02
	bucketLeafFlag   = 0x01
	bucketHeaderSize = 16 // root pgid u64, sequence u64
	metaSumLen       = 56 // meta bytes covered by its FNV-64a checksum
)

type boltMeta struct {
	pageSize   uint32
	root, pgid uint64
	freelist   uint64
	txid       uint64
}

// readMeta returns the meta bbolt would use: of the two that validate, the
// one with the higher transaction id.
func readMeta(f *os.File) (boltMeta, bool) {
	parse := func(off int64) (boltMeta, bool) {
		b := make([]byte, pageHeaderSize+metaSumLen+8)
		if _, err := f.ReadAt(b, off); err != nil {
			return boltMeta{}, false
		}
		mb := b[pageHeaderSize:]
		h := fnv.New64a()
		h.Write(mb[:metaSumLen])
		le := binary.LittleEndian
		if le.Uint32(mb) != boltMagic || le.Uint32(mb[4:]) != boltVersion || le.Uint64(mb[metaSumLen:]) != h.Sum64() {
			return boltMeta{}, false
		}
		return boltMeta{pageSize: le.Uint32(mb[8:]), root: le.Uint64(mb[16:]), freelist: le.Uint64(mb[32:]), pgid: le.Uint64(mb[40:]), txid: le.Uint64(mb[48:])}, true
	}
	m0, ok0 := parse(0)
	size := int64(os.Getpagesize())
	if ok0 {
		size = int64(m0.pageSize)
	}
	m1, ok1 := parse(size)
	switch {
	case ok0 && ok1 && m1.txid > m0.txid, !ok0 && ok1:
		return m1, m1.pageSize >= 512
	case ok0:
		return m0, m0.pageSize >= 512
	}
	return boltMeta{}, false
}

type pageError string

func (e pageError) Error() string { return string(e) }

type pageWalker struct {
	f    *os.File
	m    boltMeta
	seen map[uint64]bool
}

func (w *pageWalker) fail(format string, args ...any) error {
	return pageError(fmt.Sprintf(format, args...))
}

// freelist checks the synced freelist's page, if there is one: bbolt reads
// it at open instead of walking the tree.
func (w *pageWalker) freelist() error {
	id := w.m.freelist
	if id == noFreelist {
		return nil
	}
	hdr, overflow, err := w.header(id)
	if err != nil {
		return err
	}
	if flags := binary.LittleEndian.Uint16(hdr[8:]); flags != freelistPageFlag {
		return w.fail("freelist page %d: kind 0x%x", id, flags)
	}
	return w.mark(id, overflow)
}

// header reads page id's header, checking its id and extent.
func (w *pageWalker) header(id uint64) (hdr []byte, overflow uint64, err error) {
	if id < 2 || id >= w.m.pgid {
		return nil, 0, w.fail("page %d outside the file's pages 2..%d", id, w.m.pgid-1)
	}
	hdr = make([]byte, pageHeaderSize)
	if _, err := w.f.ReadAt(hdr, int64(id)*int64(w.m.pageSize)); err != nil {
		return nil, 0, fmt.Errorf("page %d: %w", id, err)
	}
	le := binary.LittleEndian
	if got := le.Uint64(hdr); got != id {
		return nil, 0, w.fail("page %d identifies as %d", id, got)
	}
	overflow = uint64(le.Uint32(hdr[12:]))
	if id+overflow >= w.m.pgid {
		return nil, 0, w.fail("page %d overflows past the file's pages (%d more)", id, overflow)
	}
	return hdr, overflow, nil
}

// mark records pages id..id+overflow as reached, each once.
func (w *pageWalker) mark(id, overflow uint64) error {
	for p := id; p <= id+overflow; p++ {
		if w.seen[p] {
			return w.fail("page %d reached twice", p)
		}
		w.seen[p] = true
	}
	return nil
}

// walk checks page id and everything below it, its keys at least lo
// (nil: no bound) and below hi (nil: no bound), and returns the subtree's
// greatest key as bbolt's check computes it.
func (w *pageWalker) walk(id uint64, lo, hi []byte) ([]byte, error) {
	_, overflow, err := w.header(id)
	if err != nil {
		return nil, err
	}
	if err := w.mark(id, overflow); err != nil {
		return nil, err
	}
	ps := int64(w.m.pageSize)
	buf := make([]byte, int64(1+overflow)*ps)
	if _, err := w.f.ReadAt(buf, int64(id)*ps); err != nil {
		return nil, fmt.Errorf("page %d: %w", id, err)
	}
	return w.page(id, buf, false, lo, hi)
}

// page checks the page in buf (a whole page, or an inline bucket's, whose
// key order bbolt does not check).
func (w *pageWalker) page(id uint64, buf []byte, inline bool, lo, hi []byte) ([]byte, error) {
	le := binary.LittleEndian
	if len(buf) < pageHeaderSize {
		return nil, w.fail("page %d: %d bytes", id, len(buf))
	}
	flags, count := le.Uint16(buf[8:]), int(le.Uint16(buf[10:]))
	if flags != branchPageFlag && flags != leafPageFlag || inline && flags != leafPageFlag {
		return nil, w.fail("page %d: kind 0x%x is neither branch nor leaf", id, flags)
	}
	if pageHeaderSize+count*pageElemSize > len(buf) {
		return nil, w.fail("page %d: %d elements do not fit", id, count)
	}
	// order follows bbolt's key order check: the first key at least the
	// bound from the parent, each next key above the previous one (for a
	// branch, above the previous child's greatest key), all below hi.
	prev := lo
	order := func(i int, key []byte) error {
		if inline {
			return nil
		}
		if c := bytes.Compare(prev, key); i == 0 && prev != nil && c > 0 || i > 0 && c >= 0 {
			return w.fail("page %d: key %d out of order", id, i)
		}
		if hi != nil && bytes.Compare(key, hi) >= 0 {
			return w.fail("page %d: key %d not below its parent's next key", id, i)
		}
		return nil
	}
	var greatest []byte
	for i := 0; i < count; i++ {
		e := buf[pageHeaderSize+i*pageElemSize:]
		at := uint64(pageHeaderSize + i*pageElemSize) // positions count from the element
		if flags == branchPageFlag {
			pos, ksize := uint64(le.Uint32(e)), uint64(le.Uint32(e[4:]))
			if at+pos+ksize > uint64(len(buf)) {
				return nil, w.fail("page %d: key %d out of the page", id, i)
			}
			key := buf[at+pos : at+pos+ksize]
			if err := order(i, key); err != nil {
				return nil, err
			}
			next := hi
			if i+1 < count {
				n := buf[pageHeaderSize+(i+1)*pageElemSize:]
				npos, nksize := uint64(le.Uint32(n)), uint64(le.Uint32(n[4:]))
				nat := at + pageElemSize
				if nat+npos+nksize > uint64(len(buf)) {
					return nil, w.fail("page %d: key %d out of the page", id, i+1)
				}
				next = buf[nat+npos : nat+npos+nksize]
			}
			g, err := w.walk(le.Uint64(e[8:]), key, next)
			if err != nil {
				return nil, err
			}
			greatest, prev = g, g
			continue
		}
		eflags, pos, ksize, vsize := le.Uint32(e), uint64(le.Uint32(e[4:])), uint64(le.Uint32(e[8:])), uint64(le.Uint32(e[12:]))
		end := at + pos + ksize + vsize
		if end > uint64(len(buf)) {
			return nil, w.fail("page %d: element %d out of the page", id, i)
		}
		key := buf[at+pos : at+pos+ksize]
		if err := order(i, key); err != nil {
			return nil, err
		}
		greatest, prev = key, key
		if eflags&bucketLeafFlag == 0 {
			continue
		}
		v := buf[at+pos+ksize : end]
		if len(v) < bucketHeaderSize {
			return nil, w.fail("page %d: bucket %d header is %d bytes", id, i, len(v))
		}
		if root := le.Uint64(v); root != 0 {
			if _, err := w.walk(root, nil, nil); err != nil {
				return nil, err
			}
		} else if _, err := w.page(id, v[bucketHeaderSize:], true, nil, nil); err != nil {
			return nil, err
		}
	}
	return greatest, nil
}

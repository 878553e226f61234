package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
)

// precheck walks a stream file's bbolt page tree with plain reads before
// bbolt maps it. With NoFreelistSync, bbolt's Open visits every reachable
// page from a goroutine of its own, where a damaged page header is an
// assertion panic no caller can recover, and a file cut short makes the
// mapped read fault (SIGBUS): either kills the hub without naming the file.
// precheck finds those cases first and reports them as a *CorruptError. It
// checks structure only (page ids, kinds, bounds), not contents: chunk
// checksums are verified when chunks are read. Damage it cannot judge (no
// valid meta page) is left to bbolt, which reports it as an error.
func precheck(path string) error {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() == 0 {
		return nil // bbolt initialises it: an interrupted creation
	}
	m, ok := readMeta(f)
	if !ok {
		return nil // bbolt reports invalid meta pages itself
	}
	corrupt := func(format string, args ...any) error {
		return &CorruptError{File: path, Shard: -1, Err: fmt.Errorf(format, args...)}
	}
	if end := int64(m.pgid) * int64(m.pageSize); fi.Size() < end {
		return corrupt("file is %d bytes, its pages end at %d: truncated", fi.Size(), end)
	}
	w := &pageWalker{f: f, m: m, seen: map[uint64]bool{}}
	if err := w.walk(m.root); err != nil {
		var ce *CorruptError
		if errors.As(err, &ce) {
			return err
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return corrupt("%w", err)
		}
		var pe pageError
		if errors.As(err, &pe) {
			return corrupt("%s", pe)
		}
		return fmt.Errorf("store: check %s: %w", path, err)
	}
	return nil
}

// bbolt's on-disk layout (little endian, as bbolt writes it on the
// platforms edgehub runs on).
const (
	boltMagic        = 0xED0CDAED
	boltVersion      = 2
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
		return boltMeta{pageSize: le.Uint32(mb[8:]), root: le.Uint64(mb[16:]), pgid: le.Uint64(mb[40:]), txid: le.Uint64(mb[48:])}, true
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

// walk checks page id and everything below it.
func (w *pageWalker) walk(id uint64) error {
	if id < 2 || id >= w.m.pgid {
		return w.fail("page %d outside the file's pages 2..%d", id, w.m.pgid-1)
	}
	if w.seen[id] {
		return w.fail("page %d reached twice", id)
	}
	w.seen[id] = true
	ps := int64(w.m.pageSize)
	hdr := make([]byte, pageHeaderSize)
	if _, err := w.f.ReadAt(hdr, int64(id)*ps); err != nil {
		return fmt.Errorf("page %d: %w", id, err)
	}
	le := binary.LittleEndian
	if got := le.Uint64(hdr); got != id {
		return w.fail("page %d identifies as %d", id, got)
	}
	overflow := uint64(le.Uint32(hdr[12:]))
	if id+overflow >= w.m.pgid {
		return w.fail("page %d overflows past the file's pages (%d more)", id, overflow)
	}
	buf := make([]byte, int64(1+overflow)*ps)
	if _, err := w.f.ReadAt(buf, int64(id)*ps); err != nil {
		return fmt.Errorf("page %d: %w", id, err)
	}
	return w.page(id, buf, false)
}

// page checks the page in buf (a whole page, or an inline bucket's).
func (w *pageWalker) page(id uint64, buf []byte, inline bool) error {
	le := binary.LittleEndian
	if len(buf) < pageHeaderSize {
		return w.fail("page %d: %d bytes", id, len(buf))
	}
	flags, count := le.Uint16(buf[8:]), int(le.Uint16(buf[10:]))
	if flags != branchPageFlag && flags != leafPageFlag || inline && flags != leafPageFlag {
		return w.fail("page %d: kind 0x%x is neither branch nor leaf", id, flags)
	}
	if pageHeaderSize+count*pageElemSize > len(buf) {
		return w.fail("page %d: %d elements do not fit", id, count)
	}
	for i := 0; i < count; i++ {
		e := buf[pageHeaderSize+i*pageElemSize:]
		at := uint64(pageHeaderSize + i*pageElemSize) // positions count from the element
		if flags == branchPageFlag {
			pos, ksize := uint64(le.Uint32(e)), uint64(le.Uint32(e[4:]))
			if at+pos+ksize > uint64(len(buf)) {
				return w.fail("page %d: key %d out of the page", id, i)
			}
			if err := w.walk(le.Uint64(e[8:])); err != nil {
				return err
			}
			continue
		}
		eflags, pos, ksize, vsize := le.Uint32(e), uint64(le.Uint32(e[4:])), uint64(le.Uint32(e[8:])), uint64(le.Uint32(e[12:]))
		end := at + pos + ksize + vsize
		if end > uint64(len(buf)) {
			return w.fail("page %d: element %d out of the page", id, i)
		}
		if eflags&bucketLeafFlag == 0 {
			continue
		}
		v := buf[at+pos+ksize : end]
		if len(v) < bucketHeaderSize {
			return w.fail("page %d: bucket %d header is %d bytes", id, i, len(v))
		}
		if root := le.Uint64(v); root != 0 {
			if err := w.walk(root); err != nil {
				return err
			}
		} else if err := w.page(id, v[bucketHeaderSize:], true); err != nil {
			return err
		}
	}
	return nil
}

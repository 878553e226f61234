package store

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/edgehub/edgehub/internal/boltcheck"
	"github.com/edgehub/edgehub/internal/record"
)

// damagedFile builds a closed store with one stream of a few hundred
// records and returns its directory and the stream file.
func damagedFile(tb testing.TB) (dir, path string) {
	tb.Helper()
	dir = tb.TempDir()
	s := openStore(tb, testConfig(tb, dir))
	st, err := s.CreateStream(context.Background(), StreamConfig{Name: "d", Shards: 2})
	if err != nil {
		tb.Fatal(err)
	}
	for i := 0; i < 50; i++ {
		recs := make([]record.Record, 10)
		for j := range recs {
			recs[j] = record.Record{Key: fmt.Appendf(nil, "k%d", j), Value: bytes.Repeat([]byte{byte(i)}, 300)}
		}
		if _, err := st.Append(context.Background(), Batch{Shard: -1, Records: recs}); err != nil {
			tb.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		tb.Fatal(err)
	}
	return dir, filepath.Join(dir, "streams", "d.db")
}

func meta(tb testing.TB, path string) boltcheck.Meta {
	tb.Helper()
	m, ok, err := boltcheck.ReadMeta(path)
	if err != nil || !ok {
		tb.Fatalf("no meta in %s: %v", path, err)
	}
	return m
}

// A stream file cut short, or with a damaged page header, crashed the
// process inside bbolt's Open (SIGBUS on the mapped read past the end; an
// assertion panic in the goroutine bbolt rebuilds the freelist in), found by
// the chaos corruption test: Open now reports a *CorruptError naming the
// file.
func TestOpenDamagedStructure(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, path string)
	}{
		{"truncated", func(t *testing.T, path string) {
			m := meta(t, path)
			// Cut the last page in use (bbolt files grow ahead of use:
			// a cut beyond the pages in use damages nothing).
			if err := os.Truncate(path, int64(m.Pages-1)*int64(m.PageSize)); err != nil {
				t.Fatal(err)
			}
		}},
		{"page header", func(t *testing.T, path string) {
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			m := meta(t, path)
			// The root bucket's page: every other page hangs below it.
			if _, err := f.WriteAt(bytes.Repeat([]byte{0xee}, 16), int64(m.Root)*int64(m.PageSize)); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, path := damagedFile(t)
			tc.damage(t, path)
			_, err := Open(testConfig(t, dir))
			var ce *CorruptError
			if !errors.As(err, &ce) || ce.File != path {
				t.Fatalf("Open = %v, want a CorruptError naming %s", err, path)
			}
		})
	}
}

// fuzzBase is a real stream file, trimmed to its pages in use and kept
// gzipped in testdata, so that inputs mean the same damage in every run
// (TestWriteFuzzBase rewrites it).
var fuzzBase = sync.OnceValues(func() ([]byte, error) {
	b, err := os.ReadFile(filepath.Join("testdata", "damaged-base.db.gz"))
	if err != nil {
		return nil, err
	}
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	return io.ReadAll(zr)
})

// FuzzOpenDamaged damages a real stream file (a truncation, then byte
// changes, as the input describes) and opens it: the store must report an
// error or open it, never crash, whatever the damage.
func FuzzOpenDamaged(f *testing.F) {
	f.Add([]byte{})
	f.Add(binary.LittleEndian.AppendUint32(nil, 40000))
	f.Add([]byte{0, 0, 0, 0, 0x10, 0x20, 0, 0, 0xff})                         // a byte of page 2
	f.Add([]byte{0, 0, 0, 0, 0x18, 0x00, 0, 0, 0x01})                         // meta 0
	f.Add([]byte{0, 0, 0, 0, 0x18, 0x00, 0, 0, 0x01, 0x18, 0x10, 0, 0, 0x80}) // both metas
	f.Fuzz(func(t *testing.T, patch []byte) {
		base, err := fuzzBase()
		if err != nil {
			t.Fatal(err)
		}
		file := append([]byte(nil), base...)
		if len(patch) >= 4 {
			if n := binary.LittleEndian.Uint32(patch); n != 0 {
				file = file[:int(n)%len(file)]
			}
			patch = patch[4:]
		}
		for ; len(patch) >= 5 && len(file) > 0; patch = patch[5:] {
			file[int(binary.LittleEndian.Uint32(patch))%len(file)] ^= patch[4]
		}
		dir := t.TempDir()
		if err := os.MkdirAll(filepath.Join(dir, "streams"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "streams", "d.db"), file, 0o644); err != nil {
			t.Fatal(err)
		}
		cfg := testConfig(t, dir)
		s, err := Open(cfg)
		if err != nil {
			return
		}
		// Opened: reading must not crash either.
		if st, err := s.Stream("d"); err == nil {
			for sh := 0; sh < st.Shards(); sh++ {
				st.Read(sh, 0, ReadOptions{MaxRecords: 1 << 20, MaxBytes: 64 << 20})
			}
		}
		s.Close()
	})
}

// TestWriteFuzzBase rewrites testdata/damaged-base.db.gz when
// EDGEHUB_WRITE_FUZZ_BASE=1.
func TestWriteFuzzBase(t *testing.T) {
	if os.Getenv("EDGEHUB_WRITE_FUZZ_BASE") == "" {
		t.Skip("rewrites testdata/damaged-base.db.gz when EDGEHUB_WRITE_FUZZ_BASE is set")
	}
	_, path := damagedFile(t)
	m := meta(t, path)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b = b[:int(m.Pages)*m.PageSize] // bbolt grows it again as needed
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	zw.Write(b)
	zw.Close()
	if err := os.WriteFile(filepath.Join("testdata", "damaged-base.db.gz"), out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

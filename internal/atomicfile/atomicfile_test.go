package atomicfile

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
)

// names lists dir's entries.
func names(tb testing.TB, dir string) []string {
	tb.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		tb.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

func TestWriteFileReplaces(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	for i, c := range []struct {
		data []byte
		perm os.FileMode
	}{{[]byte("old content, longer than the new"), 0o644}, {[]byte("new"), 0o600}, {nil, 0o640}} {
		if err := WriteFile(path, c.data, c.perm); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, c.data) {
			t.Fatalf("write %d: file holds %q, want %q", i, got, c.data)
		}
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != c.perm {
			t.Fatalf("write %d: mode %v, want %v", i, st.Mode().Perm(), c.perm)
		}
		if n := names(t, dir); len(n) != 1 || n[0] != "f" {
			t.Fatalf("write %d: directory holds %v, want only f", i, n)
		}
	}
}

// TestWriteFileErrorLeavesNoTemp: a write that cannot complete leaves the
// directory as it was, with no temporary file.
func TestWriteFileErrorLeavesNoTemp(t *testing.T) {
	dir := t.TempDir()
	// A non-empty directory cannot be renamed over: the rename fails after
	// the temporary file was written and synced.
	target := filepath.Join(dir, "d")
	if err := os.MkdirAll(filepath.Join(target, "inside"), 0o755); err != nil {
		t.Fatal(err)
	}
	err := WriteFile(target, []byte("data"), 0o644)
	if err == nil {
		t.Fatal("renaming over a non-empty directory succeeded")
	}
	if n := names(t, dir); len(n) != 1 || n[0] != "d" {
		t.Fatalf("directory holds %v after a failed write, want only d", n)
	}
	if n := names(t, target); len(n) != 1 || n[0] != "inside" {
		t.Fatalf("target changed by a failed write: %v", n)
	}

	// A missing directory fails before anything is written.
	if err := WriteFile(filepath.Join(dir, "missing", "f"), []byte("x"), 0o644); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("write into a missing directory: %v, want fs.ErrNotExist", err)
	}
}

// TestWriteFileReadersSeeWholeContent: while one content replaces another,
// a reader sees one of them whole, never an empty or half-written file (as
// it would with os.WriteFile, which truncates and then writes).
func TestWriteFileReadersSeeWholeContent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	a := bytes.Repeat([]byte{'a'}, 64<<10)
	b := bytes.Repeat([]byte{'b'}, 32<<10)
	if err := WriteFile(path, a, 0o644); err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	var reads, bad atomic.Int64
	var first []byte
	var once sync.Once
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			got, err := os.ReadFile(path)
			if err != nil {
				bad.Add(1)
				once.Do(func() { first = []byte(err.Error()) })
				continue
			}
			reads.Add(1)
			if !bytes.Equal(got, a) && !bytes.Equal(got, b) {
				bad.Add(1)
				once.Do(func() { first = []byte(fmt.Sprintf("%d bytes", len(got))) })
			}
		}
	}()
	// Enough replacements that an overlap with a read is all but certain
	// when the write is not atomic; reads are counted below.
	for i := range 200 {
		data := a
		if i%2 == 0 {
			data = b
		}
		if err := WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	if bad.Load() > 0 {
		t.Fatalf("%d of %d reads saw neither content whole (first: %s)", bad.Load(), reads.Load()+bad.Load(), first)
	}
	if reads.Load() == 0 {
		t.Fatal("no read overlapped the writes")
	}
}

package boltcheck

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// file writes a bbolt file with nested buckets and overflow pages, its
// freelist synced or not, and returns its path and meta.
func file(t *testing.T, noFreelistSync bool) (string, Meta) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "x.db")
	db, err := bolt.Open(path, 0o644, &bolt.Options{NoFreelistSync: noFreelistSync})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 4; i++ {
		err = db.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists([]byte("outer"))
			if err != nil {
				return err
			}
			in, err := b.CreateBucketIfNotExists(fmt.Appendf(nil, "inner%d", i))
			if err != nil {
				return err
			}
			for j := 0; j < 200; j++ {
				if err := in.Put(fmt.Appendf(nil, "k%04d", j), make([]byte, 100+j*10)); err != nil {
					return err
				}
			}
			return b.Delete([]byte("gone")) // frees nothing, but commits
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	m, ok, err := ReadMeta(path)
	if err != nil || !ok {
		t.Fatalf("ReadMeta: %v %v", ok, err)
	}
	return path, m
}

func patch(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// TestCheck: intact files pass, missing and empty ones too (bbolt creates
// them), and each kind of structural damage is ErrDamaged.
func TestCheck(t *testing.T) {
	for _, synced := range []bool{false, true} {
		t.Run(fmt.Sprintf("freelist synced %v", synced), func(t *testing.T) {
			path, _ := file(t, !synced)
			if err := Check(path); err != nil {
				t.Fatalf("intact file: %v", err)
			}
			if err := Check(filepath.Join(t.TempDir(), "missing.db")); err != nil {
				t.Fatalf("missing file: %v", err)
			}
			empty := filepath.Join(t.TempDir(), "empty.db")
			os.WriteFile(empty, nil, 0o644)
			if err := Check(empty); err != nil {
				t.Fatalf("empty file: %v", err)
			}
			for _, tc := range []struct {
				name   string
				damage func(path string, m Meta)
			}{
				{"truncated", func(path string, m Meta) { os.Truncate(path, int64(m.Pages-1)*int64(m.PageSize)) }},
				{"root page id", func(path string, m Meta) { patch(t, path, int64(m.Root)*int64(m.PageSize), []byte{0xee}) }},
				{"root page kind", func(path string, m Meta) { patch(t, path, int64(m.Root)*int64(m.PageSize)+8, []byte{0x40}) }},
				{"root element count", func(path string, m Meta) {
					patch(t, path, int64(m.Root)*int64(m.PageSize)+10, []byte{0xff, 0xff})
				}},
			} {
				t.Run(tc.name, func(t *testing.T) {
					path, m := file(t, !synced)
					tc.damage(path, m)
					if err := Check(path); !errors.Is(err, ErrDamaged) {
						t.Fatalf("Check = %v, want ErrDamaged", err)
					}
				})
			}
		})
	}
}

// TestCheckKeyOrder: keys out of order inside a leaf are damage (bbolt's
// own walk at open would stop there by crashing the process).
func TestCheckKeyOrder(t *testing.T) {
	path, _ := file(t, true)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Swap the first letter of a key to one that sorts after its
	// successor: "k0001" becomes "z0001".
	i := bytes.Index(b, []byte("k0001"))
	if i < 0 {
		t.Fatal("key not found")
	}
	patch(t, path, int64(i), []byte("z"))
	if err := Check(path); !errors.Is(err, ErrDamaged) {
		t.Fatalf("Check = %v, want ErrDamaged", err)
	}
}

// TestCheckFreelistPage: a synced freelist's page that is not a freelist
// page is damage (bbolt reads it at open).
func TestCheckFreelistPage(t *testing.T) {
	path, m := file(t, false)
	f, _ := os.Open(path)
	bm, _ := readMeta(f)
	f.Close()
	if bm.freelist == noFreelist {
		t.Fatal("freelist not synced")
	}
	patch(t, path, int64(bm.freelist)*int64(m.PageSize)+8, []byte{0x02, 0x00})
	if err := Check(path); !errors.Is(err, ErrDamaged) {
		t.Fatalf("Check = %v, want ErrDamaged", err)
	}
}

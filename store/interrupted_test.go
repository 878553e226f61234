package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// A crash (or, under SyncInterval, a power cut) between bbolt's creation of
// a stream file and the commit of the stream's definition leaves a valid
// bbolt file with no bucket in it. Open refused it as corrupt ("no meta
// bucket"), so the hub could not start again (found by the chaos crash
// loop's negative control); it is the trace of a creation that was never
// acknowledged, and Open removes it.
func TestOpenRemovesInterruptedCreation(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "streams"), 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "streams", "half.db")
	db, err := bolt.Open(path, 0o644, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	s := openStore(t, testConfig(t, dir))
	if _, err := s.Stream("half"); !errors.Is(err, ErrStreamNotFound) {
		t.Fatalf("Stream(half) = %v, want not found", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the empty file is still there: %v", err)
	}
	// The name is free again.
	if _, err := s.CreateStream(context.Background(), StreamConfig{Name: "half", Shards: 2}); err != nil {
		t.Fatal(err)
	}
}

// A file with a bucket in it that is not a stream, or one that had commits
// and has no bucket left, is still refused: only a file no transaction ever
// committed to is the trace of an interrupted creation.
func TestOpenRefusesForeignBoltFile(t *testing.T) {
	for _, tc := range []struct {
		name string
		tx   func(tx *bolt.Tx) error
	}{
		{"foreign bucket", func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("x")); return err }},
		{"buckets gone", func(tx *bolt.Tx) error {
			if _, err := tx.CreateBucket([]byte("m")); err != nil {
				return err
			}
			return tx.DeleteBucket([]byte("m"))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) { refusesBoltFile(t, tc.tx) })
	}
}

func refusesBoltFile(t *testing.T, fn func(tx *bolt.Tx) error) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "streams"), 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "streams", "other.db")
	db, err := bolt.Open(path, 0o644, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(fn); err != nil {
		t.Fatal(err)
	}
	db.Close()
	cfg := testConfig(t, dir)
	_, err = Open(cfg)
	var ce *CorruptError
	if !errors.As(err, &ce) || ce.File != path {
		t.Fatalf("Open = %v, want a CorruptError naming %s", err, path)
	}
}

package groups

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgehub/edgehub/store"
)

func FuzzDecodeGroupDef(f *testing.F) {
	for _, d := range []groupDef{
		{Stream: "orders", Shards: 4, Created: time.Unix(1764633600, 0).UTC()},
		{Stream: "s", Shards: 1, Incarnation: strings.Repeat("0f", store.IncarnationLen)},
	} {
		b, _ := json.Marshal(d)
		f.Add(b)
	}
	f.Add([]byte(`{"stream":"s","shards":0}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := decodeGroupDef(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error does not wrap ErrCorrupt: %v", err)
			}
			return
		}
		again, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		d2, err := decodeGroupDef(again)
		if err != nil || d2.Stream != d.Stream || d2.Shards != d.Shards || d2.Incarnation != d.Incarnation || !d2.Created.Equal(d.Created) {
			t.Fatalf("re-decode of %s: %+v %v", again, d2, err)
		}
	})
}

// TestDamagedGroupsFile: damaged entries of groups.db fail Open with an
// error naming the file and matching ErrCorrupt, never load as something
// else.
func TestDamagedGroupsFile(t *testing.T) {
	inc := strings.Repeat("ab", store.IncarnationLen)
	goodDef, _ := json.Marshal(groupDef{Stream: "s", Shards: 2, Incarnation: inc})
	tests := []struct {
		name   string
		damage func(g *bolt.Bucket) error
	}{
		{"intact", func(*bolt.Bucket) error { return nil }},
		{"definition not JSON", func(g *bolt.Bucket) error { return g.Put(keyDef, []byte("{")) }},
		{"definition without shards", func(g *bolt.Bucket) error { return g.Put(keyDef, []byte(`{"stream":"s"}`)) }},
		{"definition with a bad stream name", func(g *bolt.Bucket) error { return g.Put(keyDef, []byte(`{"stream":"a/b","shards":2}`)) }},
		{"definition with a bad incarnation", func(g *bolt.Bucket) error {
			return g.Put(keyDef, []byte(`{"stream":"s","shards":2,"incarnation":"xyz"}`))
		}},
		{"incarnation copy differs", func(g *bolt.Bucket) error { return g.Put(keyInc, []byte(strings.Repeat("cd", store.IncarnationLen))) }},
		{"epoch", func(g *bolt.Bucket) error { return g.Put(keyEpoch, []byte{1}) }},
		{"offset", func(g *bolt.Bucket) error {
			ob, err := g.CreateBucketIfNotExists(bucketOffsets)
			if err != nil {
				return err
			}
			return ob.Put(shardKey(1), []byte{offsetRecVersion, 0x80})
		}},
		// Ids past the creation count are children of a reshard; past the
		// wire's bound no shard can exist.
		{"offset of a shard no layout can have", func(g *bolt.Bucket) error {
			ob, err := g.CreateBucketIfNotExists(bucketOffsets)
			if err != nil {
				return err
			}
			return ob.Put(shardKey(maxShards), offsetRec{Offset: 1}.encode())
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "groups.db")
			db, err := openDB(path, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			err = db.Update(func(tx *bolt.Tx) error {
				g, err := tx.Bucket(bucketGroups).CreateBucket([]byte("g1"))
				if err != nil {
					return err
				}
				if err := g.Put(keyDef, goodDef); err != nil {
					return err
				}
				if err := g.Put(keyInc, []byte(inc)); err != nil {
					return err
				}
				return tc.damage(g)
			})
			db.Close()
			if err != nil {
				t.Fatal(err)
			}
			cfg := DefaultConfig(path)
			cfg.Resolve = positions(100)
			c, err := Open(cfg)
			if err == nil {
				c.Close()
			}
			if tc.name == "intact" {
				if err != nil {
					t.Fatalf("intact file: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), `group "g1"`) {
				t.Fatalf("open: %v, want ErrCorrupt naming %s and the group", err, path)
			}
		})
	}
}

// TestTruncatedDB: groups.db cut short is ErrCorrupt naming the file. bbolt
// mapped it and the first read past its end killed the hub (SIGBUS).
func TestTruncatedDB(t *testing.T) {
	path := filepath.Join(t.TempDir(), "groups.db")
	db, err := openDB(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for i := 0; i < 50; i++ {
			if err := tx.Bucket(bucketGroups).Put(fmt.Appendf(nil, "g%d", i), make([]byte, 8<<10)); err != nil {
				return err
			}
		}
		return nil
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(path)
	if err := os.Truncate(path, fi.Size()/2); err != nil {
		t.Fatal(err)
	}
	_, err = openDB(path, time.Second)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) {
		t.Fatalf("openDB = %v, want ErrCorrupt naming %s", err, path)
	}
}

// TestIncarnationHexLen: the incarnation length groups checks without
// importing the store is the store's.
func TestIncarnationHexLen(t *testing.T) {
	if incarnationHexLen != 2*store.IncarnationLen {
		t.Fatalf("incarnationHexLen = %d, store.IncarnationLen = %d", incarnationHexLen, store.IncarnationLen)
	}
}

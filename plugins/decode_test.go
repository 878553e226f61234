package plugins

import (
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

func FuzzDecodeBinding(f *testing.F) {
	f.Add([]byte("0123456789abcdef0123456789abcdef"))
	f.Add([]byte("0123456789ABCDEF0123456789abcdef"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		inc, err := decodeBinding(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error does not wrap ErrCorrupt: %v", err)
			}
			return
		}
		if inc != string(b) {
			t.Fatalf("%q decoded as %q", b, inc)
		}
	})
}

// TestDamagedRunState: a damaged checkpoint or binding in plugins.db is a
// *store.CorruptError naming the file and the plugin, input and shard, and
// still matches ErrCorrupt. A damaged binding used to read as another
// incarnation, which drops the plugin's checkpoints and state and starts it
// over (reprocessing its input).
func TestDamagedRunState(t *testing.T) {
	dir := t.TempDir()
	db, err := openDB(dir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	path := filepath.Join(dir, "plugins.db")
	good := strings.Repeat("ab", store.IncarnationLen)
	err = db.Update(func(tx *bolt.Tx) error {
		rb, err := runBucket(tx, "p", "in", 2, true)
		if err != nil {
			return err
		}
		if err := rb.Put(keyCheckpoint, checkpoint{Next: 7}.encode()[:20]); err != nil {
			return err
		}
		rb, err = runBucket(tx, "p", "in", 3, true)
		if err != nil {
			return err
		}
		if err := rb.Put(keyCheckpoint, checkpoint{Next: 9}.encode()); err != nil {
			return err
		}
		b := tx.Bucket(bucketBindings)
		if err := b.Put(bindingKey("p", "in"), []byte(good[:31]+"\x00")); err != nil {
			return err
		}
		return b.Put(bindingKey("p", "ok"), []byte(good))
	})
	if err != nil {
		t.Fatal(err)
	}
	check := func(what string, err error, want string) {
		t.Helper()
		var ce *store.CorruptError
		if !errors.As(err, &ce) || ce.File != path || !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want a CorruptError naming %s and %q", what, err, path, want)
		}
	}
	_, _, err = loadCheckpoint(db, "p", "in", 2)
	check("checkpoint", err, `plugin "p" input "in" shard 2`)
	_, err = loadBinding(db, "p", "in")
	check("binding", err, `binding of plugin "p" input "in"`)
	if cp, ok, err := loadCheckpoint(db, "p", "in", 3); err != nil || !ok || cp.Next != 9 {
		t.Errorf("intact checkpoint: %+v %v %v", cp, ok, err)
	}
	if inc, err := loadBinding(db, "p", "ok"); err != nil || inc != good {
		t.Errorf("intact binding: %q %v", inc, err)
	}
	if inc, err := loadBinding(db, "p", "none"); err != nil || inc != "" {
		t.Errorf("missing binding: %q %v", inc, err)
	}
}

// TestTruncatedDB: plugins.db cut short is ErrCorrupt naming the file. bbolt
// mapped it and the first read past its end killed the hub (SIGBUS).
func TestTruncatedDB(t *testing.T) {
	dir := t.TempDir()
	db, err := openDB(dir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for i := 0; i < 50; i++ {
			if err := tx.Bucket(bucketModules).Put(fmt.Appendf(nil, "m%d", i), make([]byte, 8<<10)); err != nil {
				return err
			}
		}
		return nil
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "plugins.db")
	fi, _ := os.Stat(path)
	if err := os.Truncate(path, fi.Size()/2); err != nil {
		t.Fatal(err)
	}
	_, err = openDB(dir, time.Second)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) {
		t.Fatalf("openDB = %v, want ErrCorrupt naming %s", err, path)
	}
}

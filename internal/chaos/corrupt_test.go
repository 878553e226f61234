//go:build chaos

package chaos

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	bolt "go.etcd.io/bbolt"

	"github.com/edgehub/edgehub/internal/boltcheck"
	"github.com/edgehub/edgehub/internal/testutil"
	"github.com/edgehub/edgehub/sdk"
)

// damage is one way of spoiling a stopped hub's stream file.
type damage struct {
	name string
	// apply damages the file and returns how many bytes it changed (or
	// cut off).
	apply func(tb testing.TB, path string) int
}

// TestBoundedCorruption writes a stream, stops the hub, and for each kind of
// damage (bytes flipped in stored chunks, in the last chunk of a shard, in
// a page header, in both meta pages; the file truncated) starts a hub on a
// damaged copy and reads everything: the damage is detected at open or at
// read with an error naming the file, and no consumer is ever given a
// damaged record (each read is compared byte for byte with what was
// written, and judged by the checker against the undamaged read-back).
func TestBoundedCorruption(t *testing.T) {
	pristine := t.TempDir()
	dataDir := filepath.Join(pristine, "data")
	cfgFile := filepath.Join(t.TempDir(), "hub.toml")
	cfg := hubConfig{Name: "corrupt", DataDir: dataDir, QUIC: testutil.FreeAddr(t, "udp"), Stream: "chaos", Shards: 4}
	writeConfig(t, cfgFile, cfg)
	path := historyPath(t)
	rec, err := CreateRecorder(path)
	if err != nil {
		t.Fatal(err)
	}
	h := mustStartHub(t, cfgFile)
	w := newWorkload(t, rec, cfg.QUIC, "chaos")
	w.producers, w.rate, w.valueSize = 4, 1500, 1024
	w.start(false)
	testutil.EventuallyWithin(t, time.Minute, "records written", func() bool { return w.acked.Load() >= 12000 })
	w.stop()
	h.stop(t)
	last := map[int]uint64{}
	n := readBackTo(t, rec, dataDir, "chaos", "", func(shard int, seq uint64) { last[shard] = max(last[shard], seq) })
	t.Logf("%d records written in %d shards", n, len(last))

	file := filepath.Join("streams", "chaos.db")
	damages := []damage{
		{"bytes flipped in stored chunks", func(tb testing.TB, p string) int { return flipChunks(tb, p, 6, false) }},
		{"bytes flipped in each shard's last chunk", func(tb testing.TB, p string) int { return flipChunks(tb, p, 4, true) }},
		{"page headers overwritten", func(tb testing.TB, p string) int { return smashPageHeaders(tb, p, 3) }},
		{"both meta pages flipped", func(tb testing.TB, p string) int { return flipMeta(tb, p) }},
		{"file truncated to 60%", func(tb testing.TB, p string) int { return truncateTo(tb, p, 0.6) }},
		{"file truncated to 4 KiB", func(tb testing.TB, p string) int { return truncateAt(tb, p, 4096) }},
	}
	var flipped, detectedAtOpen, detectedAtRead int
	for i, d := range damages {
		t.Run(d.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			if err := run("cp", "-a", dataDir, dir); err != nil {
				t.Fatal(err)
			}
			streamFile := filepath.Join(dir, file)
			changed := d.apply(t, streamFile)
			flipped += changed
			dcfg := cfg
			dcfg.DataDir, dcfg.QUIC = dir, testutil.FreeAddr(t, "udp")
			dcfgFile := filepath.Join(t.TempDir(), "hub.toml")
			writeConfig(t, dcfgFile, dcfg)
			dh, err := startHub(t, dcfgFile)
			if err != nil {
				if !strings.Contains(err.Error(), streamFile) || !strings.Contains(err.Error(), "corrupt") {
					t.Fatalf("the hub refused to start without naming %s as corrupt: %v", streamFile, err)
				}
				detectedAtOpen++
				t.Logf("%d bytes damaged: detected at open", changed)
				return
			}
			errs := readDamaged(t, rec, dcfg.QUIC, fmt.Sprintf("c%d", i), last)
			dh.stop(t)
			if len(errs) == 0 {
				t.Fatalf("%d bytes damaged, every record read, no error", changed)
			}
			for sh, err := range errs {
				if sdk.CodeOf(err) != sdk.CodeCorrupt {
					t.Errorf("shard %d: read failed with %v, want code corrupt", sh, err)
				}
			}
			if !strings.Contains(dh.logs(), streamFile) {
				t.Errorf("the hub's log does not name %s:\n%s", streamFile, tail(dh.logs(), 20))
			}
			detectedAtRead++
			t.Logf("%d bytes damaged: detected at read in %d shards: %v", changed, len(errs), errs)
		})
	}
	r := checkHistory(t, rec, path)
	t.Logf("CHAOS FIGURES %s: %d bytes damaged in %d files, detected %d at open, %d at read; %s",
		t.Name(), flipped, len(damages), detectedAtOpen, detectedAtRead, r.Summary())
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	if detectedAtOpen+detectedAtRead != len(damages) {
		t.Fatalf("%d of %d damages detected", detectedAtOpen+detectedAtRead, len(damages))
	}
}

// readDamaged reads every shard from the start until its last sequence or
// an error, recording each read; a record whose bytes differ from what was
// written is recorded as a read of a value nobody wrote (a phantom). It
// returns the error of each shard that failed.
func readDamaged(t *testing.T, rec *Recorder, addr, client string, last map[int]uint64) map[int]error {
	c := dial(t, addr)
	if c == nil {
		t.FailNow()
	}
	var mu sync.Mutex
	errs := map[int]error{}
	var wg sync.WaitGroup
	for sh, end := range last {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			sub, err := c.Subscribe(ctx, "chaos", sdk.ConsumeOptions{Shards: []int{sh}, From: sdk.FromEarliest()})
			if err == nil {
				defer sub.Close()
				for {
					var m sdk.Message
					if m, err = sub.Next(ctx); err != nil {
						break
					}
					id := valueID(m.Record.Value)
					if !bytes.Equal(m.Record.Value, paddedValue(id, 1024)) {
						id = "damaged:" + id
					}
					rec.Read(Op{Kind: Consume, Client: client, Stream: "chaos", Shard: m.Shard, Seq: m.Record.Seq,
						Key: string(m.Record.Key), Value: id})
					if m.Record.Seq >= end {
						return
					}
				}
			}
			mu.Lock()
			errs[sh] = err
			mu.Unlock()
		}()
	}
	wg.Wait()
	return errs
}

// chunkSpans returns the file offset and length of every chunk value, per
// shard in sequence order, from bbolt's memory map of the file.
func chunkSpans(tb testing.TB, path string) map[int][][2]int {
	tb.Helper()
	db, err := bolt.Open(path, 0o644, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	base := db.Info().Data
	out := map[int][][2]int{}
	err = db.View(func(tx *bolt.Tx) error {
		for sh := 0; ; sh++ {
			b := tx.Bucket(fmt.Appendf(nil, "c%d", sh))
			if b == nil {
				return nil
			}
			b.ForEach(func(k, v []byte) error {
				off := int(uintptr(unsafe.Pointer(unsafe.SliceData(v))) - base)
				out[sh] = append(out[sh], [2]int{off, len(v)})
				return nil
			})
		}
	})
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// flipChunks flips one byte inside n chunks: random ones other than each
// shard's last (so the damage is met at read), or each shard's last one.
func flipChunks(tb testing.TB, path string, n int, lastOnly bool) int {
	tb.Helper()
	spans := chunkSpans(tb, path)
	var pick [][2]int
	for _, s := range spans {
		if lastOnly {
			pick = append(pick, s[len(s)-1])
		} else if len(s) > 1 {
			pick = append(pick, s[:len(s)-1]...)
		}
	}
	if !lastOnly {
		rand.Shuffle(len(pick), func(i, j int) { pick[i], pick[j] = pick[j], pick[i] })
	}
	pick = pick[:min(n, len(pick))]
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	for _, s := range pick {
		off := int64(s[0] + s[1]/2)
		b := []byte{0}
		if _, err := f.ReadAt(b, off); err != nil {
			tb.Fatal(err)
		}
		b[0] ^= 0x5a
		if _, err := f.WriteAt(b, off); err != nil {
			tb.Fatal(err)
		}
	}
	return len(pick)
}

// smashPageHeaders overwrites the 16-byte page header of n pages that hold
// chunks (bbolt's page id, flags, count and overflow).
func smashPageHeaders(tb testing.TB, path string, n int) int {
	tb.Helper()
	spans := chunkSpans(tb, path)
	const pageSize = 4096
	pages := map[int]bool{}
	for _, s := range spans {
		for _, c := range s[:len(s)-1] {
			pages[c[0]/pageSize] = true
		}
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	done := 0
	for p := range pages {
		if done == n {
			break
		}
		if _, err := f.WriteAt(bytes.Repeat([]byte{0xee}, 16), int64(p*pageSize)); err != nil {
			tb.Fatal(err)
		}
		done++
	}
	return done * 16
}

// flipMeta flips a byte in the checksummed part of both meta pages.
func flipMeta(tb testing.TB, path string) int {
	tb.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	for _, off := range []int64{16 + 8, 4096 + 16 + 8} { // page header, then magic and version
		b := []byte{0}
		f.ReadAt(b, off)
		b[0] ^= 0xff
		if _, err := f.WriteAt(b, off); err != nil {
			tb.Fatal(err)
		}
	}
	return 2
}

func fileSize(tb testing.TB, path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		tb.Fatal(err)
	}
	return fi.Size()
}

// truncateTo cuts the file to frac of the bytes its pages use (bbolt's
// high-water mark: the file grows ahead of it, so a cut of the file's size
// could remove only unused space and leave nothing to detect) and returns
// the bytes cut.
func truncateTo(tb testing.TB, path string, frac float64) int {
	tb.Helper()
	size := fileSize(tb, path)
	used := size
	if m, ok, err := boltcheck.ReadMeta(path); err == nil && ok {
		used = min(size, int64(m.Pages)*int64(m.PageSize))
	}
	return truncateAt(tb, path, int64(float64(used)*frac))
}

// truncateAt cuts the file to keep bytes and returns the bytes cut.
func truncateAt(tb testing.TB, path string, keep int64) int {
	tb.Helper()
	size := fileSize(tb, path)
	if err := os.Truncate(path, keep); err != nil {
		tb.Fatal(err)
	}
	return int(size - keep)
}

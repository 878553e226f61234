//go:build chaos

package chaos

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgehub/edgehub/internal/testutil"
	"github.com/edgehub/edgehub/sdk"
)

// TestBoundedDiskFull fills the data dir's file system (a 16 MiB tmpfs, then
// a 24 MiB ext4 image) under producers: every append that does not fit is
// refused with an explicit error (code storage_full), none is acknowledged
// falsely (the checker sees every refused write absent), the files pass
// bbolt's consistency check, the condition is logged once, not per
// refusal, a hub restarted on a disk with no byte free starts, and appends
// succeed again once space is freed.
func TestBoundedDiskFull(t *testing.T) {
	for _, fs := range []string{"tmpfs", "ext4"} {
		t.Run(fs, func(t *testing.T) {
			var disk string
			if fs == "tmpfs" {
				disk = tmpfsDisk(t, "16m")
			} else {
				disk = newLoopDisk(t, 24).mnt
			}
			diskFull(t, disk)
		})
	}
}

func diskFull(t *testing.T, disk string) {
	ballast := filepath.Join(disk, "ballast")
	if err := os.WriteFile(ballast, make([]byte, 8<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(disk, "data")
	cfgFile := filepath.Join(t.TempDir(), "hub.toml")
	cfg := hubConfig{Name: "full", DataDir: dataDir, QUIC: testutil.FreeAddr(t, "udp"), Stream: "full", Shards: 2}
	writeConfig(t, cfgFile, cfg)
	path := historyPath(t)
	rec, err := CreateRecorder(path)
	if err != nil {
		t.Fatal(err)
	}
	h := mustStartHub(t, cfgFile)
	w := newWorkload(t, rec, cfg.QUIC, "full")
	w.producers, w.rate, w.valueSize = 3, 300, 2048
	w.classify = func(err error) Outcome {
		if sdk.CodeOf(err) == sdk.CodeStorageFull {
			return Failed // refused before storing: the claim under test
		}
		return Unknown
	}
	w.start(false)
	logs := ""
	defer func() {
		if t.Failed() {
			t.Logf("%d acked, %d refused, %d unknown; errors:%s\nhub log:\n%s", w.acked.Load(), w.failed.Load(), w.unk.Load(), w.errSummary(), tail(logs+h.logs(), 40))
		}
	}()
	refused := func() int64 { return w.failed.Load() }
	testutil.EventuallyWithin(t, 60*time.Second, "producers refused for a full disk", func() bool { return refused() >= 50 })
	t.Logf("disk full: %d acked, %d refused, %d unknown%s", w.acked.Load(), w.failed.Load(), w.unk.Load(), w.errSummary())

	// Stop the hub, take every byte left, and start it again: it must
	// start on a disk with no space at all, and go on refusing.
	h.kill()
	logs += h.logs() + "\n"
	filler := filepath.Join(disk, "filler")
	fillDisk(t, filler)
	h, err = startHub(t, cfgFile)
	if err != nil {
		w.stop()
		t.Fatalf("restart on a full disk: %v", err)
	}
	before := refused()
	testutil.EventuallyWithin(t, 60*time.Second, "refusals after the restart", func() bool { return refused() >= before+20 })

	// Space comes back: so do acknowledgements.
	for _, f := range []string{ballast, filler} {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	acked := w.acked.Load()
	testutil.EventuallyWithin(t, 60*time.Second, "acknowledgements after space was freed", func() bool { return w.acked.Load() >= acked+200 })
	failedThen := w.failed.Load()
	time.Sleep(1500 * time.Millisecond) // a while of appends with space (8 MiB at about 2 MB/s): the recovery is logged
	w.stopProducers()
	t.Logf("after space was freed: %d acked, %d refused", w.acked.Load()-acked, w.failed.Load()-failedThen)
	w.wg.Add(1)
	go func() { defer w.wg.Done(); w.subscriber("s1") }()
	if err := w.caughtUp([]string{"s1"}, time.Minute); err != nil {
		t.Error(err)
	}
	w.stop()
	h.stop(t)
	logs += h.logs()
	if n := strings.Count(logs, "file system full"); n < 1 || n > 4 {
		t.Errorf("the full disk was logged %d times (want once per minute per stream file, per hub life)", n)
	}
	if n := strings.Count(logs, "space available again"); n < 1 {
		t.Errorf("recovery was not logged")
	}
	if n := strings.Count(logs, "level=ERROR"); n > 10 {
		t.Errorf("%d error lines in the hub log: refusals flood it", n)
	}
	checkBoltFiles(t, dataDir)
	readBack(t, rec, dataDir, "full", "")
	r := checkHistory(t, rec, path)
	t.Logf("CHAOS FIGURES %s: %s", t.Name(), r.Summary())
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	if r.Failed < 70 || r.Acked < 200 || r.Reads < r.Acked {
		t.Fatalf("the disk did not fill or did not recover: %s", r.Summary())
	}
}

// fillDisk writes path until the file system has no byte left.
func fillDisk(tb testing.TB, path string) {
	tb.Helper()
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for len(buf) > 0 {
		if _, err := f.Write(buf); err != nil {
			buf = buf[:len(buf)/2] // fill the last bytes too
		}
	}
	f.Sync()
}

// checkBoltFiles runs bbolt's consistency check on every .db file under dir.
func checkBoltFiles(tb testing.TB, dir string) {
	tb.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".db") {
			return err
		}
		db, err := bolt.Open(p, 0o644, &bolt.Options{ReadOnly: true, Timeout: time.Second})
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		defer db.Close()
		n++
		return db.View(func(tx *bolt.Tx) error {
			var errs []error
			for e := range tx.Check() {
				errs = append(errs, e)
			}
			if len(errs) > 0 {
				return fmt.Errorf("%s: %w", p, errors.Join(errs...))
			}
			return nil
		})
	})
	if err != nil {
		tb.Fatalf("bbolt check: %v", err)
	}
	if n == 0 {
		tb.Fatalf("no .db file under %s", dir)
	}
}

func tail(s string, lines int) string {
	l := strings.Split(s, "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

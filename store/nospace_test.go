package store

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/edgehub/edgehub/internal/record"
)

// smallFS mounts a size-limited tmpfs, or skips (it needs root).
func smallFS(tb testing.TB, size string) string {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root to mount a small tmpfs")
	}
	dir := filepath.Join(tb.TempDir(), "fs")
	if err := os.Mkdir(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		tb.Skipf("cannot mount tmpfs: %v: %s", err, out)
	}
	tb.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	return dir
}

// fill writes path until the file system is full.
func fill(tb testing.TB, path string) {
	tb.Helper()
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	for buf := make([]byte, 64<<10); len(buf) > 0; {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				tb.Fatal(err)
			}
			buf = buf[:len(buf)/2]
		}
	}
}

// A full disk fails a group commit; a resend of a stored batch that shared
// that commit was answered ErrNoSpace ("nothing stored") although it was
// stored: the SDK then failed records that were in the log (found by the
// chaos disk-full test as failed-write-visible). Each append of a failed
// commit is now tried alone: the resend gets its positions, the append that
// does not fit gets ErrNoSpace, and it succeeds once space is freed.
func TestFullDiskAnswersResendsWithPositions(t *testing.T) {
	dir := smallFS(t, "2m")
	s := openStore(t, testConfig(t, filepath.Join(dir, "data")))
	ctx := context.Background()
	st, err := s.CreateStream(ctx, StreamConfig{Name: "full", Shards: 1})
	if err != nil {
		t.Fatal(err)
	}
	small := []record.Record{{Key: []byte("k"), Value: []byte("stored")}}
	first, err := st.Append(ctx, Batch{Shard: 0, Records: small, ProducerID: 7, ProducerSeq: 0})
	if err != nil {
		t.Fatal(err)
	}
	filler := filepath.Join(dir, "filler")
	fill(t, filler)
	big := []record.Record{{Key: []byte("k"), Value: bytes.Repeat([]byte("x"), 256<<10)}}

	// Hold the writer so that both appends land in one group commit.
	entered, release := make(chan struct{}), make(chan struct{})
	held := make(chan error, 1)
	go func() {
		held <- st.maintain(ctx, func(*bolt.Tx) error { close(entered); <-release; return nil }, nil)
	}()
	<-entered
	resend, err := st.AppendAsync(ctx, Batch{Shard: 0, Records: small, ProducerID: 7, ProducerSeq: 0})
	if err != nil {
		t.Fatal(err)
	}
	next, err := st.AppendAsync(ctx, Batch{Shard: 0, Records: big, ProducerID: 7, ProducerSeq: 1})
	if err != nil {
		t.Fatal(err)
	}
	close(release)
	if err := <-held; err != nil && !errors.Is(err, ErrNoSpace) {
		t.Fatal(err)
	}
	res, err := resend.Wait()
	if err != nil || !res.Duplicate || res.Positions[0] != first.Positions[0] {
		t.Fatalf("resend of a stored batch on a full disk: %+v, %v; want duplicate at %+v", res, err, first.Positions[0])
	}
	if _, err := next.Wait(); !errors.Is(err, ErrNoSpace) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("append on a full disk: %v, want ErrNoSpace", err)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Append(ctx, Batch{Shard: 0, Records: big, ProducerID: 7, ProducerSeq: 1}); err != nil {
		t.Fatalf("append after space was freed: %v", err)
	}
	recs := readAll(t, st, 0)
	if len(recs) != 2 || string(recs[0].Value) != "stored" || len(recs[1].Value) != 256<<10 {
		t.Fatalf("stored %d records", len(recs))
	}
}

package store

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/edgehub/edgehub/internal/record"
)

// TestFigureSplitLargeShard measures docs/store.md "Figures": the time to
// split one shard holding EDGEHUB_FIGURE_BYTES of records (default 1 GiB)
// and the file size before and after. A split closes the shard and opens
// two empty children in one metadata transaction, so it must not grow with
// the data. Run only when EDGEHUB_FIGURES is set (it writes the data
// first, minutes on a loaded machine):
//
//	EDGEHUB_FIGURES=1 go test -count=1 -timeout 30m -run '^TestFigureSplitLargeShard$' -v ./store
func TestFigureSplitLargeShard(t *testing.T) {
	if os.Getenv("EDGEHUB_FIGURES") == "" {
		t.Skip("a figure, not a test: set EDGEHUB_FIGURES=1 (docs/store.md, \"Figures\")")
	}
	size := int64(1 << 30)
	if v := os.Getenv("EDGEHUB_FIGURE_BYTES"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatalf("EDGEHUB_FIGURE_BYTES=%q: %v", v, err)
		}
		size = n
	}
	dir := t.TempDir()
	s := openStore(t, testConfig(t, dir))
	st := newStream(t, s, StreamConfig{Name: "big", Shards: 1})
	ctx := context.Background()
	const valueSize, perBatch = 4 << 10, 256
	value := make([]byte, valueSize)
	t0 := time.Now()
	var written int64
	for i := 0; written < size; i++ {
		recs := make([]record.Record, perBatch)
		for j := range recs {
			recs[j] = record.Record{Key: []byte(strconv.Itoa(i*perBatch + j)), Value: value}
			written += valueSize
		}
		if _, err := st.Append(ctx, Batch{Shard: 0, Records: recs}); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("wrote %d MiB of values into shard 0 in %s", written>>20, time.Since(t0).Round(time.Millisecond))
	path := filepath.Join(dir, "streams", "big.db")
	before := fileSize(t, path)
	t1 := time.Now()
	l, err := st.Split(ctx, 0, 0)
	took := time.Since(t1)
	if err != nil {
		t.Fatal(err)
	}
	after := fileSize(t, path)
	if got := len(l.Open()); got != 2 {
		t.Fatalf("%d open shards after the split, want 2", got)
	}
	if first, last, err := st.Bounds(0); err != nil || first != 1 || last == 0 {
		t.Fatalf("closed shard 0 bounds %d..%d, %v", first, last, err)
	}
	t2 := time.Now()
	if _, err := st.Split(ctx, l.Open()[0].ID, 0); err != nil {
		t.Fatal(err)
	}
	emptyTook := time.Since(t2)
	t.Logf("FIGURE split of a shard holding %d MiB: %.2f ms (an empty child's split: %.2f ms); file %d bytes before, %d after (%+d)",
		written>>20, float64(took.Microseconds())/1000, float64(emptyTook.Microseconds())/1000, before, after, after-before)
}

func fileSize(tb testing.TB, path string) int64 {
	tb.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		tb.Fatal(err)
	}
	return fi.Size()
}

package store

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgehub/edgehub/internal/record"
)

// Benchmarks report records/s and MB/s (of 128-byte values) with fsync
// before each append returns. Run them with:
//
//	go test ./store -run '^$' -bench . -benchtime 200000x
//
// One benchmark op is one record.
const benchValueSize = 128

// heapPeak samples the live heap without stopping the world and reports its
// peak as a benchmark metric.
func heapPeak(b *testing.B) (stop func()) {
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	var peak atomic.Uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(sample)
			if v := sample[0].Value.Uint64(); v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() {
		close(done)
		wg.Wait()
		b.ReportMetric(float64(peak.Load())/(1<<20), "peak-heap-MiB")
	}
}

func reportRate(b *testing.B, records int) {
	sec := b.Elapsed().Seconds()
	b.ReportMetric(float64(records)/sec, "records/s")
}

func benchStream(b *testing.B, shards int) *Stream {
	b.Helper()
	cfg := DefaultConfig(b.TempDir())
	cfg.Logger = quietLogger()
	s := openStore(b, cfg)
	return newStream(b, s, StreamConfig{Name: "bench", Shards: shards})
}

func benchRecord(i int) record.Record {
	return record.Record{Key: binary.BigEndian.AppendUint64(nil, uint64(i)), Value: make([]byte, benchValueSize)}
}

// BenchmarkAppendSingle: N concurrent appenders, one record per Append.
func BenchmarkAppendSingle(b *testing.B) {
	for _, appenders := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("appenders=%d", appenders), func(b *testing.B) {
			st := benchStream(b, 4)
			b.SetBytes(benchValueSize)
			b.ReportAllocs()
			stop := heapPeak(b)
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			for g := 0; g < appenders; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					recs := make([]record.Record, 1)
					for {
						i := int(next.Add(1))
						if i > b.N {
							return
						}
						recs[0] = benchRecord(i)
						if _, err := st.Append(context.Background(), Batch{Shard: -1, Records: recs}); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			stop()
			reportRate(b, b.N)
			commits, records := st.CommitStats()
			b.ReportMetric(float64(records)/float64(commits), "records/commit")
		})
	}
}

// BenchmarkAppendBatch: appenders of 1,000-record batches, each to one shard
// (as the SDK sends them).
func BenchmarkAppendBatch(b *testing.B) {
	for _, appenders := range []int{1, 4} {
		b.Run(fmt.Sprintf("appenders=%d", appenders), func(b *testing.B) {
			const batch = 1000
			st := benchStream(b, 4)
			b.SetBytes(benchValueSize)
			b.ReportAllocs()
			stop := heapPeak(b)
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			for g := 0; g < appenders; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					recs := make([]record.Record, batch)
					for i := range recs {
						recs[i] = benchRecord(i)
					}
					for {
						start := int(next.Add(batch)) - batch
						if start >= b.N {
							return
						}
						n := min(batch, b.N-start)
						if _, err := st.Append(context.Background(), Batch{Shard: (start / batch) % 4, Records: recs[:n]}); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			stop()
			reportRate(b, b.N)
		})
	}
}

// BenchmarkRawBbolt is the ceiling: the same bytes (8-byte key, 128-byte
// value per record) written straight to bbolt, 1,000 keys per fsynced
// transaction, FillPercent 1.0.
func BenchmarkRawBbolt(b *testing.B) {
	db, err := bolt.Open(filepath.Join(b.TempDir(), "raw.db"), 0o644, &bolt.Options{FreelistType: bolt.FreelistMapType, InitialMmapSize: 64 << 20})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("c")); return err })
	val := make([]byte, benchValueSize)
	b.SetBytes(benchValueSize)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += 1000 {
		err := db.Update(func(tx *bolt.Tx) error {
			bk := tx.Bucket([]byte("c"))
			bk.FillPercent = 1.0
			for j := i; j < min(i+1000, b.N); j++ {
				if err := bk.Put(u64(uint64(j+1)), val); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	reportRate(b, b.N)
}

// BenchmarkReadEarliest reads a shard from its first record to its last.
func BenchmarkReadEarliest(b *testing.B) {
	st := benchStream(b, 1)
	const total = 200_000
	recs := make([]record.Record, 1000)
	for i := range recs {
		recs[i] = benchRecord(i)
	}
	for i := 0; i < total; i += len(recs) {
		if _, err := st.Append(context.Background(), Batch{Shard: 0, Records: recs}); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(benchValueSize)
	b.ReportAllocs()
	b.ResetTimer()
	read := 0
	for read < b.N {
		for from := uint64(1); from <= total && read < b.N; {
			got, err := st.Read(0, from, ReadOptions{MaxRecords: 4096, MaxBytes: 4 << 20})
			if err != nil {
				b.Fatal(err)
			}
			read += len(got)
			from = got[len(got)-1].Seq + 1
		}
	}
	b.StopTimer()
	reportRate(b, read)
}

// BenchmarkAppendForeign appends 1,000-record batches of records with a
// foreign origin (replicated or plugin output): the origin watermark and the
// origin index are maintained too.
func BenchmarkAppendForeign(b *testing.B) {
	const batch = 1000
	st := benchStream(b, 4)
	recs := make([]record.Record, batch)
	b.SetBytes(benchValueSize)
	b.ReportAllocs()
	b.ResetTimer()
	for start := 0; start < b.N; start += batch {
		n := min(batch, b.N-start)
		for i := range recs[:n] {
			recs[i] = benchRecord(i)
			recs[i].Origin = record.Origin{Hub: "peer-hub", Shard: 0, Seq: uint64(start + i + 1)}
		}
		if _, err := st.Append(context.Background(), Batch{Shard: 0, Records: recs[:n]}); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	reportRate(b, b.N)
}

// BenchmarkSplit measures a split of a shard holding 1 MB or 100 MB
// (EDGEHUB_BENCH_SPLIT_GB=1 adds 1 GB). Nothing is copied, so the time must
// not grow with the shard: one op is one split (one fsynced maintenance
// commit); the first op splits the full shard itself (reported as
// full-split-ns), the next ones split the open shards beside it in the same
// file. Run with a bounded count (each split adds two shard ids):
//
//	go test ./store -run '^$' -bench Split -benchtime 100x
func BenchmarkSplit(b *testing.B) {
	sizes := []int{1 << 20, 100 << 20}
	if os.Getenv("EDGEHUB_BENCH_SPLIT_GB") != "" {
		sizes = append(sizes, 1<<30)
	}
	for _, size := range sizes {
		b.Run(fmt.Sprintf("%dMB", size>>20), func(b *testing.B) {
			if b.N > 1000 {
				b.Skip("run with -benchtime Nx, N <= 1000: each split adds shard ids")
			}
			ctx := context.Background()
			s := openStore(b, testConfig(b, b.TempDir()))
			st := newStream(b, s, StreamConfig{Name: "split", Shards: 1})
			val := make([]byte, 1024)
			recs := make([]record.Record, 1024) // 1 MiB per append
			for i := range recs {
				recs[i] = record.Record{Value: val}
			}
			for n := 0; n < size; n += len(recs) * len(val) {
				if _, err := st.Append(ctx, Batch{Shard: 0, Records: recs}); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				widest := st.Layout().Open()[0]
				for _, sh := range st.Layout().Open() {
					if sh.HashEnd-sh.HashStart > widest.HashEnd-widest.HashStart {
						widest = sh
					}
				}
				if _, err := st.Split(ctx, widest.ID, 0); err != nil {
					b.Fatal(err)
				}
				if i == 0 {
					b.ReportMetric(float64(time.Since(start).Nanoseconds()), "full-split-ns")
				}
			}
			b.StopTimer()
			if _, last, _ := st.Bounds(0); int(last)*len(val) < size {
				b.Fatalf("the parent holds %d records", last)
			}
		})
	}
}

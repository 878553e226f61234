package hub

import (
	"context"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/internal/testutil"
	"github.com/edgehub/edgehub/store"
)

func benchEnv(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func totalRecords(st *store.Stream) int64 {
	var n int64
	for _, s := range st.Stats() {
		n += s.Records
	}
	return n
}

// BenchmarkFederationCatchUp measures how fast a hub that joins late pulls
// an origin's history: EDGEHUB_BENCH_RECORDS (default 1,000,000) records
// of 128-byte values in EDGEHUB_BENCH_SHARDS (default 4) shards, over real
// QUIC on loopback (all shards followed in one replication session), each
// batch fsynced at the replica. Run with -benchtime=1x.
func BenchmarkFederationCatchUp(b *testing.B) {
	n := benchEnv("EDGEHUB_BENCH_RECORDS", 1_000_000)
	shards := benchEnv("EDGEHUB_BENCH_SHARDS", 4)
	for range b.N {
		b.StopTimer()
		fn := newFedNet(b)
		origin := fn.start("origin")
		createReplicated(b, origin, "history", shards, "all")
		st := mustStreamEventually(b, origin, "history")
		val := make([]byte, 128)
		for i := 0; i < n; {
			batch := make([]record.Record, 0, 5000)
			for ; len(batch) < cap(batch) && i < n; i++ {
				batch = append(batch, record.Record{Key: strconv.AppendInt(nil, int64(i%1024), 10), Value: val})
			}
			if _, err := st.Append(context.Background(), store.Batch{Shard: -1, Records: batch}); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		start := time.Now()
		replica := fn.start("replica")
		rst := mustStreamEventually(b, replica, "history")
		pullStart := time.Now()
		testutil.Eventually(b, "catch-up", func() bool { return totalRecords(rst) == int64(n) })
		elapsed := time.Since(start)
		pulling := time.Since(pullStart)
		b.StopTimer()
		for _, p := range getPeers(b, replica).Pulls {
			if p.LastError != "" {
				b.Logf("pull %s/%d: last error %s", p.Origin, p.Shard, p.LastError)
			}
		}
		// records/s counts from the replica's start (process up, gossip
		// join, stream created from the definition, pulls); pull-records/s
		// from the moment the stream exists there.
		b.ReportMetric(float64(n)/elapsed.Seconds(), "records/s")
		b.ReportMetric(float64(n)/pulling.Seconds(), "pull-records/s")
		b.ReportMetric(elapsed.Seconds(), "s/catch-up")
	}
}

// BenchmarkFederationSteadyLag produces EDGEHUB_BENCH_RATE (default
// 10,000) records per second at one hub for EDGEHUB_BENCH_SECONDS (default
// 10) in batches every 10 ms, while a peer follows; the lag of a record is
// its commit time at the peer minus its commit time at the origin (one
// machine, one clock). Reports p50, p99 and max in milliseconds.
func BenchmarkFederationSteadyLag(b *testing.B) {
	rate := benchEnv("EDGEHUB_BENCH_RATE", 10_000)
	secs := benchEnv("EDGEHUB_BENCH_SECONDS", 10)
	for range b.N {
		fn := newFedNet(b)
		origin := fn.start("origin")
		replica := fn.start("replica")
		createReplicated(b, origin, "live", 4, "all")
		st := mustStreamEventually(b, origin, "live")
		rst := mustStreamEventually(b, replica, "live")
		// Let the follows start before measuring.
		testutil.Eventually(b, "follows", func() bool {
			p := getPeers(b, replica)
			if len(p.Pulls) != 4 {
				return false
			}
			for _, pull := range p.Pulls {
				if pull.State != "following" {
					return false
				}
			}
			return true
		})
		per := rate / 100
		val := make([]byte, 128)
		tick := time.NewTicker(10 * time.Millisecond)
		total := 0
		for end := time.Now().Add(time.Duration(secs) * time.Second); time.Now().Before(end); {
			<-tick.C
			batch := make([]record.Record, per)
			for j := range batch {
				batch[j] = record.Record{Key: strconv.AppendInt(nil, int64(total+j), 10), Value: val}
			}
			if _, err := st.Append(context.Background(), store.Batch{Shard: -1, Records: batch}); err != nil {
				b.Fatal(err)
			}
			total += per
		}
		tick.Stop()
		testutil.Eventually(b, "replica has everything", func() bool { return totalRecords(rst) == int64(total) })
		at := map[store.OriginKey]map[uint64]int64{}
		for s := 0; s < st.Shards(); s++ {
			k := store.OriginKey{Hub: "origin", Shard: uint32(s)}
			at[k] = map[uint64]int64{}
			for _, r := range readAll(b, st, s) {
				at[k][r.Seq] = r.IngestTime
			}
		}
		var lags []time.Duration
		for s := 0; s < rst.Shards(); s++ {
			for _, r := range readAll(b, rst, s) {
				k := store.OriginKey{Hub: r.Origin.Hub, Shard: r.Origin.Shard}
				lags = append(lags, time.Duration(r.IngestTime-at[k][r.Origin.Seq]))
			}
		}
		slices.Sort(lags)
		q := func(p float64) float64 { return float64(lags[int(p*float64(len(lags)-1))]) / 1e6 }
		b.ReportMetric(q(0.5), "p50-ms")
		b.ReportMetric(q(0.99), "p99-ms")
		b.ReportMetric(q(1), "max-ms")
		b.ReportMetric(float64(total)/float64(secs), "records/s")
	}
}

func readAll(tb testing.TB, st *store.Stream, shard int) []record.Record {
	tb.Helper()
	var out []record.Record
	for from := uint64(1); ; {
		recs, err := st.Read(shard, from, store.ReadOptions{MaxRecords: 50000, MaxBytes: 16 << 20})
		if err != nil {
			tb.Fatal(err)
		}
		if len(recs) == 0 {
			return out
		}
		for i := range recs {
			out = append(out, recs[i].Clone())
		}
		from = recs[len(recs)-1].Seq + 1
	}
}

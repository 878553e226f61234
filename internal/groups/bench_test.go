package groups

import (
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// benchCoordinator opens a coordinator with members[i] in group groupOf(i),
// each holding its leases, and returns their sessions and assignments.
func benchCoordinator(b *testing.B, members int, groupOf func(int) string) ([]*Session, []Assignment) {
	b.Helper()
	cfg := DefaultConfig(filepath.Join(b.TempDir(), "groups.db"))
	cfg.Resolve = positions(1)
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	c, err := Open(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	ss := make([]*Session, members)
	for i := range ss {
		if ss[i], err = c.Join(JoinRequest{Group: groupOf(i), Stream: "s", Shards: 64, Member: fmt.Sprintf("m%d", i),
			SessionTimeout: time.Minute}); err != nil {
			b.Fatal(err)
		}
	}
	// Members confirm the hand-overs that their joins started.
	for _, s := range ss {
		if err := s.Sync(s.Assignment().Generation); err != nil {
			b.Fatal(err)
		}
	}
	as := make([]Assignment, members)
	for i, s := range ss {
		as[i] = s.Assignment()
		if len(as[i].Leases) == 0 {
			b.Fatalf("member %d holds nothing", i)
		}
	}
	return ss, as
}

// commitAll commits a new offset for every lease of a.
func commitAll(b *testing.B, s *Session, a Assignment, off uint64) {
	cs := make([]Commit, len(a.Leases))
	for i, l := range a.Leases {
		cs[i] = Commit{Shard: l.Shard, Epoch: l.Epoch, Offset: off}
	}
	for _, err := range s.Commit(cs) {
		if err != nil {
			b.Error(err)
		}
	}
}

// BenchmarkCommit: one member committing its 64 shards at a time, durably
// (fsync per commit): the latency a member waits for.
func BenchmarkCommit(b *testing.B) {
	ss, as := benchCoordinator(b, 1, func(int) string { return "g" })
	b.ResetTimer()
	for i := range b.N {
		commitAll(b, ss[0], as[0], uint64(i+2))
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "commits/s")
}

// BenchmarkCommitParallel: 64 members committing concurrently, each in its
// own group (commits share transactions) or all in one group (a group's
// commits are serialised).
func BenchmarkCommitParallel(b *testing.B) {
	for _, bc := range []struct {
		name    string
		groupOf func(int) string
	}{
		{"groups=64", func(i int) string { return fmt.Sprintf("g%d", i) }},
		{"groups=1", func(int) string { return "g" }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			const members = 64
			ss, as := benchCoordinator(b, members, bc.groupOf)
			var next atomic.Int64
			b.SetParallelism(members / 2) // 2 CPUs: 64 goroutines
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := int(next.Add(1)-1) % members
				off := uint64(2)
				for pb.Next() {
					commitAll(b, ss[i], as[i], off)
					off++
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "commits/s")
		})
	}
}

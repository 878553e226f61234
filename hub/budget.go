package hub

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/semaphore"

	"github.com/edgehub/edgehub/quic"
)

// memoryBudget caps the bytes the data plane holds for clients
// ([limits] memory_budget), in three shares so that one kind of client
// cannot starve another:
//
//   - produce (1/2): BATCH payloads read and not yet acknowledged. A batch
//     takes its share before its payload is read and waits for it: QUIC
//     flow control holds the producer back meanwhile.
//   - consume (7/16): what subscriptions hold between a store read and the
//     frame's write. Each subscription reserves its part when it opens
//     (refused with limit when the share is spent), so a subscription
//     that is open is never starved by others, however many never read.
//     A send may borrow more for itself while the share is at most half
//     held, so that stored chunks go out whole (see consume).
//   - open (1/16): OPEN frames above 1 KiB while they are read, before
//     authentication; a stream it cannot cover is refused with limit.
//
// Memory outside the budget: QUIC's own per-connection and per-stream state
// (bounded by max_connections and max_streams_per_connection), and one
// small read buffer per stream.
type memoryBudget struct {
	produce, consume, open *budgetShare
}

// budgetShare is one share: a semaphore with its use exported.
type budgetShare struct {
	name    string
	size    int64
	sem     *semaphore.Weighted
	used    atomic.Int64
	refused atomic.Uint64
	// borrowed is the part of used taken by tryBorrow.
	borrowed atomic.Int64
}

func newMemoryBudget(total int64) *memoryBudget {
	open := total / 16
	produce := total / 2
	return &memoryBudget{
		produce: newShare("produce", produce),
		consume: newShare("consume", total-produce-open),
		open:    newShare("open", open),
	}
}

func newShare(name string, size int64) *budgetShare {
	return &budgetShare{name: name, size: size, sem: semaphore.NewWeighted(size)}
}

// TryAcquire takes n bytes if they are free now.
func (s *budgetShare) TryAcquire(n int64) bool {
	if n <= 0 {
		return true
	}
	if !s.sem.TryAcquire(n) {
		s.refused.Add(1)
		return false
	}
	s.used.Add(n)
	return true
}

// tryBorrow takes n bytes if they are free now and the share stays at most
// half held with them: bytes taken only to go faster never crowd out what
// the share guarantees (reservations), and a failure is not a refusal.
func (s *budgetShare) tryBorrow(n int64) bool {
	if n <= 0 {
		return true
	}
	for {
		u := s.used.Load()
		if u+n > s.size/2 {
			return false
		}
		if s.used.CompareAndSwap(u, u+n) {
			break
		}
	}
	if !s.sem.TryAcquire(n) {
		s.used.Add(-n)
		return false
	}
	s.borrowed.Add(n)
	return true
}

// giveBack returns n borrowed bytes.
func (s *budgetShare) giveBack(n int64) {
	if n > 0 {
		s.borrowed.Add(-n)
		s.Release(n)
	}
}

// Acquire waits for n bytes (at most the share's size) until ctx ends.
func (s *budgetShare) Acquire(ctx context.Context, n int64) error {
	if n <= 0 {
		return nil
	}
	if n > s.size {
		return fmt.Errorf("hub: %d bytes exceed the %s share of the memory budget (%d): %w", n, s.name, s.size, quic.ErrBudget)
	}
	if err := s.sem.Acquire(ctx, n); err != nil {
		return err
	}
	s.used.Add(n)
	return nil
}

// Release returns n bytes.
func (s *budgetShare) Release(n int64) {
	if n <= 0 {
		return
	}
	s.used.Add(-n)
	s.sem.Release(n)
}

// exhausted is the refusal a client sees when a share is spent.
func (s *budgetShare) exhausted(what string, n int64) error {
	return quic.Errorf(quic.CodeLimit, "hub memory budget exhausted: %s needs %d bytes, %d of %d held by %s (limits.memory_budget); retry later",
		what, n, s.used.Load(), s.size, s.name)
}

func (b *memoryBudget) register(reg *prometheus.Registry) {
	for _, s := range []*budgetShare{b.produce, b.consume, b.open} {
		labels := prometheus.Labels{"share": s.name}
		reg.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "edgehub_memory_budget_bytes", Help: "Size of a share of the data plane's memory budget (limits.memory_budget).", ConstLabels: labels,
			}, func() float64 { return float64(s.size) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "edgehub_memory_budget_used_bytes", Help: "Bytes of a share of the memory budget held now.", ConstLabels: labels,
			}, func() float64 { return float64(s.used.Load()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "edgehub_memory_budget_borrowed_bytes", Help: "Bytes of a share held now beyond reservations, borrowed only while the share is at most half held (consume: sends of whole stored chunks).", ConstLabels: labels,
			}, func() float64 { return float64(s.borrowed.Load()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "edgehub_memory_budget_refusals_total", Help: "Requests refused because a share of the memory budget was spent.", ConstLabels: labels,
			}, func() float64 { return float64(s.refused.Load()) }),
		)
	}
}

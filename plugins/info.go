package plugins

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Plugin statuses.
const (
	StatusRunning = "running"
	StatusPaused  = "paused"
	// StatusQuarantined: running, but at least one runner's calls failed
	// or overran the slot lease recently; it runs in the quarantine slot
	// (see QuarantineReason) until it has made 16 good calls in a row.
	StatusQuarantined = "quarantined"
	StatusStopped     = "stopped" // deployed, but the manager is not running
)

// Info describes a plugin: its definition, status and per-shard progress.
type Info struct {
	Definition
	Status string `json:"status"`
	// Waiting says why a plugin with status "waiting" does not run: a
	// stream it reads or writes is missing (deleted); it starts by itself
	// once the stream exists again.
	Waiting string `json:"waiting,omitempty"`
	// QuarantineReason says why the plugin is quarantined: the first
	// quarantined runner's input/shard and reason.
	QuarantineReason string      `json:"quarantine_reason,omitempty"`
	RecordsIn        uint64      `json:"records_in"`
	RecordsOut       uint64      `json:"records_out"`
	DeadLettered     uint64      `json:"dead_lettered"`
	Errors           uint64      `json:"errors"`
	Timeouts         uint64      `json:"timeouts"`
	Lag              uint64      `json:"lag"`
	StateBytes       int64       `json:"state_bytes"`
	StateKeys        int64       `json:"state_keys"`
	MemoryBytes      int64       `json:"memory_bytes"`
	Shards           []ShardInfo `json:"shards"`
}

// ShardInfo is one runner's progress. Counters other than those persisted
// with the checkpoint (records in/out, dead letters, state size) count since
// the hub started.
type ShardInfo struct {
	Input        string        `json:"input"`
	Shard        int           `json:"shard"`
	Checkpoint   uint64        `json:"checkpoint"` // next input sequence to process
	LastSeq      uint64        `json:"last_seq"`   // last sequence in the input shard
	Lag          uint64        `json:"lag"`
	RecordsIn    uint64        `json:"records_in"`
	RecordsOut   uint64        `json:"records_out"`
	DeadLettered uint64        `json:"dead_lettered"`
	StateBytes   int64         `json:"state_bytes"`
	StateKeys    int64         `json:"state_keys"`
	TimerFirings uint64        `json:"timer_firings"`
	Calls        uint64        `json:"calls"`
	CallTime     time.Duration `json:"call_time_avg"`
	Errors       uint64        `json:"errors"`
	Retries      uint64        `json:"retries"`
	Restarts     uint64        `json:"instance_restarts"`
	Gaps         uint64        `json:"gap_records"`
	MemoryBytes  int64         `json:"memory_bytes"`
	LastError    string        `json:"last_error,omitempty"`
	LastErrorAt  time.Time     `json:"last_error_at,omitzero"`
	// Timeouts counts calls stopped at their deadline; Overruns steps
	// that held an execution slot past the slot lease.
	Timeouts uint64 `json:"timeouts"`
	Overruns uint64 `json:"slot_overruns"`
	// InCallSince is when the call in progress began (unset when none):
	// a plugin stuck in a loop shows here before its deadline.
	InCallSince time.Time `json:"in_call_since,omitzero"`
	// Quarantined runners run in the quarantine slot (durable across
	// restarts, cleared by an upgrade or 16 good calls in a row).
	Quarantined      bool      `json:"quarantined,omitempty"`
	QuarantineReason string    `json:"quarantine_reason,omitempty"`
	QuarantinedSince time.Time `json:"quarantined_since,omitzero"`

	// CallTimeSum is the time spent in the Calls; CallTimeCounts[i] counts
	// the calls that took at most CallTimeBuckets[i] (cumulative; the last,
	// one past the bounds, counts them all): the call-time histogram of
	// the metrics, not in the JSON.
	CallTimeSum    time.Duration `json:"-"`
	CallTimeCounts []uint64      `json:"-"`
}

// List describes every plugin, sorted by name.
func (m *Manager) List() []Info {
	m.mu.RLock()
	ps := make([]*plugin, 0, len(m.plugins))
	for _, p := range m.plugins {
		ps = append(ps, p)
	}
	m.mu.RUnlock()
	slices.SortFunc(ps, func(a, b *plugin) int { return strings.Compare(a.name, b.name) })
	out := make([]Info, 0, len(ps))
	for _, p := range ps {
		out = append(out, m.info(p))
	}
	return out
}

// Describe describes one plugin.
func (m *Manager) Describe(name string) (Info, error) {
	p, err := m.lookup(name)
	if err != nil {
		return Info{}, err
	}
	return m.info(p), nil
}

func (m *Manager) info(p *plugin) Info {
	p.mu.Lock()
	def := p.def.clone()
	running := p.cancel != nil
	waiting := p.waiting
	runners := slices.Clone(p.runners)
	p.mu.Unlock()
	info := Info{Definition: def, Status: StatusStopped}
	switch {
	case def.Paused:
		info.Status = StatusPaused
	case running && waiting != "":
		info.Status, info.Waiting = StatusWaiting, waiting
	case running:
		info.Status = StatusRunning
	}
	live := map[string]*runner{}
	for _, r := range runners {
		live[string(runKey(r.input.Name(), r.shard))] = r
	}
	for _, in := range def.Inputs {
		s, err := m.st.Stream(in)
		if err != nil {
			continue
		}
		for shard := 0; shard < s.Shards(); shard++ {
			si := ShardInfo{Input: in, Shard: shard}
			_, si.LastSeq, _ = s.Bounds(shard)
			var cp checkpoint
			if r := live[string(runKey(in, shard))]; r != nil {
				if c := r.stats.cp.Load(); c != nil {
					cp = *c
				}
				st := &r.stats
				si.TimerFirings, si.Calls, si.Errors = st.firings.Load(), st.calls.Load(), st.errors.Load()
				si.Retries, si.Restarts, si.Gaps = st.retries.Load(), st.restarts.Load(), st.gaps.Load()
				si.MemoryBytes = st.memory.Load()
				si.CallTimeSum = time.Duration(st.callNanos.Load())
				if si.Calls > 0 {
					si.CallTime = si.CallTimeSum / time.Duration(si.Calls)
				}
				si.CallTimeCounts = st.callCounts()
				si.Timeouts, si.Overruns = st.timeouts.Load(), st.overruns.Load()
				if t := st.callStart.Load(); t != 0 {
					si.InCallSince = time.Unix(0, t).UTC()
				}
				st.mu.Lock()
				si.LastError, si.LastErrorAt = st.lastErr, st.lastErrAt
				si.Quarantined, si.QuarantineReason, si.QuarantinedSince = st.quarantined, st.qReason, st.qSince
				st.mu.Unlock()
			} else {
				if c, ok, _ := loadCheckpoint(m.db, def.Name, in, shard); ok {
					cp = c
				}
				if q, ok, _ := loadQuarantine(m.db, def.Name, in, shard); ok {
					si.Quarantined, si.QuarantineReason, si.QuarantinedSince = true, q.Reason, q.Since
				}
			}
			if si.Quarantined && info.QuarantineReason == "" {
				info.QuarantineReason = fmt.Sprintf("%s/%d: %s", in, shard, si.QuarantineReason)
			}
			si.Checkpoint = cp.Next
			si.RecordsIn, si.RecordsOut, si.DeadLettered = cp.RecordsIn, cp.RecordsOut, cp.Dead
			si.StateBytes, si.StateKeys = cp.StateBytes, cp.StateKeys
			if cp.Next != 0 && si.LastSeq >= cp.Next {
				si.Lag = si.LastSeq - cp.Next + 1
			}
			info.RecordsIn += si.RecordsIn
			info.RecordsOut += si.RecordsOut
			info.DeadLettered += si.DeadLettered
			info.Errors += si.Errors
			info.Timeouts += si.Timeouts
			info.Lag += si.Lag
			info.StateBytes += si.StateBytes
			info.StateKeys += si.StateKeys
			info.MemoryBytes += si.MemoryBytes
			info.Shards = append(info.Shards, si)
		}
	}
	if info.Status == StatusRunning && info.QuarantineReason != "" {
		info.Status = StatusQuarantined
	}
	return info
}

// CallTimeBuckets are the upper bounds of the call-time histogram
// (ShardInfo.CallTimeCounts): 10µs to about 2.6s by fours, which covers a
// trivial guest up to one near the default call_timeout (5s, in +Inf).
var CallTimeBuckets = [...]time.Duration{
	10 * time.Microsecond, 40 * time.Microsecond, 160 * time.Microsecond, 640 * time.Microsecond,
	2560 * time.Microsecond, 10240 * time.Microsecond, 40960 * time.Microsecond, 163840 * time.Microsecond,
	655360 * time.Microsecond, 2621440 * time.Microsecond,
}

// callBucket is the index of the histogram bucket of a call that took d.
func callBucket(d time.Duration) int {
	for i, b := range CallTimeBuckets {
		if d <= b {
			return i
		}
	}
	return len(CallTimeBuckets)
}

// callCounts returns the cumulative calls per bucket, the last the total
// (which may exceed calls read a moment before: both only grow).
func (s *runnerStats) callCounts() []uint64 {
	out := make([]uint64, len(s.callHist))
	var sum uint64
	for i := range s.callHist {
		sum += s.callHist[i].Load()
		out[i] = sum
	}
	return out
}

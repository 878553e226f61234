package quic

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// rateLog logs refusals at most once per reason and interval: the first of
// an interval at once, the rest counted and reported in one line ("and N
// more") when the interval is over. Floods of bad streams or handshakes
// then cost a few log lines, not one per attempt.
type rateLog struct {
	logger   *slog.Logger
	interval time.Duration

	mu      sync.Mutex
	reasons map[string]*rateEntry
}

type rateEntry struct {
	since      time.Time
	suppressed int
	level      slog.Level
	msg        string
	log        *slog.Logger
}

// DefaultRefusalLogInterval is how often a refusal reason is logged at most.
const DefaultRefusalLogInterval = 10 * time.Second

// maxRateReasons bounds the reasons tracked; reasons are a handful of
// fixed strings, so this is only a guard.
const maxRateReasons = 1024

func newRateLog(logger *slog.Logger, interval time.Duration) *rateLog {
	if interval <= 0 {
		interval = DefaultRefusalLogInterval
	}
	return &rateLog{logger: logger, interval: interval, reasons: map[string]*rateEntry{}}
}

// log logs msg with args through l unless reason was logged within the
// interval, in which case it only counts it.
func (r *rateLog) log(ctx context.Context, lvl slog.Level, reason, msg string, l *slog.Logger, args ...any) {
	now := time.Now()
	r.mu.Lock()
	e := r.reasons[reason]
	if e != nil && now.Sub(e.since) < r.interval {
		e.suppressed++
		r.mu.Unlock()
		return
	}
	n := 0
	if e != nil {
		n = e.suppressed
	}
	if e == nil && len(r.reasons) >= maxRateReasons {
		clear(r.reasons)
	}
	r.reasons[reason] = &rateEntry{since: now, level: lvl, msg: msg, log: r.logger}
	r.mu.Unlock()
	if n > 0 {
		args = append(args, "suppressed_before", n)
	}
	l.Log(ctx, lvl, msg, args...)
}

// run reports counts of reasons whose interval has ended, until ctx ends.
func (r *rateLog) run(ctx context.Context) {
	t := time.NewTicker(r.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			r.flush(ctx, now)
		}
	}
}

func (r *rateLog) flush(ctx context.Context, now time.Time) {
	type line struct {
		reason string
		e      rateEntry
	}
	var out []line
	r.mu.Lock()
	for reason, e := range r.reasons {
		if now.Sub(e.since) < r.interval {
			continue
		}
		if e.suppressed > 0 {
			out = append(out, line{reason, *e})
		}
		delete(r.reasons, reason)
	}
	r.mu.Unlock()
	for _, l := range out {
		l.e.log.Log(ctx, l.e.level, l.e.msg+" (repeated)", "reason", l.reason, "count", l.e.suppressed, "interval", r.interval.String())
	}
}

package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/edgehub/edgehub/internal/replicate"
	"github.com/edgehub/edgehub/quic"
	"github.com/edgehub/edgehub/store"
)

// Copies: a stream's acknowledgement may wait until other hubs hold the
// batch too, so that losing this hub's disk loses nothing acknowledged
// (docs/guarantees.md, "Copies"). The peers report what they applied over
// their replication sessions (internal/replicate/copies.go); this file
// decides what a batch waits for and what its ACK says.

// Shortfall policies: what an ACK does when the copies are not there
// within the timeout.
const (
	// ShortfallFail refuses the ACK with copies_short: the batch is stored
	// here and replicates later, and the error says so.
	ShortfallFail = "fail"
	// ShortfallAck acknowledges with the copies there were (ACK copies,
	// edgehub_copies_shortfall_total, `hub stream describe`).
	ShortfallAck = "ack"
)

// Bounds and defaults of a stream's copies.
const (
	MaxCopies              = 16
	DefaultCopiesTimeout   = 5 * time.Second
	DefaultCopiesShortfall = ShortfallFail
)

// MetaCopies is the store.StreamConfig.Meta key holding a stream's copies
// policy as JSON (CopiesPolicy); absent: one copy, this hub's fsync.
const MetaCopies = "copies"

// CopiesPolicy is a stream's copies setting as stored and shown.
type CopiesPolicy struct {
	// Copies is how many hubs, this one included, must hold a batch before
	// its ACK. 1: this hub's fsync alone.
	Copies int `json:"copies"`
	// At admits only peers carrying one of these tags ("tag:NAME", as in
	// replicate); "" or "all": any peer the stream replicates to.
	At Replicate `json:"copies_at,omitempty"`
	// Timeout bounds the wait for the copies.
	Timeout Duration `json:"copies_timeout"`
	// Shortfall is ShortfallFail or ShortfallAck.
	Shortfall string `json:"copies_shortfall"`
}

// defaultCopies is the policy of a stream that sets none: one copy.
// Defaults fill only keys that are absent; a value given (0 copies, a 0s
// timeout, an empty shortfall) is validated as given, never replaced.
func defaultCopies() CopiesPolicy {
	return CopiesPolicy{Copies: 1, At: ReplicateAll, Timeout: Duration(DefaultCopiesTimeout), Shortfall: DefaultCopiesShortfall}
}

// validate reports every problem of p for a stream replicated by repl,
// keys as in hub.toml's [[stream]].
func (p CopiesPolicy) validate(repl Replicate) error {
	var errs []error
	if p.Copies < 1 || p.Copies > MaxCopies {
		errs = append(errs, fieldErrorf("copies", "%d outside 1..%d", p.Copies, MaxCopies))
	}
	if p.Copies > 1 && repl.orLocal() == ReplicateLocal {
		errs = append(errs, fieldErrorf("copies", "%d copies of a stream that never leaves this hub (replicate = \"local\"): set replicate, or copies = 1", p.Copies))
	}
	if p.At == ReplicateLocal {
		errs = append(errs, fieldErrorf("copies_at", "\"local\" admits no peer: use \"all\" or [\"tag:NAME\", ...]"))
	}
	if p.Timeout <= 0 {
		errs = append(errs, fieldErrorf("copies_timeout", "%s is not positive", p.Timeout))
	}
	if p.Shortfall != ShortfallFail && p.Shortfall != ShortfallAck {
		errs = append(errs, fieldErrorf("copies_shortfall", "%q: want %q or %q", p.Shortfall, ShortfallFail, ShortfallAck))
	}
	return errors.Join(errs...)
}

// encode is the policy's MetaCopies value; "" for one copy with the
// defaults, so streams without copies carry nothing new.
func (p CopiesPolicy) encode() string {
	if p == defaultCopies() {
		return ""
	}
	b, _ := json.Marshal(p)
	return string(b)
}

// decodeCopies reads the policy c carries, the defaults standing for the
// keys it lacks.
func decodeCopies(c store.StreamConfig) (CopiesPolicy, error) {
	p := defaultCopies()
	if v := c.Meta[MetaCopies]; v != "" {
		if err := json.Unmarshal([]byte(v), &p); err != nil {
			return p, err
		}
	}
	return p, nil
}

// copiesOf returns c's policy. A value that does not decode (written by a
// later version, or damaged) is the strictest reading the hub can make of
// it: the copies it names with the defaults for the rest, else one.
func copiesOf(c store.StreamConfig) CopiesPolicy {
	p, _ := decodeCopies(c)
	return p
}

// validateCopies checks the copies policy c carries against its
// replication policy.
func validateCopies(c store.StreamConfig) error {
	p, err := decodeCopies(c)
	if err != nil {
		return fmt.Errorf("%w: copies: %v", store.ErrInvalidConfig, err)
	}
	if err := p.validate(Replicate(c.Meta[MetaReplicate])); err != nil {
		return fmt.Errorf("%w: %v", store.ErrInvalidConfig, err)
	}
	return nil
}

// setCopies stores p in c's metadata (removing it when it is the default).
func setCopies(c *store.StreamConfig, p CopiesPolicy) {
	if c.Meta == nil {
		c.Meta = map[string]string{}
	}
	if v := p.encode(); v != "" {
		c.Meta[MetaCopies] = v
	} else {
		delete(c.Meta, MetaCopies)
	}
}

// copyNeed is what one produce session's batches wait for: the stream's
// policy, raised by the session's own ask.
func copyNeed(st *store.Stream, asked uint32) CopiesPolicy {
	p := copiesOf(st.Config())
	p.Copies = max(p.Copies, int(asked))
	return p
}

// awaitCopies waits, after a batch's local fsync, until p.Copies hubs hold
// its records (the ACK's runs), or the policy's timeout. It returns how
// many hubs hold them, this one included, and nil, or a *quic.Error with
// CodeCopiesShort when they are too few and the policy fails the batch.
func (d *dataPlane) awaitCopies(ctx context.Context, st *store.Stream, p CopiesPolicy, runs []quic.Run) (int, error) {
	if p.Copies <= 1 {
		return 1, nil
	}
	ends := map[uint32]uint64{}
	for _, r := range runs {
		if r.FirstSeq == 0 || r.Count == 0 {
			continue // not stored again: its origin was applied before
		}
		ends[r.Shard] = max(ends[r.Shard], r.FirstSeq+uint64(r.Count)-1)
	}
	if len(ends) == 0 {
		return p.Copies, nil
	}
	start := time.Now()
	var held []string
	if f := d.h.federation; f != nil {
		wctx, cancel := context.WithTimeout(ctx, time.Duration(p.Timeout))
		var at replicate.Policy
		if p.At != ReplicateAll {
			at, _ = replicate.ParsePolicy(string(p.At))
		}
		held = f.rep.AwaitCopies(wctx, st, replicate.CopyTarget{Ends: ends, Peers: p.Copies - 1, At: at})
		cancel()
	}
	have := 1 + len(held)
	d.m.copyWait.WithLabelValues(st.Name()).Observe(time.Since(start).Seconds())
	if have >= p.Copies {
		return have, nil
	}
	d.m.copyShort.WithLabelValues(st.Name(), p.Shortfall).Inc()
	n, _ := d.copyShort.LoadOrStore(st.Name(), new(atomic.Int64))
	n.(*atomic.Int64).Add(1)
	if ctx.Err() != nil {
		return have, quic.Errorf(quic.CodeCanceled, "session ended while waiting for %d copies (%d held): the batch is stored on this hub and replicates later", p.Copies, have)
	}
	if p.Shortfall == ShortfallAck {
		return have, nil
	}
	return have, quic.Errorf(quic.CodeCopiesShort,
		"%d of %d copies within %s (held by this hub%s): the batch IS stored on this hub and replicates later; resend it only from an idempotent producer",
		have, p.Copies, p.Timeout, peersSuffix(held))
}

func peersSuffix(peers []string) string {
	if len(peers) == 0 {
		return " alone"
	}
	return fmt.Sprintf(" and %v", peers)
}

// addCopies adds to a describe what the copies of a stream with copies > 1
// are: per shard the peers holding it to its last sequence, and the
// batches short of their copies so far.
func (h *Hub) addCopies(info *StreamInfo, st *store.Stream) {
	if copiesOf(st.Config()).Copies <= 1 {
		return
	}
	if n, ok := h.dataPlane.copyShort.Load(st.Name()); ok {
		info.CopiesShort = n.(*atomic.Int64).Load()
	}
	f := h.federation
	if f == nil {
		return
	}
	for i := range info.Shards {
		si := &info.Shards[i]
		if si.LastSeq > 0 {
			si.CopiesHeld = f.rep.CopiesHeld(st, uint32(si.Shard), si.LastSeq)
		}
	}
}

package chaos

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
)

// AnomalyKind names what went wrong, in Jepsen's terms where it has one.
type AnomalyKind string

const (
	// LostWrite: an acknowledged Produce is missing from a Final read-back.
	LostWrite AnomalyKind = "lost-write"
	// Duplicate: a value, or a replicated origin, stored more than once.
	Duplicate AnomalyKind = "duplicate"
	// FailedVisible: a Produce that failed (definitely not applied) was
	// stored or read.
	FailedVisible AnomalyKind = "failed-write-visible"
	// WrongPosition: an acknowledged Produce is stored, but not at the
	// shard and sequence its acknowledgement named.
	WrongPosition AnomalyKind = "wrong-position"
	// ReorderKey: two records of one key are stored in an order that
	// contradicts the order they were written in (one was acknowledged
	// before the other was invoked, or one client wrote them one after the
	// other and both were acknowledged).
	ReorderKey AnomalyKind = "reorder-key"
	// ReorderOrigin: records of one origin shard stored out of origin
	// sequence order in a shard.
	ReorderOrigin AnomalyKind = "reorder-origin"
	// Phantom: a stored or read record that no Produce wrote.
	Phantom AnomalyKind = "phantom"
	// SkippedRead: a consumer jumped over stored records it should have
	// read, or a group never read a record before its last read position.
	SkippedRead AnomalyKind = "skipped-read"
	// NonMonotonicRead: a consumer went back without a reason, or a group
	// member resumed before an offset whose commit had been acknowledged.
	NonMonotonicRead AnomalyKind = "non-monotonic-read"
	// DivergentRead: a consumer read, at a shard and sequence, something
	// other than what the Final read-back holds there (data served and
	// later lost, or damaged data served).
	DivergentRead AnomalyKind = "divergent-read"
	// LineageRead: a group member read a child shard's record before the
	// group had finished every ancestor of that shard (read every record
	// stored in it and invoked a commit past its last record).
	LineageRead AnomalyKind = "lineage-read"
	// BadHistory: the history itself is inconsistent (a value produced
	// twice, a completion without its invocation).
	BadHistory AnomalyKind = "bad-history"
)

// Anomaly is one finding.
type Anomaly struct {
	Kind   AnomalyKind
	Stream string
	Hub    string
	Client string
	Key    string
	Value  string
	Shard  int
	Seq    uint64
	Detail string
}

func (a Anomaly) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s:", a.Kind)
	for _, f := range []struct{ k, v string }{{"stream", a.Stream}, {"hub", a.Hub}, {"client", a.Client}, {"key", a.Key}, {"value", a.Value}} {
		if f.v != "" {
			fmt.Fprintf(&b, " %s=%s", f.k, f.v)
		}
	}
	fmt.Fprintf(&b, " at %d:%d", a.Shard, a.Seq)
	if a.Detail != "" {
		b.WriteString(": " + a.Detail)
	}
	return b.String()
}

// maxListed bounds the anomalies a Report lists per kind; Counts stay exact.
const maxListed = 100

// Report is the checker's verdict on a history.
type Report struct {
	// Anomalies lists up to 100 findings per kind, in the order found.
	Anomalies []Anomaly
	// Counts has every finding, by kind.
	Counts map[AnomalyKind]int

	Produced       int // Produce invocations
	Acked          int // ... acknowledged
	Failed         int // ... failed
	Unknown        int // ... with an unknown outcome (or no completion)
	UnknownStored  int // unknown-outcome writes found in a Final read-back
	FinalReads     int // (hub, stream) read-backs
	RecordsChecked int // Final lines
	Reads          int // Consume lines
	Commits        int // Commit invocations
}

// OK reports whether the history has no anomaly.
func (r *Report) OK() bool { return len(r.Counts) == 0 }

// Count returns the number of findings of kind k.
func (r *Report) Count(k AnomalyKind) int { return r.Counts[k] }

// Summary is one line of figures.
func (r *Report) Summary() string {
	s := fmt.Sprintf("%d writes (%d acked, %d failed, %d unknown, %d of them stored), %d records checked in %d read-backs, %d reads, %d commits",
		r.Produced, r.Acked, r.Failed, r.Unknown, r.UnknownStored, r.RecordsChecked, r.FinalReads, r.Reads, r.Commits)
	if r.OK() {
		return s + ": no anomalies"
	}
	kinds := make([]string, 0, len(r.Counts))
	for k, n := range r.Counts {
		kinds = append(kinds, fmt.Sprintf("%s %d", k, n))
	}
	slices.Sort(kinds)
	return s + ": " + strings.Join(kinds, ", ")
}

// Err is nil for a clean history, else an error with the summary and the
// first findings.
func (r *Report) Err() error {
	if r.OK() {
		return nil
	}
	var b strings.Builder
	b.WriteString("chaos: " + r.Summary())
	for i, a := range r.Anomalies {
		if i == 20 {
			fmt.Fprintf(&b, "\n  ... %d more listed", len(r.Anomalies)-i)
			break
		}
		b.WriteString("\n  " + a.String())
	}
	return errors.New(b.String())
}

func (r *Report) add(a Anomaly) {
	if r.Counts == nil {
		r.Counts = map[AnomalyKind]int{}
	}
	r.Counts[a.Kind]++
	if r.Counts[a.Kind] <= maxListed {
		r.Anomalies = append(r.Anomalies, a)
	}
}

// write is a Produce as the checker sees it.
type write struct {
	op      Op // the invocation
	idx     int
	outcome Outcome
	ackIdx  int // line of the acknowledgement; math.MaxInt if none
	shard   int
	seq     uint64
	order   int // the client's invocation counter
}

type commit struct {
	idx, doneIdx int
	offset       uint64
	outcome      Outcome
}

type stored struct {
	seq    uint64
	key    string
	value  string
	origin *Origin
}

// final is one hub's read-back of one stream, per shard in sequence order.
type final struct {
	hub, stream string
	shards      map[int][]stored
	ancestors   map[int][]int // shard → every shard it descends from, sorted
}

// ancestorsOf returns, for each shard of k's lineage (k's own, else its
// stream's), the transitive closure of its parents.
func ancestorsOf(lineage map[streamHub]map[int][]int, k streamHub) map[int][]int {
	parents := lineage[k]
	if parents == nil {
		parents = lineage[streamHub{k.stream, ""}]
	}
	if parents == nil {
		return nil
	}
	out := map[int][]int{}
	for sh := range parents {
		seen := map[int]bool{}
		stack := slices.Clone(parents[sh])
		for len(stack) > 0 {
			p := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if seen[p] || p == sh {
				continue
			}
			seen[p] = true
			stack = append(stack, parents[p]...)
		}
		if len(seen) > 0 {
			out[sh] = slices.Sorted(mapKeys(seen))
		}
	}
	return out
}

func (f *final) search(shard int, seq uint64) (recs []stored, i int) {
	recs = f.shards[shard]
	return recs, sort.Search(len(recs), func(i int) bool { return recs[i].seq >= seq })
}

// at returns the record stored at (shard, seq).
func (f *final) at(shard int, seq uint64) (stored, bool) {
	recs, i := f.search(shard, seq)
	if i < len(recs) && recs[i].seq == seq {
		return recs[i], true
	}
	return stored{}, false
}

// atOrAfter returns the sequence of the first record at or after seq, or
// false at the end.
func (f *final) atOrAfter(shard int, seq uint64) (uint64, bool) {
	recs, i := f.search(shard, seq)
	if i < len(recs) {
		return recs[i].seq, true
	}
	return 0, false
}

type streamHub struct{ stream, hub string }

type groupShard struct {
	stream, group string
	shard         int
}

// Check judges a history (in time order, as a Recorder writes it) and
// reports every anomaly found. Writes are judged against the Final
// read-backs: an acknowledged write must be in every read-back of its
// stream, once, at its acknowledged position on the hub that acknowledged
// it; a failed one in none; an unknown one at most once. Reads are judged
// against the read-back of the hub they came from (or the stream's only
// read-back).
func Check(ops []Op) *Report {
	r := &Report{}
	writes := map[string]*write{} // by value
	byID := map[uint64]*write{}
	commits := map[groupShard][]*commit{}
	commitByID := map[uint64]*commit{}
	finals := map[streamHub]*final{}
	clientOrder := map[string]int{}
	var reads []int
	lineage := map[streamHub]map[int][]int{} // shard → parents, per stream (hub "" for all hubs)

	for i, op := range ops {
		switch {
		case op.Kind == Produce && op.Outcome == Invoked:
			if _, dup := writes[op.Value]; dup || op.Value == "" {
				r.add(Anomaly{Kind: BadHistory, Stream: op.Stream, Client: op.Client, Value: op.Value, Detail: fmt.Sprintf("line %d: value produced twice or empty", i+1)})
				continue
			}
			clientOrder[op.Client]++
			w := &write{op: op, idx: i, outcome: Unknown, ackIdx: math.MaxInt, order: clientOrder[op.Client]}
			writes[op.Value] = w
			byID[op.ID] = w
			r.Produced++
		case op.Kind == Produce:
			w := byID[op.ID]
			if w == nil || w.outcome != Unknown || w.ackIdx != math.MaxInt {
				r.add(Anomaly{Kind: BadHistory, Client: op.Client, Value: op.Value, Detail: fmt.Sprintf("line %d: completion of id %d without its invocation, or twice", i+1, op.ID)})
				continue
			}
			w.outcome = op.Outcome
			if op.Outcome == OK {
				w.ackIdx, w.shard, w.seq = i, op.Shard, op.Seq
			} else {
				w.ackIdx = math.MaxInt - 1 // completed, not acknowledged
			}
		case op.Kind == Commit && op.Outcome == Invoked:
			c := &commit{idx: i, doneIdx: math.MaxInt, offset: op.Seq, outcome: Unknown}
			k := groupShard{op.Stream, op.Group, op.Shard}
			commits[k] = append(commits[k], c)
			commitByID[op.ID] = c
			r.Commits++
		case op.Kind == Commit:
			c := commitByID[op.ID]
			if c == nil {
				r.add(Anomaly{Kind: BadHistory, Client: op.Client, Detail: fmt.Sprintf("line %d: commit completion of id %d without its invocation", i+1, op.ID)})
				continue
			}
			c.outcome, c.doneIdx = op.Outcome, i
		case op.Kind == Consume:
			reads = append(reads, i)
			r.Reads++
		case op.Kind == Lineage:
			k := streamHub{op.Stream, op.Hub}
			if lineage[k] == nil {
				lineage[k] = map[int][]int{}
			}
			lineage[k][op.Shard] = append(lineage[k][op.Shard], op.Parents...)
		case op.Kind == Final:
			k := streamHub{op.Stream, op.Hub}
			f := finals[k]
			if f == nil {
				f = &final{hub: op.Hub, stream: op.Stream, shards: map[int][]stored{}}
				finals[k] = f
			}
			f.shards[op.Shard] = append(f.shards[op.Shard], stored{seq: op.Seq, key: op.Key, value: op.Value, origin: op.Origin})
			r.RecordsChecked++
		default:
			r.add(Anomaly{Kind: BadHistory, Client: op.Client, Detail: fmt.Sprintf("line %d: kind %q outcome %q", i+1, op.Kind, op.Outcome)})
		}
	}
	for _, w := range writes {
		switch w.outcome {
		case OK:
			r.Acked++
		case Failed:
			r.Failed++
		default:
			r.Unknown++
		}
	}
	r.FinalReads = len(finals)

	keys := slices.SortedFunc(mapKeys(finals), func(a, b streamHub) int {
		return cmp.Or(cmp.Compare(a.stream, b.stream), cmp.Compare(a.hub, b.hub))
	})
	unknownStored := map[string]bool{}
	for _, k := range keys {
		f := finals[k]
		f.ancestors = ancestorsOf(lineage, k)
		checkFinal(r, f, writes, unknownStored)
	}
	r.UnknownStored = len(unknownStored)
	checkReads(r, ops, reads, writes, finals, commits, lineage)
	return r
}

func mapKeys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// checkFinal judges the writes of f's stream against f.
func checkFinal(r *Report, f *final, writes map[string]*write, unknownStored map[string]bool) {
	type where struct {
		shard int
		seq   uint64
	}
	seen := map[string][]where{}
	origins := map[Origin]int{}
	byKey := map[shardKey][]*write{} // visible writes per shard and key, in log order
	shards := slices.Sorted(mapKeys(f.shards))
	for _, sh := range shards {
		recs := f.shards[sh]
		slices.SortStableFunc(recs, func(a, b stored) int { return cmp.Compare(a.seq, b.seq) })
		lastOrigin := map[Origin]uint64{} // (hub, shard) → last origin seq in this shard
		for _, s := range recs {
			an := Anomaly{Stream: f.stream, Hub: f.hub, Key: s.key, Value: s.value, Shard: sh, Seq: s.seq}
			seen[s.value] = append(seen[s.value], where{sh, s.seq})
			w := writes[s.value]
			switch {
			case w == nil || w.op.Stream != f.stream:
				an.Kind, an.Detail = Phantom, "stored, never produced"
				r.add(an)
			case len(seen[s.value]) == 2:
				an.Kind, an.Detail = Duplicate, fmt.Sprintf("also at %d:%d", seen[s.value][0].shard, seen[s.value][0].seq)
				r.add(an)
			case len(seen[s.value]) == 1:
				byKey[shardKey{sh, s.key}] = append(byKey[shardKey{sh, s.key}], w)
			}
			if o := s.origin; o != nil {
				if origins[*o]++; origins[*o] == 2 {
					an.Kind, an.Detail = Duplicate, fmt.Sprintf("origin %s/%d/%d stored twice", o.Hub, o.Shard, o.Seq)
					r.add(an)
				}
				ok := Origin{Hub: o.Hub, Shard: o.Shard}
				if last, had := lastOrigin[ok]; had && o.Seq < last {
					an.Kind, an.Detail = ReorderOrigin, fmt.Sprintf("origin %s/%d seq %d after %d", o.Hub, o.Shard, o.Seq, last)
					r.add(an)
				}
				lastOrigin[ok] = max(lastOrigin[ok], o.Seq)
			}
		}
	}
	for _, w := range sortedWrites(writes) {
		if w.op.Stream != f.stream {
			continue
		}
		at := seen[w.op.Value]
		an := Anomaly{Stream: f.stream, Hub: f.hub, Client: w.op.Client, Key: w.op.Key, Value: w.op.Value, Shard: w.shard, Seq: w.seq}
		switch w.outcome {
		case OK:
			if len(at) == 0 {
				an.Kind, an.Detail = LostWrite, "acknowledged, not stored"
				r.add(an)
			} else if (w.op.Hub == f.hub) && (at[0].shard != w.shard || at[0].seq != w.seq) {
				an.Kind, an.Detail = WrongPosition, fmt.Sprintf("stored at %d:%d", at[0].shard, at[0].seq)
				r.add(an)
			}
		case Failed:
			if len(at) > 0 {
				an.Kind, an.Shard, an.Seq, an.Detail = FailedVisible, at[0].shard, at[0].seq, "failed, yet stored"
				r.add(an)
			}
		default:
			if len(at) > 0 {
				unknownStored[w.op.Value] = true
			}
		}
	}
	for _, k := range slices.SortedFunc(mapKeys(byKey), func(a, b shardKey) int {
		return cmp.Or(cmp.Compare(a.shard, b.shard), cmp.Compare(a.key, b.key))
	}) {
		checkKeyOrder(r, f, k.shard, k.key, byKey[k])
	}
	checkLineageOrder(r, f, byKey)
}

// checkLineageOrder judges per-key order across a reshard: a reshard
// closes its parents before any record is stored in a child, so every
// record of a key in a shard comes after every record of that key in the
// shard's ancestors. A record stored in a descendant must not have been
// acknowledged before a record stored in an ancestor was invoked, and one
// client's acknowledged writes keep their order from ancestor to
// descendant.
func checkLineageOrder(r *Report, f *final, byKey map[shardKey][]*write) {
	type summary struct {
		lastInvoke *write            // the latest-invoked write stored
		lastOrder  map[string]*write // per client, its latest acknowledged write
	}
	sums := map[shardKey]*summary{}
	sum := func(k shardKey) *summary {
		if s, ok := sums[k]; ok {
			return s
		}
		s := &summary{lastOrder: map[string]*write{}}
		for _, w := range byKey[k] {
			if s.lastInvoke == nil || w.idx > s.lastInvoke.idx {
				s.lastInvoke = w
			}
			if w.outcome == OK {
				if p := s.lastOrder[w.op.Client]; p == nil || w.order > p.order {
					s.lastOrder[w.op.Client] = w
				}
			}
		}
		sums[k] = s
		return s
	}
	for _, k := range slices.SortedFunc(mapKeys(byKey), func(a, b shardKey) int {
		return cmp.Or(cmp.Compare(a.shard, b.shard), cmp.Compare(a.key, b.key))
	}) {
		for _, anc := range f.ancestors[k.shard] {
			ak := shardKey{anc, k.key}
			if len(byKey[ak]) == 0 {
				continue
			}
			s := sum(ak)
			for _, w := range byKey[k] {
				if w.outcome != OK {
					continue
				}
				an := Anomaly{Kind: ReorderKey, Stream: f.stream, Hub: f.hub, Client: w.op.Client, Key: k.key, Value: w.op.Value, Shard: k.shard, Seq: w.seq}
				if w.ackIdx < s.lastInvoke.idx {
					an.Detail = fmt.Sprintf("stored in shard %d, descendant of %d, which holds %s, written after %s was acknowledged", k.shard, anc, s.lastInvoke.op.Value, w.op.Value)
					r.add(an)
				} else if p := s.lastOrder[w.op.Client]; p != nil && p.order > w.order {
					an.Detail = fmt.Sprintf("stored in shard %d, descendant of %d, which holds %s, which the client wrote after it", k.shard, anc, p.op.Value)
					r.add(an)
				}
			}
		}
	}
}

func sortedWrites(writes map[string]*write) []*write {
	out := make([]*write, 0, len(writes))
	for _, w := range writes {
		out = append(out, w)
	}
	slices.SortFunc(out, func(a, b *write) int { return cmp.Compare(a.idx, b.idx) })
	return out
}

type shardKey struct {
	shard int
	key   string
}

// checkKeyOrder judges the log order of one key's stored writes: no record
// may come after one that was invoked after it was acknowledged, and one
// client's acknowledged writes keep the order it invoked them in.
func checkKeyOrder(r *Report, f *final, shard int, key string, ws []*write) {
	// Real time: scanning from the end, minAck is the earliest
	// acknowledgement among the records stored after the current one.
	minAck, minAckBy := math.MaxInt, (*write)(nil)
	for i := len(ws) - 1; i >= 0; i-- {
		w := ws[i]
		if minAck < w.idx {
			r.add(Anomaly{Kind: ReorderKey, Stream: f.stream, Hub: f.hub, Client: w.op.Client, Key: key, Value: w.op.Value, Shard: shard,
				Detail: fmt.Sprintf("stored before %s, which was acknowledged before %s was written", minAckBy.op.Value, w.op.Value)})
		}
		if w.outcome == OK && w.ackIdx < minAck {
			minAck, minAckBy = w.ackIdx, w
		}
	}
	// Program order of each client's acknowledged writes.
	last := map[string]*write{}
	for _, w := range ws {
		if w.outcome != OK {
			continue
		}
		if p := last[w.op.Client]; p != nil && p.order > w.order {
			r.add(Anomaly{Kind: ReorderKey, Stream: f.stream, Hub: f.hub, Client: w.op.Client, Key: key, Value: w.op.Value, Shard: shard,
				Detail: fmt.Sprintf("stored before %s, which the client wrote first", p.op.Value)})
		}
		if p := last[w.op.Client]; p == nil || w.order > p.order {
			last[w.op.Client] = w
		}
	}
}

type readerShard struct {
	client, hub, stream string
	shard               int
}

// checkReads judges every Consume line against its hub's read-back and the
// group's commits.
func checkReads(r *Report, ops []Op, reads []int, writes map[string]*write, finals map[streamHub]*final, commits map[groupShard][]*commit, lineage map[streamHub]map[int][]int) {
	only := map[string]*final{} // stream → its read-back, when it has exactly one
	count := map[string]int{}
	for k, f := range finals {
		count[k.stream]++
		only[k.stream] = f
	}
	finalFor := func(op Op) *final {
		if f := finals[streamHub{op.Stream, op.Hub}]; f != nil {
			return f
		}
		if count[op.Stream] == 1 {
			return only[op.Stream]
		}
		return nil
	}
	prev := map[readerShard]uint64{}
	groupRead := map[groupShard]map[uint64]bool{}
	groupFinal := map[groupShard]*final{}
	lin := newLineageReads()
	for _, i := range reads {
		op := ops[i]
		f := finalFor(op)
		an := Anomaly{Stream: op.Stream, Hub: op.Hub, Client: op.Client, Key: op.Key, Value: op.Value, Shard: op.Shard, Seq: op.Seq}
		w := writes[op.Value]
		switch {
		case w == nil || w.op.Stream != op.Stream:
			an.Kind, an.Detail = Phantom, "read, never produced"
			r.add(an)
		case w.outcome == Failed:
			an.Kind, an.Detail = FailedVisible, "failed, yet read"
			r.add(an)
		}
		rk := readerShard{op.Client, op.Hub, op.Stream, op.Shard}
		if f != nil {
			if s, ok := f.at(op.Shard, op.Seq); !ok || s.value != op.Value {
				an.Kind, an.Detail = DivergentRead, fmt.Sprintf("read-back holds %q there", s.value)
				if !ok {
					an.Detail = "read-back holds nothing there"
				}
				r.add(an)
				if !ok {
					// Judging its order against the read-back would
					// report the same loss again.
					prev[rk] = op.Seq
					continue
				}
			}
		}
		gk := groupShard{op.Stream, op.Group, op.Shard}
		if op.Group != "" {
			if groupRead[gk] == nil {
				groupRead[gk] = map[uint64]bool{}
			}
			if f != nil {
				groupFinal[gk] = f
				if f.ancestors == nil {
					f.ancestors = ancestorsOf(lineage, streamHub{f.stream, f.hub})
				}
				lin.check(r, f, commits, op, i)
				if !groupRead[gk][op.Seq] {
					lin.note(f, op)
				}
			}
			groupRead[gk][op.Seq] = true
		}

		p, had := prev[rk]
		prev[rk] = op.Seq
		expected, atEnd := p+1, false
		if f != nil && had {
			expected, atEnd = f.atOrAfter(op.Shard, p+1)
			atEnd = !atEnd
		}
		if had && !atEnd && op.Seq == expected {
			continue
		}
		if !had && op.Group == "" {
			continue // a plain subscription starts where it was told to
		}
		// A jump (or a group member's first read): forward, it must land
		// on a committed offset (or the start); backward, only a group
		// member may go, and never before an offset whose commit was
		// acknowledged.
		justified, floor := false, uint64(0)
		resumeAt := func(off uint64) (uint64, bool) {
			if f == nil {
				return off, true
			}
			return f.atOrAfter(op.Shard, off)
		}
		if op.Group != "" {
			if s, ok := resumeAt(0); ok && s == op.Seq {
				justified = true
			}
			for _, c := range commits[gk] {
				if c.idx > i {
					break
				}
				if c.outcome == Failed {
					continue
				}
				if s, ok := resumeAt(c.offset); ok && s == op.Seq {
					justified = true
				}
				if c.outcome == OK && c.doneIdx < i {
					floor = max(floor, c.offset)
				}
			}
		}
		if op.Group != "" && had && op.Seq <= p {
			// A group delivers at least once: a member may go back to
			// any position its group has not committed past (its
			// own uncommitted work is delivered again).
			justified = true
		}
		switch {
		case justified && op.Seq < floor:
			an.Kind, an.Detail = NonMonotonicRead, fmt.Sprintf("resumed before offset %d, whose commit was acknowledged", floor)
			r.add(an)
		case justified:
		case had && op.Seq <= p:
			an.Kind, an.Detail = NonMonotonicRead, fmt.Sprintf("read after %d", p)
			r.add(an)
		default:
			an.Kind = SkippedRead
			if had {
				an.Detail = fmt.Sprintf("read after %d, expected %d", p, expected)
			} else {
				an.Detail = "first read is not at a committed offset or the start"
			}
			r.add(an)
		}
	}
	// Every record of a shard up to the furthest any member read must have
	// been read by some member of the group.
	for _, gk := range slices.SortedFunc(mapKeys(groupRead), func(a, b groupShard) int {
		return cmp.Or(cmp.Compare(a.stream, b.stream), cmp.Compare(a.group, b.group), cmp.Compare(a.shard, b.shard))
	}) {
		f := groupFinal[gk]
		if f == nil {
			continue
		}
		read := groupRead[gk]
		var top uint64
		for s := range read {
			top = max(top, s)
		}
		for _, s := range f.shards[gk.shard] {
			if s.seq > top {
				break
			}
			if !read[s.seq] {
				r.add(Anomaly{Kind: SkippedRead, Stream: gk.stream, Hub: f.hub, Client: gk.group, Key: s.key, Value: s.value,
					Shard: gk.shard, Seq: s.seq, Detail: "no member of the group read it"})
			}
		}
	}
}

// lineageReads follows, per group, how much of each shard it has read, to
// judge a read of a child against the group's progress in its ancestors.
type lineageReads struct {
	read    map[groupShard]int            // distinct stored records read
	readKey map[groupShard]map[string]int // ... per key
	total   map[*final]map[int]map[string]int
}

func newLineageReads() *lineageReads {
	return &lineageReads{read: map[groupShard]int{}, readKey: map[groupShard]map[string]int{}, total: map[*final]map[int]map[string]int{}}
}

// note counts a group's first read of a stored record.
func (l *lineageReads) note(f *final, op Op) {
	gk := groupShard{op.Stream, op.Group, op.Shard}
	s, ok := f.at(op.Shard, op.Seq)
	if !ok {
		return
	}
	l.read[gk]++
	if l.readKey[gk] == nil {
		l.readKey[gk] = map[string]int{}
	}
	l.readKey[gk][s.key]++
}

func (l *lineageReads) keys(f *final, shard int) map[string]int {
	if l.total[f] == nil {
		l.total[f] = map[int]map[string]int{}
	}
	m := l.total[f][shard]
	if m == nil {
		m = map[string]int{}
		for _, s := range f.shards[shard] {
			m[s.key]++
		}
		l.total[f][shard] = m
	}
	return m
}

// check judges a group member's read at line i of a shard with ancestors:
// the hub leases a child only once the group has finished every parent
// (docs/groups.md, "Across a reshard"), so by then some member has read
// every record of every ancestor and a commit past its last record was
// invoked (and did not fail). A read of a key whose records in an ancestor
// were not all read yet is also a reorder-key.
func (l *lineageReads) check(r *Report, f *final, commits map[groupShard][]*commit, op Op, i int) {
	for _, anc := range f.ancestors[op.Shard] {
		ak := groupShard{op.Stream, op.Group, anc}
		an := Anomaly{Stream: op.Stream, Hub: op.Hub, Client: op.Client, Key: op.Key, Value: op.Value, Shard: op.Shard, Seq: op.Seq}
		if n := l.keys(f, anc)[op.Key]; l.readKey[ak][op.Key] < n {
			an.Kind, an.Detail = ReorderKey, fmt.Sprintf("read before the group read %d of the key's %d records in ancestor shard %d", n-l.readKey[ak][op.Key], n, anc)
			r.add(an)
		}
		recs := f.shards[anc]
		if len(recs) == 0 {
			continue
		}
		end := recs[len(recs)-1].seq
		committed := false
		for _, c := range commits[ak] {
			if c.idx > i {
				break
			}
			if c.outcome != Failed && c.offset > end {
				committed = true
				break
			}
		}
		if read := l.read[ak]; read < len(recs) || !committed {
			an.Kind, an.Detail = LineageRead, fmt.Sprintf("ancestor shard %d unfinished: %d of %d records read, commit past %d invoked: %v", anc, read, len(recs), end, committed)
			r.add(an)
		}
	}
}

package chaos

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
)

// hist builds a history through a Recorder, as the fault tests do, so the
// checker is tested on what the recorder writes.
type hist struct {
	r   *Recorder
	buf bytes.Buffer
}

func newHist() *hist {
	h := &hist{}
	h.r = NewRecorder(&h.buf)
	return h
}

func (h *hist) produce(client, key, value string) *Invocation {
	return h.r.Invoke(Op{Kind: Produce, Client: client, Key: key, Value: value})
}

// acked is a write acknowledged at once.
func (h *hist) acked(client, key, value string, shard int, seq uint64) {
	h.produce(client, key, value).OK(shard, seq)
}

func (h *hist) final(shard int, seq uint64, key, value string) {
	h.r.Read(Op{Kind: Final, Client: "final", Key: key, Value: value, Shard: shard, Seq: seq})
}

func (h *hist) read(client, group string, shard int, seq uint64, key, value string) {
	h.r.Read(Op{Kind: Consume, Client: client, Group: group, Key: key, Value: value, Shard: shard, Seq: seq})
}

func (h *hist) commit(client, group string, shard int, offset uint64) *Invocation {
	return h.r.Invoke(Op{Kind: Commit, Client: client, Group: group, Shard: shard, Seq: offset})
}

func (h *hist) check(t *testing.T) *Report {
	t.Helper()
	if err := h.r.Close(); err != nil {
		t.Fatal(err)
	}
	ops, err := ReadHistory(&h.buf)
	if err != nil {
		t.Fatal(err)
	}
	return Check(ops)
}

// clean writes a history without anomalies, with every kind of operation
// and outcome: the base the anomaly tests damage.
func clean(h *hist, damage func(step string) bool) {
	// Two clients, pipelined: p1's a1 and a2 are in flight together.
	a1 := h.produce("p1", "a", "a1")
	a2 := h.produce("p1", "a", "a2")
	b1 := h.produce("p2", "b", "b1")
	a1.OK(0, 1)
	b1.OK(1, 1)
	a2.OK(0, 2)
	// Concurrent writes of one key by two clients may go in either order.
	a3 := h.produce("p1", "a", "a3")
	a4 := h.produce("p2", "a", "a4")
	a4.OK(0, 3)
	a3.OK(0, 4)
	h.produce("p2", "b", "b2").Fail(errors.New("refused"))
	h.produce("p2", "b", "b3").Unknown(errors.New("timeout")) // stored
	h.produce("p2", "b", "b4").Unknown(errors.New("timeout")) // not stored
	h.produce("p1", "a", "a5")                                // never completed, stored
	h.acked("p1", "b", "b5", 1, 3)

	// A plain consumer reads shard 0 from its start.
	for i, v := range []string{"a1", "a2", "a4", "a3"} {
		h.read("c1", "", 0, uint64(i+1), "a", v)
	}
	// A group member reads shard 1, commits, the hub loses its session,
	// and it resumes at its acknowledged commit.
	h.read("g1", "grp", 1, 1, "b", "b1")
	h.read("g1", "grp", 1, 2, "b", "b3")
	h.commit("g1", "grp", 1, 2).OK(0, 0)
	if !damage("rewind") {
		h.read("g1", "grp", 1, 2, "b", "b3")
	}
	h.read("g1", "grp", 1, 3, "b", "b5")
	h.commit("g1", "grp", 1, 4).Unknown(errors.New("connection lost"))

	for _, f := range []struct {
		shard int
		seq   uint64
		key   string
		value string
	}{{0, 1, "a", "a1"}, {0, 2, "a", "a2"}, {0, 3, "a", "a4"}, {0, 4, "a", "a3"}, {0, 5, "a", "a5"},
		{1, 1, "b", "b1"}, {1, 2, "b", "b3"}, {1, 3, "b", "b5"}} {
		if !damage(f.value) {
			h.final(f.shard, f.seq, f.key, f.value)
		}
	}
}

func TestCheckCleanHistory(t *testing.T) {
	h := newHist()
	clean(h, func(string) bool { return false })
	r := h.check(t)
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	want := Report{Produced: 10, Acked: 6, Failed: 1, Unknown: 3, UnknownStored: 2, FinalReads: 1, RecordsChecked: 8, Reads: 8, Commits: 2}
	got := *r
	got.Anomalies, got.Counts = nil, nil
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("figures\n got %+v\nwant %+v", got, want)
	}
	if !strings.HasSuffix(r.Summary(), "no anomalies") {
		t.Fatal(r.Summary())
	}
}

func TestCheckAnomalies(t *testing.T) {
	tests := []struct {
		name  string
		build func(h *hist)
		want  map[AnomalyKind]int
	}{
		{"lost acknowledged write", func(h *hist) {
			clean(h, func(s string) bool { return s == "a2" })
		}, map[AnomalyKind]int{LostWrite: 1, DivergentRead: 1}}, // c1 read it before it was lost
		{"duplicate value", func(h *hist) {
			clean(h, func(string) bool { return false })
			h.final(1, 4, "b", "b1")
		}, map[AnomalyKind]int{Duplicate: 1}},
		{"unknown write stored twice", func(h *hist) {
			clean(h, func(string) bool { return false })
			h.final(1, 4, "b", "b3")
		}, map[AnomalyKind]int{Duplicate: 1}},
		{"duplicate origin", func(h *hist) {
			h.acked("p", "k", "v1", 0, 1)
			h.acked("p", "k", "v2", 0, 2)
			h.r.Read(Op{Kind: Final, Client: "f", Key: "k", Value: "v1", Shard: 0, Seq: 1, Origin: &Origin{Hub: "o", Shard: 0, Seq: 7}})
			h.r.Read(Op{Kind: Final, Client: "f", Key: "k", Value: "v2", Shard: 0, Seq: 2, Origin: &Origin{Hub: "o", Shard: 0, Seq: 7}})
		}, map[AnomalyKind]int{Duplicate: 1}},
		{"failed write stored", func(h *hist) {
			clean(h, func(string) bool { return false })
			h.final(1, 4, "b", "b2")
		}, map[AnomalyKind]int{FailedVisible: 1}},
		{"failed write read", func(h *hist) {
			h.produce("p", "k", "v1").Fail(errors.New("disk full"))
			h.read("c", "", 0, 1, "k", "v1")
		}, map[AnomalyKind]int{FailedVisible: 1}},
		{"stored at another position", func(h *hist) {
			h.acked("p", "k", "v1", 0, 1)
			h.acked("p", "k", "v2", 0, 2)
			h.final(0, 1, "k", "v1")
			h.final(0, 3, "k", "v2")
		}, map[AnomalyKind]int{WrongPosition: 1}},
		{"key order against real time", func(h *hist) {
			h.acked("p1", "k", "v1", 0, 2)
			h.acked("p2", "k", "v2", 0, 1)
			h.final(0, 1, "k", "v2")
			h.final(0, 2, "k", "v1")
		}, map[AnomalyKind]int{ReorderKey: 1}},
		{"key order against a client's pipeline", func(h *hist) {
			v1 := h.produce("p1", "k", "v1")
			v2 := h.produce("p1", "k", "v2")
			v2.OK(0, 1)
			v1.OK(0, 2)
			h.final(0, 1, "k", "v2")
			h.final(0, 2, "k", "v1")
		}, map[AnomalyKind]int{ReorderKey: 1}},
		{"origin order", func(h *hist) {
			h.acked("p", "k1", "v1", 0, 1)
			h.acked("p", "k2", "v2", 0, 2)
			h.r.Read(Op{Kind: Final, Client: "f", Key: "k1", Value: "v1", Shard: 0, Seq: 1, Origin: &Origin{Hub: "o", Shard: 1, Seq: 9}})
			h.r.Read(Op{Kind: Final, Client: "f", Key: "k2", Value: "v2", Shard: 0, Seq: 2, Origin: &Origin{Hub: "o", Shard: 1, Seq: 8}})
		}, map[AnomalyKind]int{ReorderOrigin: 1}},
		{"phantom record", func(h *hist) {
			clean(h, func(string) bool { return false })
			h.final(1, 4, "b", "never-written")
		}, map[AnomalyKind]int{Phantom: 1}},
		{"skipped read", func(h *hist) {
			for i := 1; i <= 3; i++ {
				h.acked("p", "k", fmt.Sprint("v", i), 0, uint64(i))
				h.final(0, uint64(i), "k", fmt.Sprint("v", i))
			}
			h.read("c", "", 0, 1, "k", "v1")
			h.read("c", "", 0, 3, "k", "v3")
		}, map[AnomalyKind]int{SkippedRead: 1}},
		{"non-monotonic read", func(h *hist) {
			for i := 1; i <= 3; i++ {
				h.acked("p", "k", fmt.Sprint("v", i), 0, uint64(i))
				h.final(0, uint64(i), "k", fmt.Sprint("v", i))
			}
			h.read("c", "", 0, 1, "k", "v1")
			h.read("c", "", 0, 2, "k", "v2")
			h.read("c", "", 0, 1, "k", "v1")
		}, map[AnomalyKind]int{NonMonotonicRead: 1}},
		{"group resumes before an acknowledged commit", func(h *hist) {
			clean(h, func(s string) bool { return false })
			h.read("g1", "grp", 1, 1, "b", "b1")
		}, map[AnomalyKind]int{NonMonotonicRead: 1}},
		{"group member goes back, not before its acknowledged commit", func(h *hist) {
			for i := 1; i <= 4; i++ {
				h.acked("p", "k", fmt.Sprint("v", i), 0, uint64(i))
				h.final(0, uint64(i), "k", fmt.Sprint("v", i))
			}
			h.read("g1", "grp", 0, 1, "k", "v1")
			h.commit("g1", "grp", 0, 2).OK(0, 0)
			h.read("g1", "grp", 0, 2, "k", "v2")
			h.read("g1", "grp", 0, 3, "k", "v3")
			h.read("g1", "grp", 0, 2, "k", "v2") // redelivered: allowed
			h.read("g1", "grp", 0, 3, "k", "v3")
			h.read("g1", "grp", 0, 1, "k", "v1") // before the commit: not
		}, map[AnomalyKind]int{NonMonotonicRead: 1}},
		{"group member starts past the start without a commit", func(h *hist) {
			for i := 1; i <= 3; i++ {
				h.acked("p", "k", fmt.Sprint("v", i), 0, uint64(i))
				h.final(0, uint64(i), "k", fmt.Sprint("v", i))
			}
			h.read("g1", "grp", 0, 2, "k", "v2")
		}, map[AnomalyKind]int{SkippedRead: 2}}, // the jump, and v1 never read by the group
		{"group commits past what it read", func(h *hist) {
			for i := 1; i <= 4; i++ {
				h.acked("p", "k", fmt.Sprint("v", i), 0, uint64(i))
				h.final(0, uint64(i), "k", fmt.Sprint("v", i))
			}
			h.read("g1", "grp", 0, 1, "k", "v1")
			h.commit("g1", "grp", 0, 3).OK(0, 0)
			h.read("g2", "grp", 0, 3, "k", "v3") // justified by the commit...
			h.read("g2", "grp", 0, 4, "k", "v4")
		}, map[AnomalyKind]int{SkippedRead: 1}}, // ...but v2 was never read
		{"read differs from the log", func(h *hist) {
			h.acked("p", "k", "v1", 0, 1)
			h.produce("p", "k", "v2").Unknown(errors.New("crash"))
			h.read("c", "", 0, 2, "k", "v2") // served, then lost in a crash
			h.final(0, 1, "k", "v1")
		}, map[AnomalyKind]int{DivergentRead: 1}},
		{"value produced twice", func(h *hist) {
			h.acked("p", "k", "v1", 0, 1)
			h.acked("p", "k", "v1", 0, 2)
			h.final(0, 1, "k", "v1")
		}, map[AnomalyKind]int{BadHistory: 2}}, // the invocation and its completion
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHist()
			tc.build(h)
			r := h.check(t)
			if fmt.Sprint(r.Counts) != fmt.Sprint(tc.want) {
				t.Fatalf("want %v, got %v\n%v", tc.want, r.Counts, r.Err())
			}
			for k := range tc.want {
				if r.OK() || r.Err() == nil || !strings.Contains(r.Err().Error(), string(k)) {
					t.Fatalf("report does not name %s: %v", k, r.Err())
				}
			}
		})
	}
}

// Reads are judged against the read-back of the hub they came from.
func TestCheckPerHub(t *testing.T) {
	h := newHist()
	h.r.Invoke(Op{Kind: Produce, Client: "p", Hub: "a", Key: "k", Value: "v1"}).OK(0, 1)
	h.r.Invoke(Op{Kind: Produce, Client: "p", Hub: "a", Key: "k", Value: "v2"}).OK(0, 2)
	for _, hub := range []string{"a", "b"} {
		seq := uint64(1)
		if hub == "b" {
			seq = 10 // another hub stores them at its own positions
		}
		h.r.Read(Op{Kind: Final, Client: "f", Hub: hub, Key: "k", Value: "v1", Shard: 0, Seq: seq})
		if hub == "a" {
			h.r.Read(Op{Kind: Final, Client: "f", Hub: hub, Key: "k", Value: "v2", Shard: 0, Seq: seq + 1})
		}
	}
	h.r.Read(Op{Kind: Consume, Client: "c", Hub: "b", Key: "k", Value: "v1", Shard: 0, Seq: 10})
	r := h.check(t)
	if r.Count(LostWrite) != 1 || len(r.Counts) != 1 || r.FinalReads != 2 {
		t.Fatalf("want v2 lost on hub b only: %v", r.Err())
	}
	if a := r.Anomalies[0]; a.Hub != "b" || a.Value != "v2" {
		t.Fatalf("anomaly %v", a)
	}
}

func TestRecorderConcurrent(t *testing.T) {
	h := newHist()
	var wg sync.WaitGroup
	for c := 0; c < 8; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				h.produce(fmt.Sprint("p", c), "k", fmt.Sprintf("p%d-%d", c, i)).OK(c, uint64(i+1))
			}
		}()
	}
	wg.Wait()
	for c := 0; c < 8; c++ {
		for i := 0; i < 200; i++ {
			h.final(c, uint64(i+1), "k", fmt.Sprintf("p%d-%d", c, i))
		}
	}
	if n := h.r.Len(); n != 8*200*3 {
		t.Fatalf("%d lines", n)
	}
	r := h.check(t)
	if err := r.Err(); err != nil || r.Acked != 1600 || r.RecordsChecked != 1600 {
		t.Fatalf("%v: %s", err, r.Summary())
	}
	if err := h.r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestReadHistoryBadLine(t *testing.T) {
	_, err := ReadHistory(strings.NewReader(`{"kind":"produce","outcome":"invoke","value":"v"}` + "\n{oops\n"))
	if err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("err = %v", err)
	}
}

// lineageHist writes a clean history across a split: shard 0 closes after
// a1, a2 (and b1); its children 1 and 2 take a3, a4 and b2. A group reads
// and commits all of shard 0 before reading its children. damage names a
// step to change.
func lineageHist(h *hist, damage string) {
	h.r.Read(Op{Kind: Lineage, Client: "layout", Shard: 0})
	h.r.Read(Op{Kind: Lineage, Client: "layout", Shard: 1, Parents: []int{0}})
	h.r.Read(Op{Kind: Lineage, Client: "layout", Shard: 2, Parents: []int{0}})
	h.r.Read(Op{Kind: Lineage, Client: "layout", Shard: 3, Parents: []int{1, 2}}) // merged later, empty
	h.acked("p1", "a", "a1", 0, 1)
	h.acked("p2", "b", "b1", 0, 2)
	switch damage {
	case "child-acked-first":
		// a3 acknowledged in the child before a2 was even invoked, yet a2
		// is in the parent.
		h.acked("p2", "a", "a3", 1, 1)
		h.acked("p1", "a", "a2", 0, 3)
	case "program-order":
		// p1 wrote a3 before a2 (pipelined), but a3 is in the child.
		a3 := h.produce("p1", "a", "a3")
		a2 := h.produce("p1", "a", "a2")
		a2.OK(0, 3)
		a3.OK(1, 1)
	default:
		h.acked("p1", "a", "a2", 0, 3)
		h.acked("p2", "a", "a3", 1, 1)
	}
	h.acked("p1", "a", "a4", 1, 2)
	h.acked("p1", "b", "b2", 2, 1)
	h.acked("p1", "c", "c1", 2, 2)

	parent := func() {
		h.read("m1", "g", 0, 1, "a", "a1")
		h.read("m1", "g", 0, 2, "b", "b1")
		h.read("m1", "g", 0, 3, "a", "a2")
		if damage != "no-commit" {
			h.commit("m1", "g", 0, 4).OK(0, 0)
		}
	}
	if damage != "child-before-parent" {
		parent()
	}
	h.read("m2", "g", 1, 1, "a", "a3")
	h.read("m2", "g", 1, 2, "a", "a4")
	h.read("m3", "g", 2, 1, "b", "b2")
	h.read("m3", "g", 2, 2, "c", "c1")
	if damage == "child-before-parent" {
		parent()
	}
	h.final(0, 1, "a", "a1")
	h.final(0, 2, "b", "b1")
	h.final(0, 3, "a", "a2")
	h.final(1, 1, "a", "a3")
	h.final(1, 2, "a", "a4")
	h.final(2, 1, "b", "b2")
	h.final(2, 2, "c", "c1")
}

func TestCheckLineageClean(t *testing.T) {
	h := newHist()
	lineageHist(h, "")
	r := h.check(t)
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	if r.RecordsChecked != 7 || r.Reads != 7 || r.Commits != 1 {
		t.Fatalf("figures: %s", r.Summary())
	}
	// Without the lineage lines the damaged histories below pass: what
	// finds them is the lineage.
	h = newHist()
	lineageHist(h, "child-acked-first")
	ops := slices.DeleteFunc(readOps(t, h), func(op Op) bool { return op.Kind == Lineage })
	if r := Check(ops); !r.OK() {
		t.Fatalf("without lineage: %v", r.Err())
	}
}

func readOps(t *testing.T, h *hist) []Op {
	t.Helper()
	if err := h.r.Close(); err != nil {
		t.Fatal(err)
	}
	ops, err := ReadHistory(&h.buf)
	if err != nil {
		t.Fatal(err)
	}
	return ops
}

func TestCheckLineageAnomalies(t *testing.T) {
	for _, tc := range []struct {
		damage string
		want   map[AnomalyKind]int
	}{
		{"child-acked-first", map[AnomalyKind]int{ReorderKey: 1}},
		{"program-order", map[AnomalyKind]int{ReorderKey: 1}},
		// Both children read before any of the parent: a3 and a4 (key a has
		// records in the parent) and b2 (key b too) are reorders; every child
		// read is a lineage-read.
		{"child-before-parent", map[AnomalyKind]int{ReorderKey: 3, LineageRead: 4}},
		// The parent read but never committed past its end.
		{"no-commit", map[AnomalyKind]int{LineageRead: 4}},
	} {
		t.Run(tc.damage, func(t *testing.T) {
			h := newHist()
			lineageHist(h, tc.damage)
			r := h.check(t)
			if !maps.Equal(r.Counts, tc.want) {
				t.Fatalf("counts %v, want %v\n%v", r.Counts, tc.want, r.Err())
			}
		})
	}
}

package chaos

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// Kind is what an operation did.
type Kind string

const (
	// Produce writes one record. Its Value is unique in the history.
	Produce Kind = "produce"
	// Consume is one record returned to a consumer (a subscription or a
	// group member): Shard, Seq, Key, Value and Origin as read.
	Consume Kind = "consume"
	// Commit is a consumer group's offset commit: Seq is the offset (the
	// next sequence to read) of Shard.
	Commit Kind = "commit"
	// Final is one record of the read-back of a whole stream at the end of
	// a run, from one hub: the state every other operation is judged by.
	Final Kind = "final"
	// Lineage is one shard of a resharded stream's layout: Shard is its id
	// and Parents the ids of the shards it was opened from (none for an
	// original shard). With Hub set it describes that hub's read-back only,
	// else every read-back of the stream. The checker judges per-key order
	// and group reads across a parent and its descendants.
	Lineage Kind = "lineage"
)

// Outcome is the state of an operation in its line of the history.
type Outcome string

const (
	// Invoked: the operation started. A Produce or Commit is written as an
	// Invoked line, then one completion line with the same ID.
	Invoked Outcome = "invoke"
	// OK: acknowledged. For Produce, Shard and Seq are the acknowledged
	// position. Consume and Final lines are always OK.
	OK Outcome = "ok"
	// Failed: definitely not applied (the hub refused it before storing).
	Failed Outcome = "fail"
	// Unknown: may or may not have been applied (a timeout, a lost
	// connection, a crash). An operation with no completion line counts as
	// Unknown.
	Unknown Outcome = "unknown"
)

// Origin is a record's origin as read: (hub, shard, sequence) at the hub
// where it was first stored.
type Origin struct {
	Hub   string `json:"hub"`
	Shard uint32 `json:"shard"`
	Seq   uint64 `json:"seq"`
}

// Op is one line of a history. The history's line order is its time order:
// an operation completed before another was invoked if its completion line
// comes first.
type Op struct {
	ID      uint64  `json:"id,omitempty"` // pairs an Invoked line with its completion
	Kind    Kind    `json:"kind"`
	Outcome Outcome `json:"outcome"`
	Client  string  `json:"client"`           // producer, consumer or group member id
	Hub     string  `json:"hub,omitempty"`    // the hub the operation went to or was read from
	Stream  string  `json:"stream,omitempty"` // default ""; the checker keeps streams apart
	Group   string  `json:"group,omitempty"`  // Consume by a group member, Commit
	Key     string  `json:"key,omitempty"`
	Value   string  `json:"value,omitempty"` // unique id of the produced value
	Shard   int     `json:"shard"`
	Seq     uint64  `json:"seq,omitempty"`
	Origin  *Origin `json:"origin,omitempty"`  // a replicated record's origin
	Parents []int   `json:"parents,omitempty"` // Lineage: the shard's parents
	Err     string  `json:"err,omitempty"`
	Time    int64   `json:"t,omitempty"` // ns since the recorder started; informational
}

// ReadHistory decodes a JSON-lines history.
func ReadHistory(r io.Reader) ([]Op, error) {
	var ops []Op
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for line := 1; sc.Scan(); line++ {
		if len(sc.Bytes()) == 0 {
			continue
		}
		var op Op
		if err := json.Unmarshal(sc.Bytes(), &op); err != nil {
			return ops, fmt.Errorf("chaos: history line %d: %w", line, err)
		}
		ops = append(ops, op)
	}
	if err := sc.Err(); err != nil {
		return ops, fmt.Errorf("chaos: read history: %w", err)
	}
	return ops, nil
}

// ReadHistoryFile reads a history written by a Recorder.
func ReadHistoryFile(path string) ([]Op, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("chaos: %w", err)
	}
	defer f.Close()
	return ReadHistory(f)
}

// Recorder writes a history as JSON lines, in the order operations are
// recorded. It is safe for concurrent use and never blocks for long: call it
// from SDK callbacks.
type Recorder struct {
	mu     sync.Mutex
	w      *bufio.Writer
	c      io.Closer
	start  time.Time
	nextID uint64
	lines  int
	err    error
	closed bool
}

// NewRecorder records to w (and closes it in Close if it is an io.Closer).
func NewRecorder(w io.Writer) *Recorder {
	r := &Recorder{w: bufio.NewWriterSize(w, 256<<10), start: time.Now()}
	if c, ok := w.(io.Closer); ok {
		r.c = c
	}
	return r
}

// CreateRecorder records to a new file at path.
func CreateRecorder(path string) (*Recorder, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("chaos: %w", err)
	}
	return NewRecorder(f), nil
}

func (r *Recorder) write(op Op) Op {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		if r.err == nil {
			r.err = errors.New("chaos: recorder used after Close")
		}
		return op
	}
	if op.Outcome == Invoked {
		r.nextID++
		op.ID = r.nextID
	}
	op.Time = int64(time.Since(r.start)) // monotonic: wall-clock jumps do not matter
	r.lines++
	b, err := json.Marshal(op)
	if err == nil {
		b = append(b, '\n')
		_, err = r.w.Write(b)
	}
	if err != nil && r.err == nil {
		r.err = fmt.Errorf("chaos: record: %w", err)
	}
	return op
}

// Invoke records the start of a Produce or Commit and returns the handle
// that records its outcome. op.Outcome is set to Invoked.
func (r *Recorder) Invoke(op Op) *Invocation {
	op.Outcome = Invoked
	return &Invocation{r: r, op: r.write(op)}
}

// Read records a Consume, Final or Lineage line (Outcome OK).
func (r *Recorder) Read(op Op) {
	op.Outcome = OK
	r.write(op)
}

// Len is the number of lines recorded.
func (r *Recorder) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lines
}

// Flush writes buffered lines out (the history file can then be read while
// recording goes on).
func (r *Recorder) Flush() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.w.Flush(); err != nil && r.err == nil {
		r.err = fmt.Errorf("chaos: flush history: %w", err)
	}
	return r.err
}

// Close flushes the history and closes the writer. It returns the first
// error met while recording. Close is idempotent.
func (r *Recorder) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return r.err
	}
	r.closed = true
	if err := r.w.Flush(); err != nil && r.err == nil {
		r.err = fmt.Errorf("chaos: flush history: %w", err)
	}
	if r.c != nil {
		if err := r.c.Close(); err != nil && r.err == nil {
			r.err = fmt.Errorf("chaos: close history: %w", err)
		}
	}
	return r.err
}

// Invocation is a Produce or Commit in flight. Exactly one of its methods
// should be called; later calls are ignored.
type Invocation struct {
	r    *Recorder
	op   Op
	once sync.Once
}

// ID is the invocation's id in the history.
func (i *Invocation) ID() uint64 { return i.op.ID }

func (i *Invocation) complete(o Outcome, shard int, seq uint64, err error) {
	i.once.Do(func() {
		op := Op{ID: i.op.ID, Kind: i.op.Kind, Outcome: o, Client: i.op.Client, Hub: i.op.Hub,
			Stream: i.op.Stream, Group: i.op.Group, Key: i.op.Key, Value: i.op.Value, Shard: shard, Seq: seq}
		if i.op.Kind == Commit {
			op.Shard, op.Seq = i.op.Shard, i.op.Seq
		}
		if err != nil {
			op.Err = err.Error()
		}
		i.r.write(op)
	})
}

// OK records the acknowledgement; for a Produce, at shard and seq (a
// Commit keeps the offset it was invoked with and ignores them).
func (i *Invocation) OK(shard int, seq uint64) { i.complete(OK, shard, seq, nil) }

// Fail records a definite failure: the operation was not applied.
func (i *Invocation) Fail(err error) { i.complete(Failed, 0, 0, err) }

// Unknown records an indefinite outcome: it may have been applied.
func (i *Invocation) Unknown(err error) { i.complete(Unknown, 0, 0, err) }

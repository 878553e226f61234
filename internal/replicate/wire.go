package replicate

import (
	"encoding/binary"
	"fmt"

	"github.com/edgehub/edgehub/quic"
	"github.com/edgehub/edgehub/store"
)

// Replication pulls travel on QUIC streams of operation quic.OpReplicate.
//
// The client's OPEN body is a PullRequest. The server answers with a
// sequence of frames, all of types reserved for OpReplicate:
//
//	PULL_RECORDS  0x30  uvarint high, bytes batch
//	PULL_PROGRESS 0x31  uvarint high, varint server time (unix nanos)
//	PULL_GAP      0x32  uvarint from, uvarint to, string reason
//
// batch is a record batch (internal/record encoding, CRC-32C) whose records
// all carry the pulled origin explicitly, in origin order. high is the
// highest origin sequence of that origin the server holds when it sends the
// frame, so the client knows its lag without waiting for gossip.
// PULL_PROGRESS says "nothing more for now"; a following pull sends it
// whenever it catches up and then at least every heartbeat while idle.
// PULL_GAP says origin sequences from..to (inclusive) were deleted by
// retention before the client pulled them: the client records the gap and
// moves on. Errors end the stream with an ERROR frame (quic.Code).
const (
	FramePullRecords  quic.FrameType = 0x30
	FramePullProgress quic.FrameType = 0x31
	FramePullGap      quic.FrameType = 0x32
)

const pullVersion1 = 1

// PullRequest asks a peer for the records of one origin shard of one
// stream after a sequence.
type PullRequest struct {
	// Requester is the asking hub's name: the server checks the stream's
	// policy against that hub's tags.
	Requester string
	Stream    string
	Origin    store.OriginKey
	// After is the requester's watermark: records with a higher origin
	// sequence are wanted.
	After uint64
	// Follow keeps the pull open after catching up: the server sends new
	// records as they commit.
	Follow bool
	// MaxBatchBytes bounds one PULL_RECORDS frame (0: the server's default).
	MaxBatchBytes uint64
}

// Append encodes r (quic.Appender):
//
//	byte version (1), string requester, string stream, string origin hub,
//	uvarint origin shard, uvarint after, byte flags (1 = follow),
//	uvarint max batch bytes
func (r *PullRequest) Append(dst []byte) []byte {
	dst = append(dst, pullVersion1)
	dst = appendString(dst, r.Requester)
	dst = appendString(dst, r.Stream)
	dst = appendString(dst, r.Origin.Hub)
	dst = binary.AppendUvarint(dst, uint64(r.Origin.Shard))
	dst = binary.AppendUvarint(dst, r.After)
	flags := byte(0)
	if r.Follow {
		flags |= 1
	}
	dst = append(dst, flags)
	return binary.AppendUvarint(dst, r.MaxBatchBytes)
}

// Decode parses an untrusted PullRequest.
func (r *PullRequest) Decode(p []byte) error {
	d := reader{buf: p, what: "pull request"}
	if v := d.byte(); v != pullVersion1 && d.err == nil {
		d.fail("version %d", v)
	}
	r.Requester = d.string(quic.MaxNameLength)
	r.Stream = d.string(quic.MaxNameLength)
	r.Origin.Hub = d.string(quic.MaxNameLength)
	shard := d.uvarint()
	if shard > 1<<32-1 {
		d.fail("origin shard %d", shard)
	}
	r.Origin.Shard = uint32(shard)
	r.After = d.uvarint()
	switch d.byte() {
	case 0:
		r.Follow = false
	case 1:
		r.Follow = true
	default:
		d.fail("unknown flags")
	}
	r.MaxBatchBytes = d.uvarint()
	if d.err == nil && (r.Requester == "" || r.Stream == "" || r.Origin.Hub == "") {
		d.fail("empty name")
	}
	return d.done()
}

// Records is a PULL_RECORDS payload.
type Records struct {
	High  uint64
	Batch []byte
}

// Append implements quic.Appender.
func (f *Records) Append(dst []byte) []byte {
	dst = binary.AppendUvarint(dst, f.High)
	return append(dst, f.Batch...)
}

// Decode parses a PULL_RECORDS payload; Batch aliases p and is verified
// later by record.DecodeBatch.
func (f *Records) Decode(p []byte) error {
	d := reader{buf: p, what: "PULL_RECORDS"}
	f.High = d.uvarint()
	if d.err == nil && len(d.buf) == 0 {
		d.fail("no batch")
	}
	f.Batch, d.buf = d.buf, nil
	return d.done()
}

// Progress is a PULL_PROGRESS payload.
type Progress struct {
	High uint64
	Time int64
}

// Append implements quic.Appender.
func (f *Progress) Append(dst []byte) []byte {
	dst = binary.AppendUvarint(dst, f.High)
	return binary.AppendVarint(dst, f.Time)
}

// Decode parses a PULL_PROGRESS payload.
func (f *Progress) Decode(p []byte) error {
	d := reader{buf: p, what: "PULL_PROGRESS"}
	f.High = d.uvarint()
	f.Time = d.varint()
	return d.done()
}

// Gap is a PULL_GAP payload.
type Gap struct {
	From, To uint64
	Reason   string
}

// Append implements quic.Appender.
func (f *Gap) Append(dst []byte) []byte {
	dst = binary.AppendUvarint(dst, f.From)
	dst = binary.AppendUvarint(dst, f.To)
	return appendString(dst, f.Reason)
}

// Decode parses a PULL_GAP payload.
func (f *Gap) Decode(p []byte) error {
	d := reader{buf: p, what: "PULL_GAP"}
	f.From = d.uvarint()
	f.To = d.uvarint()
	f.Reason = d.string(quic.MaxMessageLength)
	if d.err == nil && (f.From == 0 || f.To < f.From) {
		d.fail("range %d..%d", f.From, f.To)
	}
	return d.done()
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// reader decodes payload fields; after the first failure every read
// returns a zero value and err keeps the failure.
type reader struct {
	buf  []byte
	what string
	err  error
}

func (d *reader) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s: %s", quic.ErrMalformed, d.what, fmt.Sprintf(format, args...))
	}
	d.buf = nil
}

func (d *reader) done() error {
	if d.err == nil && len(d.buf) != 0 {
		d.fail("%d trailing bytes", len(d.buf))
	}
	return d.err
}

func (d *reader) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.buf) == 0 {
		d.fail("truncated")
		return 0
	}
	b := d.buf[0]
	d.buf = d.buf[1:]
	return b
}

func (d *reader) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.buf)
	if n <= 0 {
		d.fail("bad uvarint")
		return 0
	}
	d.buf = d.buf[n:]
	return v
}

func (d *reader) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.buf)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.buf = d.buf[n:]
	return v
}

func (d *reader) string(max int) string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > uint64(max) || n > uint64(len(d.buf)) {
		d.fail("string of %d bytes", n)
		return ""
	}
	s := string(d.buf[:n])
	d.buf = d.buf[n:]
	return s
}

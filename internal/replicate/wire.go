package replicate

import (
	"encoding/binary"
	"fmt"
	"io"

	"github.com/edgehub/edgehub/internal/wire"
	"github.com/edgehub/edgehub/quic"
	"github.com/edgehub/edgehub/store"
)

// Replication pulls travel on QUIC streams of operation quic.OpReplicate,
// in one of two forms chosen by the first byte (version) of the OPEN body.
//
// Version 1, a single pull: the OPEN body is a PullRequest and the server
// answers with a sequence of frames, all of types reserved for OpReplicate:
//
//	PULL_RECORDS  0x30  uvarint high, bytes batch
//	PULL_PROGRESS 0x31  uvarint high, varint server time (unix nanos)
//	PULL_GAP      0x32  uvarint from, uvarint to, string reason
//	PULL_TRIMMED  0x33  uvarint first origin sequence held
//
// batch is a record batch (internal/record encoding, CRC-32C) whose records
// all carry the pulled origin explicitly, in origin order. high is the
// highest origin sequence of that origin the server holds when it sends the
// frame, so the client knows its lag without waiting for gossip.
// PULL_PROGRESS says "nothing more for now"; a following pull sends it
// whenever it catches up and then at least every heartbeat while idle.
// PULL_GAP says origin sequences from..to (inclusive) are lost to the
// client (deleted by retention before it pulled them): the client records
// the gap and moves on. PULL_TRIMMED ends a pull at a relay that cannot
// serve from the requested point (see ErrTrimmed). Errors end the stream
// with an ERROR frame (quic.Code).
//
// Version 2, a session: the OPEN body is a SessionOpen, and one QUIC stream
// carries any number of pulls ("follows"), each named by an id the client
// picks, so a hub's per-connection stream limit does not bound how many
// origin shards a peer can follow. Client frames:
//
//	PULL_FOLLOW   0x34  Follow: uvarint id, the pull, uvarint credit
//	PULL_CREDIT   0x35  uvarint id, uvarint bytes
//	PULL_CANCEL   0x36  uvarint id
//
// The server sends the version 1 frames above with the follow's uvarint id
// before their payload, and ends a follow with
//
//	PULL_END      0x37  uvarint id, uvarint code, string message
//
// (code 0: the pull is complete; otherwise a quic.Code refusing or ending
// it). Each follow has credit: record batch bytes the client can take. The
// server sends PULL_RECORDS for a follow only while its credit is positive
// and subtracts the batch's size (a batch may overdraw it); PULL_CREDIT
// adds to it. The client grants credit as it consumes, so one busy follow
// holds at most its window in flight and never blocks the others, whose
// frames interleave on the stream. Other frames need no credit. Ids are
// strictly increasing within a session and never reused; frames for a
// follow the client cancelled are dropped. An ERROR frame ends the whole
// session.
const (
	FramePullRecords  quic.FrameType = 0x30
	FramePullProgress quic.FrameType = 0x31
	FramePullGap      quic.FrameType = 0x32
	FramePullTrimmed  quic.FrameType = 0x33
	FramePullFollow   quic.FrameType = 0x34
	FramePullCredit   quic.FrameType = 0x35
	FramePullCancel   quic.FrameType = 0x36
	FramePullEnd      quic.FrameType = 0x37
	// FramePullReport (server → client, uvarint id) asks the client to
	// report what it applies of the follow: sent, to a follow with the
	// report flag, by a server that counts copies (issue 16). A server from
	// before it ignores the flag and never asks, so a client never sends
	// PULL_APPLIED to a server that would refuse it.
	FramePullReport quic.FrameType = 0x38
	// FramePullApplied (client → server, uvarint id, uvarint applied):
	// every origin sequence up to applied is appended (with the store's
	// sync) here, or lost to us by a gap the server announced.
	FramePullApplied quic.FrameType = 0x39
)

const (
	pullVersion1    = 1
	sessionVersion2 = 2
)

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
	// Incarnation is the incarnation of the origin's stream After counts
	// in (hex; "" when the requester knows none): a server holding another
	// incarnation of the origin refuses the pull instead of serving records
	// under positions that mean something else (docs/federation.md,
	// "Incarnations").
	Incarnation string
	// Until, if not 0, ends a pull that does not follow once the records up
	// to this origin sequence were sent: a repair fetches one damaged range
	// (repair.go). A server from before it ignores it and sends the rest.
	Until uint64
	// Lineage says the requester starts an origin shard only after its
	// parents (a reshard's closed shards) are applied: a server refuses a
	// follow of a child shard to a requester without it (docs/federation.md,
	// "Resharded origins").
	Lineage bool
	// Report says the requester reports what it applies (PULL_APPLIED)
	// when the server asks (PULL_REPORT). Sessions only.
	Report bool
}

// Pull open flags (the trailing uvarint after until).
const (
	pullFlagLineage = 1 << 0
	pullFlagReport  = 1 << 1
)

func pullFlags(lineage, report bool) uint64 {
	var f uint64
	if lineage {
		f |= pullFlagLineage
	}
	if report {
		f |= pullFlagReport
	}
	return f
}

// Append encodes r (quic.Appender):
//
//	byte version (1), string requester, string stream, string origin hub,
//	uvarint origin shard, uvarint after, byte flags (1 = follow),
//	uvarint max batch bytes, string incarnation (optional: absent in
//	requests from hubs before incarnations, read as ""), uvarint until
//	(optional, after the incarnation: absent is 0), uvarint flags
//	(optional, after until: absent is 0; bit 0 lineage, other bits are
//	ignored)
func (r *PullRequest) Append(dst []byte) []byte {
	dst = append(dst, pullVersion1)
	dst = appendString(dst, r.Requester)
	dst = appendPull(dst, r.Stream, r.Origin, r.After, r.Follow, r.MaxBatchBytes)
	dst = appendString(dst, r.Incarnation)
	return appendUntilFlags(dst, r.Until, pullFlags(r.Lineage, r.Report))
}

// Decode parses an untrusted PullRequest.
func (r *PullRequest) Decode(p []byte) error {
	d := newReader(p, "pull request")
	if v := d.Byte(); v != pullVersion1 && d.Err == nil {
		d.Fail("version %d", v)
	}
	r.Requester = d.String(quic.MaxNameLength)
	readPull(&d, &r.Stream, &r.Origin, &r.After, &r.Follow, &r.MaxBatchBytes)
	r.Incarnation = readIncarnation(&d)
	r.Until = readUntil(&d)
	flags := readFlags(&d)
	r.Lineage, r.Report = flags&pullFlagLineage != 0, flags&pullFlagReport != 0
	if d.Err == nil && (r.Requester == "" || r.Stream == "" || r.Origin.Hub == "") {
		d.Fail("empty name")
	}
	return d.Err
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
	d := newReader(p, "PULL_RECORDS")
	f.High = d.Uvarint()
	if d.Err == nil && len(d.Buf) == 0 {
		d.Fail("no batch")
	}
	f.Batch, d.Buf = d.Buf, nil
	return d.Err
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
	d := newReader(p, "PULL_PROGRESS")
	f.High = d.Uvarint()
	f.Time = d.Varint()
	return d.Err
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
	d := newReader(p, "PULL_GAP")
	f.From = d.Uvarint()
	f.To = d.Uvarint()
	f.Reason = d.String(quic.MaxMessageLength)
	if d.Err == nil && (f.From == 0 || f.To < f.From) {
		d.Fail("range %d..%d", f.From, f.To)
	}
	return d.Err
}

// SessionOpen is the OPEN body of a replication session (version 2).
type SessionOpen struct {
	// Requester is the asking hub's name: the server checks each stream's
	// policy against that hub's tags.
	Requester string
}

// Append encodes o (quic.Appender): byte version (2), string requester.
func (o *SessionOpen) Append(dst []byte) []byte {
	dst = append(dst, sessionVersion2)
	return appendString(dst, o.Requester)
}

// Decode parses an untrusted SessionOpen.
func (o *SessionOpen) Decode(p []byte) error {
	d := newReader(p, "session open")
	if v := d.Byte(); v != sessionVersion2 && d.Err == nil {
		d.Fail("version %d", v)
	}
	o.Requester = d.String(quic.MaxNameLength)
	if d.Err == nil && o.Requester == "" {
		d.Fail("empty requester")
	}
	return d.Err
}

// Follow is a PULL_FOLLOW payload: one pull within a session.
type Follow struct {
	ID     uint64
	Stream string
	Origin store.OriginKey
	After  uint64
	// Follow keeps the pull open after catching up.
	Follow        bool
	MaxBatchBytes uint64
	// Credit is the record batch bytes the client can take at first.
	Credit uint64
	// Incarnation, Until and Lineage: as in PullRequest.
	Incarnation string
	Until       uint64
	Lineage     bool
	Report      bool
}

// Append encodes f (quic.Appender):
//
//	uvarint id, string stream, string origin hub, uvarint origin shard,
//	uvarint after, byte flags (1 = follow), uvarint max batch bytes,
//	uvarint credit, string incarnation (optional, as in PullRequest),
//	uvarint until and uvarint flags (optional, as in PullRequest)
func (f *Follow) Append(dst []byte) []byte {
	dst = binary.AppendUvarint(dst, f.ID)
	dst = appendPull(dst, f.Stream, f.Origin, f.After, f.Follow, f.MaxBatchBytes)
	dst = binary.AppendUvarint(dst, f.Credit)
	dst = appendString(dst, f.Incarnation)
	return appendUntilFlags(dst, f.Until, pullFlags(f.Lineage, f.Report))
}

// Decode parses an untrusted PULL_FOLLOW payload.
func (f *Follow) Decode(p []byte) error {
	d := newReader(p, "PULL_FOLLOW")
	f.ID = d.Uvarint()
	readPull(&d, &f.Stream, &f.Origin, &f.After, &f.Follow, &f.MaxBatchBytes)
	f.Credit = d.Uvarint()
	f.Incarnation = readIncarnation(&d)
	f.Until = readUntil(&d)
	flags := readFlags(&d)
	f.Lineage, f.Report = flags&pullFlagLineage != 0, flags&pullFlagReport != 0
	if d.Err == nil && (f.ID == 0 || f.Stream == "" || f.Origin.Hub == "") {
		d.Fail("zero id or empty name")
	}
	return d.Err
}

// request is the pull f asks for, on behalf of requester.
func (f *Follow) request(requester string) PullRequest {
	return PullRequest{Requester: requester, Stream: f.Stream, Origin: f.Origin, After: f.After,
		Follow: f.Follow, MaxBatchBytes: f.MaxBatchBytes, Incarnation: f.Incarnation, Until: f.Until, Lineage: f.Lineage, Report: f.Report}
}

// FollowCredit is a PULL_CREDIT payload.
type FollowCredit struct {
	ID    uint64
	Bytes uint64
}

// Append implements quic.Appender.
func (f *FollowCredit) Append(dst []byte) []byte {
	dst = binary.AppendUvarint(dst, f.ID)
	return binary.AppendUvarint(dst, f.Bytes)
}

// Decode parses a PULL_CREDIT payload.
func (f *FollowCredit) Decode(p []byte) error {
	d := newReader(p, "PULL_CREDIT")
	f.ID = d.Uvarint()
	f.Bytes = d.Uvarint()
	if d.Err == nil && (f.ID == 0 || f.Bytes == 0) {
		d.Fail("zero id or credit")
	}
	return d.Err
}

// FollowApplied is a PULL_APPLIED payload.
type FollowApplied struct {
	ID      uint64
	Applied uint64
}

// Append implements quic.Appender.
func (f *FollowApplied) Append(dst []byte) []byte {
	dst = binary.AppendUvarint(dst, f.ID)
	return binary.AppendUvarint(dst, f.Applied)
}

// Decode parses a PULL_APPLIED payload.
func (f *FollowApplied) Decode(p []byte) error {
	d := newReader(p, "PULL_APPLIED")
	f.ID = d.Uvarint()
	f.Applied = d.Uvarint()
	if d.Err == nil && f.ID == 0 {
		d.Fail("zero id")
	}
	return d.Err
}

// FollowCancel is a PULL_CANCEL payload.
type FollowCancel struct{ ID uint64 }

// Append implements quic.Appender.
func (f *FollowCancel) Append(dst []byte) []byte { return binary.AppendUvarint(dst, f.ID) }

// Decode parses a PULL_CANCEL payload.
func (f *FollowCancel) Decode(p []byte) error {
	d := newReader(p, "PULL_CANCEL")
	f.ID = d.Uvarint()
	if d.Err == nil && f.ID == 0 {
		d.Fail("zero id")
	}
	return d.Err
}

// FollowEnd is a PULL_END payload: the follow is over, complete (CodeOK)
// or refused or failed (any other code).
type FollowEnd struct {
	ID      uint64
	Code    quic.Code
	Message string
	// Closed (with CodeOK) says the origin shard is closed by a reshard and
	// every record of it up to ClosedEnd, its last sequence, was sent: the
	// puller raises its watermark to ClosedEnd (origin sequences skip the
	// records the shard replicated from others, so the last one sent may
	// be below it).
	Closed    bool
	ClosedEnd uint64
}

// Append implements quic.Appender:
//
//	uvarint id, uvarint code, string message, uvarint closed_end
//	(optional: present only when the origin shard is closed)
func (f *FollowEnd) Append(dst []byte) []byte {
	dst = binary.AppendUvarint(dst, f.ID)
	dst = binary.AppendUvarint(dst, uint64(f.Code))
	dst = appendString(dst, f.Message)
	if f.Closed {
		dst = binary.AppendUvarint(dst, f.ClosedEnd)
	}
	return dst
}

// Decode parses a PULL_END payload.
func (f *FollowEnd) Decode(p []byte) error {
	d := newReader(p, "PULL_END")
	f.ID = d.Uvarint()
	f.Code = quic.Code(d.Uvarint())
	f.Message = d.String(quic.MaxMessageLength)
	f.Closed, f.ClosedEnd = false, 0
	if d.Err == nil && len(d.Buf) > 0 {
		f.Closed, f.ClosedEnd = true, d.Uvarint()
	}
	if d.Err == nil && f.ID == 0 {
		d.Fail("zero id")
	}
	if d.Err == nil && f.Closed && f.Code != quic.CodeOK {
		d.Fail("closed_end with code %d", f.Code)
	}
	return d.Err
}

// Err is the follow's outcome as the client sees it: io.EOF when complete,
// else a *quic.Error.
func (f *FollowEnd) Err() error {
	if f.Code == quic.CodeOK {
		return io.EOF
	}
	return &quic.Error{Code: f.Code, Message: f.Message}
}

// tagged prefixes a server frame's payload with its follow id.
type tagged struct {
	id uint64
	f  quic.Appender
}

func (t tagged) Append(dst []byte) []byte {
	dst = binary.AppendUvarint(dst, t.id)
	return t.f.Append(dst)
}

// sessionMsg is one server frame of a session.
type sessionMsg struct {
	ID  uint64
	Msg Msg
	// End is set for PULL_END.
	End *FollowEnd
}

// decodeSessionMsg parses a server frame of a session (not ERROR, which
// ends the whole session).
func decodeSessionMsg(t quic.FrameType, p []byte) (sessionMsg, error) {
	if t == FramePullEnd {
		var e FollowEnd
		if err := e.Decode(p); err != nil {
			return sessionMsg{}, err
		}
		return sessionMsg{ID: e.ID, End: &e}, nil
	}
	switch t {
	case FramePullRecords, FramePullProgress, FramePullGap, FramePullTrimmed, FramePullReport:
	default:
		return sessionMsg{}, fmt.Errorf("%w: %s in a replication session", quic.ErrUnexpectedFrame, frameName(t))
	}
	d := newReader(p, frameName(t))
	id := d.Uvarint()
	if d.Err == nil && id == 0 {
		d.Fail("zero id")
	}
	if d.Err != nil {
		return sessionMsg{}, d.Err
	}
	if t == FramePullReport {
		return sessionMsg{ID: id, Msg: Msg{Type: t}}, nil
	}
	m, err := decodeMsg(t, d.Buf)
	if err != nil {
		return sessionMsg{}, err
	}
	return sessionMsg{ID: id, Msg: m}, nil
}

// frameName names the replication frame types in messages.
func frameName(t quic.FrameType) string {
	switch t {
	case FramePullRecords:
		return "PULL_RECORDS"
	case FramePullProgress:
		return "PULL_PROGRESS"
	case FramePullGap:
		return "PULL_GAP"
	case FramePullTrimmed:
		return "PULL_TRIMMED"
	case FramePullFollow:
		return "PULL_FOLLOW"
	case FramePullCredit:
		return "PULL_CREDIT"
	case FramePullCancel:
		return "PULL_CANCEL"
	case FramePullEnd:
		return "PULL_END"
	case FramePullReport:
		return "PULL_REPORT"
	case FramePullApplied:
		return "PULL_APPLIED"
	}
	return t.String()
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// newReader returns a reader for a frame payload: every failure wraps
// quic.ErrMalformed and names the frame. Trailing bytes are ignored, as
// everywhere in the wire protocol (docs/protocol.md, "Versioning"): later
// versions may append fields.
// appendPull and readPull encode what a PULL and a PULL_FOLLOW share:
//
//	string stream, string origin hub, uvarint origin shard, uvarint after,
//	byte flags (1 = follow), uvarint max batch bytes
func appendPull(dst []byte, stream string, origin store.OriginKey, after uint64, follow bool, maxBatch uint64) []byte {
	dst = appendString(dst, stream)
	dst = appendString(dst, origin.Hub)
	dst = binary.AppendUvarint(dst, uint64(origin.Shard))
	dst = binary.AppendUvarint(dst, after)
	flags := byte(0)
	if follow {
		flags |= 1
	}
	dst = append(dst, flags)
	return binary.AppendUvarint(dst, maxBatch)
}

func readPull(d *wire.Reader, stream *string, origin *store.OriginKey, after *uint64, follow *bool, maxBatch *uint64) {
	*stream = d.String(quic.MaxNameLength)
	origin.Hub = d.String(quic.MaxNameLength)
	shard := d.Uvarint()
	if shard > 1<<32-1 {
		d.Fail("origin shard %d", shard)
	}
	origin.Shard = uint32(shard)
	*after = d.Uvarint()
	switch d.Byte() {
	case 0:
		*follow = false
	case 1:
		*follow = true
	default:
		d.Fail("unknown flags")
	}
	*maxBatch = d.Uvarint()
}

// maxIncarnationLen bounds an incarnation on the wire (32 hex digits today).
const maxIncarnationLen = 64

// readIncarnation reads the optional trailing incarnation of a pull: absent
// (a hub from before incarnations) is "".
func readIncarnation(d *wire.Reader) string {
	if d.Err != nil || len(d.Buf) == 0 {
		return ""
	}
	return d.String(maxIncarnationLen)
}

// appendUntilFlags writes a pull's optional upper bound and flags: until is
// omitted when 0 and no flag is set, the flags when none is set, so a pull
// without them encodes as before.
func appendUntilFlags(dst []byte, until, flags uint64) []byte {
	if until == 0 && flags == 0 {
		return dst
	}
	dst = binary.AppendUvarint(dst, until)
	if flags == 0 {
		return dst
	}
	return binary.AppendUvarint(dst, flags)
}

// readFlags reads the optional flags after until (absent is 0). Bits this
// version does not know are ignored: they are additions a server from
// before them must be able to ignore.
func readFlags(d *wire.Reader) uint64 {
	if d.Err != nil || len(d.Buf) == 0 {
		return 0
	}
	return d.Uvarint()
}

// readUntil reads the optional upper bound after the incarnation.
func readUntil(d *wire.Reader) uint64 {
	if d.Err != nil || len(d.Buf) == 0 {
		return 0
	}
	return d.Uvarint()
}

func newReader(p []byte, what string) wire.Reader {
	return wire.Reader{Buf: p, Sentinel: quic.ErrMalformed, What: what}
}

package quic

import (
	"encoding/binary"
	"fmt"
)

// ALPN is the TLS application protocol of wire protocol version 1. An
// incompatible revision gets a new ALPN; compatible ones add fields at the
// end of payloads and new frame types inside an operation.
const ALPN = "edgehub/1"

// Op names the operation a QUIC stream carries; it is the first field of the
// stream's OPEN frame.
type Op uint64

// Operations. Op codes are never reused.
const (
	OpInfo    Op = 0x01 // stream metadata: shard count and bounds
	OpProduce Op = 0x02 // a produce session
	OpConsume Op = 0x03 // a subscription
	// OpReplicate is reserved for federation pulls; its frames use types
	// 0x30-0x3f.
	OpReplicate Op = 0x04
	// OpGroup is reserved for consumer-group membership; its frames use
	// types 0x40-0x4f.
	OpGroup Op = 0x05
)

func (o Op) String() string {
	switch o {
	case OpInfo:
		return "info"
	case OpProduce:
		return "produce"
	case OpConsume:
		return "consume"
	case OpReplicate:
		return "replicate"
	case OpGroup:
		return "group"
	}
	return fmt.Sprintf("op_0x%02x", uint64(o))
}

// FrameType is the first byte of every frame.
type FrameType byte

// Frame types. 0x30-0x3f belong to OpReplicate, 0x40-0x4f to OpGroup,
// 0xf0-0xff are for experiments and never sent by released code.
const (
	FrameOpen         FrameType = 0x01
	FrameError        FrameType = 0x02
	FrameInfo         FrameType = 0x03
	FrameProduceReady FrameType = 0x10
	FrameBatch        FrameType = 0x11
	FrameAck          FrameType = 0x12
	FrameConsumeReady FrameType = 0x20
	FrameRecords      FrameType = 0x21
	FrameCredit       FrameType = 0x22
)

func (t FrameType) String() string {
	switch t {
	case FrameOpen:
		return "OPEN"
	case FrameError:
		return "ERROR"
	case FrameInfo:
		return "INFO"
	case FrameProduceReady:
		return "PRODUCE_READY"
	case FrameBatch:
		return "BATCH"
	case FrameAck:
		return "ACK"
	case FrameConsumeReady:
		return "CONSUME_READY"
	case FrameRecords:
		return "RECORDS"
	case FrameCredit:
		return "CREDIT"
	}
	if n := groupFrameName(t); n != "" { // group.go
		return n
	}
	if n := layoutFrameName(t); n != "" { // layout.go
		return n
	}
	return fmt.Sprintf("frame_0x%02x", byte(t))
}

// Field limits shared by both ends.
const (
	MaxTokenLength   = 4096
	MaxNameLength    = 255
	MaxMessageLength = 4096
	maxShards        = 1 << 16
)

// Open is the first frame of every stream, sent by the client.
type Open struct {
	Op Op
	// Token is a bearer token; empty when the client authenticates with its
	// TLS certificate or not at all.
	Token string
	// Body is the operation's request, encoded as that operation defines.
	Body []byte
}

func (f *Open) Append(dst []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(f.Op))
	dst = appendString(dst, f.Token)
	return appendBytes(dst, f.Body)
}

func (f *Open) Decode(p []byte) error {
	d := newDecoder(p, "OPEN")
	f.Op = Op(d.Uvarint())
	f.Token = d.String(MaxTokenLength)
	f.Body = d.Bytes(0)
	return d.done()
}

// AppendError encodes e as an ERROR frame payload.
func AppendError(dst []byte, e *Error) []byte {
	dst = binary.AppendUvarint(dst, uint64(e.Code))
	return appendString(dst, truncate(e.Message, MaxMessageLength))
}

// DecodeError decodes an ERROR frame payload.
func DecodeError(p []byte) (*Error, error) {
	d := newDecoder(p, "ERROR")
	e := &Error{Code: Code(d.Uvarint())}
	e.Message = d.String(MaxMessageLength)
	return e, d.done()
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// InfoRequest is the OPEN body of OpInfo.
type InfoRequest struct {
	Stream string
}

func (f *InfoRequest) Append(dst []byte) []byte { return appendString(dst, f.Stream) }

func (f *InfoRequest) Decode(p []byte) error {
	d := newDecoder(p, "INFO request")
	f.Stream = d.String(MaxNameLength)
	return d.done()
}

// ShardBounds is a shard's first live and last sequence (First > Last when
// the shard is empty).
type ShardBounds struct {
	First, Last uint64
}

// Info answers OpInfo.
type Info struct {
	Stream string
	Shards []ShardBounds
	// MaxFrameBytes is the largest frame the hub accepts.
	MaxFrameBytes uint64
	// Layout is the stream's layout (nil from a hub before resharding,
	// which ends INFO at MaxFrameBytes). Shards still lists every id ever
	// assigned, indexed by id, so clients that know nothing of layouts keep
	// working.
	Layout *Layout
}

func (f *Info) Append(dst []byte) []byte {
	dst = appendString(dst, f.Stream)
	dst = binary.AppendUvarint(dst, uint64(len(f.Shards)))
	for _, s := range f.Shards {
		dst = binary.AppendUvarint(dst, s.First)
		dst = binary.AppendUvarint(dst, s.Last)
	}
	dst = binary.AppendUvarint(dst, f.MaxFrameBytes)
	if f.Layout != nil {
		dst = f.Layout.Append(dst)
	}
	return dst
}

func (f *Info) Decode(p []byte) error {
	d := newDecoder(p, "INFO")
	f.Stream = d.String(MaxNameLength)
	n := d.Count(2)
	f.Shards = make([]ShardBounds, n)
	for i := range f.Shards {
		f.Shards[i] = ShardBounds{First: d.Uvarint(), Last: d.Uvarint()}
	}
	f.MaxFrameBytes = d.Uvarint()
	f.Layout = nil
	if d.Err == nil && len(d.Buf) > 0 { // absent from hubs before resharding
		f.Layout = &Layout{}
		f.Layout.decode(&d)
	}
	return d.done()
}

// ProduceFlags select produce-session modes.
type ProduceFlags byte

const (
	// ProduceDatagrams asks for a datagram session id: the client may then
	// send fire-and-forget batches as QUIC datagrams (no acks, may be lost).
	ProduceDatagrams ProduceFlags = 1 << 0
	// ProduceLineage says the client routes by the stream's layout: the hub
	// sends it LAYOUT frames, and does not check its batches' keys against
	// the shards' ranges (docs/resharding.md section 3).
	ProduceLineage ProduceFlags = 1 << 1
)

// ProduceOpen is the OPEN body of OpProduce.
type ProduceOpen struct {
	Stream string
	// ProducerID makes the session idempotent when not 0: each BATCH then
	// carries the producer's sequence for its shard. The same id may be used
	// by later sessions (after a reconnect) to retry unacknowledged batches.
	ProducerID uint64
	Flags      ProduceFlags
	// Copies asks that every batch of the session be held by this many
	// hubs (the receiving one included) before its ACK, when more than the
	// stream's copies; 0 (absent) is the stream's. A trailing field: a
	// hub that knows it echoes the copies it enforces in PRODUCE_READY.
	Copies uint32
}

func (f *ProduceOpen) Append(dst []byte) []byte {
	dst = appendString(dst, f.Stream)
	dst = binary.AppendUvarint(dst, f.ProducerID)
	dst = append(dst, byte(f.Flags))
	if f.Copies > 0 {
		dst = binary.AppendUvarint(dst, uint64(f.Copies))
	}
	return dst
}

func (f *ProduceOpen) Decode(p []byte) error {
	d := newDecoder(p, "PRODUCE open")
	f.Stream = d.String(MaxNameLength)
	f.ProducerID = d.Uvarint()
	f.Flags = ProduceFlags(d.Byte())
	f.Copies = 0
	if d.Err == nil && len(d.Buf) > 0 {
		f.Copies = d.Uint32("copies")
	}
	return d.done()
}

// ProduceReady is the hub's first frame on a produce stream.
type ProduceReady struct {
	Shards uint32
	// MaxBatchBytes bounds a BATCH frame's payload.
	MaxBatchBytes uint64
	// MaxInFlight is how many unacknowledged batches the hub reads ahead;
	// more are held back by QUIC flow control.
	MaxInFlight uint32
	// DatagramSession identifies the session in datagrams (0: none).
	DatagramSession uint64
	// MaxRecordBytes is the hub's store.max_record_bytes: the largest
	// edgehub.Record.PayloadSize it accepts. 0: not announced (a hub older than
	// the field, which appends it last).
	MaxRecordBytes uint64
	// LayoutVersion is the stream's layout version (0: never resharded, or a
	// hub before resharding).
	LayoutVersion uint64
	// Copies is how many hubs, this one included, hold each batch of the
	// session before its ACK (1: this hub's fsync). 0: a hub before copies,
	// which ignores a ProduceOpen.Copies: a client that asked for more must
	// not take its ACKs for them.
	Copies uint32
}

func (f *ProduceReady) Append(dst []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(f.Shards))
	dst = binary.AppendUvarint(dst, f.MaxBatchBytes)
	dst = binary.AppendUvarint(dst, uint64(f.MaxInFlight))
	dst = binary.AppendUvarint(dst, f.DatagramSession)
	dst = binary.AppendUvarint(dst, f.MaxRecordBytes)
	dst = binary.AppendUvarint(dst, f.LayoutVersion)
	return binary.AppendUvarint(dst, uint64(f.Copies))
}

func (f *ProduceReady) Decode(p []byte) error {
	d := newDecoder(p, "PRODUCE_READY")
	f.Shards = d.Uint32("shards")
	f.MaxBatchBytes = d.Uvarint()
	f.MaxInFlight = d.Uint32("max in flight")
	f.DatagramSession = d.Uvarint()
	f.MaxRecordBytes, f.LayoutVersion, f.Copies = 0, 0, 0
	if d.Err == nil && len(d.Buf) > 0 {
		f.MaxRecordBytes = d.Uvarint()
	}
	if d.Err == nil && len(d.Buf) > 0 { // absent from hubs before resharding
		f.LayoutVersion = d.Uvarint()
	}
	if d.Err == nil && len(d.Buf) > 0 { // absent from hubs before copies
		f.Copies = d.Uint32("copies")
	}
	return d.done()
}

// Codec of a BATCH's records. Only CodecNone exists in version 1; the field
// is there so compression can be added without a new frame type.
const CodecNone byte = 0

// Batch carries records to append.
type Batch struct {
	// ID is chosen by the client and echoed in the ACK.
	ID uint64
	// Shard is the target shard, or -1 to route each record by its key hash
	// (keyless records round-robin). Idempotent sessions need a shard. Any
	// int32 decodes: the hub refuses shards outside -1..shards-1 with
	// CodeInvalidArgument for the batch alone.
	Shard int32
	// ProducerSeq is the producer's sequence of the first record in
	// (ProducerID, Shard), consecutive across batches; ignored when the
	// session has no producer id.
	ProducerSeq uint64
	Codec       byte
	// Records is a record batch (the batch encoding of docs/protocol.md, CRC-32C).
	Records []byte
}

func (f *Batch) Append(dst []byte) []byte {
	dst = binary.AppendUvarint(dst, f.ID)
	dst = binary.AppendVarint(dst, int64(f.Shard))
	dst = binary.AppendUvarint(dst, f.ProducerSeq)
	dst = append(dst, f.Codec)
	return appendBytes(dst, f.Records)
}

func (f *Batch) Decode(p []byte) error {
	d := newDecoder(p, "BATCH")
	f.ID = d.Uvarint()
	f.Shard = d.shard()
	f.ProducerSeq = d.Uvarint()
	f.Codec = d.Byte()
	f.Records = d.Bytes(0)
	return d.done()
}

// Run is a range of consecutive sequences in one shard: where Count records
// of a batch went, starting at FirstSeq. FirstSeq 0 means they were not
// stored again because their origin had already been applied.
type Run struct {
	Shard    uint32
	FirstSeq uint64
	Count    uint32
}

// Ack answers one BATCH, in the order batches were received.
type Ack struct {
	ID      uint64
	Code    Code
	Message string
	// Duplicate: the batch had been stored before (idempotent retry); Runs
	// give its original positions.
	Duplicate bool
	// Runs cover the batch's records in order.
	Runs []Run
	// LayoutVersion is the layout the refusal was made under; sent only
	// with CodeShardClosed (a trailing field: 0 when absent).
	LayoutVersion uint64
	// Copies is how many hubs, this one included, held the batch when the
	// ACK was sent; sent (trailing, after the runs) by sessions whose
	// PRODUCE_READY announced copies above 1, with CodeOK and
	// CodeCopiesShort. 0 when absent.
	Copies uint32
}

func (f *Ack) Append(dst []byte) []byte {
	dst = binary.AppendUvarint(dst, f.ID)
	dst = binary.AppendUvarint(dst, uint64(f.Code))
	dst = appendString(dst, truncate(f.Message, MaxMessageLength))
	var flags byte
	if f.Duplicate {
		flags |= 1
	}
	dst = append(dst, flags)
	dst = binary.AppendUvarint(dst, uint64(len(f.Runs)))
	for _, r := range f.Runs {
		dst = binary.AppendUvarint(dst, uint64(r.Shard))
		dst = binary.AppendUvarint(dst, r.FirstSeq)
		dst = binary.AppendUvarint(dst, uint64(r.Count))
	}
	if f.Code == CodeShardClosed {
		dst = binary.AppendUvarint(dst, f.LayoutVersion)
	} else if f.Copies > 0 {
		dst = binary.AppendUvarint(dst, uint64(f.Copies))
	}
	return dst
}

func (f *Ack) Decode(p []byte) error {
	d := newDecoder(p, "ACK")
	f.ID = d.Uvarint()
	f.Code = Code(d.Uvarint())
	f.Message = d.String(MaxMessageLength)
	f.Duplicate = d.Byte()&1 != 0
	n := d.Count(3)
	f.Runs = make([]Run, n)
	for i := range f.Runs {
		f.Runs[i] = Run{Shard: d.Uint32("shard"), FirstSeq: d.Uvarint(), Count: d.Uint32("count")}
	}
	f.LayoutVersion, f.Copies = 0, 0
	if d.Err == nil && len(d.Buf) > 0 && f.Code == CodeShardClosed {
		f.LayoutVersion = d.Uvarint()
	} else if d.Err == nil && len(d.Buf) > 0 {
		f.Copies = d.Uint32("copies")
	}
	return d.done()
}

// Err returns the ACK's refusal as an *Error, or nil.
func (f *Ack) Err() error {
	if f.Code == CodeOK {
		return nil
	}
	return &Error{Code: f.Code, Message: f.Message}
}

// StartKind says where a subscription starts in each shard.
type StartKind byte

const (
	StartEarliest StartKind = 0 // the first live record
	StartLatest   StartKind = 1 // the next record to be committed
	StartSeq      StartKind = 2 // Start.Value is a sequence number
	StartTime     StartKind = 3 // Start.Value is unix nanoseconds of ingest time
)

// Start is a subscription's start position.
type Start struct {
	Kind  StartKind
	Value uint64
}

// Position is a shard and a sequence in it.
type Position struct {
	Shard uint32
	Seq   uint64
}

// ConsumeOpen is the OPEN body of OpConsume.
type ConsumeOpen struct {
	Stream string
	// Shards to subscribe to; empty means all.
	Shards []uint32
	// Start applies to every shard without an entry in Resume.
	Start Start
	// Resume gives per-shard positions, overriding Start (a reconnecting
	// client resumes after the last record it saw).
	Resume []Position
	// Credit is the initial byte credit; see Credit.
	Credit uint64
	// Flags select subscription modes (a trailing field: 0 when absent).
	Flags ConsumeFlags
}

// ConsumeFlags select subscription modes.
type ConsumeFlags uint64

const (
	// ConsumeLineage says the client understands layouts: the hub sends it
	// LAYOUT and SHARD_END frames (docs/resharding.md section 2).
	ConsumeLineage ConsumeFlags = 1 << 0
)

func (f *ConsumeOpen) Append(dst []byte) []byte {
	dst = appendString(dst, f.Stream)
	dst = binary.AppendUvarint(dst, uint64(len(f.Shards)))
	for _, s := range f.Shards {
		dst = binary.AppendUvarint(dst, uint64(s))
	}
	dst = append(dst, byte(f.Start.Kind))
	dst = binary.AppendUvarint(dst, f.Start.Value)
	dst = binary.AppendUvarint(dst, uint64(len(f.Resume)))
	for _, p := range f.Resume {
		dst = binary.AppendUvarint(dst, uint64(p.Shard))
		dst = binary.AppendUvarint(dst, p.Seq)
	}
	dst = binary.AppendUvarint(dst, f.Credit)
	return binary.AppendUvarint(dst, uint64(f.Flags))
}

func (f *ConsumeOpen) Decode(p []byte) error {
	d := newDecoder(p, "CONSUME open")
	f.Stream = d.String(MaxNameLength)
	n := d.Count(1)
	if n > maxShards {
		d.Fail("%d shards", n)
	}
	f.Shards = make([]uint32, 0, n)
	for i := 0; i < n && d.Err == nil; i++ {
		f.Shards = append(f.Shards, d.Uint32("shard"))
	}
	// An unknown start kind is the receiver's to refuse
	// (invalid_argument), not a malformed frame: a later revision may add
	// kinds.
	f.Start.Kind = StartKind(d.Byte())
	f.Start.Value = d.Uvarint()
	n = d.Count(2)
	if n > maxShards {
		d.Fail("%d resume positions", n)
	}
	f.Resume = make([]Position, 0, n)
	for i := 0; i < n && d.Err == nil; i++ {
		f.Resume = append(f.Resume, Position{Shard: d.Uint32("shard"), Seq: d.Uvarint()})
	}
	f.Credit = d.Uvarint()
	f.Flags = 0
	if d.Err == nil && len(d.Buf) > 0 { // absent from clients before resharding
		f.Flags = ConsumeFlags(d.Uvarint())
	}
	return d.done()
}

// Subscription is one subscribed shard in CONSUME_READY: the sequence the
// hub starts at and the shard's last sequence when the subscription opened
// (so a client can tell when it has caught up).
type Subscription struct {
	Shard uint32
	Start uint64
	Last  uint64
}

// ConsumeReady is the hub's first frame on a subscription.
type ConsumeReady struct {
	Shards uint32 // the stream's shard count
	Subs   []Subscription
	// Incarnation is the stream's incarnation (hex; "" from a hub before
	// incarnations): a client resuming a subscription with positions from
	// another incarnation knows they are void (the stream was deleted and
	// created again).
	Incarnation string
	// LayoutVersion is the stream's layout version (0: never resharded, or
	// a hub before resharding).
	LayoutVersion uint64
}

// maxIncarnationLen bounds CONSUME_READY's incarnation (32 hex digits
// today).
const maxIncarnationLen = 64

func (f *ConsumeReady) Append(dst []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(f.Shards))
	dst = binary.AppendUvarint(dst, uint64(len(f.Subs)))
	for _, s := range f.Subs {
		dst = binary.AppendUvarint(dst, uint64(s.Shard))
		dst = binary.AppendUvarint(dst, s.Start)
		dst = binary.AppendUvarint(dst, s.Last)
	}
	dst = appendString(dst, f.Incarnation)
	return binary.AppendUvarint(dst, f.LayoutVersion)
}

func (f *ConsumeReady) Decode(p []byte) error {
	d := newDecoder(p, "CONSUME_READY")
	f.Shards = d.Uint32("shards")
	n := d.Count(3)
	f.Subs = make([]Subscription, n)
	for i := range f.Subs {
		f.Subs[i] = Subscription{Shard: d.Uint32("shard"), Start: d.Uvarint(), Last: d.Uvarint()}
	}
	f.Incarnation, f.LayoutVersion = "", 0
	if d.Err == nil && len(d.Buf) > 0 { // absent from hubs before incarnations
		f.Incarnation = d.String(maxIncarnationLen)
	}
	if d.Err == nil && len(d.Buf) > 0 { // absent from hubs before resharding
		f.LayoutVersion = d.Uvarint()
	}
	return d.done()
}

// Records carries committed records of one shard: a stored chunk, sent as
// is. It may begin with records below the subscription's position, which
// the client skips.
type Records struct {
	Shard uint32
	Batch []byte
}

func (f *Records) Append(dst []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(f.Shard))
	return appendBytes(dst, f.Batch)
}

func (f *Records) Decode(p []byte) error {
	d := newDecoder(p, "RECORDS")
	f.Shard = d.Uint32("shard")
	f.Batch = d.Bytes(0)
	return d.done()
}

// RecordsPrefix is a RECORDS payload without its batch: with
// Stream.SendBytes the batch follows without being copied.
type RecordsPrefix struct {
	Shard    uint32
	BatchLen int
}

func (f RecordsPrefix) Append(dst []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(f.Shard))
	return binary.AppendUvarint(dst, uint64(f.BatchLen))
}

// Credit grants the hub Bytes more bytes of RECORDS payload. The hub sends
// RECORDS only while its credit is positive and may overshoot by one frame,
// so what is in flight is bounded by the credit plus one chunk.
type Credit struct {
	Bytes uint64
}

func (f *Credit) Append(dst []byte) []byte { return binary.AppendUvarint(dst, f.Bytes) }

func (f *Credit) Decode(p []byte) error {
	d := newDecoder(p, "CREDIT")
	f.Bytes = d.Uvarint()
	return d.done()
}

// Datagram types: the first byte of a QUIC datagram.
const DatagramProduce byte = 0x01

// Datagram is a fire-and-forget produce batch sent as a QUIC datagram. It
// names the produce session (which was authorised on its stream) that
// granted Session.
type Datagram struct {
	Session uint64
	Shard   int32
	Records []byte
}

func (f *Datagram) Append(dst []byte) []byte {
	dst = append(dst, DatagramProduce)
	dst = binary.AppendUvarint(dst, f.Session)
	dst = binary.AppendVarint(dst, int64(f.Shard))
	return append(dst, f.Records...)
}

func (f *Datagram) Decode(p []byte) error {
	d := newDecoder(p, "datagram")
	if t := d.Byte(); d.Err == nil && t != DatagramProduce {
		d.Fail("unknown datagram type 0x%02x", t)
	}
	f.Session = d.Uvarint()
	f.Shard = d.shard()
	f.Records = d.Buf
	return d.done()
}

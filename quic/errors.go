package quic

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
)

// Sentinel errors. Frame decoders wrap ErrMalformed; transports wrap the rest
// with the operation and the peer.
var (
	// ErrMalformed is wrapped by every frame decoding failure.
	ErrMalformed = errors.New("quic: malformed frame")
	// ErrFrameTooLarge: a frame header announced more than the frame limit.
	ErrFrameTooLarge = errors.New("quic: frame too large")
	// ErrClosed: the server, client or stream was closed.
	ErrClosed = errors.New("quic: closed")
	// ErrUnexpectedFrame: a valid frame of a type the operation does not
	// allow at this point.
	ErrUnexpectedFrame = errors.New("quic: unexpected frame")
	// ErrFrameTimeout: a frame was begun and not completed within the frame
	// timeout (a half-sent frame), or the peer's flow control did not take
	// a frame in that time.
	ErrFrameTimeout = errors.New("quic: frame timeout")
	// ErrOpenTimeout: a stream's OPEN frame did not arrive within the
	// handshake timeout.
	ErrOpenTimeout = errors.New("quic: no OPEN frame in time")
	// ErrBudget: the hub's memory budget cannot cover what an operation
	// needs now.
	ErrBudget = errors.New("quic: hub memory budget exhausted")
)

// Code is an application error code. It is carried in ERROR frames and ACK
// frames, and as the QUIC application error code when a stream or connection
// is reset. The values are part of the wire protocol (docs/protocol.md).
type Code uint64

// Error codes. New codes are only ever added; a client treats an unknown code
// like CodeInternal.
const (
	CodeOK               Code = 0x00 // success (ACK frames only)
	CodeProtocol         Code = 0x01 // malformed frame or violated sequencing
	CodeFrameTooLarge    Code = 0x02 // frame above the negotiated limit
	CodeUnauthenticated  Code = 0x03 // missing or unknown credentials
	CodePermissionDenied Code = 0x04 // authenticated, not allowed on this stream
	CodeNotFound         Code = 0x05 // no such stream
	CodeInvalidArgument  Code = 0x06 // bad shard, start position, record
	CodeSequenceGap      Code = 0x07 // idempotent producer skipped sequences
	CodeDuplicateTooOld  Code = 0x08 // retried batch older than the hub remembers
	CodeRecordTooLarge   Code = 0x09 // a record above the hub's limit
	CodeUnknownOp        Code = 0x0a // OPEN named an operation the hub lacks
	CodeLimit            Code = 0x0b // connection, stream or rate limit reached
	CodeUnavailable      Code = 0x0c // hub shutting down or stream closing; retry
	CodeInternal         Code = 0x0d // hub-side failure
	CodeCorrupt          Code = 0x0e // stored data failed verification
	CodeCanceled         Code = 0x0f // the peer gave up on the operation
	// CodeSequenceConflict refuses an idempotent batch whose producer
	// sequence the hub remembers for a batch with other records: nothing of
	// it was stored. 0x10 and 0x11 are the group codes (group.go).
	CodeSequenceConflict Code = 0x12
	// CodeStorageFull refuses a batch because the hub's disk is full:
	// nothing of it was stored. Appends succeed again once space is freed.
	CodeStorageFull Code = 0x13
	// CodeShardClosed refuses a batch naming a shard that a reshard closed:
	// nothing of it was stored; its records belong to the shard's children
	// (docs/resharding.md).
	CodeShardClosed Code = 0x14
	// CodeCopiesShort refuses to acknowledge a batch as held by the copies
	// it needed (a stream's copies, or the session's): the batch IS stored
	// on this hub and replicates later, but fewer hubs than required held
	// it within the stream's copies_timeout. Not retryable as is: a resend
	// stores the records again unless the producer is idempotent.
	CodeCopiesShort Code = 0x15
)

var codeNames = map[Code]string{
	CodeOK: "ok", CodeProtocol: "protocol_error", CodeFrameTooLarge: "frame_too_large",
	CodeUnauthenticated: "unauthenticated", CodePermissionDenied: "permission_denied",
	CodeNotFound: "not_found", CodeInvalidArgument: "invalid_argument",
	CodeSequenceGap: "sequence_gap", CodeDuplicateTooOld: "duplicate_too_old",
	CodeRecordTooLarge: "record_too_large", CodeUnknownOp: "unknown_op", CodeLimit: "limit",
	CodeUnavailable: "unavailable", CodeInternal: "internal", CodeCorrupt: "corrupt",
	CodeCanceled: "canceled", CodeSequenceConflict: "sequence_conflict", CodeStorageFull: "storage_full",
	CodeShardClosed: "shard_closed", CodeCopiesShort: "copies_short",
}

func (c Code) String() string {
	if s, ok := codeNames[c]; ok {
		return s
	}
	return fmt.Sprintf("code_0x%02x", uint64(c))
}

// Retryable reports whether an operation refused with c may succeed if it is
// retried unchanged (after a reconnect, for instance).
func (c Code) Retryable() bool {
	return c == CodeUnavailable || c == CodeLimit || c == CodeCanceled
}

// Error is a refusal that travels on the wire: a code and a human-readable
// message. Handlers return it to close a stream with that code; clients
// receive it from ERROR and ACK frames.
type Error struct {
	Code    Code
	Message string
}

func (e *Error) Error() string {
	if e.Message == "" {
		return "quic: " + e.Code.String()
	}
	return "quic: " + e.Code.String() + ": " + e.Message
}

// Is makes errors.Is(err, &Error{Code: c}) match any error with code c.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code && (t.Message == "" || t.Message == e.Message)
}

// Errorf returns an *Error with a formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// codeTable is the one mapping from this package's sentinels (and the
// standard library's) to the code a peer sees. The hub's table of the other
// packages' sentinels (hub/errors.go) takes these codes from ToError.
var codeTable = []struct {
	err  error
	code Code
}{
	{ErrFrameTooLarge, CodeFrameTooLarge},
	{ErrMalformed, CodeProtocol},
	{ErrUnexpectedFrame, CodeProtocol},
	{io.EOF, CodeProtocol},
	{io.ErrUnexpectedEOF, CodeProtocol},
	{ErrFrameTimeout, CodeLimit},
	{ErrOpenTimeout, CodeLimit},
	{ErrBudget, CodeLimit},
	{ErrClosed, CodeUnavailable},
	{context.Canceled, CodeUnavailable},
	{context.DeadlineExceeded, CodeUnavailable},
}

// ToError returns err as the *Error a peer should see: the first *Error in
// its chain, else the code of the first sentinel of codeTable it wraps, else
// CodeInternal; the message is err's text. It is total: nil gives nil and
// every other error an *Error.
func ToError(err error) *Error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	for _, m := range codeTable {
		if errors.Is(err, m.err) {
			return &Error{Code: m.code, Message: err.Error()}
		}
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return &Error{Code: CodeLimit, Message: err.Error()}
	}
	return &Error{Code: CodeInternal, Message: err.Error()}
}

// CodeOf returns the code of the first *Error in err's chain, CodeOK for nil,
// and CodeInternal for anything else.
func CodeOf(err error) Code {
	if err == nil {
		return CodeOK
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}

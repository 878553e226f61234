package quic

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	quicgo "github.com/quic-go/quic-go"
)

// Frame layout on a QUIC stream:
//
//	byte    type
//	uint32  payload length, big endian
//	bytes   payload
const frameHeaderLen = 5

// Appender is a frame payload that encodes itself.
type Appender interface {
	Append(dst []byte) []byte
}

// Decoder is a frame payload that decodes itself from an untrusted buffer.
type Decoder interface {
	Decode(p []byte) error
}

// RawPayload is an already-encoded payload.
type RawPayload []byte

func (p RawPayload) Append(dst []byte) []byte { return append(dst, p...) }

// Stream is one operation's bidirectional QUIC stream, read and written in
// frames. One goroutine may read while others write: writes are serialised.
type Stream struct {
	qs       *quicgo.Stream
	r        *bufio.Reader
	maxFrame int

	wmu  sync.Mutex // serialises frame writes; guards wbuf
	wbuf []byte

	closeOnce sync.Once
}

func newStream(qs *quicgo.Stream, maxFrame int) *Stream {
	return &Stream{qs: qs, r: bufio.NewReaderSize(qs, 64<<10), maxFrame: maxFrame}
}

// Context is done when the stream's send side is closed or reset, or the
// connection ends.
func (s *Stream) Context() context.Context { return s.qs.Context() }

// ID returns the QUIC stream id.
func (s *Stream) ID() int64 { return int64(s.qs.StreamID()) }

// MaxFrameBytes is the largest payload this end accepts.
func (s *Stream) MaxFrameBytes() int { return s.maxFrame }

// ReadFrame reads the next frame. The payload is freshly allocated and owned
// by the caller. At the peer's clean end of stream it returns io.EOF; a frame
// above the limit returns an error wrapping ErrFrameTooLarge (the caller
// should Fail the stream with CodeFrameTooLarge); a stream reset by the peer
// returns an *Error with the peer's code.
func (s *Stream) ReadFrame() (FrameType, []byte, error) {
	t, p, err := readFrame(s.r, s.maxFrame)
	if err != nil && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrFrameTooLarge) {
		err = s.mapErr(err)
	}
	return t, p, err
}

// readFrame reads one frame from r, refusing payloads above max.
func readFrame(r io.Reader, max int) (FrameType, []byte, error) {
	var hdr [frameHeaderLen]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, nil, fmt.Errorf("%w: truncated frame header", ErrMalformed)
		}
		return 0, nil, err
	}
	t := FrameType(hdr[0])
	n := binary.BigEndian.Uint32(hdr[1:])
	if uint64(n) > uint64(max) {
		return t, nil, fmt.Errorf("%w: %s frame of %d bytes (max %d)", ErrFrameTooLarge, t, n, max)
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(r, p); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return t, nil, fmt.Errorf("%w: truncated %s frame", ErrMalformed, t)
		}
		return t, nil, err
	}
	return t, p, nil
}

// AppendFrame appends a whole frame (header and payload) to dst.
func AppendFrame(dst []byte, t FrameType, f Appender) []byte {
	start := len(dst)
	dst = append(dst, byte(t), 0, 0, 0, 0)
	dst = f.Append(dst)
	binary.BigEndian.PutUint32(dst[start+1:], uint32(len(dst)-start-frameHeaderLen))
	return dst
}

// Expect reads the next frame, which must be of type t, into f. An ERROR
// frame is returned as its *Error.
func (s *Stream) Expect(t FrameType, f Decoder) error {
	got, p, err := s.ReadFrame()
	if err != nil {
		return err
	}
	switch {
	case got == t:
		return f.Decode(p)
	case got == FrameError:
		e, err := DecodeError(p)
		if err != nil {
			return err
		}
		return e
	}
	return fmt.Errorf("%w: %s, want %s", ErrUnexpectedFrame, got, t)
}

// Send writes one frame. It blocks while QUIC flow control holds the stream
// back, which is how a slow reader pushes back on its peer.
func (s *Stream) Send(t FrameType, f Appender) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	b := append(s.wbuf[:0], byte(t), 0, 0, 0, 0)
	b = f.Append(b)
	n := len(b) - frameHeaderLen
	if n > 1<<32-1 {
		return fmt.Errorf("%w: %s frame of %d bytes", ErrFrameTooLarge, t, n)
	}
	binary.BigEndian.PutUint32(b[1:], uint32(n))
	_, err := s.qs.Write(b)
	if cap(b) <= 1<<20 {
		s.wbuf = b[:0] // keep a modest buffer for the next frame
	} else {
		s.wbuf = nil
	}
	if err != nil {
		return s.mapErr(err)
	}
	return nil
}

// SetDeadline bounds reads and writes; the zero time removes the bound.
func (s *Stream) SetDeadline(t time.Time) error { return s.qs.SetDeadline(t) }

// SetReadDeadline bounds reads.
func (s *Stream) SetReadDeadline(t time.Time) error { return s.qs.SetReadDeadline(t) }

// CloseWrite ends the send side cleanly (FIN) after what was written.
func (s *Stream) CloseWrite() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.qs.Close()
}

// Fail refuses the operation: it sends an ERROR frame carrying err's code
// (CodeInternal if err is not an *Error) and message, ends the send side,
// and stops reading with the same code so the peer's writes fail fast.
// Fail is safe to call more than once; later calls do nothing.
func (s *Stream) Fail(err error) {
	s.closeOnce.Do(func() {
		var e *Error
		if !errors.As(err, &e) {
			e = &Error{Code: CodeInternal, Message: err.Error()}
		}
		// The ERROR frame is best effort: a blocked or reset stream must not
		// hold the caller, so bound the write.
		s.qs.SetWriteDeadline(time.Now().Add(time.Second))
		if s.Send(FrameError, RawPayload(AppendError(nil, e))) == nil {
			s.CloseWrite()
		} else {
			s.qs.CancelWrite(quicgo.StreamErrorCode(e.Code))
		}
		s.qs.CancelRead(quicgo.StreamErrorCode(e.Code))
	})
}

// Cancel abandons the stream in both directions with code.
func (s *Stream) Cancel(code Code) {
	s.closeOnce.Do(func() {
		s.qs.CancelWrite(quicgo.StreamErrorCode(code))
		s.qs.CancelRead(quicgo.StreamErrorCode(code))
	})
}

// Close ends the stream cleanly: FIN on the send side, and the receive side
// is abandoned (the peer learns with CodeCanceled if it still writes).
func (s *Stream) Close() error {
	var err error
	s.closeOnce.Do(func() {
		err = s.CloseWrite()
		s.qs.CancelRead(quicgo.StreamErrorCode(CodeCanceled))
	})
	return err
}

// mapErr turns quic-go's stream and connection errors into *Error (with the
// peer's application code) or ErrClosed.
func (s *Stream) mapErr(err error) error {
	return mapQUICErr(err)
}

func mapQUICErr(err error) error {
	if err == nil || errors.Is(err, io.EOF) {
		return err
	}
	var se *quicgo.StreamError
	if errors.As(err, &se) {
		return &Error{Code: Code(se.ErrorCode), Message: "stream reset by peer"}
	}
	var ae *quicgo.ApplicationError
	if errors.As(err, &ae) {
		return fmt.Errorf("%w: connection closed: %w", ErrClosed, &Error{Code: Code(ae.ErrorCode), Message: ae.ErrorMessage})
	}
	var ie *quicgo.IdleTimeoutError
	if errors.As(err, &ie) {
		return fmt.Errorf("%w: idle timeout: %w", ErrClosed, err)
	}
	return err
}

// IsHandshakeFailure reports whether err is a TLS failure (a certificate
// refused or missing, no common ALPN or version): retrying will not help.
func IsHandshakeFailure(err error) bool {
	var te *quicgo.TransportError
	if errors.As(err, &te) && te.ErrorCode.IsCryptoError() {
		return true
	}
	return false
}

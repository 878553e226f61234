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
	r        *bufio.Reader // created at the first read after OPEN
	maxFrame int
	// frameTimeout bounds how long a frame may take once it has begun: the
	// rest of a frame whose first byte arrived, and a frame written to a
	// peer whose flow control does not take it. 0: no bound.
	frameTimeout time.Duration
	rdeadline    time.Time // the caller's read deadline; written by the reader only

	// dlMu serialises setting qs's read deadline between the reader and
	// StopReading, so that a frame's deadline never undoes a stop.
	dlMu    sync.Mutex
	stopped bool // StopReading was called: every read fails at once

	wmu     sync.Mutex // serialises frame writes; guards wbuf and wbroken
	wbuf    []byte
	wbroken bool // a write failed, maybe mid-frame: nothing more may follow

	closeOnce sync.Once
}

// Stream buffers. The read buffer exists only once a stream has passed its
// OPEN frame, and is small: large payloads are read into their own buffer,
// bypassing it. A payload buffer starts at most at growFrom bytes and grows
// as bytes arrive, so a length prefix alone never makes a reader allocate.
const (
	readBufBytes = 8 << 10
	growFrom     = 64 << 10
	openGrowFrom = 1 << 10
	keepWriteBuf = 64 << 10
)

// MaxOpenBytes bounds the OPEN frame's payload. It is read before the
// client is authenticated, so it is small: a token, and a request listing
// every shard of the largest stream with a resume position each fits.
const MaxOpenBytes = 16 << 10

func newStream(qs *quicgo.Stream, maxFrame int, frameTimeout time.Duration) *Stream {
	return &Stream{qs: qs, maxFrame: maxFrame, frameTimeout: frameTimeout}
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
// should Fail the stream with CodeFrameTooLarge); a frame not completed
// within the frame timeout, ErrFrameTimeout; a stream reset by the peer
// returns an *Error with the peer's code.
func (s *Stream) ReadFrame() (FrameType, []byte, error) { return s.ReadFrameAdmit(nil) }

// ReadFrameAdmit is ReadFrame with admit called between a frame's header
// and its payload, with the frame's type and payload length: a handler
// takes its memory budget there, before a byte of the payload is read. An
// error from admit is returned as is; the payload is then unread and the
// stream must be failed. The frame timeout does not run during admit.
func (s *Stream) ReadFrameAdmit(admit func(t FrameType, n int) error) (FrameType, []byte, error) {
	if s.r == nil {
		s.r = bufio.NewReaderSize(s.qs, readBufBytes)
	}
	t, p, err := s.readFrame(s.r, s.maxFrame, growFrom, admit)
	if err != nil && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrFrameTooLarge) && !errors.Is(err, ErrFrameTimeout) {
		err = s.mapErr(err)
	}
	return t, p, err
}

// readOpen reads the stream's first frame without the read buffer: nothing
// is allocated for a client before it has shown who it is beyond the frame
// itself, which is at most max bytes and grows only as bytes arrive.
// charge, if not nil, is called with the payload length before it is read.
func (s *Stream) readOpen(max int, charge func(n int) error) (FrameType, []byte, error) {
	var admit func(FrameType, int) error
	if charge != nil {
		admit = func(_ FrameType, n int) error { return charge(n) }
	}
	t, p, err := s.readFrame(s.qs, max, openGrowFrom, admit)
	if err != nil && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrFrameTooLarge) && !errors.Is(err, ErrFrameTimeout) {
		err = s.mapErr(err)
	}
	return t, p, err
}

// readFrame reads one frame from r (s.qs or its buffer), under the frame
// timeout once its first byte is there.
func (s *Stream) readFrame(r io.Reader, max, grow int, admit func(FrameType, int) error) (FrameType, []byte, error) {
	var hdr [frameHeaderLen]byte
	if _, err := io.ReadFull(r, hdr[:1]); err != nil {
		return 0, nil, err // between frames: the caller's deadline only
	}
	t := FrameType(hdr[0])
	timed := s.frameTimeout > 0
	if br, ok := r.(*bufio.Reader); ok && br.Buffered() >= frameHeaderLen-1 {
		b, _ := br.Peek(frameHeaderLen - 1)
		timed = timed && br.Buffered() < frameHeaderLen-1+int(binary.BigEndian.Uint32(b))
	}
	if timed {
		s.startFrame()
		defer s.endFrame()
	}
	if _, err := io.ReadFull(r, hdr[1:]); err != nil {
		return t, nil, s.frameErr(t, "header", err)
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if uint64(n) > uint64(max) {
		return t, nil, fmt.Errorf("%w: %s frame of %d bytes (max %d)", ErrFrameTooLarge, t, n, max)
	}
	if admit != nil {
		if timed {
			s.endFrame()
		}
		if err := admit(t, int(n)); err != nil {
			return t, nil, err
		}
		if timed {
			s.startFrame()
		}
	}
	p, err := readPayload(r, int(n), grow)
	if err != nil {
		return t, nil, s.frameErr(t, "payload", err)
	}
	return t, p, nil
}

func (s *Stream) startFrame() {
	d := time.Now().Add(s.frameTimeout)
	if !s.rdeadline.IsZero() && s.rdeadline.Before(d) {
		d = s.rdeadline
	}
	s.setReadDeadline(d)
}

func (s *Stream) endFrame() { s.setReadDeadline(s.rdeadline) }

// setReadDeadline sets qs's read deadline unless StopReading was called.
func (s *Stream) setReadDeadline(t time.Time) error {
	s.dlMu.Lock()
	defer s.dlMu.Unlock()
	if s.stopped {
		return nil
	}
	return s.qs.SetReadDeadline(t)
}

// StopReading makes the read in progress and every later one fail with a
// timeout (a frame cut short is not returned), while writes go on: a
// graceful shutdown stops taking requests and still answers those it has.
// Unlike the other methods it may be called from any goroutine.
func (s *Stream) StopReading() {
	s.dlMu.Lock()
	defer s.dlMu.Unlock()
	s.stopped = true
	s.qs.SetReadDeadline(time.Unix(1, 0))
}

// frameErr names what a read inside a frame failed on.
func (s *Stream) frameErr(t FrameType, part string, err error) error {
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
		return fmt.Errorf("%w: truncated %s frame %s", ErrMalformed, t, part)
	case isTimeout(err) && s.frameTimeout > 0 && (s.rdeadline.IsZero() || time.Now().Before(s.rdeadline)):
		return fmt.Errorf("%w: %s frame incomplete after %s", ErrFrameTimeout, t, s.frameTimeout)
	}
	return err
}

// readPayload reads n bytes into a buffer that starts at most grow bytes
// long and doubles as bytes arrive.
func readPayload(r io.Reader, n, grow int) ([]byte, error) {
	p := make([]byte, 0, min(n, grow))
	for len(p) < n {
		if len(p) == cap(p) {
			q := make([]byte, len(p), min(2*cap(p), n))
			copy(q, p)
			p = q
		}
		m, err := r.Read(p[len(p):cap(p)])
		p = p[:len(p)+m]
		if err != nil && len(p) < n {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
	return p, nil
}

// readFrame reads one frame from r, refusing payloads above max, without a
// deadline (tests and fuzzing).
func readFrame(r io.Reader, max int) (FrameType, []byte, error) {
	return (&Stream{}).readFrame(r, max, growFrom, nil)
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
// back, which is how a slow reader pushes back on its peer; with a frame
// timeout, a frame the peer does not take in time fails with
// ErrFrameTimeout (the stream is then broken: Fail it).
func (s *Stream) Send(t FrameType, f Appender) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.send(t, f, nil, true)
}

// SendBytes writes one frame whose payload is f's encoding followed by
// tail, without copying tail: the way to send a large stored batch.
func (s *Stream) SendBytes(t FrameType, f Appender, tail []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.send(t, f, tail, true)
}

// send writes a frame; s.wmu is held.
func (s *Stream) send(t FrameType, f Appender, tail []byte, timed bool) error {
	b := append(s.wbuf[:0], byte(t), 0, 0, 0, 0)
	b = f.Append(b)
	n := len(b) - frameHeaderLen + len(tail)
	if n > 1<<32-1 {
		return fmt.Errorf("%w: %s frame of %d bytes", ErrFrameTooLarge, t, n)
	}
	binary.BigEndian.PutUint32(b[1:], uint32(n))
	if timed && s.frameTimeout > 0 {
		s.qs.SetWriteDeadline(time.Now().Add(s.frameTimeout))
		defer s.qs.SetWriteDeadline(time.Time{})
	}
	if s.wbroken {
		return fmt.Errorf("%w: stream broken by an earlier failed write", ErrClosed)
	}
	_, err := s.qs.Write(b)
	if err == nil && len(tail) > 0 {
		_, err = s.qs.Write(tail)
	}
	s.wbroken = err != nil
	if cap(b) <= keepWriteBuf {
		s.wbuf = b[:0] // keep a modest buffer for the next frame
	} else {
		s.wbuf = nil
	}
	if err != nil {
		if timed && s.frameTimeout > 0 && isTimeout(err) {
			return fmt.Errorf("%w: peer took no %s frame for %s", ErrFrameTimeout, t, s.frameTimeout)
		}
		return s.mapErr(err)
	}
	return nil
}

// SetDeadline bounds reads and writes; the zero time removes the bound.
func (s *Stream) SetDeadline(t time.Time) error {
	s.rdeadline = t
	if err := s.setReadDeadline(t); err != nil {
		return err
	}
	return s.qs.SetWriteDeadline(t)
}

// SetReadDeadline bounds reads. Call it from the reading goroutine.
func (s *Stream) SetReadDeadline(t time.Time) error {
	s.rdeadline = t
	return s.setReadDeadline(t)
}

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
		// Setting it before taking the lock also unblocks a writer stuck
		// on flow control.
		s.qs.SetWriteDeadline(time.Now().Add(time.Second))
		s.wmu.Lock()
		s.qs.SetWriteDeadline(time.Now().Add(time.Second))
		err := s.send(FrameError, RawPayload(AppendError(nil, e)), nil, false)
		s.wmu.Unlock()
		if err == nil {
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

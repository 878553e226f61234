package quic

import (
	"context"
	"crypto/tls"
	"testing"
	"time"
)

// TestStopAcceptingKeepsConnections: after StopAccepting a new connection
// is refused and an established one still serves operations (before, a
// closed listener ended Run and every connection).
func TestStopAcceptingKeepsConnections(t *testing.T) {
	h := startServer(t, nil)
	c := h.dial(t, nil)
	echo(t, c)
	h.srv.StopAccepting()
	// The refused handshake times out on the client's side: a short wait
	// bounds the test, and a dial that would succeed later is no less
	// wrong.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if c2, err := Dial(ctx, h.addr, ClientConfig{TLS: &tls.Config{RootCAs: h.pool}}); err == nil {
		c2.Close()
		t.Fatal("a connection was accepted after StopAccepting")
	}
	echo(t, c)
	echo(t, c)
}

// TestStopReading: StopReading from another goroutine ends the handler's
// blocked read, and the handler can still write its answer.
func TestStopReading(t *testing.T) {
	stop := make(chan struct{})
	h := startServer(t, nil)
	h.srv.Handle(OpConsume, HandlerFunc(func(ctx context.Context, req *Request) error {
		go func() {
			select {
			case <-stop:
				req.Stream.StopReading()
			case <-ctx.Done():
			}
		}()
		n := uint64(0)
		for {
			ft, p, err := req.Stream.ReadFrame()
			if err != nil {
				break
			}
			n++
			if err := req.Stream.Send(ft, RawPayload(p)); err != nil {
				return err
			}
		}
		return req.Stream.Send(FrameCredit, &Credit{Bytes: 1000 + n})
	}))
	c := h.dial(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := c.Open(ctx, OpConsume, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for i := range uint64(2) {
		if err := st.Send(FrameCredit, &Credit{Bytes: i}); err != nil {
			t.Fatal(err)
		}
		var cr Credit
		if err := st.Expect(FrameCredit, &cr); err != nil || cr.Bytes != i {
			t.Fatalf("echo %d: %+v %v", i, cr, err)
		}
	}
	close(stop) // the handler is blocked between frames
	var cr Credit
	if err := st.Expect(FrameCredit, &cr); err != nil || cr.Bytes != 1002 {
		t.Fatalf("answer after StopReading: %+v %v, want 1002", cr, err)
	}
}

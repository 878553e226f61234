package quic

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	quicgo "github.com/quic-go/quic-go"
)

type testHub struct {
	srv  *Server
	addr string
	pool *x509.CertPool
}

// startServer runs a server on loopback with a fresh self-signed certificate
// and an echo handler on OpInfo: it answers each frame with the same frame.
func startServer(t testing.TB, mod func(*Config)) *testHub {
	t.Helper()
	certPEM, keyPEM, err := SelfSigned([]string{"127.0.0.1", "localhost"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	cfg := DefaultConfig("127.0.0.1:0")
	cfg.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	cfg.MaxFrameBytes = 64 << 10
	cfg.HandshakeTimeout = 2 * time.Second
	if mod != nil {
		mod(&cfg)
	}
	srv, err := Listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv.Handle(OpInfo, HandlerFunc(func(ctx context.Context, req *Request) error {
		for {
			ft, p, err := req.Stream.ReadFrame()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return WireError(err)
			}
			if err := req.Stream.Send(ft, RawPayload(p)); err != nil {
				return err
			}
		}
	}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return &testHub{srv: srv, addr: srv.Addr().String(), pool: pool}
}

func (h *testHub) dial(t testing.TB, mod func(*ClientConfig)) *Client {
	t.Helper()
	cfg := ClientConfig{TLS: &tls.Config{RootCAs: h.pool}, EnableDatagrams: true}
	if mod != nil {
		mod(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, h.addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// echo checks that the connection still serves operations.
func echo(t testing.TB, c *Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := c.Open(ctx, OpInfo, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.Send(FrameCredit, &Credit{Bytes: 77}); err != nil {
		t.Fatal(err)
	}
	var cr Credit
	if err := st.Expect(FrameCredit, &cr); err != nil || cr.Bytes != 77 {
		t.Fatalf("echo: %+v %v", cr, err)
	}
}

func TestServerEcho(t *testing.T) {
	h := startServer(t, nil)
	c := h.dial(t, nil)
	echo(t, c)
	if v := c.ConnectionState().Version; v != tls.VersionTLS13 {
		t.Fatalf("TLS version %x, want 1.3", v)
	}
}

// rawStream opens a stream and writes raw bytes, bypassing the client's
// framing, to play a broken or hostile peer.
func rawStream(t testing.TB, c *Client, raw []byte, fin bool) *Stream {
	t.Helper()
	qs, err := c.qc.OpenStreamSync(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := qs.Write(raw); err != nil {
		t.Fatal(err)
	}
	if fin {
		qs.Close()
	}
	return newStream(qs, 1<<20, 0)
}

func TestServerRefusals(t *testing.T) {
	h := startServer(t, func(c *Config) {
		c.Authenticate = func(ctx context.Context, info AuthInfo) (Principal, error) {
			if info.Token == "good" || info.Token == "" {
				return Principal{Name: "dev", Method: "token"}, nil
			}
			return Principal{}, errors.New("unknown token")
		}
	})
	open := func(op Op, token string) []byte {
		return AppendFrame(nil, FrameOpen, &Open{Op: op, Token: token})
	}
	tests := []struct {
		name string
		raw  []byte
		fin  bool
		want Code
	}{
		{"unknown op", open(Op(0x77), ""), false, CodeUnknownOp},
		{"bad token", open(OpInfo, "bad"), false, CodeUnauthenticated},
		{"first frame not OPEN", AppendFrame(nil, FrameCredit, &Credit{}), false, CodeProtocol},
		{"malformed OPEN", AppendFrame(nil, FrameOpen, RawPayload{0xff}), false, CodeProtocol},
		{"truncated header", []byte{0x01, 0x00}, true, CodeProtocol},
		{"truncated payload", []byte{0x01, 0, 0, 0, 10, 1}, true, CodeProtocol},
		{"oversized OPEN", []byte{0x01, 0x00, 0x10, 0x00, 0x00}, false, CodeFrameTooLarge},
		{"oversized later frame", append(open(OpInfo, ""), 0x22, 0x7f, 0, 0, 0), false, CodeFrameTooLarge},
		{"truncated later frame", append(open(OpInfo, ""), 0x22, 0, 0, 0, 4, 1), true, CodeProtocol},
		// A stream is only announced once it carries data: send part of a header.
		{"no OPEN before timeout", []byte{0x01}, false, CodeLimit},
	}
	c := h.dial(t, nil)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := rawStream(t, c, tc.raw, tc.fin)
			defer st.Cancel(CodeCanceled)
			var e *Error
			for {
				ft, p, err := st.ReadFrame()
				if err != nil {
					t.Fatalf("read: %v", err)
				}
				if ft == FrameError {
					if e, err = DecodeError(p); err != nil {
						t.Fatal(err)
					}
					break
				}
			}
			if e.Code != tc.want || e.Message == "" {
				t.Fatalf("got %v, want code %s with a message", e, tc.want)
			}
			// Only that stream failed: the connection still works.
			echo(t, c)
		})
	}
	if st := h.srv.Stats(); st.AuthRefused != 1 || st.ProtocolErrors < 6 {
		t.Fatalf("stats %+v", st)
	}
}

func TestServerMaxConnections(t *testing.T) {
	h := startServer(t, func(c *Config) { c.MaxConnections = 2 })
	h.dial(t, nil)
	h.dial(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := Dial(ctx, h.addr, ClientConfig{TLS: &tls.Config{RootCAs: h.pool}})
	var te *quicgo.TransportError
	if !errors.As(err, &te) || te.ErrorCode != quicgo.ConnectionRefused {
		t.Fatalf("third dial: %v, want CONNECTION_REFUSED", err)
	}
	// The client may retransmit its Initial: each is refused.
	if h.srv.Stats().ConnsRefused < 1 {
		t.Fatalf("stats %+v", h.srv.Stats())
	}
}

func TestServerMaxStreamsPerConn(t *testing.T) {
	h := startServer(t, func(c *Config) { c.MaxStreamsPerConn = 2 })
	c := h.dial(t, nil)
	var streams []*Stream
	for range 2 {
		st, err := c.Open(context.Background(), OpInfo, nil)
		if err != nil {
			t.Fatal(err)
		}
		streams = append(streams, st)
	}
	// A third concurrent operation waits for stream credit.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := c.Open(ctx, OpInfo, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("third stream: %v, want to wait for credit", err)
	}
	streams[0].CloseWrite()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	if _, err := c.Open(ctx2, OpInfo, nil); err != nil {
		t.Fatalf("after one stream ended: %v", err)
	}
}

func TestServerBadTLS(t *testing.T) {
	h := startServer(t, nil)
	tests := []struct {
		name string
		conf *tls.Config
	}{
		{"untrusted certificate", &tls.Config{}},
		{"TLS 1.2 only", &tls.Config{RootCAs: h.pool, MaxVersion: tls.VersionTLS12}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c, err := Dial(ctx, h.addr, ClientConfig{TLS: tc.conf})
			if err == nil {
				c.Close()
				t.Fatal("dial succeeded")
			}
		})
	}
}

func TestServerDatagrams(t *testing.T) {
	h := startServer(t, nil)
	var mu sync.Mutex
	got := make(chan []byte, 4)
	h.srv.HandleDatagrams(func(c *Conn, b []byte) error {
		var d Datagram
		if err := d.Decode(b); err != nil {
			return WireError(err)
		}
		mu.Lock()
		defer mu.Unlock()
		got <- d.Records
		return nil
	})
	c := h.dial(t, nil)
	if err := c.SendDatagram((&Datagram{Session: 1, Records: []byte("hello")}).Append(nil)); err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-got:
		if string(b) != "hello" {
			t.Fatalf("got %q", b)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("datagram not delivered")
	}
	// A malformed datagram closes that connection only.
	other := h.dial(t, nil)
	if err := c.SendDatagram([]byte{0x7f}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("connection not closed after a malformed datagram")
	}
	if CodeOf(c.Err()) != CodeProtocol {
		t.Fatalf("close reason %v", c.Err())
	}
	echo(t, other)
}

func TestServerCloseIdempotent(t *testing.T) {
	h := startServer(t, nil)
	c := h.dial(t, nil)
	echo(t, c)
	if err := h.srv.Close(); err != nil {
		t.Fatal(err)
	}
	h.srv.Close()
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("client not told of shutdown")
	}
	if CodeOf(c.Err()) != CodeUnavailable {
		t.Fatalf("close reason %v", c.Err())
	}
}

func TestServerAddressValidation(t *testing.T) {
	tests := []struct {
		name  string
		above int
		retry bool
	}{
		{"always", 0, true},
		{"under load only", 64, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := startServer(t, func(c *Config) { c.ValidateAddressAbove = tc.above })
			echo(t, h.dial(t, nil)) // the Retry round trip is transparent
			if got := h.srv.Stats().AddressValidations > 0; got != tc.retry {
				t.Fatalf("address validated: %v, want %v", got, tc.retry)
			}
		})
	}
}

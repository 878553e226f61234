package udpproxy

import (
	"encoding/binary"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// sink is a UDP server that records the sequence numbers it receives and,
// if echo is set, sends each datagram back.
type sink struct {
	conn *net.UDPConn
	echo bool
	mu   sync.Mutex
	got  []uint32
	done chan struct{}
}

func newSink(t *testing.T, echo bool) *sink {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadBuffer(sockBuf)
	s := &sink{conn: c, echo: echo, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFromUDP(buf)
			if err != nil {
				return
			}
			s.mu.Lock()
			s.got = append(s.got, binary.BigEndian.Uint32(buf[:4]))
			s.mu.Unlock()
			if s.echo {
				c.WriteToUDP(buf[:n], from)
			}
		}
	}()
	t.Cleanup(func() { c.Close(); <-s.done })
	return s
}

func (s *sink) received() []uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]uint32(nil), s.got...)
}

func newProxy(t *testing.T, target string, imp Impairment) *Proxy {
	t.Helper()
	p, err := New("127.0.0.1:0", target, imp, 42)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// send sends datagrams 0..n-1 (4-byte sequence, padded) to addr from one
// socket, which it returns.
func send(t *testing.T, addr *net.UDPAddr, n int) *net.UDPConn {
	t.Helper()
	c, err := net.DialUDP("udp", nil, addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadBuffer(sockBuf)
	t.Cleanup(func() { c.Close() })
	for i := range n {
		b := make([]byte, 200)
		binary.BigEndian.PutUint32(b, uint32(i))
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
		if i%10 == 9 {
			time.Sleep(time.Millisecond) // let a busy machine's relay keep up
		}
	}
	return c
}

// waitCount polls until the sink holds want datagrams; then it checks that
// no more arrive for a moment.
func waitCount(t *testing.T, s *sink, want int) []uint32 {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for len(s.received()) < want {
		if time.Now().After(deadline) {
			t.Fatalf("sink got %d datagrams, want %d", len(s.received()), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	got := s.received()
	if len(got) != want {
		t.Fatalf("sink got %d datagrams, want exactly %d", len(got), want)
	}
	return got
}

func TestCleanLinkRelaysInOrderBothWays(t *testing.T) {
	s := newSink(t, true)
	p := newProxy(t, s.conn.LocalAddr().String(), Impairment{})
	c := send(t, p.Addr(), 300)
	got := waitCount(t, s, 300)
	for i, v := range got {
		if v != uint32(i) {
			t.Fatalf("datagram %d is %d: a clean link reordered", i, v)
		}
	}
	// The echoes come back through the client's own flow.
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 2048)
	for i := range 300 {
		n, err := c.Read(buf)
		if err != nil || n != 200 || binary.BigEndian.Uint32(buf) != uint32(i) {
			t.Fatalf("echo %d: %d bytes, %v", i, n, err)
		}
	}
	if st := p.Stats(); st.Received != 600 || st.Sent != 600 || st.Dropped != 0 || st.Flows != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestImpairedLink(t *testing.T) {
	s := newSink(t, false)
	p := newProxy(t, s.conn.LocalAddr().String(), Impairment{Delay: time.Millisecond, Jitter: time.Millisecond,
		Loss: 0.1, Duplicate: 0.1, Reorder: 0.1, ReorderBy: 20 * time.Millisecond})
	const n = 2000
	send(t, p.Addr(), n)
	deadline := time.Now().Add(20 * time.Second)
	for p.Stats().Received < n && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	st := p.Stats()
	if st.Received != n {
		t.Fatalf("proxy received %d of %d", st.Received, n)
	}
	got := waitCount(t, s, int(st.Sent))
	seen := map[uint32]int{}
	overtaken := 0
	var high uint32
	for i, v := range got {
		seen[v]++
		if i > 0 && v < high {
			overtaken++
		}
		high = max(high, v)
	}
	twice := 0
	for _, c := range seen {
		if c > 2 {
			t.Fatalf("a datagram arrived %d times", c)
		}
		if c == 2 {
			twice++
		}
	}
	lost := n - len(seen)
	// Each effect must be visible and agree with the proxy's counts.
	if int64(lost) != st.Dropped || int64(twice) != st.Duplicated || overtaken == 0 || st.Reordered == 0 {
		t.Fatalf("lost %d (proxy dropped %d), twice %d (proxy duplicated %d), overtaken %d, reordered %d",
			lost, st.Dropped, twice, st.Duplicated, overtaken, st.Reordered)
	}
	if lost < n/20 || twice < n/20 {
		t.Fatalf("loss %d and duplication %d far below 10%% of %d", lost, twice, n)
	}
}

func TestBlockAndUnblock(t *testing.T) {
	s := newSink(t, false)
	p := newProxy(t, s.conn.LocalAddr().String(), Impairment{Blocked: true})
	send(t, p.Addr(), 100)
	deadline := time.Now().Add(10 * time.Second)
	for p.Stats().Received < 100 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if st := p.Stats(); st.Received != 100 || st.Dropped != 100 || len(s.received()) != 0 {
		t.Fatalf("blocked link: %+v, sink got %d", st, len(s.received()))
	}
	if err := p.Set(Impairment{}); err != nil {
		t.Fatal(err)
	}
	send(t, p.Addr(), 100)
	waitCount(t, s, 100)
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		imp  Impairment
		ok   bool
	}{
		{name: "zero", ok: true},
		{name: "loss above one", imp: Impairment{Loss: 1.5}},
		{name: "negative duplicate", imp: Impairment{Duplicate: -0.1}},
		{name: "negative delay", imp: Impairment{Delay: -time.Second}},
		{name: "reorder without amount", imp: Impairment{Reorder: 0.1}},
		{name: "full", imp: Impairment{Delay: time.Millisecond, Loss: 1, Reorder: 0.5, ReorderBy: time.Millisecond}, ok: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.imp.Validate(); (err == nil) != tt.ok {
				t.Fatalf("Validate = %v, want ok=%v", err, tt.ok)
			}
			p, err := New("127.0.0.1:0", "127.0.0.1:9", tt.imp, 1)
			if err == nil {
				p.Close()
			}
			if (err == nil) != tt.ok {
				t.Fatalf("New = %v, want ok=%v", err, tt.ok)
			}
		})
	}
	// Close is idempotent.
	p, err := New("127.0.0.1:0", "127.0.0.1:9", Impairment{}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

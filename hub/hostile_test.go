package hub

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/internal/testutil"
	"github.com/edgehub/edgehub/quic"
	"github.com/edgehub/edgehub/sdk"
)

// hostileScale sizes runHostileClients: the bounded test runs with every
// attack at a small scale, the chaos test (build tag chaos) at a large one.
type hostileScale struct {
	unreadSubs  int // subscriptions that grant credit and never read
	handshakes  int // handshakes opened and abandoned, and refused
	badStreams  int // streams of each malformed or oversized kind
	halfFrames  int // streams that stop in the middle of a frame
	authStreams int // unauthenticated and unauthorised requests
	replays     int // replays of a captured 0-RTT first flight
	records     int // what the well-behaved producer sends
	maxHWMKiB   int64
}

const hostileToken, hostileReader = "writer-token-0123456789", "reader-token-0123456789"

// runHostileClients runs `hub serve` as a child process with a
// well-behaved producer and consumer running throughout, and attacks it
// with every hostile client of issue 8's chaos item 8 at once. It checks
// that the good pair is served throughout (every record acknowledged and
// delivered once, in order), that each attack is refused with its code,
// and that the hub's peak RSS stays bounded, and reports that peak.
func runHostileClients(t *testing.T, sc hostileScale) {
	p := startHubProc(t, fmt.Sprintf(`
[limits]
memory_budget = "64MiB"
max_frame_bytes = "4MiB"
frame_timeout = "2s"
handshake_timeout = "2s"

[[auth.token]]
name = "writer"
token = %q
produce = ["good", "bulk"]
consume = ["good", "bulk"]

[[auth.token]]
name = "reader"
token = %q
consume = ["*"]

[[stream]]
name = "good"
shards = 2

[[stream]]
name = "bulk"
shards = 1
`, hostileToken, hostileReader))
	ctx := testCtx(t)
	writer := func(o *sdk.Options) { o.Token = hostileToken }
	baseRSS := p.statusKB(t, "VmRSS")

	// A backlog for the unread subscriptions to be offered: 8 MiB.
	bulk, err := p.client(t, writer).Producer(ctx, "bulk", sdk.ProducerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	val := bytes.Repeat([]byte("b"), 1000)
	for range 8 << 10 {
		if err := bulk.SendAsync(ctx, sdk.Record{Value: val}, func(_ sdk.Position, err error) {
			if err != nil {
				t.Error(err)
			}
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := bulk.Close(ctx); err != nil {
		t.Fatal(err)
	}

	// The well-behaved pair, throughout.
	good := startGoodPair(t, p, sc.records)
	defer func() {
		if good.stop != nil {
			select {
			case <-good.stop:
			default:
				close(good.stop)
			}
		}
	}()

	var wg sync.WaitGroup
	attack := func(name string, f func(t *testing.T)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t.Run(name, f)
		}()
	}
	// The attackers connect first, then the handshake flood starts while
	// they work: a flooded hub may refuse new connections (quic-go's
	// accept queue holds 32, and a refusal may be lost), which would
	// only test the attackers' own reconnecting.
	var dialed sync.WaitGroup
	dialed.Add(5)
	ready := func() func() { return sync.OnceFunc(dialed.Done) }
	attack("unread subscriptions", func(t *testing.T) { unreadSubscriptions(t, p, sc.unreadSubs, ready()) })
	attack("malformed and oversized frames", func(t *testing.T) { badFrames(t, p, sc.badStreams, ready()) })
	attack("half-sent frames", func(t *testing.T) { halfFrames(t, p, sc.halfFrames, ready()) })
	attack("unauthenticated and unauthorised", func(t *testing.T) { badAuth(t, p, sc.authStreams, ready()) })
	attack("replayed 0-RTT", func(t *testing.T) { replay0RTT(t, p, sc.replays, ready()) })
	attack("handshake flood", func(t *testing.T) {
		dialed.Wait()
		handshakeFlood(t, p, sc.handshakes)
	})
	wg.Wait()

	good.finish(t)
	hwm, rss := p.statusKB(t, "VmHWM"), p.statusKB(t, "VmRSS")
	t.Logf("hub peak RSS (VmHWM) %d KiB, RSS %d KiB at the end, %d KiB before the attacks; %d records produced and consumed throughout",
		hwm, rss, baseRSS, good.sent.Load())
	if hwm > sc.maxHWMKiB {
		t.Errorf("hub peak RSS %d KiB above %d KiB", hwm, sc.maxHWMKiB)
	}
	logs := p.logs()
	for _, reason := range []string{"stream refused before OPEN", "unauthenticated"} {
		if n := strings.Count(logs, `msg="quic: `+reason+`"`); n > 20 {
			t.Errorf("%d log lines for %q: refusals are not rate-limited", n, reason)
		}
	}
	if strings.Contains(logs, "panic") {
		t.Errorf("the hub logged a panic")
	}
}

// goodPair is a producer and a consumer of stream "good" that must be
// served throughout the attacks: the producer sends until the attacks are
// over (and at least min records), the consumer reads every record once,
// in order per key.
type goodPair struct {
	stop     chan struct{}
	done     chan error
	sent     atomic.Int64
	consumed atomic.Int64
}

func startGoodPair(t *testing.T, p *hubProc, minRecords int) *goodPair {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	g := &goodPair{stop: make(chan struct{}), done: make(chan error, 2)}
	c := p.client(t, func(o *sdk.Options) { o.Token = hostileToken })
	sub, err := c.Subscribe(ctx, "good", sdk.ConsumeOptions{From: sdk.FromLatest()})
	if err != nil {
		t.Fatal(err)
	}
	pr, err := c.Producer(ctx, "good", sdk.ProducerOptions{BatchRecords: 50})
	if err != nil {
		t.Fatal(err)
	}
	total := make(chan int64, 1)
	var want atomic.Int64
	want.Store(-1)
	// Once the producer is done, the consumer's wait for more ends when it
	// has read everything.
	nctx, ncancel := context.WithCancel(ctx)
	go func() {
		defer ncancel()
		w := <-total
		want.Store(w)
		for g.consumed.Load() < w && ctx.Err() == nil {
			time.Sleep(10 * time.Millisecond)
		}
	}()
	go func() {
		defer sub.Close()
		next := map[int]int{} // per key, the next value expected
		for {
			m, err := sub.Next(nctx)
			if err != nil {
				if w := want.Load(); w >= 0 && g.consumed.Load() == w {
					g.done <- nil
				} else {
					g.done <- fmt.Errorf("consumer, after %d records (%d sent): %w", g.consumed.Load(), w, err)
				}
				return
			}
			var i, k int
			fmt.Sscanf(string(m.Record.Value), "good-%d-%d", &k, &i)
			if i != next[k] {
				g.done <- fmt.Errorf("consumer: key %d: got %d, want %d (lost, duplicated or reordered)", k, i, next[k])
				return
			}
			next[k] = i + 1
			g.consumed.Add(1)
		}
	}()
	go func() {
		for i := 0; ; i++ {
			select {
			case <-g.stop:
				if i >= minRecords {
					err := pr.Close(ctx)
					total <- int64(i)
					g.done <- err
					return
				}
			default:
			}
			k := i % 4
			v := fmt.Sprintf("good-%d-%d", k, i/4)
			if _, err := pr.Send(ctx, sdk.Record{Key: []byte{byte(k)}, Value: []byte(v)}); err != nil {
				total <- int64(i)
				g.done <- fmt.Errorf("producer, record %d: %w", i, err)
				return
			}
			g.sent.Add(1)
			time.Sleep(2 * time.Millisecond)
		}
	}()
	return g
}

func (g *goodPair) finish(t *testing.T) {
	close(g.stop)
	for range 2 {
		if err := <-g.done; err != nil {
			t.Errorf("the well-behaved client was not served: %v", err)
		}
	}
}

// unreadSubscriptions opens n subscriptions granting the largest credit
// on connections with small QUIC windows, and never reads anything, not
// even CONSUME_READY. The hub admits what the consume share reserves,
// refuses the rest, and ends each admitted one when its flow control takes
// no frame for frame_timeout.
func unreadSubscriptions(t *testing.T, p *hubProc, n int, dialed func()) {
	defer dialed()
	ctx := testCtx(t)
	var conns []*quic.Client
	for range (n + 99) / 100 {
		conns = append(conns, p.raw(t, quic.ClientConfig{Token: hostileReader, StreamReceiveWindow: 16 << 10, ConnReceiveWindow: 1 << 20}))
	}
	dialed()
	refused0 := p.metric(t, "edgehub_memory_budget_refusals_total", `share="consume"`)
	var streams []*quic.Stream
	peak := 0.0
	for opened := 0; opened < n; {
		c := conns[opened/100]
		for range min(n-opened, 100) {
			st, err := c.Open(ctx, quic.OpConsume, &quic.ConsumeOpen{Stream: "bulk", Credit: 16 << 20})
			if err != nil {
				t.Fatal(err)
			}
			streams = append(streams, st)
			opened++
		}
		peak = max(peak, p.metric(t, "edgehub_consume_subscriptions", ""))
	}
	testutil.Eventually(t, "the hub to have answered every subscription", func() bool {
		peak = max(peak, p.metric(t, "edgehub_consume_subscriptions", ""))
		refused := p.metric(t, "edgehub_memory_budget_refusals_total", `share="consume"`) - refused0
		return refused > 0 && p.metric(t, "edgehub_dataplane_refusals_total", `code="limit"`) >= refused
	})
	// Those admitted hold their reservation until their first frame times
	// out; then only the good consumer's subscription is left.
	testutil.Eventually(t, "unread subscriptions to be ended", func() bool {
		peak = max(peak, p.metric(t, "edgehub_consume_subscriptions", ""))
		return p.metric(t, "edgehub_consume_subscriptions", "") <= 2
	})
	refused := p.metric(t, "edgehub_memory_budget_refusals_total", `share="consume"`) - refused0
	t.Logf("%d subscriptions never read: at most %.0f open at once, %.0f refused with limit (memory budget), the rest ended by frame_timeout", n, peak, refused)
	for _, st := range streams {
		st.Cancel(quic.CodeCanceled)
	}
}

// handshakeFlood opens n connections concurrently and abandons them at
// once, and n more that fail their handshake (an untrusted certificate).
func handshakeFlood(t *testing.T, p *hubProc, n int) {
	pool, err := quic.CertPool(p.ca)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var ok, failed atomic.Int64
	for i := range 2 * n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conf := &tls.Config{RootCAs: pool}
			if i%2 == 1 {
				conf = &tls.Config{} // verification fails: the client aborts
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := quic.Dial(ctx, p.addr, quic.ClientConfig{TLS: conf})
			if err != nil {
				failed.Add(1)
				return
			}
			ok.Add(1)
			c.Close()
		}()
	}
	wg.Wait()
	t.Logf("%d handshakes completed and dropped, %d failed", ok.Load(), failed.Load())
	if ok.Load() < int64(n)/2 || failed.Load() < int64(n) {
		t.Fatalf("handshakes: %d completed, %d failed", ok.Load(), failed.Load())
	}
}

// badFrames sends oversized and malformed frames before and after OPEN,
// each on its own stream; each must fail with its code.
func badFrames(t *testing.T, p *hubProc, n int, dialed func()) {
	defer dialed()
	qc := rawConn(t, p.addr, p.ca)
	dialed()
	good := openFrame(quic.OpProduce, hostileToken, &quic.ProduceOpen{Stream: "good"})
	corrupt, err := record.AppendBatch(nil, []record.Record{{Value: []byte("v")}})
	if err != nil {
		t.Fatal(err)
	}
	corrupt[len(corrupt)-1] ^= 0xff
	garbage := bytes.Repeat([]byte{0xff}, 300) // the op's uvarint overflows
	kinds := []struct {
		name string
		raw  [][]byte
		want quic.Code
	}{
		{"OPEN claiming 8 MiB", [][]byte{{byte(quic.FrameOpen), 0, 0x80, 0, 0}}, quic.CodeFrameTooLarge},
		{"BATCH claiming 2 GiB", [][]byte{good, {byte(quic.FrameBatch), 0x80, 0, 0, 0}}, quic.CodeFrameTooLarge},
		{"garbage OPEN", [][]byte{quic.AppendFrame(nil, quic.FrameOpen, quic.RawPayload(garbage))}, quic.CodeProtocol},
		{"CREDIT in a produce session", [][]byte{good, quic.AppendFrame(nil, quic.FrameCredit, &quic.Credit{Bytes: 1})}, quic.CodeProtocol},
		{"corrupt record batch", [][]byte{good, quic.AppendFrame(nil, quic.FrameBatch, &quic.Batch{ID: 1, Shard: 0, Records: corrupt})}, quic.CodeProtocol},
	}
	for _, k := range kinds {
		for range n {
			qs := rawOpen(t, qc, k.raw...)
			if e := hubError(t, qs); e.Code != k.want {
				t.Fatalf("%s: %v, want %s", k.name, e, k.want)
			}
			qs.CancelRead(0)
			qs.CancelWrite(0)
		}
	}
}

// halfFrames stops in the middle of an OPEN and of a BATCH: both fail with
// limit once the timeouts pass, freeing their stream slots.
func halfFrames(t *testing.T, p *hubProc, n int, dialed func()) {
	defer dialed()
	qc := rawConn(t, p.addr, p.ca)
	dialed()
	good := openFrame(quic.OpProduce, hostileToken, &quic.ProduceOpen{Stream: "good"})
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			raw := [][]byte{good[:len(good)/2]}
			if i%2 == 1 {
				raw = [][]byte{good, {byte(quic.FrameBatch), 0, 0, 1, 0}, make([]byte, 20)}
			}
			qs := rawOpen(t, qc, raw...)
			if e := hubError(t, qs); e.Code != quic.CodeLimit {
				t.Errorf("half-sent frame: %v, want limit", e)
			}
		}()
	}
	wg.Wait()
}

// badAuth sends requests with no token, an unknown token and a token
// without the permission.
func badAuth(t *testing.T, p *hubProc, n int, dialed func()) {
	defer dialed()
	ctx := testCtx(t)
	cases := []struct {
		token string
		op    quic.Op
		body  quic.Appender
		want  quic.Code
	}{
		{"", quic.OpProduce, &quic.ProduceOpen{Stream: "good"}, quic.CodeUnauthenticated},
		{"unknown-token-0123456789", quic.OpConsume, &quic.ConsumeOpen{Stream: "good", Credit: 1 << 20}, quic.CodeUnauthenticated},
		{hostileReader, quic.OpProduce, &quic.ProduceOpen{Stream: "good"}, quic.CodePermissionDenied},
	}
	clients := make([]*quic.Client, len(cases))
	for i, tc := range cases {
		clients[i] = p.raw(t, quic.ClientConfig{Token: tc.token})
	}
	dialed()
	for ci, tc := range cases {
		c := clients[ci]
		for i := 0; i < n; i++ {
			st, err := c.Open(ctx, tc.op, tc.body)
			if err == nil {
				if tc.op == quic.OpProduce {
					err = st.Expect(quic.FrameProduceReady, &quic.ProduceReady{})
				} else {
					err = st.Expect(quic.FrameConsumeReady, &quic.ConsumeReady{})
				}
				st.Cancel(quic.CodeCanceled)
			}
			if errors.Is(err, quic.ErrClosed) {
				// Under the handshake flood the hub may refuse a new
				// connection (quic-go's accept queue holds 32) and the
				// refusal be lost: this client then sees its connection
				// die; it dials again, as the SDK does.
				t.Logf("token %q: connection lost (%v); dialling again", tc.token, err)
				c = p.raw(t, quic.ClientConfig{Token: tc.token})
				i--
				continue
			}
			if quic.CodeOf(err) != tc.want {
				t.Fatalf("token %q, %s: %v, want %s", tc.token, tc.op, err, tc.want)
			}
		}
	}
}

// replay0RTT captures the first flight of a resumed connection that sends
// a produce session in 0-RTT (one idempotent, one not) and replays it from
// other addresses: the hub stores each batch once.
func replay0RTT(t *testing.T, p *hubProc, n int, dialed func()) {
	defer dialed()
	ctx := testCtx(t)
	check := p.client(t, func(o *sdk.Options) { o.Token = hostileToken })
	pool, err := quic.CertPool(p.ca)
	if err != nil {
		t.Fatal(err)
	}
	conf := quic.ClientConfig{Token: hostileToken, Use0RTT: true,
		TLS: &tls.Config{RootCAs: pool, ClientSessionCache: tls.NewLRUClientSessionCache(4), ServerName: "localhost"}}
	first, err := quic.Dial(ctx, p.addr, conf)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := produceRaw(t, first, quic.ProduceOpen{Stream: "bulk", ProducerID: 4242})
	if ack := sendBatch(t, st, quic.Batch{ID: 1, Shard: 0, ProducerSeq: 0, Records: encode(t, "ticket")}); ack.Err() != nil {
		t.Fatal(ack.Err())
	}
	st.Close()
	first.Close()

	proxy := newRecordingProxy(t, p.addr)
	second, err := quic.Dial(ctx, proxy.addr(), conf)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	marker := fmt.Sprintf("replayed-%d", rand.Uint64())
	// Opened at once: the OPEN and BATCH travel as 0-RTT data.
	idem, err := second.Open(ctx, quic.OpProduce, &quic.ProduceOpen{Stream: "bulk", ProducerID: 4242})
	if err != nil {
		t.Fatal(err)
	}
	plain, err := second.Open(ctx, quic.OpProduce, &quic.ProduceOpen{Stream: "bulk"})
	if err != nil {
		t.Fatal(err)
	}
	idem.Send(quic.FrameBatch, &quic.Batch{ID: 2, Shard: 0, ProducerSeq: 1, Records: encode(t, marker+"-idem")})
	plain.Send(quic.FrameBatch, &quic.Batch{ID: 3, Shard: 0, Records: encode(t, marker+"-plain")})
	for _, st := range []*quic.Stream{idem, plain} {
		var ready quic.ProduceReady
		if err := st.Expect(quic.FrameProduceReady, &ready); err != nil {
			t.Fatal(err)
		}
		var ack quic.Ack
		if err := st.Expect(quic.FrameAck, &ack); err != nil || ack.Err() != nil {
			t.Fatalf("0-RTT batch: %+v %v", ack, err)
		}
		st.Close()
	}
	if !second.Used0RTT() {
		t.Log("the resumed connection did not use 0-RTT; replaying its first flight anyway")
	}
	dialed()
	flight := proxy.firstFlight()
	for range n {
		replayFrom(t, p.addr, flight)
	}
	// Give the replays time to be (not) acted upon, then count.
	time.Sleep(2 * time.Second)
	sub, err := check.Subscribe(ctx, "bulk", sdk.ConsumeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	counts := map[string]int{}
	for !sub.CaughtUp() {
		m, err := sub.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if v := string(m.Record.Value); strings.HasPrefix(v, marker) {
			counts[v]++
		}
	}
	if counts[marker+"-idem"] != 1 || counts[marker+"-plain"] != 1 {
		t.Fatalf("after %d replays of %d datagrams: stored %v, want each once", n, len(flight), counts)
	}
	t.Logf("%d replays of a %d-datagram first flight: each batch stored once", n, len(flight))
}

// recordingProxy forwards UDP between one client and the hub, keeping the
// client's datagrams of the first 200 ms: its first flight.
type recordingProxy struct {
	ln    *net.UDPConn
	hub   *net.UDPAddr
	mu    sync.Mutex
	start time.Time
	early [][]byte
}

func newRecordingProxy(tb testing.TB, hub string) *recordingProxy {
	tb.Helper()
	ln, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatal(err)
	}
	ha, err := net.ResolveUDPAddr("udp", hub)
	if err != nil {
		tb.Fatal(err)
	}
	p := &recordingProxy{ln: ln, hub: ha}
	up, err := net.DialUDP("udp", nil, ha)
	if err != nil {
		tb.Fatal(err)
	}
	var client atomic.Pointer[net.UDPAddr]
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := ln.ReadFromUDP(buf)
			if err != nil {
				return
			}
			client.Store(from)
			p.mu.Lock()
			if p.start.IsZero() {
				p.start = time.Now()
			}
			if time.Since(p.start) < 200*time.Millisecond {
				p.early = append(p.early, append([]byte(nil), buf[:n]...))
			}
			p.mu.Unlock()
			up.Write(buf[:n])
		}
	}()
	go func() {
		buf := make([]byte, 65536)
		for {
			n, err := up.Read(buf)
			if err != nil {
				return
			}
			if c := client.Load(); c != nil {
				ln.WriteToUDP(buf[:n], c)
			}
		}
	}()
	tb.Cleanup(func() { ln.Close(); up.Close() })
	return p
}

func (p *recordingProxy) addr() string { return p.ln.LocalAddr().String() }

func (p *recordingProxy) firstFlight() [][]byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.early
}

// replayFrom sends datagrams to addr from a fresh socket, as an attacker
// who captured them would, and drains what the hub answers.
func replayFrom(tb testing.TB, addr string, datagrams [][]byte) {
	tb.Helper()
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	c, err := net.DialUDP("udp", nil, ua)
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	for _, d := range datagrams {
		c.Write(d)
	}
	c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	buf := make([]byte, 65536)
	for {
		if _, err := c.Read(buf); err != nil {
			return
		}
	}
}

// TestHostileClients is the bounded version of chaos item 8 (the full one is
// TestHostileClientsChaos, build tag chaos).
func TestHostileClients(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the hub binary under attack for ~20 s")
	}
	runHostileClients(t, hostileScale{
		unreadSubs: 1000, handshakes: 100, badStreams: 20, halfFrames: 20, authStreams: 20, replays: 5,
		records: 1000, maxHWMKiB: 400 << 10,
	})
}

package hub

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	crand "crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/internal/testutil"
	"github.com/edgehub/edgehub/quic"
	"github.com/edgehub/edgehub/sdk"
	"github.com/edgehub/edgehub/store"
)

// dpHub is a running hub with the data plane on a loopback port.
type dpHub struct {
	h    *Hub
	addr string
	ca   string // the self-signed certificate file
}

// startDataPlane runs a hub from cfg (its data dir and ports already set)
// with the given streams.
func startDataPlane(tb testing.TB, mod func(*Config), streams ...store.StreamConfig) *dpHub {
	tb.Helper()
	cfg := DefaultConfig()
	cfg.Hub.Name = "dp-test"
	cfg.Hub.DataDir = tb.TempDir()
	cfg.Listen.Admin = "127.0.0.1:0"
	cfg.Listen.QUIC = "127.0.0.1:0"
	cfg.Logger = testLogger(tb)
	if mod != nil {
		mod(&cfg)
	}
	h, err := New(cfg)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	for _, sc := range streams {
		if _, err := h.Store().CreateStream(context.Background(), sc); err != nil {
			tb.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("Run: %v", err)
		}
		h.Close()
	})
	return &dpHub{h: h, addr: h.QUICAddr().String(), ca: cfg.Hub.DataDir + "/" + SelfSignedCertFile}
}

func (d *dpHub) client(tb testing.TB, mod func(*sdk.Options)) *sdk.Client {
	tb.Helper()
	opts := sdk.Options{CAFile: d.ca, Logger: testLogger(tb)}
	if mod != nil {
		mod(&opts)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := sdk.Dial(ctx, d.addr, opts)
	if err != nil {
		tb.Fatalf("Dial: %v", err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// raw opens a protocol-level connection, for tests that play a client the
// SDK would never be.
func (d *dpHub) raw(tb testing.TB, token string) *quic.Client {
	tb.Helper()
	pool, err := quic.CertPool(d.ca)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := quic.Dial(ctx, d.addr, quic.ClientConfig{TLS: &tls.Config{RootCAs: pool}, Token: token, EnableDatagrams: true})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

func testCtx(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

func TestDataPlaneProduceConsume(t *testing.T) {
	d := startDataPlane(t, nil, store.StreamConfig{Name: "events", Shards: 4})
	ctx := testCtx(t)
	c := d.client(t, nil)
	p, err := c.Producer(ctx, "events", sdk.ProducerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	const n = 2000
	futures := make([]*sdk.Future, n)
	for i := range n {
		rec := sdk.Record{Key: fmt.Appendf(nil, "dev-%d", i%37), Value: fmt.Appendf(nil, "v%d", i), Time: int64(i),
			Headers: []sdk.Header{{Key: "i", Value: fmt.Appendf(nil, "%d", i)}}}
		if futures[i], err = p.SendFuture(ctx, rec); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]sdk.Position{}
	for i, f := range futures {
		pos, err := f.Wait(ctx)
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		if wantShard := record.ShardForKey(fmt.Appendf(nil, "dev-%d", i%37), 4); pos.Shard != wantShard || pos.Seq == 0 {
			t.Fatalf("record %d at %+v, want shard %d", i, pos, wantShard)
		}
		want[fmt.Sprintf("v%d", i)] = pos
	}
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}

	sub, err := c.Subscribe(ctx, "events", sdk.ConsumeOptions{From: sdk.FromEarliest(), Credit: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	lastSeq := map[int]uint64{}
	for range n {
		m, err := sub.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		pos, ok := want[string(m.Record.Value)]
		if !ok || pos.Shard != m.Shard || pos.Seq != m.Record.Seq {
			t.Fatalf("read %q at %d/%d, acked at %+v", m.Record.Value, m.Shard, m.Record.Seq, pos)
		}
		if m.Record.Seq <= lastSeq[m.Shard] {
			t.Fatalf("shard %d out of order: %d after %d", m.Shard, m.Record.Seq, lastSeq[m.Shard])
		}
		lastSeq[m.Shard] = m.Record.Seq
		if len(m.Record.Headers) != 1 || string(m.Record.Headers[0].Value) != strings.TrimPrefix(string(m.Record.Value), "v") {
			t.Fatalf("headers %+v", m.Record.Headers)
		}
		delete(want, string(m.Record.Value))
	}
	if !sub.CaughtUp() || len(want) != 0 {
		t.Fatalf("caught up %v, %d records unread", sub.CaughtUp(), len(want))
	}
}

// TestDataPlanePush checks that a caught-up subscriber gets new records
// without asking: the hub pushes on commit.
func TestDataPlanePush(t *testing.T) {
	d := startDataPlane(t, nil, store.StreamConfig{Name: "live", Shards: 2})
	ctx := testCtx(t)
	c := d.client(t, nil)
	sub, err := c.Subscribe(ctx, "live", sdk.ConsumeOptions{From: sdk.FromLatest()})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	p, err := c.Producer(ctx, "live", sdk.ProducerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(ctx)
	for i := range 10 {
		pos, err := p.Send(ctx, sdk.Record{Key: []byte("k"), Value: fmt.Appendf(nil, "%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		m, err := sub.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if m.Record.Seq != pos.Seq || string(m.Record.Value) != fmt.Sprint(i) {
			t.Fatalf("got %d %q, produced %+v", m.Record.Seq, m.Record.Value, pos)
		}
	}
}

func TestDataPlaneStartPositions(t *testing.T) {
	d := startDataPlane(t, nil, store.StreamConfig{Name: "s", Shards: 1})
	ctx := testCtx(t)
	c := d.client(t, nil)
	p, err := c.Producer(ctx, "s", sdk.ProducerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if _, err := p.Send(ctx, sdk.Record{Value: fmt.Appendf(nil, "a%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	// Ingest times are assigned by the hub's clock: wait until it has moved
	// past the first batch, then take the time.
	mid := time.Now()
	for !time.Now().After(mid) {
		runtime.Gosched()
	}
	for i := range 5 {
		if _, err := p.Send(ctx, sdk.Record{Value: fmt.Appendf(nil, "b%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	p.Close(ctx)
	tests := []struct {
		name  string
		from  sdk.Start
		first string
		count int
	}{
		{"earliest", sdk.FromEarliest(), "a0", 10},
		{"seq", sdk.FromSeq(4), "a3", 7},
		{"seq below first", sdk.FromSeq(0), "a0", 10},
		{"time", sdk.FromTime(mid), "b0", 5},
		{"time before all", sdk.FromTime(time.Unix(0, 0)), "a0", 10},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sub, err := c.Subscribe(ctx, "s", sdk.ConsumeOptions{From: tc.from})
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close()
			m, err := sub.Next(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if string(m.Record.Value) != tc.first {
				t.Fatalf("first %q, want %q", m.Record.Value, tc.first)
			}
			n := 1
			for !sub.CaughtUp() {
				if _, err := sub.Next(ctx); err != nil {
					t.Fatal(err)
				}
				n++
			}
			if n != tc.count {
				t.Fatalf("read %d to catch up, want %d", n, tc.count)
			}
		})
	}
	t.Run("latest", func(t *testing.T) {
		sub, err := c.Subscribe(ctx, "s", sdk.ConsumeOptions{From: sdk.FromLatest()})
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		if !sub.CaughtUp() {
			t.Fatal("a subscription from latest starts caught up")
		}
	})
}

// produceRaw opens a produce session over the bare protocol.
func produceRaw(tb testing.TB, c *quic.Client, open quic.ProduceOpen) (*quic.Stream, quic.ProduceReady) {
	tb.Helper()
	st, err := c.Open(testCtx(tb), quic.OpProduce, &open)
	if err != nil {
		tb.Fatal(err)
	}
	var ready quic.ProduceReady
	if err := st.Expect(quic.FrameProduceReady, &ready); err != nil {
		tb.Fatalf("produce open: %v", err)
	}
	return st, ready
}

func encode(tb testing.TB, values ...string) []byte {
	tb.Helper()
	recs := make([]record.Record, len(values))
	for i, v := range values {
		recs[i].Value = []byte(v)
	}
	b, err := record.AppendBatch(nil, recs)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func sendBatch(tb testing.TB, st *quic.Stream, b quic.Batch) quic.Ack {
	tb.Helper()
	if err := st.Send(quic.FrameBatch, &b); err != nil {
		tb.Fatal(err)
	}
	var ack quic.Ack
	if err := st.Expect(quic.FrameAck, &ack); err != nil {
		tb.Fatal(err)
	}
	if ack.ID != b.ID {
		tb.Fatalf("ack for %d, sent %d", ack.ID, b.ID)
	}
	return ack
}

func TestDataPlaneIdempotentRetry(t *testing.T) {
	d := startDataPlane(t, nil, store.StreamConfig{Name: "idem", Shards: 2})
	c := d.raw(t, "")
	st, _ := produceRaw(t, c, quic.ProduceOpen{Stream: "idem", ProducerID: 77})
	first := sendBatch(t, st, quic.Batch{ID: 1, Shard: 1, ProducerSeq: 0, Records: encode(t, "a", "b", "c")})
	if first.Err() != nil || first.Duplicate || len(first.Runs) != 1 || first.Runs[0] != (quic.Run{Shard: 1, FirstSeq: 1, Count: 3}) {
		t.Fatalf("first ack %+v", first)
	}
	// The same batch again, on a new session as after a reconnect.
	st.Close()
	st2, _ := produceRaw(t, d.raw(t, ""), quic.ProduceOpen{Stream: "idem", ProducerID: 77})
	again := sendBatch(t, st2, quic.Batch{ID: 9, Shard: 1, ProducerSeq: 0, Records: encode(t, "a", "b", "c")})
	if again.Err() != nil || !again.Duplicate || again.Runs[0] != first.Runs[0] {
		t.Fatalf("retry ack %+v, want duplicate of %+v", again, first)
	}
	gap := sendBatch(t, st2, quic.Batch{ID: 10, Shard: 1, ProducerSeq: 5, Records: encode(t, "x")})
	if gap.Code != quic.CodeSequenceGap || gap.Message == "" {
		t.Fatalf("gap ack %+v", gap)
	}
	next := sendBatch(t, st2, quic.Batch{ID: 11, Shard: 1, ProducerSeq: 3, Records: encode(t, "d")})
	if next.Err() != nil || next.Runs[0].FirstSeq != 4 {
		t.Fatalf("next ack %+v", next)
	}
	noShard := sendBatch(t, st2, quic.Batch{ID: 12, Shard: -1, ProducerSeq: 4, Records: encode(t, "e")})
	if noShard.Code != quic.CodeInvalidArgument {
		t.Fatalf("routed idempotent batch: %+v", noShard)
	}
	s, _ := d.h.Store().Stream("idem")
	if _, last, _ := s.Bounds(1); last != 4 {
		t.Fatalf("shard 1 holds up to %d, want 4 (a, b, c, d once)", last)
	}
}

// TestDataPlaneMalformed checks that a broken frame or batch closes only its
// stream, with a code and a message, and the connection goes on.
func TestDataPlaneMalformed(t *testing.T) {
	d := startDataPlane(t, nil, store.StreamConfig{Name: "m", Shards: 1})
	c := d.raw(t, "")
	good := encode(t, "ok")
	bad := append([]byte(nil), good...)
	bad[len(bad)-1] ^= 0xff // checksum
	tests := []struct {
		name  string
		frame func(st *quic.Stream) error
		want  quic.Code
	}{
		{"corrupt record batch", func(st *quic.Stream) error {
			return st.Send(quic.FrameBatch, &quic.Batch{ID: 1, Shard: 0, Records: bad})
		}, quic.CodeProtocol},
		{"truncated batch frame", func(st *quic.Stream) error {
			return st.Send(quic.FrameBatch, quic.RawPayload{0x01})
		}, quic.CodeProtocol},
		{"wrong frame type", func(st *quic.Stream) error {
			return st.Send(quic.FrameCredit, &quic.Credit{Bytes: 1})
		}, quic.CodeProtocol},
		{"oversized frame", func(st *quic.Stream) error {
			return st.Send(quic.FrameBatch, quic.RawPayload(make([]byte, 9<<20)))
		}, quic.CodeFrameTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st, _ := produceRaw(t, c, quic.ProduceOpen{Stream: "m"})
			defer st.Cancel(quic.CodeCanceled)
			tc.frame(st) // may fail once the hub resets the stream
			var ack quic.Ack
			err := st.Expect(quic.FrameAck, &ack)
			if quic.CodeOf(err) != tc.want {
				t.Fatalf("got %v, want %s", err, tc.want)
			}
			var e *quic.Error
			if errors.As(err, &e) && e.Message == "" {
				t.Fatal("refusal without a message")
			}
			// The connection still serves.
			st2, _ := produceRaw(t, c, quic.ProduceOpen{Stream: "m"})
			if ack := sendBatch(t, st2, quic.Batch{ID: 1, Shard: 0, Records: good}); ack.Err() != nil {
				t.Fatal(ack.Err())
			}
			st2.Close()
		})
	}
	// Unknown stream and bad shard.
	st, err := c.Open(testCtx(t), quic.OpProduce, &quic.ProduceOpen{Stream: "nope"})
	if err != nil {
		t.Fatal(err)
	}
	var ready quic.ProduceReady
	if err := st.Expect(quic.FrameProduceReady, &ready); quic.CodeOf(err) != quic.CodeNotFound {
		t.Fatalf("unknown stream: %v", err)
	}
	st2, _ := produceRaw(t, c, quic.ProduceOpen{Stream: "m"})
	if ack := sendBatch(t, st2, quic.Batch{ID: 2, Shard: 5, Records: good}); ack.Code != quic.CodeInvalidArgument {
		t.Fatalf("bad shard: %+v", ack)
	}
}

func TestDataPlaneAuth(t *testing.T) {
	d := startDataPlane(t, func(c *Config) {
		c.Auth = AuthConfig{
			Tokens: []TokenGrant{
				{Name: "writer", Token: "writer-token-0123456789", Produce: []string{"sensors.*"}},
				{Name: "reader", Token: "reader-token-0123456789", Consume: []string{"*"}},
			},
			Anonymous: Grant{Consume: []string{"public"}},
		}
	}, store.StreamConfig{Name: "sensors.temp", Shards: 1}, store.StreamConfig{Name: "public", Shards: 1})
	tests := []struct {
		name   string
		token  string
		op     quic.Op
		stream string
		want   quic.Code
	}{
		{"writer produces", "writer-token-0123456789", quic.OpProduce, "sensors.temp", quic.CodeOK},
		{"writer cannot consume", "writer-token-0123456789", quic.OpConsume, "sensors.temp", quic.CodePermissionDenied},
		{"writer outside pattern", "writer-token-0123456789", quic.OpProduce, "public", quic.CodePermissionDenied},
		{"reader consumes", "reader-token-0123456789", quic.OpConsume, "sensors.temp", quic.CodeOK},
		{"reader cannot produce", "reader-token-0123456789", quic.OpProduce, "sensors.temp", quic.CodePermissionDenied},
		{"unknown token", "nobody-0123456789abcdef", quic.OpConsume, "public", quic.CodeUnauthenticated},
		{"anonymous consumes public", "", quic.OpConsume, "public", quic.CodeOK},
		{"anonymous cannot produce", "", quic.OpProduce, "public", quic.CodeUnauthenticated},
		{"anonymous info denied", "", quic.OpInfo, "sensors.temp", quic.CodeUnauthenticated},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := d.raw(t, tc.token)
			var body quic.Appender
			var ft quic.FrameType
			var dec quic.Decoder
			switch tc.op {
			case quic.OpProduce:
				body, ft, dec = &quic.ProduceOpen{Stream: tc.stream}, quic.FrameProduceReady, &quic.ProduceReady{}
			case quic.OpConsume:
				body, ft, dec = &quic.ConsumeOpen{Stream: tc.stream, Credit: 1 << 20}, quic.FrameConsumeReady, &quic.ConsumeReady{}
			default:
				body, ft, dec = &quic.InfoRequest{Stream: tc.stream}, quic.FrameInfo, &quic.Info{}
			}
			st, err := c.Open(testCtx(t), tc.op, body)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Cancel(quic.CodeCanceled)
			err = st.Expect(ft, dec)
			if got := quic.CodeOf(err); got != tc.want {
				t.Fatalf("got %v (%s), want %s", err, got, tc.want)
			}
			if err != nil && !strings.Contains(err.Error(), tc.stream) && tc.want != quic.CodeUnauthenticated {
				t.Fatalf("refusal %q does not name the stream", err)
			}
		})
	}
	// The SDK surfaces the code.
	c := d.client(t, func(o *sdk.Options) { o.Token = "writer-token-0123456789" })
	_, err := c.Subscribe(testCtx(t), "sensors.temp", sdk.ConsumeOptions{})
	if sdk.CodeOf(err) != sdk.CodePermissionDenied {
		t.Fatalf("sdk subscribe: %v", err)
	}
	if n := d.h.DataPlaneStats().AuthRefused; n != 1 {
		t.Fatalf("auth refusals counted %d, want 1 (the unknown token)", n)
	}
}

// TestDataPlaneSlowConsumer checks that a consumer that stops reading does
// not make the hub buffer the stream: what the hub sends ahead is bounded by
// the consumer's credit, and the hub's heap does not grow with the backlog.
func TestDataPlaneSlowConsumer(t *testing.T) {
	if testing.Short() {
		t.Skip("produces 48 MiB")
	}
	d := startDataPlane(t, nil, store.StreamConfig{Name: "big", Shards: 1})
	ctx := testCtx(t)
	c := d.client(t, nil)
	p, err := c.Producer(ctx, "big", sdk.ProducerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	value := make([]byte, 4096)
	const n = 12 << 10 // 48 MiB of values
	for range n {
		if err := p.SendAsync(ctx, sdk.Record{Value: value}, func(_ sdk.Position, err error) {
			if err != nil {
				t.Error(err)
			}
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}

	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	before := heap()
	raw := d.raw(t, "")
	const credit = 256 << 10
	st, err := raw.Open(ctx, quic.OpConsume, &quic.ConsumeOpen{Stream: "big", Credit: credit})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Cancel(quic.CodeCanceled)
	var ready quic.ConsumeReady
	if err := st.Expect(quic.FrameConsumeReady, &ready); err != nil {
		t.Fatal(err)
	}
	// Read what the credit allows, then stop reading and granting.
	var got int
	for got < credit {
		var r quic.Records
		if err := st.Expect(quic.FrameRecords, &r); err != nil {
			t.Fatal(err)
		}
		got += len(r.Batch)
	}
	sent := func() float64 { return counterValue(t, d.h, "edgehub_consume_bytes_total") }
	// Give the hub every chance to overrun: wait until its count is stable
	// across several scheduler rounds.
	var last float64 = -1
	for i := 0; i < 100 || sent() != last; i++ {
		last = sent()
		runtime.Gosched()
		time.Sleep(time.Millisecond)
	}
	if max := float64(credit + 512<<10); last > max {
		t.Fatalf("hub sent %.0f bytes to a consumer that granted %d", last, credit)
	}
	if grown := int64(heap()) - int64(before); grown > 16<<20 {
		t.Fatalf("hub heap grew by %d bytes with a 48 MiB backlog", grown)
	}
	// Granting more lets it continue.
	if err := st.Send(quic.FrameCredit, &quic.Credit{Bytes: credit}); err != nil {
		t.Fatal(err)
	}
	var r quic.Records
	if err := st.Expect(quic.FrameRecords, &r); err != nil {
		t.Fatal(err)
	}
}

// counterValue reads a metric's total across labels from /metrics.
func counterValue(tb testing.TB, h *Hub, name string) float64 {
	tb.Helper()
	return labeledValue(tb, h, name, "")
}

// labeledValue sums a metric's series whose labels contain label (every
// series when label is empty).
func labeledValue(tb testing.TB, h *Hub, name, label string) float64 {
	tb.Helper()
	resp, err := http.Get("http://" + h.AdminAddr().String() + "/metrics")
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var total float64
	for _, line := range strings.Split(string(body), "\n") {
		if (strings.HasPrefix(line, name+"{") || strings.HasPrefix(line, name+" ")) && strings.Contains(line, label) {
			var v float64
			fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v)
			total += v
		}
	}
	return total
}

func TestDataPlaneDatagrams(t *testing.T) {
	d := startDataPlane(t, nil, store.StreamConfig{Name: "telemetry", Shards: 1})
	ctx := testCtx(t)
	c := d.client(t, nil)
	p, err := c.Producer(ctx, "telemetry", sdk.ProducerOptions{Datagrams: true})
	if err != nil {
		t.Fatal(err)
	}
	sub, err := c.Subscribe(ctx, "telemetry", sdk.ConsumeOptions{From: sdk.FromEarliest()})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	// Datagrams may be lost; on loopback at this rate they are not, but the
	// test only needs one through.
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		if err := p.SendAsync(ctx, sdk.Record{Value: fmt.Appendf(nil, "t%d", i)}, func(_ sdk.Position, err error) {
			defer wg.Done()
			if err != nil {
				t.Error(err)
			}
		}); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	m, err := sub.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(m.Record.Value), "t") {
		t.Fatalf("got %q", m.Record.Value)
	}
	p.Close(ctx)
	// The counter moves just after the commit the subscriber saw.
	metric := `edgehub_produce_records_total{mode="datagram",stream="telemetry"}`
	for counterValue(t, d.h, metric) < 1 {
		if ctx.Err() != nil {
			t.Fatalf("datagram records not counted")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestAuthConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  AuthConfig
		key  string
	}{
		{"short token", AuthConfig{Tokens: []TokenGrant{{Name: "a", Token: "short"}}}, "token[0].token"},
		{"no name", AuthConfig{Tokens: []TokenGrant{{Token: "0123456789abcdef"}}}, "token[0].name"},
		{"duplicate token", AuthConfig{Tokens: []TokenGrant{{Name: "a", Token: "0123456789abcdef"}, {Name: "b", Token: "0123456789abcdef"}}}, "token[1].token"},
		{"bad pattern", AuthConfig{Clients: []Grant{{Name: "c", Produce: []string{"["}}}}, "client[0].produce[0]"},
		{"duplicate name", AuthConfig{Tokens: []TokenGrant{{Name: "a", Token: "0123456789abcdef"}, {Name: "a", Token: "fedcba9876543210"}}}, "token[1].name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Key != tc.key {
				t.Fatalf("Validate = %v, want a problem at %s", err, tc.key)
			}
		})
	}
}

func TestLimitsConfigTOML(t *testing.T) {
	cfg, err := ParseConfig("hub.toml", []byte(`
[limits]
max_connections = 5
max_frame_bytes = "2MiB"
allow_0rtt = false

[tls]
hosts = ["edge.local"]

[[auth.token]]
name = "w"
token = "0123456789abcdef"
produce = ["*"]
`))
	if err != nil {
		t.Fatal(err)
	}
	l := cfg.Limits.withDefaults()
	if l.MaxConnections != 5 || l.MaxFrameBytes != 2<<20 || *l.Allow0RTT || !*l.Datagrams || l.MaxInflightBatches != DefaultMaxInflightBatches {
		t.Fatalf("limits %+v", l)
	}
	if len(cfg.Auth.Tokens) != 1 || cfg.Auth.Tokens[0].Produce[0] != "*" || cfg.TLS.Hosts[0] != "edge.local" {
		t.Fatalf("auth %+v tls %+v", cfg.Auth, cfg.TLS)
	}
	if _, err := ParseConfig("hub.toml", []byte("[limits]\nmax_frame_bytes = 10\nbogus = 1\n")); err == nil ||
		!strings.Contains(err.Error(), "limits.max_frame_bytes") || !strings.Contains(err.Error(), "limits.bogus") {
		t.Fatalf("want both problems reported, got %v", err)
	}
}

// TestDataPlaneKill9 runs `hub serve` as a child process, produces through
// the SDK from several producers, SIGKILLs the hub mid-stream twice and
// restarts it, and checks that every acknowledged record is stored exactly
// once at the position its acknowledgement gave, and that no record is
// stored twice (idempotent producers resend across the restarts).
func TestDataPlaneKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the hub binary and crashes it")
	}
	dir := t.TempDir()
	bin := hubBinary(t)
	addr := testutil.FreeAddr(t, "udp")
	data := filepath.Join(dir, "data")
	conf := filepath.Join(dir, "hub.toml")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`
[hub]
name = "crash"
data_dir = %q
[listen]
quic = %q
admin = "127.0.0.1:0"
[[stream]]
name = "crash"
shards = 3
`, data, addr)), 0o644); err != nil {
		t.Fatal(err)
	}
	var child *exec.Cmd
	start := func() {
		child = exec.Command(bin, "serve", "--config", conf, "--log-level", "warn")
		child.Stdout, child.Stderr = io.Discard, io.Discard
		if err := child.Start(); err != nil {
			t.Fatal(err)
		}
	}
	kill := func() {
		child.Process.Signal(syscall.SIGKILL)
		child.Wait()
	}
	start()
	t.Cleanup(kill)
	ctx := testCtx(t)
	ca := filepath.Join(data, SelfSignedCertFile)

	const producers = 3
	type ackInfo struct {
		pos sdk.Position
		n   int // times acknowledged
	}
	var mu sync.Mutex
	acked := map[string]*ackInfo{}
	var failures []error
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range producers {
		// Wait for the child to listen (and write its certificate).
		var c *sdk.Client
		for {
			var err error
			if c, err = sdk.Dial(ctx, addr, sdk.Options{CAFile: ca, DialTimeout: time.Second, ReconnectMax: 500 * time.Millisecond, Logger: testLogger(t)}); err == nil {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("hub did not come up: %v", err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		defer c.Close()
		p, err := c.Producer(ctx, "crash", sdk.ProducerOptions{BatchRecords: 200, BufferBytes: 256 << 10, AckTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					if err := p.Close(ctx); err != nil {
						mu.Lock()
						failures = append(failures, err)
						mu.Unlock()
					}
					return
				default:
				}
				v := fmt.Sprintf("p%d-%d", i, n)
				err := p.SendAsync(ctx, sdk.Record{Key: []byte(v), Value: []byte(v)}, func(pos sdk.Position, err error) {
					mu.Lock()
					defer mu.Unlock()
					if err != nil {
						failures = append(failures, fmt.Errorf("%s: %w", v, err))
						return
					}
					if a := acked[v]; a != nil {
						a.n++
						return
					}
					acked[v] = &ackInfo{pos: pos, n: 1}
				})
				if err != nil {
					mu.Lock()
					failures = append(failures, err)
					mu.Unlock()
					return
				}
			}
		}()
	}
	waitAcks := func(n int) {
		for {
			mu.Lock()
			got := len(acked)
			mu.Unlock()
			if got >= n {
				return
			}
			if ctx.Err() != nil {
				t.Fatalf("only %d of %d records acknowledged", got, n)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	for round := 1; round <= 2; round++ {
		waitAcks(round * 20000)
		kill()
		mu.Lock()
		t.Logf("round %d: killed the hub with %d records acknowledged", round, len(acked))
		mu.Unlock()
		start()
	}
	waitAcks(60000)
	close(stop)
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d records failed, first: %v", len(failures), failures[0])
	}

	// Read everything back from the restarted hub.
	c := (&dpHub{addr: addr, ca: ca}).client(t, nil)
	sub, err := c.Subscribe(ctx, "crash", sdk.ConsumeOptions{From: sdk.FromEarliest()})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	seen := map[string]sdk.Position{}
	for !sub.CaughtUp() {
		m, err := sub.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		v := string(m.Record.Value)
		if prev, dup := seen[v]; dup {
			t.Fatalf("%s stored twice: at %+v and %d/%d", v, prev, m.Shard, m.Record.Seq)
		}
		seen[v] = sdk.Position{Shard: m.Shard, Seq: m.Record.Seq}
	}
	for v, a := range acked {
		got, ok := seen[v]
		if !ok {
			t.Fatalf("acknowledged record %s (at %+v) lost", v, a.pos)
		}
		if a.pos.Seq != 0 && (got.Shard != a.pos.Shard || got.Seq != a.pos.Seq) {
			t.Fatalf("%s acknowledged at %+v, stored at %+v", v, a.pos, got)
		}
		if a.n != 1 {
			t.Fatalf("%s acknowledged %d times", v, a.n)
		}
	}
	t.Logf("%d records acknowledged across 2 hub crashes, %d stored, none twice", len(acked), len(seen))
}

// TestDataPlaneBackpressure plays a producer that floods batches and never
// reads its acknowledgements: once the hub cannot deliver ACKs, it stops
// reading, QUIC flow control stops the producer, and the hub holds no more
// than a session's in-flight budget instead of buffering the flood.
func TestDataPlaneBackpressure(t *testing.T) {
	d := startDataPlane(t, nil, store.StreamConfig{Name: "flood", Shards: 1})
	pool, err := quic.CertPool(d.ca)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	c, err := quic.Dial(ctx, d.addr, quic.ClientConfig{TLS: &tls.Config{RootCAs: pool},
		StreamReceiveWindow: 64 << 10, ConnReceiveWindow: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	st, _ := produceRaw(t, c, quic.ProduceOpen{Stream: "flood"})
	batch := encode(t, strings.Repeat("x", 1024))
	const total = 1 << 20 // 1 GiB if the hub took it all
	var sent atomic.Int64
	go func() {
		for i := range total {
			if st.Send(quic.FrameBatch, &quic.Batch{ID: uint64(i), Shard: 0, Records: batch}) != nil {
				return
			}
			sent.Add(1)
		}
	}()
	// Wait until the producer is held back: no progress over many rounds.
	last, still := int64(-1), 0
	for still < 50 {
		if n := sent.Load(); n == last {
			still++
		} else {
			last, still = n, 0
		}
		if last >= total {
			t.Fatal("the hub took the whole flood")
		}
		time.Sleep(10 * time.Millisecond)
	}
	inflight := counterValue(t, d.h, "edgehub_produce_inflight_bytes")
	t.Logf("producer held back after %d batches (%d MiB); hub holds %.0f bytes in flight", last, last>>10, inflight)
	if inflight > maxInflightBytes {
		t.Fatalf("hub holds %.0f bytes of unacknowledged batches, budget %d", inflight, maxInflightBytes)
	}
	if inflight <= 0 {
		t.Fatal("expected the stalled session to hold its budget")
	}
	// Ending the session releases everything.
	st.Cancel(quic.CodeCanceled)
	for counterValue(t, d.h, "edgehub_produce_inflight_bytes") != 0 {
		if ctx.Err() != nil {
			t.Fatal("in-flight bytes not released after the session ended")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// issueCert writes a client certificate for cn signed by the CA in
// caCert/caKey (PEM) and returns its file paths.
func issueCert(tb testing.TB, dir, cn string, caCert, caKey []byte) (certFile, keyFile string) {
	tb.Helper()
	ca, err := tls.X509KeyPair(caCert, caKey)
	if err != nil {
		tb.Fatal(err)
	}
	caX, err := x509.ParseCertificate(ca.Certificate[0])
	if err != nil {
		tb.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(crand.Reader, tmpl, caX, &key.PublicKey, ca.PrivateKey)
	if err != nil {
		tb.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, cn+".pem"), filepath.Join(dir, cn+".key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		tb.Fatal(err)
	}
	return certFile, keyFile
}

func TestDataPlaneMTLS(t *testing.T) {
	dir := t.TempDir()
	caCert, caKey, err := quic.SelfSigned(nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "clients-ca.pem")
	if err := os.WriteFile(caFile, caCert, 0o644); err != nil {
		t.Fatal(err)
	}
	devCert, devKey := issueCert(t, dir, "device-7", caCert, caKey)
	otherCert, otherKey := issueCert(t, dir, "intruder", caCert, caKey)
	mod := func(require bool) func(*Config) {
		return func(c *Config) {
			c.TLS.ClientCAFile, c.TLS.RequireClientCert = caFile, require
			c.Auth.Clients = []Grant{{Name: "device-7", Produce: []string{"telemetry"}}}
		}
	}
	d := startDataPlane(t, mod(false), store.StreamConfig{Name: "telemetry", Shards: 1})
	tests := []struct {
		name       string
		cert, key  string
		want       sdk.Code
		wantDialOK bool
	}{
		{"granted identity", devCert, devKey, 0, true},
		{"identity without grant", otherCert, otherKey, sdk.CodePermissionDenied, true},
		{"no certificate", "", "", sdk.CodeUnauthenticated, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			c, err := sdk.Dial(ctx, d.addr, sdk.Options{CAFile: d.ca, CertFile: tc.cert, KeyFile: tc.key})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			p, err := c.Producer(ctx, "telemetry", sdk.ProducerOptions{})
			if tc.want == 0 {
				if err != nil {
					t.Fatal(err)
				}
				if _, err := p.Send(ctx, sdk.Record{Value: []byte("ok")}); err != nil {
					t.Fatal(err)
				}
				p.Close(ctx)
				return
			}
			if sdk.CodeOf(err) != tc.want {
				t.Fatalf("got %v, want %s", err, tc.want)
			}
		})
	}

	// With require_client_cert, a client without one fails the handshake.
	strict := startDataPlane(t, mod(true), store.StreamConfig{Name: "telemetry", Shards: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// In TLS 1.3 the client finishes its handshake before the hub checks
	// its (missing) certificate: the refusal arrives as the connection's
	// close, so the first operation fails.
	if c, err := sdk.Dial(ctx, strict.addr, sdk.Options{CAFile: strict.ca, DialTimeout: 5 * time.Second}); err == nil {
		ictx, icancel := context.WithTimeout(ctx, 2*time.Second)
		_, err = c.Info(ictx, "telemetry")
		icancel()
		c.Close()
		if err == nil {
			t.Fatal("a client without a certificate was served")
		}
	}
	c, err := sdk.Dial(ctx, strict.addr, sdk.Options{CAFile: strict.ca, CertFile: devCert, KeyFile: devKey})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

// TestDataPlane0RTT resumes a connection with 0-RTT and replays a batch in
// it, as an attacker replaying early data would: it is stored once.
func TestDataPlane0RTT(t *testing.T) {
	d := startDataPlane(t, nil, store.StreamConfig{Name: "early", Shards: 1})
	pool, err := quic.CertPool(d.ca)
	if err != nil {
		t.Fatal(err)
	}
	conf := quic.ClientConfig{TLS: &tls.Config{RootCAs: pool, ClientSessionCache: tls.NewLRUClientSessionCache(4)}, Use0RTT: true}
	ctx := testCtx(t)
	first, err := quic.Dial(ctx, d.addr, conf)
	if err != nil {
		t.Fatal(err)
	}
	// The session ticket arrives after the handshake; a round trip makes
	// sure the client has it.
	st, _ := produceRaw(t, first, quic.ProduceOpen{Stream: "early", ProducerID: 5})
	if ack := sendBatch(t, st, quic.Batch{ID: 1, Shard: 0, ProducerSeq: 0, Records: encode(t, "a")}); ack.Err() != nil {
		t.Fatal(ack.Err())
	}
	st.Close()
	first.Close()

	second, err := quic.Dial(ctx, d.addr, conf)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	// Opening a stream while quic-go is still processing the handshake is
	// a data race inside quic-go (quic-go#4303), so the test waits; the
	// connection was still resumed with 0-RTT keys.
	<-second.HandshakeComplete()
	st, _ = produceRaw(t, second, quic.ProduceOpen{Stream: "early", ProducerID: 5})
	// A replay of the first batch, as an attacker replaying early data
	// would cause: stored once.
	if ack := sendBatch(t, st, quic.Batch{ID: 2, Shard: 0, ProducerSeq: 0, Records: encode(t, "a")}); !ack.Duplicate {
		t.Fatalf("replayed batch: %+v", ack)
	}
	if !second.Used0RTT() {
		t.Fatal("the second connection did not use 0-RTT")
	}
	s, _ := d.h.Store().Stream("early")
	if _, last, _ := s.Bounds(0); last != 1 {
		t.Fatalf("stream holds %d records, want 1", last)
	}
}

// TestDataPlaneConsumeFairness gives a subscription to two shards with
// backlogs less credit than either backlog: both shards must be served, not
// the first one until it is drained.
func TestDataPlaneConsumeFairness(t *testing.T) {
	d := startDataPlane(t, nil, store.StreamConfig{Name: "two", Shards: 2})
	c := d.raw(t, "")
	prod, _ := produceRaw(t, c, quic.ProduceOpen{Stream: "two"})
	values := make([]string, 1000)
	for i := range values {
		values[i] = strings.Repeat("v", 1024)
	}
	for i := range 4 {
		for shard := range 2 {
			if ack := sendBatch(t, prod, quic.Batch{ID: uint64(2*i + shard), Shard: int32(shard), Records: encode(t, values...)}); ack.Err() != nil {
				t.Fatal(ack.Err())
			}
		}
	}
	prod.Close()
	st, err := c.Open(testCtx(t), quic.OpConsume, &quic.ConsumeOpen{Stream: "two", Credit: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Cancel(quic.CodeCanceled)
	var ready quic.ConsumeReady
	if err := st.Expect(quic.FrameConsumeReady, &ready); err != nil {
		t.Fatal(err)
	}
	served := map[uint32]int{}
	for range 6 {
		var r quic.Records
		if err := st.Expect(quic.FrameRecords, &r); err != nil {
			t.Fatal(err)
		}
		served[r.Shard]++
		// Return what was consumed, as a consumer that keeps up does.
		if err := st.Send(quic.FrameCredit, &quic.Credit{Bytes: uint64(len(r.Batch))}); err != nil {
			t.Fatal(err)
		}
	}
	if served[0] == 0 || served[1] == 0 {
		t.Fatalf("frames per shard %v: one shard starved", served)
	}
}

package replicate

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/internal/testutil"
	"github.com/edgehub/edgehub/quic"
	"github.com/edgehub/edgehub/store"
)

// pullServer is a replication server of one store on a real QUIC listener
// on loopback.
type pullServer struct {
	srv   *server
	qs    *quic.Server
	store *store.Store
	peer  Peer
}

// startPullServer serves hub "origin"'s store over QUIC with at most
// maxStreams QUIC streams per connection. authorize may be nil.
func startPullServer(tb testing.TB, maxStreams int, authorize Authorizer) *pullServer {
	tb.Helper()
	cfg := store.DefaultConfig(tb.TempDir())
	cfg.Logger = quietLogger()
	st, err := store.Open(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	certPEM, keyPEM, err := quic.SelfSigned([]string{"127.0.0.1"}, time.Hour)
	if err != nil {
		tb.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		tb.Fatal(err)
	}
	qc := quic.DefaultConfig("127.0.0.1:0")
	qc.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	qc.MaxStreamsPerConn = maxStreams
	qc.Logger = quietLogger()
	qs, err := quic.Listen(qc)
	if err != nil {
		tb.Fatal(err)
	}
	srv := &server{self: "origin", store: st, tags: func(string) ([]string, bool) { return nil, true },
		heartbeat: 50 * time.Millisecond, maxBatch: 4 << 20, high: newHighCache(), gaps: &gapBook{entries: map[gapKey]*gapEntry{}}, logger: quietLogger(),
		metrics: newMetrics(), authorize: authorize}
	qs.Handle(quic.OpReplicate, srv)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		qs.Run(ctx)
	}()
	tb.Cleanup(func() {
		cancel()
		qs.Close()
		<-done
	})
	return &pullServer{srv: srv, qs: qs, store: st,
		peer: Peer{Name: "origin", Addr: qs.Addr().String(), Alive: true}}
}

func newTestTransport(tb testing.TB) *QUICTransport {
	tb.Helper()
	t := NewQUICTransport(quic.ClientConfig{TLS: &tls.Config{InsecureSkipVerify: true}})
	tb.Cleanup(func() { t.Close() })
	return t
}

// appendShard appends n records with values of size bytes to one shard,
// in batches of 100.
func appendShard(tb testing.TB, st *store.Stream, shard, n, size int) {
	tb.Helper()
	for i := 0; i < n; {
		var recs []record.Record
		for j := 0; j < 100 && i < n; j, i = j+1, i+1 {
			v := make([]byte, size)
			copy(v, fmt.Sprintf("%d-%d", shard, i))
			recs = append(recs, record.Record{Value: v})
		}
		if _, err := st.Append(context.Background(), store.Batch{Shard: shard, Records: recs}); err != nil {
			tb.Fatal(err)
		}
	}
}

// drain receives from p until it holds n records of origin k in order.
func drain(tb testing.TB, p PullStream, k store.OriginKey, n int) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	got := 0
	for got < n {
		m, err := p.Recv(ctx)
		if err != nil {
			tb.Fatalf("origin %s/%d after %d of %d records: %v", k.Hub, k.Shard, got, n, err)
		}
		if m.Type != FramePullRecords {
			continue
		}
		recs, err := record.DecodeBatch(m.Records.Batch, nil)
		if err != nil {
			tb.Fatal(err)
		}
		for _, r := range recs {
			got++
			if r.Origin.Hub != k.Hub || r.Origin.Shard != k.Shard || r.Origin.Seq != uint64(got) {
				tb.Fatalf("record %d has origin %+v, want %s/%d/%d", got, r.Origin, k.Hub, k.Shard, got)
			}
		}
	}
}

func createServed(tb testing.TB, st *store.Store, name string, shards int) *store.Stream {
	tb.Helper()
	s, err := st.CreateStream(context.Background(), store.StreamConfig{Name: name, Shards: shards,
		Meta: map[string]string{MetaPolicy: "all"}})
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// TestSessionCarriesFollowsBeyondStreamLimit follows 3 streams × 16 shards
// from a server that allows one QUIC stream per connection: the session is
// that one stream, and every follow converges.
func TestSessionCarriesFollowsBeyondStreamLimit(t *testing.T) {
	ps := startPullServer(t, 1, nil)
	tr := newTestTransport(t)
	type follow struct {
		p PullStream
		k store.OriginKey
	}
	var follows []follow
	for s := range 3 {
		name := fmt.Sprintf("s%d", s)
		st := createServed(t, ps.store, name, 16)
		for shard := range 16 {
			appendShard(t, st, shard, 50+shard, 16)
			k := store.OriginKey{Hub: "origin", Shard: uint32(shard)}
			p, err := tr.Pull(context.Background(), ps.peer, PullRequest{Requester: "edge", Stream: name, Origin: k,
				Follow: true, MaxBatchBytes: 64 << 10})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			follows = append(follows, follow{p, k})
		}
	}
	for _, f := range follows {
		drain(t, f.p, f.k, 50+int(f.k.Shard))
	}
	if n := ps.qs.Stats().StreamsTotal; n != 1 {
		t.Fatalf("%d QUIC streams opened, want 1 session", n)
	}
	if got := gaugeValue(ps.srv.metrics.follows); got != 48 {
		t.Fatalf("served follows gauge = %v, want 48", got)
	}
}

// TestSessionFlowControlIsolatesFollows: a follow whose consumer stops
// reading holds at most its window here, and the other follows of the
// session keep flowing.
func TestSessionFlowControlIsolatesFollows(t *testing.T) {
	ps := startPullServer(t, 100, nil)
	tr := newTestTransport(t)
	st := createServed(t, ps.store, "busy", 2)
	const bigN, size = 20000, 200 // 4 MB: many windows
	appendShard(t, st, 0, bigN, size)
	k0 := store.OriginKey{Hub: "origin", Shard: 0}
	k1 := store.OriginKey{Hub: "origin", Shard: 1}
	req := PullRequest{Requester: "edge", Stream: "busy", Follow: true, MaxBatchBytes: 64 << 10}
	req.Origin = k0
	stalled, err := tr.Pull(context.Background(), ps.peer, req)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	mp := stalled.(*muxPull)
	// The server fills the stalled follow's window and then waits.
	testutil.Eventually(t, "the stalled follow's window fills", func() bool {
		mp.s.mu.Lock()
		defer mp.s.mu.Unlock()
		return mp.credit <= 0 && mp.buffered > 0
	})
	mp.s.mu.Lock()
	buffered := mp.buffered
	window := mp.s.window(mp.maxBatch)
	mp.s.mu.Unlock()
	// One batch may overdraw the credit; nothing beyond.
	if limit := window + 64<<10 + 100*(size+64); buffered > limit {
		t.Fatalf("stalled follow buffers %d bytes, window %d (limit %d)", buffered, window, limit)
	}
	if buffered >= bigN*size {
		t.Fatalf("stalled follow received all %d bytes: no flow control", buffered)
	}

	req.Origin = k1
	other, err := tr.Pull(context.Background(), ps.peer, req)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	appendShard(t, st, 1, 3000, size)
	drain(t, other, k1, 3000)

	// The stalled follow resumes where it stopped, in order, complete.
	drain(t, stalled, k0, bigN)
}

// TestSessionRefusalEndsOneFollow: a follow the server refuses (permission,
// unknown stream) ends with its code; the session and its other follows
// continue.
func TestSessionRefusalEndsOneFollow(t *testing.T) {
	deny := func(_ context.Context, _ *quic.Request, requester, stream string) error {
		if strings.HasPrefix(stream, "secret") {
			return quic.Errorf(quic.CodePermissionDenied, "%s may not pull %s", requester, stream)
		}
		return nil
	}
	ps := startPullServer(t, 100, deny)
	tr := newTestTransport(t)
	open := createServed(t, ps.store, "open", 1)
	createServed(t, ps.store, "secret", 1)
	k := store.OriginKey{Hub: "origin"}
	ok, err := tr.Pull(context.Background(), ps.peer, PullRequest{Requester: "edge", Stream: "open", Origin: k, Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ok.Close()
	tests := []struct {
		name   string
		stream string
		origin store.OriginKey
		code   quic.Code
	}{
		{name: "not authorised", stream: "secret", origin: k, code: quic.CodePermissionDenied},
		{name: "unknown stream", stream: "nope", origin: k, code: quic.CodeNotFound},
		{name: "shard out of range", stream: "open", origin: store.OriginKey{Hub: "origin", Shard: 9}, code: quic.CodeInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := tr.Pull(context.Background(), ps.peer, PullRequest{Requester: "edge", Stream: tt.stream, Origin: tt.origin, Follow: true})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err = p.Recv(ctx)
			if quic.CodeOf(err) != tt.code {
				t.Fatalf("Recv: %v, want code %s", err, tt.code)
			}
		})
	}
	appendShard(t, open, 0, 500, 16)
	drain(t, ok, k, 500)
}

// TestSessionCompletesOneShotPull: a pull without follow ends with io.EOF
// once it has everything.
func TestSessionCompletesOneShotPull(t *testing.T) {
	ps := startPullServer(t, 100, nil)
	tr := newTestTransport(t)
	appendShard(t, createServed(t, ps.store, "once", 1), 0, 300, 16)
	k := store.OriginKey{Hub: "origin"}
	p, err := tr.Pull(context.Background(), ps.peer, PullRequest{Requester: "edge", Stream: "once", Origin: k})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	drain(t, p, k, 300)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		m, err := p.Recv(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil || m.Type != FramePullProgress {
			t.Fatalf("after the records: %+v, %v; want progress then EOF", m, err)
		}
	}
}

// TestSessionCancelStopsServing: a closed follow stops at the server; the
// session stays for the next.
func TestSessionCancelStopsServing(t *testing.T) {
	ps := startPullServer(t, 100, nil)
	tr := newTestTransport(t)
	createServed(t, ps.store, "c", 1)
	k := store.OriginKey{Hub: "origin"}
	for i := range 3 {
		p, err := tr.Pull(context.Background(), ps.peer, PullRequest{Requester: "edge", Stream: "c", Origin: k, Follow: true})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if m, err := p.Recv(ctx); err != nil || m.Type != FramePullProgress {
			t.Fatalf("pull %d: %+v, %v; want progress", i, m, err)
		}
		cancel()
		testutil.Eventually(t, "the server serves the follow", func() bool { return gaugeValue(ps.srv.metrics.follows) == 1 })
		p.Close()
		if _, err := p.Recv(context.Background()); !errors.Is(err, ErrClosed) {
			t.Fatalf("Recv after Close: %v, want ErrClosed", err)
		}
		testutil.Eventually(t, "the server stops serving it", func() bool { return gaugeValue(ps.srv.metrics.follows) == 0 })
	}
	if n := ps.qs.Stats().StreamsTotal; n != 1 {
		t.Fatalf("%d QUIC streams opened, want 1 session", n)
	}
}

// TestSessionProtocolErrors sends raw session frames that break the
// protocol: the server ends the session with protocol_error.
func TestSessionProtocolErrors(t *testing.T) {
	ps := startPullServer(t, 100, nil)
	createServed(t, ps.store, "p", 1)
	follow := func(id uint64) quic.Appender {
		return &Follow{ID: id, Stream: "p", Origin: store.OriginKey{Hub: "origin"}, Follow: true, Credit: 1 << 20}
	}
	tests := []struct {
		name   string
		frames []quic.FrameType
		bodies []quic.Appender
	}{
		{name: "id reused", frames: []quic.FrameType{FramePullFollow, FramePullFollow}, bodies: []quic.Appender{follow(1), follow(1)}},
		{name: "id decreasing", frames: []quic.FrameType{FramePullFollow, FramePullFollow}, bodies: []quic.Appender{follow(5), follow(4)}},
		{name: "server frame from the client", frames: []quic.FrameType{FramePullProgress}, bodies: []quic.Appender{tagged{1, &Progress{}}}},
		{name: "malformed credit", frames: []quic.FrameType{FramePullCredit}, bodies: []quic.Appender{&FollowCredit{ID: 1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := quic.Dial(ctx, ps.peer.Addr, quic.ClientConfig{TLS: &tls.Config{InsecureSkipVerify: true}})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			st, err := c.Open(ctx, quic.OpReplicate, &SessionOpen{Requester: "edge"})
			if err != nil {
				t.Fatal(err)
			}
			for i, ft := range tt.frames {
				if err := st.Send(ft, tt.bodies[i]); err != nil {
					t.Fatal(err)
				}
			}
			for {
				ft, p, err := st.ReadFrame()
				if err != nil {
					t.Fatalf("no ERROR frame: %v", err)
				}
				if ft == quic.FrameError {
					e, err := quic.DecodeError(p)
					if err != nil || e.Code != quic.CodeProtocol {
						t.Fatalf("ERROR %v, %v; want protocol_error", e, err)
					}
					return
				}
			}
		})
	}
}

// TestClientSessionChecksServerFrames: the client refuses frames for
// follows it never opened and records beyond a follow's credit, and drops
// frames for follows it cancelled.
func TestClientSessionChecksServerFrames(t *testing.T) {
	batch, err := record.AppendBatch(nil, []record.Record{{Value: make([]byte, 100), Origin: record.Origin{Hub: "o", Seq: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	records := Msg{Type: FramePullRecords, Records: Records{High: 1, Batch: batch}}
	tests := []struct {
		name    string
		credit  int64
		msg     sessionMsg
		wantErr bool
	}{
		{name: "records within credit", credit: 1, msg: sessionMsg{ID: 1, Msg: records}},
		{name: "records beyond credit", credit: 0, msg: sessionMsg{ID: 1, Msg: records}, wantErr: true},
		{name: "cancelled follow", credit: 1, msg: sessionMsg{ID: 2, Msg: records}},
		{name: "never opened", credit: 1, msg: sessionMsg{ID: 3, Msg: records}, wantErr: true},
		{name: "end", credit: 0, msg: sessionMsg{ID: 1, End: &FollowEnd{ID: 1, Code: quic.CodeNotFound}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &clientSession{peer: "p", follows: map[uint64]*muxPull{}, credits: map[uint64]uint64{},
				kick: make(chan struct{}, 1), done: make(chan struct{}), lastID: 2}
			p := &muxPull{s: s, id: 1, notify: make(chan struct{}, 1), credit: tt.credit}
			s.follows[1] = p // follow 2 was cancelled: no longer listed
			err := s.deliver(tt.msg)
			if (err != nil) != tt.wantErr {
				t.Fatalf("deliver: %v, want error %v", err, tt.wantErr)
			}
			if tt.msg.End != nil {
				if _, err := p.Recv(context.Background()); quic.CodeOf(err) != quic.CodeNotFound {
					t.Fatalf("Recv after PULL_END: %v", err)
				}
			}
		})
	}
}

func gaugeValue(g prometheus.Gauge) float64 {
	var m dto.Metric
	if err := g.Write(&m); err != nil {
		panic(err)
	}
	return m.GetGauge().GetValue()
}

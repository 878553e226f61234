package hub

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/edgehub/edgehub/gossip"
	"github.com/edgehub/edgehub/internal/replicate"
	"github.com/edgehub/edgehub/plugins"
	"github.com/edgehub/edgehub/quic"
	"github.com/edgehub/edgehub/store"
)

// GapsFile, in the data directory, keeps the replication gaps this hub
// reported, so each is counted once across restarts and relayed to peers.
const GapsFile = "federation-gaps.json"

// peerIdleTimeout drops a replication connection that heard nothing from
// its peer for this long (keep-alives go every fifth of it; an idle
// following pull gets a heartbeat every second), so pulls redial soon after
// a partition heals (docs/federation.md, "Partitions").
const peerIdleTimeout = 10 * time.Second

// federation is the hub's membership (gossip) and replication (pulls over
// the QUIC data plane), started when [gossip] bind is set.
type federation struct {
	logger    *slog.Logger
	gossip    *gossip.Gossip
	rep       *replicate.Replicator
	transport *replicate.QUICTransport
	members   *membership
	tls       *tlsWatch
	closeOnce sync.Once
	closeErr  error
}

// addFederation builds the federation part and the /v1/peers route; it must
// run after the data plane is built (it serves pulls there).
func (h *Hub) addFederation() error {
	h.route("GET /v1/peers", h.listPeers)
	gc := h.cfg.Gossip
	if !gc.Enabled() {
		return nil
	}
	quicAddr := gc.QUICAdvertise
	if quicAddr == "" {
		quicAddr = advertisable(h.QUICAddr().String())
	}
	profile := gc.Profile
	if profile == "" {
		profile = gossip.ProfileWAN
	}
	own, err := h.serverTLS() // the data plane's certificate, loaded again
	if err != nil {
		return fmt.Errorf("hub: federation: %w", err)
	}
	leaf := own.Certificates[0].Leaf
	if leaf == nil {
		return fmt.Errorf("hub: federation: the data plane certificate has no parsed leaf")
	}
	gcfg := gossip.DefaultConfig(h.cfg.Hub.Name)
	gcfg.Bind, gcfg.Advertise, gcfg.Join = gc.Bind, gc.Advertise, gc.Join
	gcfg.SecretKeyFile, gcfg.Label, gcfg.Profile = gc.SecretKeyFile, gc.Label, profile
	gcfg.AllowUnencrypted = gc.AllowUnencrypted
	if gc.PruneAfter != nil {
		gcfg.PruneAfter = time.Duration(*gc.PruneAfter)
	}
	if gc.TombstoneTTL != nil {
		gcfg.TombstoneTTL = time.Duration(*gc.TombstoneTTL)
	}
	gcfg.Meta = gossip.NodeMeta{Site: h.cfg.Hub.Site, Region: h.cfg.Hub.Region, Tags: h.cfg.Hub.Tags, QUIC: quicAddr}
	if gc.SecretKeyFile != "" {
		// Without a key the pin would be anyone's to forge: peers do
		// not use it, so it is not published either.
		gcfg.Meta.CertPins = [][32]byte{certPin(leaf)}
	}
	gcfg.Logger = h.logger
	if gc.tune != nil {
		gc.tune(&gcfg)
	}
	g, err := gossip.New(gcfg)
	if err != nil {
		return fmt.Errorf("hub: federation: %w", err)
	}
	tlsConf, verifier, err := peerTLS(gc, own.Certificates[0], g, h.logger)
	if err != nil {
		g.Close()
		return fmt.Errorf("hub: federation: %w", err)
	}
	// A peer that lost our connection while a link was down (it sent a
	// heartbeat into the partition and gave up) never tells us: without a
	// short idle timeout our pulls would wait the data plane's 60s for
	// news after the link heals (found by internal/chaos TestPartitionHeal).
	transport := replicate.NewQUICTransport(quic.ClientConfig{TLS: tlsConf, Token: gc.PeerToken,
		IdleTimeout: peerIdleTimeout, KeepAlive: peerIdleTimeout / 5})
	transport.PeerTLS = func(p replicate.Peer) *tls.Config { return verifier.tlsFor(tlsConf, p) }
	watch := newTLSWatch(h.logger, h.metrics)
	m := &membership{g: g, self: h.cfg.Hub.Name, logger: h.logger}
	rc := replicate.DefaultConfig(h.cfg.Hub.Name)
	rc.Tags = h.cfg.Hub.Tags
	rc.Store = h.store
	rc.Transport = &tlsWatchTransport{Transport: transport, w: watch}
	rc.Membership = m
	rc.Publisher = m
	rc.Logger = h.logger
	rc.Registerer = h.metrics
	rc.Authorize = h.authorizePull
	rc.OriginSeqShift = plugins.OriginSeqShift // lag of plugin origins in input records, not 2^16 per input
	if gc.RateLimit != nil {
		rc.RateLimit = float64(*gc.RateLimit)
	}
	if gc.GapAfter > 0 {
		rc.GapAfter = time.Duration(gc.GapAfter)
	}
	rc.TombstoneTTL = gcfg.TombstoneTTL
	rc.StateFile = filepath.Join(h.cfg.Hub.DataDir, GapsFile)
	if gc.tuneReplication != nil {
		gc.tuneReplication(&rc)
	}
	rep, err := replicate.New(rc)
	if err != nil {
		g.Close()
		transport.Close()
		return fmt.Errorf("hub: federation: %w", err)
	}
	h.dataPlane.handle(quic.OpReplicate, rep.Handler())
	if p := h.dataPlane.auth.pins; p != nil {
		p.g.Store(g)
	}
	h.federation = &federation{logger: h.logger, gossip: g, rep: rep, transport: transport, members: m, tls: watch}
	h.add(h.federation)
	h.logger.Info("federation: gossip listening", "gossip", g.Addr(), "quic", quicAddr, "profile", profile,
		"encrypted", gc.SecretKeyFile != "", "label", gc.Label, "pins", verifier.pinning, "cert_pin", pinString(certPin(leaf)))
	return nil
}

// authorizePull checks a pull against [auth] like a subscription: the
// pulling hub's token or certificate must grant consume on the stream. The
// replicator asks before serving each pull (every follow of a session);
// the stream's replication policy it checks itself.
func (h *Hub) authorizePull(_ context.Context, req *quic.Request, requester, stream string) error {
	if err := h.dataPlane.auth.allow(req.Principal, actionConsume, stream); err != nil {
		h.logger.Warn("federation: pull refused", "principal", req.Principal.Name, "method", req.Principal.Method,
			"hub", requester, "stream", stream, "remote", req.Conn.RemoteAddr().String(), "err", err)
		return h.dataPlane.refuse(req.Op, err)
	}
	return nil
}

// advertisable turns a listening address into one peers can dial: a
// wildcard host becomes this machine's outbound address.
func advertisable(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsUnspecified() {
		return addr
	}
	if name, err := os.Hostname(); err == nil {
		return net.JoinHostPort(name, port)
	}
	return addr
}

// peerTLS is the client TLS of pulls and the verifier of peers'
// certificates: pinned through encrypted gossip, else verified against
// peer_ca_file (or the system roots); see peerVerifier. own (the hub's data
// plane certificate) is offered to peers that ask for a client
// certificate, so a peer with require_client_cert can be pulled from and
// can identify this hub by its certificate in [[auth.client]].
//
// The certificate is offered only when the peer's list of acceptable CAs
// admits it (or the peer lists none): a peer with optional client
// certificates (client_ca_file without require_client_cert) would fail the
// handshake on a certificate it cannot verify, where without one it would
// have accepted our peer_token.
func peerTLS(gc GossipConfig, own tls.Certificate, g *gossip.Gossip, logger *slog.Logger) (*tls.Config, *peerVerifier, error) {
	v := &peerVerifier{memberPins: gossipPins(g), pinning: g.Encrypted(), insecure: gc.PeerInsecure, own: &own, now: time.Now}
	c := &tls.Config{MinVersion: tls.VersionTLS13}
	if gc.PeerCAFile != "" {
		pem, err := os.ReadFile(gc.PeerCAFile)
		if err != nil {
			return nil, nil, fmt.Errorf("peer_ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, nil, fmt.Errorf("peer_ca_file %s: no PEM certificate", gc.PeerCAFile)
		}
		c.RootCAs, v.roots = pool, pool
	}
	c.GetClientCertificate = func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
		if err := cri.SupportsCertificate(&own); err != nil {
			logger.Debug("federation: a peer asks for a client certificate this hub's does not satisfy; sending none", "err", err)
			return &tls.Certificate{}, nil
		}
		return &own, nil
	}
	return c, v, nil
}

// Run runs gossip and replication until ctx ends, then leaves the
// federation gracefully.
func (f *federation) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return f.gossip.Run(gctx) })
	g.Go(func() error { return f.rep.Run(gctx) })
	err := g.Wait()
	lctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if lerr := f.gossip.Leave(lctx); lerr != nil {
		f.logger.Warn("federation: leave", "err", lerr)
	}
	return err
}

// Close stops replication and gossip; it is idempotent.
func (f *federation) Close() error {
	f.closeOnce.Do(func() {
		f.closeErr = errors.Join(f.rep.Close(), f.transport.Close(), f.gossip.Close())
	})
	return f.closeErr
}

// membership adapts gossip to replicate.Membership and replicate.Publisher.
type membership struct {
	g      *gossip.Gossip
	self   string
	logger *slog.Logger

	mu     sync.Mutex
	cached []replicate.Peer
	valid  <-chan struct{} // closed when cached is stale
}

// Peers implements replicate.Membership. The view is rebuilt only after
// gossip changed: replication asks often.
func (m *membership) Peers() []replicate.Peer {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.valid != nil {
		select {
		case <-m.valid:
		default:
			return m.cached
		}
	}
	m.valid = m.g.Changed()
	views := m.g.Streams()
	var out []replicate.Peer
	for _, mem := range m.g.Members() {
		if mem.Self {
			continue
		}
		p := replicate.Peer{Name: mem.Name, Addr: mem.Meta.QUIC, Alive: mem.State == gossip.StateAlive,
			Tags: mem.Meta.Tags, Streams: map[string]replicate.PeerStream{}}
		for name, v := range views {
			d, hasDef := v.Defs[mem.Name]
			vecs, hasVec := v.Vectors[mem.Name]
			if !hasDef && !hasVec {
				continue
			}
			ps := replicate.PeerStream{Vector: map[store.OriginKey]uint64{}, Incarnations: map[string]string{}}
			if hasDef {
				if c, err := replicate.DecodeDef(d.Spec); err == nil {
					rd := &replicate.Def{Config: c, Version: d.Version}
					if d.Deleted {
						ps.Deleted = rd
					} else {
						ps.Def = rd
					}
				} else {
					m.logger.Debug("federation: undecodable stream definition", "peer", mem.Name, "stream", name, "err", err)
				}
			}
			for origin, gl := range v.Layouts[mem.Name] {
				ol, err := replicate.DecodeLayout(gl.Spec)
				if err != nil || ol.Layout.Version != gl.Version {
					m.logger.Debug("federation: undecodable shard layout", "peer", mem.Name, "stream", name, "origin", origin, "err", err)
					continue
				}
				if ps.Layouts == nil {
					ps.Layouts = map[string]replicate.OriginLayout{}
				}
				ps.Layouts[origin] = ol
			}
			for origin, vec := range vecs {
				if vec.Incarnation != "" {
					ps.Incarnations[origin] = vec.Incarnation
				}
				for s, seq := range vec.Seqs {
					if seq > 0 {
						ps.Vector[store.OriginKey{Hub: origin, Shard: uint32(s)}] = seq
					}
				}
			}
			p.Streams[name] = ps
		}
		out = append(out, p)
	}
	m.cached = out
	return out
}

// Changed implements replicate.Membership.
func (m *membership) Changed() <-chan struct{} { return m.g.Changed() }

// PublishDef implements replicate.Publisher.
func (m *membership) PublishDef(stream string, d replicate.Def) {
	m.g.PublishDef(stream, gossip.Def{Version: d.Version, Spec: replicate.EncodeDef(d.Config)})
}

// PublishDeleted implements replicate.Publisher.
func (m *membership) PublishDeleted(stream string, d replicate.Def) {
	m.g.PublishDef(stream, gossip.Def{Version: d.Version, Deleted: true, Spec: replicate.EncodeDef(d.Config)})
}

// PublishVector implements replicate.Publisher: one gossip entry per
// origin hub, indexed by origin shard, with the incarnation of the origin's
// stream it counts in (an entry with no sequences yet says which
// incarnation a hub now follows), and one per resharded origin's layout.
func (m *membership) PublishVector(stream string, v map[store.OriginKey]uint64, incs map[string]string, layouts map[string]replicate.OriginLayout) {
	for origin, ol := range layouts {
		m.g.PublishLayout(stream, origin, gossip.Layout{Version: ol.Layout.Version, Spec: replicate.EncodeLayout(ol)})
	}
	by := map[string][]uint64{}
	for origin := range incs {
		by[origin] = []uint64{}
	}
	for k, seq := range v {
		s := by[k.Hub]
		if int(k.Shard) >= len(s) {
			s = append(s, make([]uint64, int(k.Shard)+1-len(s))...)
		}
		s[k.Shard] = seq
		by[k.Hub] = s
	}
	for origin, seqs := range by {
		m.g.PublishVector(stream, origin, gossip.Vector{Seqs: seqs, Incarnation: incs[origin]})
	}
}

// Peers is the body of GET /v1/peers.
type Peers struct {
	Self      string `json:"self"`
	Federated bool   `json:"federated"`
	// Members lists every hub gossip knows, ourselves included.
	Members []PeerInfo `json:"members"`
	// Lag is replication lag per stream, origin and the peer we pull that
	// origin from.
	Lag []ReplicationLag `json:"lag"`
	// Pulls details every pull task (one per stream and origin shard).
	Pulls []PullStatus `json:"pulls"`
	// Gaps lists, per stream and origin shard, the records this hub will
	// never hold: deleted by retention before it pulled them, or held by
	// no live peer any more while their origin was unreachable.
	Gaps []GapStatus `json:"gaps"`
	// Joining lists the join addresses while this hub has not joined any
	// member yet; gossip retries them every JoinRetrySeconds.
	Joining          []string `json:"joining,omitempty"`
	JoinRetrySeconds float64  `json:"join_retry_seconds,omitempty"`
}

// ReplicationLag is replication lag for one origin hub of one stream,
// summed over its shards, against the peer we pull it from.
type ReplicationLag struct {
	Stream  string  `json:"stream"`
	Origin  string  `json:"origin"`
	Peer    string  `json:"peer"`
	Records uint64  `json:"records"`
	Seconds float64 `json:"seconds"`
	Gaps    uint64  `json:"gaps"`
}

// PullStatus describes one pull task: one origin shard of one stream.
type PullStatus struct {
	Stream string `json:"stream"`
	Origin string `json:"origin"`
	Shard  uint32 `json:"origin_shard"`
	// Peer is the hub we pull from (the origin itself when reachable).
	Peer string `json:"peer"`
	// State is "starting", "catching-up", "following", "waiting" (no peer
	// has more, or the origin shard's parents are not applied yet),
	// "retrying" (after an error) or "complete" (a closed origin shard held
	// to its end).
	State     string `json:"state"`
	Watermark uint64 `json:"watermark"`
	// High is the highest origin sequence the peer reported holding, or
	// a live peer's gossiped vector shows (so lag shows while pulls fail).
	High       uint64  `json:"high"`
	LagRecords uint64  `json:"lag_records"`
	LagSeconds float64 `json:"lag_seconds"`
	Records    uint64  `json:"records_pulled"`
	Gaps       uint64  `json:"gaps"`
	GapSeqs    uint64  `json:"gap_sequences"`
	LastGap    string  `json:"last_gap,omitempty"`
	LastError  string  `json:"last_error,omitempty"`
}

// GapStatus is what this hub lost of one origin shard of one stream.
type GapStatus struct {
	Stream string `json:"stream"`
	Origin string `json:"origin"`
	Shard  uint32 `json:"origin_shard"`
	// Gaps counts the gaps reported, Sequences the origin sequence numbers
	// they cover (an upper bound on the records lost: an origin's shard
	// also numbers records it replicated).
	Gaps      uint64 `json:"gaps"`
	Sequences uint64 `json:"sequences"`
	// Last describes the latest gap: range, time, peer and reason.
	Last string `json:"last"`
}

// convertAll converts each element of in: the replicator's status types
// have the same fields as this package's, so a field added to one and not
// the other fails the conversion at compile time.
func convertAll[T, F any](in []F, conv func(F) T) []T {
	out := make([]T, 0, len(in))
	for _, v := range in {
		out = append(out, conv(v))
	}
	return out
}

// PeerInfo describes one member.
type PeerInfo struct {
	Name   string   `json:"name"`
	Self   bool     `json:"self,omitempty"`
	State  string   `json:"state"`
	Gossip string   `json:"gossip"`
	QUIC   string   `json:"quic"`
	Site   string   `json:"site,omitempty"`
	Region string   `json:"region,omitempty"`
	Tags   []string `json:"tags,omitempty"`
	// Behind maps stream → origin hub → records this member holds that we
	// do not (from gossiped vectors; 0 entries omitted; input records for
	// a plugin origin).
	Behind map[string]map[string]uint64 `json:"behind,omitempty"`
	// TLSError is the last TLS failure pulling from this member (its
	// certificate not trusted here, or ours refused there) with a hint,
	// until a pull from it succeeds; omitted when none.
	TLSError string `json:"tls_error,omitempty"`
	// Since is when this hub saw the member enter its state (RFC 3339;
	// omitted for ourselves), and DownSeconds how long it has been dead or
	// left (omitted while alive). memberlist reports a suspected member
	// alive until it declares it dead.
	Since       string  `json:"since,omitempty"`
	DownSeconds float64 `json:"down_seconds,omitempty"`
}

func (h *Hub) listPeers(w http.ResponseWriter, r *http.Request) error {
	out := Peers{Self: h.cfg.Hub.Name, Members: []PeerInfo{}, Lag: []ReplicationLag{}, Pulls: []PullStatus{},
		Gaps: []GapStatus{}}
	f := h.federation
	if f == nil {
		out.Members = append(out.Members, PeerInfo{Name: h.cfg.Hub.Name, Self: true, State: string(gossip.StateAlive),
			QUIC: h.QUICAddr().String(), Site: h.cfg.Hub.Site, Region: h.cfg.Hub.Region, Tags: h.cfg.Hub.Tags})
		writeJSON(w, http.StatusOK, out)
		return nil
	}
	out.Federated = true
	if j := f.gossip.Joining(); len(j) > 0 {
		out.Joining, out.JoinRetrySeconds = j, f.gossip.RejoinInterval().Seconds()
	}
	ours := map[string]map[store.OriginKey]uint64{}
	incs := map[string]map[string]string{} // stream → origin hub → incarnation we follow
	for _, st := range h.store.Streams() {
		ours[st.Name()] = st.Watermarks()
		incs[st.Name()] = st.OriginIncarnations()
	}
	peers := map[string]replicate.Peer{}
	for _, p := range f.members.Peers() {
		peers[p.Name] = p
	}
	for _, m := range f.gossip.Members() {
		info := PeerInfo{Name: m.Name, Self: m.Self, State: string(m.State), Gossip: m.Addr, QUIC: m.Meta.QUIC,
			Site: m.Meta.Site, Region: m.Meta.Region, Tags: m.Meta.Tags, TLSError: f.tls.problem(m.Name)}
		if !m.Since.IsZero() {
			info.Since = m.Since.UTC().Format(time.RFC3339)
			if m.State != gossip.StateAlive {
				info.DownSeconds = max(time.Since(m.Since).Seconds(), 0.001)
			}
		}
		if p, ok := peers[m.Name]; ok {
			for name, ps := range p.Streams {
				have, ok := ours[name]
				if !ok {
					continue
				}
				for k, seq := range ps.Vector {
					if k.Hub == h.cfg.Hub.Name || seq <= have[k] {
						continue
					}
					if theirs, mine := ps.Incarnations[k.Hub], incs[name][k.Hub]; theirs != "" && mine != "" && theirs != mine {
						continue // they count in another incarnation of the origin's stream
					}
					if info.Behind == nil {
						info.Behind = map[string]map[string]uint64{}
					}
					if info.Behind[name] == nil {
						info.Behind[name] = map[string]uint64{}
					}
					// A plugin origin numbers its outputs input<<16 | index:
					// count input records, as the pulls' lag does.
					shift := plugins.OriginSeqShift(k.Hub)
					info.Behind[name][k.Hub] += max(seq>>shift-have[k]>>shift, 1)
				}
			}
		}
		out.Members = append(out.Members, info)
	}
	slices.SortFunc(out.Members, func(a, b PeerInfo) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	out.Lag = convertAll(f.rep.Lag(), func(l replicate.Lag) ReplicationLag { return ReplicationLag(l) })
	out.Pulls = convertAll(f.rep.Status(), func(t replicate.TaskStatus) PullStatus { return PullStatus(t) })
	out.Gaps = convertAll(f.rep.Gaps(), func(g replicate.GapStatus) GapStatus { return GapStatus(g) })
	writeJSON(w, http.StatusOK, out)
	return nil
}

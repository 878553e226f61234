package hub

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgehub/edgehub/internal/groups"
	"github.com/edgehub/edgehub/quic"
	"github.com/edgehub/edgehub/store"
)

// Consumer groups: member sessions on the data plane (OpGroup) and the
// /v1/groups admin routes, over the coordinator of internal/groups. See
// docs/groups.md.

// GroupsFile holds the groups' offsets and epochs, relative to the data
// directory.
const GroupsFile = "groups.db"

// groupFrameQueue bounds the member frames read ahead of their handling; a
// member that sends faster is held back by QUIC flow control.
const groupFrameQueue = 16

type groupPlane struct {
	h      *Hub
	dp     *dataPlane
	coord  *groups.Coordinator
	logger *slog.Logger

	// Layout watchers: one goroutine per stream with groups, giving the
	// coordinator the stream's layout at start and at every change.
	ctx     context.Context // ends at Close
	cancel  context.CancelFunc
	watchMu sync.Mutex
	watched map[*store.Stream]bool
	watchWG sync.WaitGroup
}

// addGroups opens the coordinator and registers OpGroup, the admin routes
// and the metrics. It runs after addDataPlane.
func (h *Hub) addGroups() error {
	gc := h.cfg.Groups.withDefaults()
	cfg := groups.DefaultConfig(filepath.Join(h.cfg.Hub.DataDir, GroupsFile))
	cfg.DefaultSessionTimeout = time.Duration(gc.DefaultSessionTimeout)
	cfg.MinSessionTimeout = time.Duration(gc.MinSessionTimeout)
	cfg.MaxSessionTimeout = time.Duration(gc.MaxSessionTimeout)
	cfg.MaxMembers = gc.MaxMembers
	cfg.Logger = h.logger
	cfg.TestSkipParents = chaosSkipLineage("group")
	gp := &groupPlane{h: h, dp: h.dataPlane, logger: h.logger, watched: map[*store.Stream]bool{}}
	gp.ctx, gp.cancel = context.WithCancel(context.Background())
	cfg.Resolve = gp.resolve
	coord, err := groups.Open(cfg)
	if err != nil {
		gp.cancel()
		return fmt.Errorf("hub: consumer groups: %w", err)
	}
	gp.coord = coord
	// Groups loaded from the file learn their streams' layouts before any
	// member can join (the data plane serves later).
	for _, gi := range coord.Groups() {
		if st, err := h.store.Stream(gi.Stream); err == nil {
			gp.watch(st)
		}
	}
	h.add(gp)
	h.dataPlane.handle(quic.OpGroup, quic.HandlerFunc(gp.serve))
	h.route("GET /v1/groups", gp.list)
	h.route("GET /v1/groups/{name}", gp.describe)
	h.route("DELETE /v1/groups/{name}", gp.delete)
	h.route("POST /v1/groups/{name}/reset", gp.reset)
	h.addStreamUsers(func(stream string) []string {
		var out []string
		for _, g := range coord.Groups() {
			if g.Stream == stream {
				out = append(out, "group "+g.Name)
			}
		}
		return out
	})
	return gp.registerMetrics(h.metrics)
}

// Run has nothing to do: sessions run in data-plane handlers.
func (gp *groupPlane) Run(ctx context.Context) error {
	<-ctx.Done()
	return nil
}

// Close ends every member session, stops the layout watchers and closes
// groups.db. Idempotent.
func (gp *groupPlane) Close() error {
	gp.cancel()
	gp.watchWG.Wait()
	return gp.coord.Close()
}

// watch gives the coordinator st's layout now and starts following its
// changes, unless st is followed already. The follower ends with the
// stream (deleted: a stream created again under the name is another
// *store.Stream, followed from the next join) or at Close.
func (gp *groupPlane) watch(st *store.Stream) {
	gp.watchMu.Lock()
	if gp.watched[st] || gp.ctx.Err() != nil {
		gp.watchMu.Unlock()
		return
	}
	gp.watched[st] = true
	gp.watchWG.Add(1)
	gp.watchMu.Unlock()
	changed := st.LayoutChanged() // before the read: no change is missed
	gp.setLayout(st)
	go func() {
		defer gp.watchWG.Done()
		defer func() {
			gp.watchMu.Lock()
			delete(gp.watched, st)
			gp.watchMu.Unlock()
		}()
		for {
			select {
			case <-gp.ctx.Done():
				return
			case <-st.Done():
				return
			case <-changed:
			}
			changed = st.LayoutChanged()
			gp.setLayout(st)
		}
	}()
}

// setLayout converts st's layout for the coordinator. First, the first
// live sequence, is read for closed shards only (where it decides
// "finished"); see groups.Shard.
func (gp *groupPlane) setLayout(st *store.Stream) {
	l := st.Layout()
	shards := make([]groups.Shard, len(l.Shards))
	for i, sl := range l.Shards {
		sh := groups.Shard{ID: sl.ID, Parents: sl.Parents, Closed: sl.State != store.ShardOpen, End: sl.End,
			Retired: sl.State == store.ShardRetired}
		if sh.Closed {
			sh.ClosedAt = time.Unix(0, sl.ClosedAt)
			if sh.Retired {
				sh.First = sl.End + 1
			} else if first, _, err := st.Bounds(int(sl.ID)); err == nil {
				sh.First = first
			}
		}
		shards[i] = sh
	}
	if err := gp.coord.SetLayout(st.Name(), l.Version, shards); err != nil && !errors.Is(err, groups.ErrClosed) {
		gp.logger.Error("consumer groups: layout not applied; the next layout change retries", "stream", st.Name(),
			"layout_version", l.Version, "err", err)
	}
}

// resolve positions a shard the group never committed.
func (gp *groupPlane) resolve(stream string, shard int, start groups.Start) (uint64, error) {
	st, err := gp.h.store.Stream(stream)
	if err != nil {
		return 0, err
	}
	first, last, err := st.Bounds(shard)
	if err != nil {
		return 0, err
	}
	switch start.Kind {
	case groups.StartLatest:
		return last + 1, nil
	case groups.StartSeq:
		return max(start.Value, first), nil
	case groups.StartTime:
		if start.Value > 1<<63-1 {
			return 0, fmt.Errorf("%w: start time out of range", groups.ErrInvalid)
		}
		return st.SeqAtTime(shard, time.Unix(0, int64(start.Value)))
	}
	return first, nil
}

// serve runs one member session: it joins, pushes the member's assignment
// whenever it changes, and handles the member's heartbeats, commits, syncs
// and leave. A stream that ends without a leave detaches the member, which
// keeps its shards until its session timeout.
func (gp *groupPlane) serve(ctx context.Context, req *quic.Request) error {
	var join quic.GroupJoin
	if err := join.Decode(req.Body); err != nil {
		return quic.WireError(err)
	}
	st, err := gp.dp.openStream(req, join.Stream, actionConsume)
	if err != nil {
		return err
	}
	// Early data could be replayed: a replayed join or commit must not act.
	if err := req.Conn.HandshakeComplete(ctx); err != nil {
		return wireErr(err)
	}
	gp.watch(st)
	// The shard count at creation: a reshard does not change it (and is no
	// reason to drop the group's offsets).
	sess, err := gp.coord.Join(groups.JoinRequest{
		Group: join.Group, Stream: join.Stream, Shards: st.Config().Shards, Incarnation: st.Incarnation(), Member: join.MemberID,
		SessionTimeout: time.Duration(join.SessionTimeoutMillis) * time.Millisecond,
		Start:          groups.Start{Kind: groups.StartKind(join.Start.Kind), Value: join.Start.Value},
		Remote:         req.Conn.RemoteAddr().String(),
	})
	if err != nil {
		return gp.dp.refuse(req.Op, wireErr(err))
	}
	defer sess.Detach()
	log := gp.logger.With("group", join.Group, "member", join.MemberID)

	type frame struct {
		t   quic.FrameType
		p   []byte
		err error
	}
	frames := make(chan frame, groupFrameQueue)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			t, p, err := req.Stream.ReadFrame()
			select {
			case frames <- frame{t, p, err}:
			case <-stop:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	// The first assignment is ready; Changed fires for it.
	for {
		select {
		case <-ctx.Done():
			return wireErr(ctx.Err())
		case <-st.Done():
			// Deleted (or the hub is stopping): the member must not go on
			// with offsets of a stream that is gone; its rejoin finds the
			// stream created again (the group starts over) or not at all.
			log.Info("group session ended: stream closed", "stream", join.Stream)
			return quic.Errorf(quic.CodeUnavailable, "stream %q was deleted", join.Stream)
		case <-sess.Done():
			if err := sess.Err(); err != nil && !errors.Is(err, groups.ErrLeft) {
				log.Info("group session ended", "err", err)
				return wireErr(err)
			}
			return nil
		case <-sess.Changed():
			a := sess.Assignment()
			out := quic.GroupAssignment{Generation: a.Generation, SessionTimeoutMillis: quic.Millis(a.SessionTimeout),
				Shards: uint32(a.Shards), Leases: make([]quic.GroupLease, len(a.Leases))}
			for i, l := range a.Leases {
				out.Leases[i] = quic.GroupLease{Shard: uint32(l.Shard), Epoch: l.Epoch, Offset: l.Offset, ClosedNext: l.ClosedNext}
			}
			if err := req.Stream.Send(quic.FrameGroupAssignment, &out); err != nil {
				return err
			}
		case f := <-frames:
			if errors.Is(f.err, io.EOF) {
				return nil // closed without a leave: detached
			}
			if f.err != nil {
				return quic.WireError(f.err)
			}
			done, err := gp.handleFrame(req, st, sess, f.t, f.p)
			if err != nil || done {
				return err
			}
		}
	}
}

// handleFrame handles one member frame; done reports a leave.
func (gp *groupPlane) handleFrame(req *quic.Request, st *store.Stream, sess *groups.Session, t quic.FrameType, p []byte) (done bool, err error) {
	switch t {
	case quic.FrameGroupHeartbeat:
		var hb quic.GroupHeartbeat
		if err := hb.Decode(p); err != nil {
			return false, quic.WireError(err)
		}
		sess.Touch()
	case quic.FrameGroupCommit:
		var c quic.GroupCommit
		if err := c.Decode(p); err != nil {
			return false, quic.WireError(err)
		}
		ack := quic.GroupCommitAck{ID: c.ID, Results: make([]quic.GroupCommitResult, len(c.Offsets))}
		var commits []groups.Commit
		var at []int // index in c.Offsets of each commit
		for i, o := range c.Offsets {
			ack.Results[i].Shard = o.Shard
			// An offset past the shard's end would skip records not yet
			// written.
			if _, last, err := st.Bounds(int(o.Shard)); err != nil || o.Offset > last+1 {
				ack.Results[i].Code = quic.CodeInvalidArgument
				ack.Results[i].Message = fmt.Sprintf("offset %d of shard %d is past the shard's end (last %d) or the shard does not exist", o.Offset, o.Shard, last)
				continue
			}
			commits = append(commits, groups.Commit{Shard: int(o.Shard), Epoch: o.Epoch, Offset: o.Offset})
			at = append(at, i)
		}
		for j, err := range sess.Commit(commits) {
			if err != nil {
				e := toWire(err)
				ack.Results[at[j]].Code, ack.Results[at[j]].Message = e.Code, e.Message
			}
		}
		if len(commits) == 0 {
			sess.Touch()
		}
		return false, req.Stream.Send(quic.FrameGroupCommitAck, &ack)
	case quic.FrameGroupSync:
		var s quic.GroupSync
		if err := s.Decode(p); err != nil {
			return false, quic.WireError(err)
		}
		if err := sess.Sync(s.Generation); err != nil {
			return false, wireErr(err)
		}
	case quic.FrameGroupLeave:
		sess.Leave()
		return true, nil
	default:
		return false, quic.Errorf(quic.CodeProtocol, "%s frame in a group session", t)
	}
	return false, nil
}

// Admin API shapes.

// GroupList is the body of GET /v1/groups.
type GroupList struct {
	Groups []GroupSummary `json:"groups"`
}

// GroupSummary is one group in GroupList.
type GroupSummary struct {
	Name    string `json:"name"`
	Stream  string `json:"stream"`
	Shards  int    `json:"shards"`
	Members int    `json:"members"`
	// Lag is the records after the committed offsets, over all shards.
	Lag        int64  `json:"lag"`
	Rebalances uint64 `json:"rebalances"`
}

// GroupInfo is the body of GET /v1/groups/{name}.
type GroupInfo struct {
	Name    string    `json:"name"`
	Stream  string    `json:"stream"`
	Created time.Time `json:"created"`
	// Epoch is the highest lease epoch granted so far.
	Epoch      uint64 `json:"epoch"`
	Rebalances uint64 `json:"rebalances"`
	// Incarnation is the stream incarnation the committed offsets belong
	// to. Stale says the stream was deleted and created again since: the
	// offsets are void, lag counts every live record, and the group starts
	// over at its next join (or reset).
	Incarnation string        `json:"incarnation,omitempty"`
	Stale       bool          `json:"stale,omitempty"`
	Lag         int64         `json:"lag"`
	Members     []GroupMember `json:"members"`
	Shards      []GroupShard  `json:"shards"`
}

// GroupMember is a member of a group.
type GroupMember struct {
	ID     string `json:"id"`
	Remote string `json:"remote"`
	// Connected is false while the member's stream is gone and its session
	// timeout runs.
	Connected      bool      `json:"connected"`
	SessionTimeout Duration  `json:"session_timeout"`
	Joined         time.Time `json:"joined"`
	LastSeen       time.Time `json:"last_seen"`
	Generation     uint64    `json:"generation"`
	Shards         []int     `json:"shards"`
	HandingOver    []int     `json:"handing_over,omitempty"`
}

// GroupShard is a shard's lease and committed offset.
type GroupShard struct {
	Shard int `json:"shard"`
	// State is "assigned", "handing_over" or "unassigned".
	State string `json:"state"`
	Owner string `json:"owner,omitempty"`
	Epoch uint64 `json:"epoch,omitempty"`
	// Committed is the next sequence to process; 0 when the group never
	// positioned the shard.
	Committed   uint64     `json:"committed"`
	LastSeq     uint64     `json:"last_seq"`
	Lag         int64      `json:"lag"`
	CommittedAt *time.Time `json:"committed_at,omitempty"`
	CommittedBy string     `json:"committed_by,omitempty"`
	// Across a reshard (absent while the shard is open): ShardState is
	// "closed" (not finished by the group yet) or "finished" (committed
	// past EndSeq, or nothing of it left to read); EndSeq is the closed
	// shard's last sequence; WaitingFor lists the parents the group has not
	// finished: the shard is leased only after them. Retired shards are
	// not listed (their offsets are deleted).
	ShardState string `json:"shard_state,omitempty"`
	EndSeq     uint64 `json:"end_seq,omitempty"`
	WaitingFor []int  `json:"waiting_for,omitempty"`
}

// GroupResetRequest is the body of POST /v1/groups/{name}/reset.
type GroupResetRequest struct {
	// Stream the group consumes (required: a reset of a group that does not
	// exist yet creates it on this stream).
	Stream string `json:"stream"`
	// To is "earliest", "latest", a sequence number or an RFC 3339 time.
	To string `json:"to"`
	// Shards to reset; empty means all.
	Shards []int `json:"shards,omitempty"`
}

// info converts a coordinator description, adding each shard's end and lag.
func (gp *groupPlane) info(gi groups.GroupInfo) GroupInfo {
	out := GroupInfo{Name: gi.Name, Stream: gi.Stream, Created: gi.Created, Epoch: gi.Epoch, Rebalances: gi.Rebalances,
		Members: make([]GroupMember, 0, len(gi.Members)), Shards: make([]GroupShard, 0, len(gi.Offsets))}
	for _, m := range gi.Members {
		out.Members = append(out.Members, GroupMember{ID: m.ID, Remote: m.Remote, Connected: m.Connected,
			SessionTimeout: Duration(m.SessionTimeout), Joined: m.Joined.UTC(), LastSeen: m.LastSeen.UTC(),
			Generation: m.Generation, Shards: m.Shards, HandingOver: m.HandingOver})
	}
	st, _ := gp.h.store.Stream(gi.Stream)
	out.Incarnation = gi.Incarnation
	out.Stale = st != nil && gi.Incarnation != "" && gi.Incarnation != st.Incarnation()
	for _, s := range gi.Offsets {
		if s.ShardState == groups.ShardStateRetired {
			continue
		}
		gs := GroupShard{Shard: s.Shard, State: s.State, Committed: s.Offset, CommittedBy: s.CommittedBy, WaitingFor: s.WaitingFor}
		if s.ShardState != groups.ShardStateOpen {
			gs.ShardState, gs.EndSeq = s.ShardState, s.End
		}
		if s.State != groups.StateUnassigned {
			gs.Owner, gs.Epoch = s.Owner, s.Epoch
		}
		if !s.CommittedAt.IsZero() {
			t := s.CommittedAt
			gs.CommittedAt = &t
		}
		if st != nil && s.Shard < st.Shards() {
			first, last, _ := st.Bounds(s.Shard)
			gs.LastSeq = last
			committed := s.Offset
			if out.Stale {
				committed = 0
			}
			gs.Lag = int64(last+1) - int64(max(committed, first))
			gs.Lag = max(gs.Lag, 0)
		}
		out.Lag += gs.Lag
		out.Shards = append(out.Shards, gs)
	}
	return out
}

func (gp *groupPlane) list(w http.ResponseWriter, r *http.Request) error {
	list := GroupList{Groups: []GroupSummary{}}
	for _, gi := range gp.coord.Groups() {
		info := gp.info(gi)
		list.Groups = append(list.Groups, GroupSummary{Name: info.Name, Stream: info.Stream, Shards: len(info.Shards),
			Members: len(info.Members), Lag: info.Lag, Rebalances: info.Rebalances})
	}
	writeJSON(w, http.StatusOK, list)
	return nil
}

func (gp *groupPlane) describe(w http.ResponseWriter, r *http.Request) error {
	gi, err := gp.coord.Group(r.PathValue("name"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, gp.info(gi))
	return nil
}

func (gp *groupPlane) delete(w http.ResponseWriter, r *http.Request) error {
	if err := gp.coord.Delete(r.PathValue("name")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// reset sets the committed offsets of an idle group (creating it if
// needed) to the earliest or latest record, a sequence or a time.
func (gp *groupPlane) reset(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	var req GroupResetRequest
	if err := readJSON(w, r, &req); err != nil {
		return err
	}
	if req.Stream == "" {
		return badRequest("reset group %q: give the stream it consumes", name)
	}
	var start groups.Start
	switch req.To {
	case "earliest":
	case "latest":
		start.Kind = groups.StartLatest
	default:
		if n, err := strconv.ParseUint(req.To, 10, 64); err == nil && n > 0 {
			start = groups.Start{Kind: groups.StartSeq, Value: n}
		} else if t, err := time.Parse(time.RFC3339Nano, req.To); err == nil && t.UnixNano() >= 0 {
			start = groups.Start{Kind: groups.StartTime, Value: uint64(t.UnixNano())}
		} else {
			return badRequest("reset group %q: \"to\" is %q: want earliest, latest, a sequence number (from 1) or an RFC 3339 time", name, req.To)
		}
	}
	st, err := gp.h.store.Stream(req.Stream)
	if err != nil {
		return err
	}
	gp.watch(st)
	layout := st.Layout()
	shards := req.Shards
	if len(shards) == 0 {
		// Every shard with records to position: retired ones have none.
		for _, sl := range layout.Shards {
			if sl.State != store.ShardRetired {
				shards = append(shards, int(sl.ID))
			}
		}
	}
	offsets := map[int]uint64{}
	for _, sh := range shards {
		if sh < 0 || sh >= len(layout.Shards) || layout.Shards[sh].State == store.ShardRetired {
			return badRequest("reset group %q: shard %d of %d", name, sh, len(layout.Shards))
		}
		pos, err := gp.resolve(req.Stream, sh, start)
		if err != nil {
			return err
		}
		offsets[sh] = max(pos, 1)
	}
	err = gp.coord.Reset(groups.ResetRequest{Group: name, Stream: req.Stream, Shards: st.Config().Shards, Incarnation: st.Incarnation(), Offsets: offsets})
	if err != nil {
		return err
	}
	gi, err := gp.coord.Group(name)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, gp.info(gi))
	return nil
}

// groupCollector exports members, committed offsets and lag per group and
// shard, read at scrape time.
type groupCollector struct {
	gp                               *groupPlane
	members, committed, lag, waiting *prometheus.Desc
}

func (c *groupCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.members
	ch <- c.committed
	ch <- c.lag
	ch <- c.waiting
}

func (c *groupCollector) Collect(ch chan<- prometheus.Metric) {
	for _, gi := range c.gp.coord.Groups() {
		info := c.gp.info(gi)
		ch <- prometheus.MustNewConstMetric(c.members, prometheus.GaugeValue, float64(len(info.Members)), info.Name, info.Stream)
		for _, s := range info.Shards {
			shard := strconv.Itoa(s.Shard)
			ch <- prometheus.MustNewConstMetric(c.committed, prometheus.GaugeValue, float64(s.Committed), info.Name, info.Stream, shard)
			ch <- prometheus.MustNewConstMetric(c.lag, prometheus.GaugeValue, float64(s.Lag), info.Name, info.Stream, shard)
		}
	}
	for stream, n := range c.gp.coord.WaitingShards() {
		ch <- prometheus.MustNewConstMetric(c.waiting, prometheus.GaugeValue, float64(n), stream)
	}
}

func (gp *groupPlane) registerMetrics(reg *prometheus.Registry) error {
	shardLabels := []string{"group", "stream", "shard"}
	cs := []prometheus.Collector{
		&groupCollector{
			gp:        gp,
			members:   prometheus.NewDesc("edgehub_group_members", "Members of a consumer group (connected or within their session timeout).", []string{"group", "stream"}, nil),
			committed: prometheus.NewDesc("edgehub_group_committed_offset", "Committed offset of a group's shard: the next sequence to process.", shardLabels, nil),
			lag:       prometheus.NewDesc("edgehub_group_lag_records", "Records of a shard after the group's committed offset.", shardLabels, nil),
			// The series other readers export too, with their own reader
			// label (the help text must be the same: internal/replicate).
			waiting: prometheus.NewDesc("edgehub_lineage_waiting_shards",
				"Shards a reader may not start yet because a parent shard closed by a reshard is not finished for it.",
				[]string{"stream"}, prometheus.Labels{"reader": "group"}),
		},
	}
	for _, m := range []struct {
		name, help string
		f          func(groups.Stats) uint64
	}{
		{"edgehub_group_joins_total", "Member joins (including rejoins).", func(s groups.Stats) uint64 { return s.Joins }},
		{"edgehub_group_leaves_total", "Members that left.", func(s groups.Stats) uint64 { return s.Leaves }},
		{"edgehub_group_expirations_total", "Members expired after their session timeout.", func(s groups.Stats) uint64 { return s.Expirations }},
		{"edgehub_group_rebalances_total", "Rebalances that granted or handed over shards.", func(s groups.Stats) uint64 { return s.Rebalances }},
		{"edgehub_group_commits_total", "Shard offsets committed.", func(s groups.Stats) uint64 { return s.Commits }},
		{"edgehub_group_commits_refused_total", "Shard offsets refused (stale epoch or ended session).", func(s groups.Stats) uint64 { return s.CommitsRefused }},
	} {
		cs = append(cs, prometheus.NewCounterFunc(prometheus.CounterOpts{Name: m.name, Help: m.help}, func() float64 { return float64(m.f(gp.coord.Stats())) }))
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("hub: register group metrics: %w", err)
		}
	}
	return nil
}

// chaosSkipLineage reports whether reader ("group", ...) skips the
// parent-finished check of a reshard's lineage: the negative control of the
// lineage tests. Only builds with the chaos tag make it report true
// (lineage_chaos.go, EDGEHUB_CHAOS_SKIP_LINEAGE).
var chaosSkipLineage = func(reader string) bool { return false }

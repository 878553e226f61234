package hub

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/edgehub/edgehub/store"
)

// The admin API: JSON over HTTP under /v1/, /healthz, /metrics and the
// dashboard at / (dashboard.go). Other files add routes with h.route;
// handlers return an error and writeError turns it into {"error": "...",
// "code": "..."} with the status that fits (see errorStatus).

// maxRequestBody bounds an admin request body.
const maxRequestBody = 1 << 20

// Error codes of the admin API, with their HTTP status.
const (
	CodeInvalid     = "invalid_argument"   // 400
	CodeNotFound    = "not_found"          // 404
	CodeMethod      = "method_not_allowed" // 405
	CodeExists      = "already_exists"     // 409
	CodeConflict    = "conflict"           // 409
	CodeInUse       = "in_use"             // 409: a stream others use, deleted without force
	CodeTooLarge    = "too_large"          // 413
	CodeInternal    = "internal"           // 500
	CodeCorrupt     = "data_corrupt"       // 500
	CodeUnavailable = "unavailable"        // 503
)

// ErrorBody is the JSON body of every admin API error.
type ErrorBody struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

// apiError is an error with an explicit status and code, for handlers whose
// error is not one of the mapped sentinels.
type apiError struct {
	status int
	code   string
	err    error
}

func (e *apiError) Error() string { return e.err.Error() }
func (e *apiError) Unwrap() error { return e.err }

// badRequest returns a 400 invalid_argument error.
func badRequest(format string, args ...any) error {
	return &apiError{http.StatusBadRequest, CodeInvalid, fmt.Errorf(format, args...)}
}

// writeJSON writes v as the JSON response with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v) // the status is sent; a failed write leaves nothing to report to
}

// writeError writes err as an ErrorBody with the status errorStatus gives.
func writeError(w http.ResponseWriter, err error) {
	status, code := errorStatus(err)
	writeJSON(w, status, ErrorBody{Error: err.Error(), Code: code})
}

// readJSON decodes the request body into v strictly: unknown fields and
// trailing data are errors, and the body is bounded by maxRequestBody.
func readJSON(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRequestBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		if errors.Is(err, io.EOF) {
			return badRequest("request body: empty, want a JSON object")
		}
		return badRequest("request body: %w", err)
	}
	// More would miss a stray ']' or '}' after the object.
	if _, err := dec.Token(); err != io.EOF {
		return badRequest("request body: trailing data after the JSON object")
	}
	return nil
}

// route registers an admin handler. pattern is a Go ServeMux pattern with a
// method ("GET /v1/streams/{name}"). A handler that returns an error has
// written nothing; route writes the error. Server errors are logged.
func (h *Hub) route(pattern string, fn func(w http.ResponseWriter, r *http.Request) error) {
	h.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		if err := fn(w, r); err != nil {
			if status, _ := errorStatus(err); status >= 500 {
				h.logger.Error("admin request failed", "method", r.Method, "path", r.URL.Path, "err", err)
			}
			writeError(w, err)
		}
	})
}

// adminServer serves the admin mux on its listener.
type adminServer struct {
	ln        net.Listener
	srv       *http.Server
	tls       bool // serve HTTPS with srv.TLSConfig
	guard     *adminGuard
	closeOnce sync.Once
	closeErr  error
}

func (a *adminServer) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() {
		if a.tls {
			errc <- a.srv.ServeTLS(a.ln, "", "")
			return
		}
		errc <- a.srv.Serve(a.ln)
	}()
	select {
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("admin: serve: %w", err)
	case <-ctx.Done():
	}
	// Let in-flight requests finish; the store is still open.
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.srv.Shutdown(sctx); err != nil {
		a.srv.Close()
	}
	<-errc
	return nil
}

// Drain stops accepting and lets in-flight requests (HTTP ingest's appends
// among them) finish, within ctx.
func (a *adminServer) Drain(ctx context.Context) error {
	if err := a.srv.Shutdown(ctx); err != nil {
		return fmt.Errorf("admin: requests still running: %w", err)
	}
	return nil
}

func (a *adminServer) Close() error {
	a.closeOnce.Do(func() {
		a.srv.Close()
		if err := a.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			a.closeErr = fmt.Errorf("admin: close: %w", err)
		}
	})
	return a.closeErr
}

// addAdmin binds the admin listener (so a busy port fails New) and registers
// the routes of this file.
func (h *Hub) addAdmin() error {
	var tlsConf *tls.Config
	if h.cfg.Admin.TLSEnabled() {
		var err error
		if tlsConf, err = h.adminTLS(); err != nil {
			return err
		}
	}
	ln, err := net.Listen("tcp", h.cfg.Listen.Admin)
	if err != nil {
		return fmt.Errorf("hub: admin listen %s: %w", h.cfg.Listen.Admin, err)
	}
	guard, err := newAdminGuard(h.cfg.Admin, h.cfg.Listen.Admin, ln.Addr(), h.logger, h.metrics)
	if err != nil {
		ln.Close()
		return err
	}
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "edgehub_admin_requests_total",
		Help: "Admin API requests by route pattern and status code.",
	}, []string{"pattern", "code"})
	h.metrics.MustRegister(requests)

	h.mux.HandleFunc("GET /healthz", h.healthz)
	h.mux.Handle("GET /metrics", promhttp.HandlerFor(h.metrics, promhttp.HandlerOpts{}))
	h.addDashboard() // GET /, /v1/hub, /v1/rates, /v1/streams/{name}/tail: dashboard.go
	h.route("GET /v1/streams", h.listStreams)
	h.route("POST /v1/streams", h.createStream)
	h.route("GET /v1/streams/{name}", h.describeStream)
	h.route("PATCH /v1/streams/{name}", h.updateStream)
	h.route("DELETE /v1/streams/{name}", h.deleteStream)
	h.route("/v1/", h.notFound)

	guarded := guard.wrap(h.mux)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		guarded.ServeHTTP(sw, r)
		pattern := r.Pattern
		if pattern == "" {
			pattern = "unmatched"
		}
		requests.WithLabelValues(pattern, fmt.Sprint(sw.status)).Inc()
	})
	h.admin = &adminServer{ln: ln, tls: tlsConf != nil, guard: guard, srv: &http.Server{
		Handler:           handler,
		TLSConfig:         tlsConf,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(h.logger.Handler(), slog.LevelWarn),
	}}
	h.add(h.admin)
	if h.cfg.Admin.Enabled() && tlsConf == nil && !isLoopbackListener(ln.Addr()) {
		h.logger.Warn("admin: tokens are sent in clear text: the admin listener is not loopback and [admin] tls is off",
			"listen", ln.Addr().String())
	}
	h.logger.Info("admin API listening", "url", h.AdminURL(), "tokens", len(h.cfg.Admin.Tokens),
		"allowed_origins", h.cfg.Admin.AllowedOrigins)
	return nil
}

// AdminURL returns the base URL of the admin API (http or https).
func (h *Hub) AdminURL() string {
	if h.admin.tls {
		return "https://" + h.admin.ln.Addr().String()
	}
	return "http://" + h.admin.ln.Addr().String()
}

func isLoopbackListener(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

// notFound answers requests no /v1/ route matched: 405 with an Allow header
// if the path exists for other methods, else 404, both as JSON errors.
func (h *Hub) notFound(w http.ResponseWriter, r *http.Request) error {
	var allowed []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := h.mux.Handler(probe); pattern != "" && pattern != "/v1/" {
			allowed = append(allowed, m)
		}
	}
	if len(allowed) > 0 {
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		return &apiError{http.StatusMethodNotAllowed, CodeMethod, fmt.Errorf("%s not allowed on %s (allowed: %s)", r.Method, r.URL.Path, strings.Join(allowed, ", "))}
	}
	return &apiError{http.StatusNotFound, CodeNotFound, fmt.Errorf("no such API: %s %s", r.Method, r.URL.Path)}
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Health is the body of GET /healthz.
type Health struct {
	Status string `json:"status"` // "ok" or "unavailable"
	Name   string `json:"name"`
}

func (h *Hub) healthz(w http.ResponseWriter, r *http.Request) {
	if !h.ready.Load() {
		writeJSON(w, http.StatusServiceUnavailable, Health{Status: "unavailable", Name: h.cfg.Hub.Name})
		return
	}
	writeJSON(w, http.StatusOK, Health{Status: "ok", Name: h.cfg.Hub.Name})
}

// StreamSettings are a stream's settings as the admin API shows them.
type StreamSettings struct {
	Shards             int       `json:"shards"`
	Retention          Duration  `json:"retention"`
	MaxBytes           Size      `json:"max_bytes"`
	Compact            bool      `json:"compact"`
	TombstoneRetention Duration  `json:"tombstone_retention"`
	Replicate          Replicate `json:"replicate"`
	// Copies is how many hubs hold a batch before its ACK, and what
	// happens when they do not (hub/copies.go).
	CopiesPolicy
	// Autosplit is the stream's automatic split policy (nil: none), and
	// AutosplitFrom where it was set: "config" (hub.toml) or "api".
	Autosplit     *AutosplitConfig  `json:"autosplit,omitempty"`
	AutosplitFrom string            `json:"autosplit_from,omitempty"`
	Meta          map[string]string `json:"meta,omitempty"`
}

// StreamInfo describes a stream: GET /v1/streams lists them without Shards,
// GET /v1/streams/{name} includes them.
type StreamInfo struct {
	Name string `json:"name"`
	// Incarnation is the stream's unique id, new each time a stream of this
	// name is created (32 hex digits; docs/store.md, "Incarnations").
	Incarnation string         `json:"incarnation"`
	Config      StreamSettings `json:"config"`
	Records     int64          `json:"records"`
	Bytes       int64          `json:"bytes"`
	// LayoutVersion counts the stream's reshards (0: never resharded);
	// OpenShards is the number of shards taking appends. Shards lists
	// closed shards too, and retired ones only with ?retired=true.
	LayoutVersion uint64      `json:"layout_version"`
	OpenShards    int         `json:"open_shards"`
	Shards        []ShardInfo `json:"shards,omitempty"`
	// DamagedChunks counts the damaged chunks of every shard not repaired
	// yet (GET /v1/streams/{name} lists them in Shards[].Damaged).
	DamagedChunks int `json:"damaged_chunks,omitempty"`
	// Users lists what keeps a position in the stream ("plugin agg
	// (input)", "group billing", "webhook audit"); GET /v1/streams/{name}
	// only.
	Users []string `json:"users,omitempty"`
	// CopiesShort counts the batches of this hub's producers acknowledged
	// (copies_shortfall = "ack") or refused ("fail") short of their copies
	// since the hub started; GET /v1/streams/{name} only.
	CopiesShort int64 `json:"copies_short,omitempty"`
}

// ShardInfo describes one shard. Hash bounds are 16 hex digits (inclusive),
// as strings because JSON numbers lose 64-bit precision in many clients.
type ShardInfo struct {
	Shard     int    `json:"shard"`
	HashStart string `json:"hash_start"`
	HashEnd   string `json:"hash_end"`
	// FirstSeq is the first live sequence; FirstSeq > LastSeq when the shard
	// holds no records.
	FirstSeq   uint64     `json:"first_seq"`
	LastSeq    uint64     `json:"last_seq"`
	Records    int64      `json:"records"`
	Bytes      int64      `json:"bytes"`
	LastIngest *time.Time `json:"last_ingest,omitempty"`
	// Damaged lists the shard's damaged ranges not repaired yet; GET
	// /v1/streams/{name} only.
	Damaged []DamagedRange `json:"damaged,omitempty"`
	// State is open, closed (a reshard closed it: read-only, EndSeq is its
	// last sequence, 0 if it never held a record) or retired (closed and
	// emptied by retention). Parents and Children are the shard ids of its
	// lineage: a reader finishes the parents before it reads a child.
	State    string     `json:"state"`
	EndSeq   uint64     `json:"end_seq,omitempty"`
	ClosedAt *time.Time `json:"closed_at,omitempty"`
	Parents  []uint32   `json:"parents,omitempty"`
	Children []uint32   `json:"children,omitempty"`
	// CopiesHeld lists the peers that reported holding this shard through
	// LastSeq (streams with copies > 1; GET /v1/streams/{name} only).
	CopiesHeld []string `json:"copies_held,omitempty"`
}

// StreamList is the body of GET /v1/streams.
type StreamList struct {
	Streams []StreamInfo `json:"streams"`
}

// streamInfo describes st; withShards adds its shards, retired ones only
// with withRetired.
func streamInfo(st *store.Stream, withShards, withRetired bool) StreamInfo {
	c := st.Config()
	meta := make(map[string]string, len(c.Meta))
	for k, v := range c.Meta {
		if k != MetaReplicate && k != MetaAutosplit && k != MetaCopies {
			meta[k] = v
		}
	}
	if len(meta) == 0 {
		meta = nil
	}
	info := StreamInfo{
		Name: st.Name(), Incarnation: st.Incarnation(),
		Config: StreamSettings{
			Shards: c.Shards, Retention: Duration(c.Retention), MaxBytes: Size(c.MaxBytes),
			Compact: c.Compact, TombstoneRetention: Duration(c.TombstoneRetention),
			Replicate: Replicate(c.Meta[MetaReplicate]).orLocal(), Meta: meta,
			CopiesPolicy: copiesOf(c),
		},
	}
	if a, from, ok, err := decodeAutosplit(c.Meta[MetaAutosplit]); ok && err == nil {
		info.Config.Autosplit, info.Config.AutosplitFrom = &a, from
	}
	for _, n := range st.DamagedChunks() {
		info.DamagedChunks += n
	}
	layout := st.Layout()
	info.LayoutVersion, info.OpenShards = layout.Version, len(layout.Open())
	for _, s := range st.Stats() {
		info.Records += s.Records
		info.Bytes += s.Bytes
		if !withShards || s.State == store.ShardRetired && !withRetired {
			continue
		}
		si := ShardInfo{
			Shard: s.Shard, HashStart: fmt.Sprintf("%016x", s.HashStart), HashEnd: fmt.Sprintf("%016x", s.HashEnd),
			FirstSeq: s.FirstSeq, LastSeq: s.LastSeq, Records: s.Records, Bytes: s.Bytes,
			State: s.State.String(), EndSeq: s.End, Parents: s.Parents, Children: s.Children,
		}
		if s.LastIngest > 0 {
			t := time.Unix(0, s.LastIngest).UTC()
			si.LastIngest = &t
		}
		if s.Shard < len(layout.Shards) && layout.Shards[s.Shard].ClosedAt > 0 {
			t := time.Unix(0, layout.Shards[s.Shard].ClosedAt).UTC()
			si.ClosedAt = &t
		}
		info.Shards = append(info.Shards, si)
	}
	return info
}

func (h *Hub) listStreams(w http.ResponseWriter, r *http.Request) error {
	list := StreamList{Streams: []StreamInfo{}}
	for _, st := range h.store.Streams() {
		list.Streams = append(list.Streams, streamInfo(st, false, false))
	}
	writeJSON(w, http.StatusOK, list)
	return nil
}

// StreamRequest is the body of POST /v1/streams (Name required, the rest
// optional with the hub.toml defaults) and of PATCH /v1/streams/{name}
// (only the fields present change; Name and Shards, if given, must match).
type StreamRequest struct {
	Name               string     `json:"name,omitempty"`
	Shards             int        `json:"shards,omitempty"`
	Retention          *Duration  `json:"retention,omitempty"`
	MaxBytes           *Size      `json:"max_bytes,omitempty"`
	Compact            *bool      `json:"compact,omitempty"`
	TombstoneRetention *Duration  `json:"tombstone_retention,omitempty"`
	Replicate          *Replicate `json:"replicate,omitempty"`
	Copies             *int       `json:"copies,omitempty"`
	CopiesAt           *Replicate `json:"copies_at,omitempty"`
	CopiesTimeout      *Duration  `json:"copies_timeout,omitempty"`
	CopiesShortfall    *string    `json:"copies_shortfall,omitempty"`
}

// apply overlays the fields present in req on c.
func (req StreamRequest) apply(c *store.StreamConfig) {
	if req.Retention != nil {
		c.Retention = time.Duration(*req.Retention)
	}
	if req.MaxBytes != nil {
		c.MaxBytes = int64(*req.MaxBytes)
	}
	if req.Compact != nil {
		c.Compact = *req.Compact
	}
	if req.TombstoneRetention != nil {
		c.TombstoneRetention = time.Duration(*req.TombstoneRetention)
	}
	if req.Replicate != nil {
		if c.Meta == nil {
			c.Meta = map[string]string{}
		}
		c.Meta[MetaReplicate] = string(req.Replicate.orLocal())
	}
	if req.Copies != nil || req.CopiesAt != nil || req.CopiesTimeout != nil || req.CopiesShortfall != nil {
		p := copiesOf(*c)
		if req.Copies != nil {
			p.Copies = *req.Copies
		}
		if req.CopiesAt != nil {
			p.At = *req.CopiesAt
		}
		if req.CopiesTimeout != nil {
			p.Timeout = *req.CopiesTimeout
		}
		if req.CopiesShortfall != nil {
			p.Shortfall = *req.CopiesShortfall
		}
		setCopies(c, p)
	}
}

func (h *Hub) createStream(w http.ResponseWriter, r *http.Request) error {
	var req StreamRequest
	if err := readJSON(w, r, &req); err != nil {
		return err
	}
	var decl StreamConfig
	decl.setDefaults()
	decl.Name = req.Name
	if req.Shards != 0 {
		decl.Shards = req.Shards
	}
	c := decl.StoreStreamConfig()
	req.apply(&c)
	if err := errors.Join(c.Validate(), validateCopies(c)); err != nil {
		return fmt.Errorf("create stream: %w", err)
	}
	// Unlike a config declaration, an API create of an existing name is a
	// conflict (409), decided atomically by the store.
	st, err := h.store.CreateNewStream(r.Context(), c)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, streamInfo(st, true, false))
	return nil
}

func (h *Hub) describeStream(w http.ResponseWriter, r *http.Request) error {
	st, err := h.store.Stream(r.PathValue("name"))
	if err != nil {
		return err
	}
	retired := false
	if v := r.URL.Query().Get("retired"); v != "" {
		if retired, err = strconv.ParseBool(v); err != nil {
			return badRequest("describe stream %q: retired=%q: want true or false", st.Name(), v)
		}
	}
	info := streamInfo(st, true, retired)
	info.Users = h.streamUsers(st.Name())
	h.addDamage(&info, st)
	h.addCopies(&info, st)
	writeJSON(w, http.StatusOK, info)
	return nil
}

func (h *Hub) updateStream(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	var req StreamRequest
	if err := readJSON(w, r, &req); err != nil {
		return err
	}
	st, err := h.store.Stream(name)
	if err != nil {
		return err
	}
	if req.Name != "" && req.Name != name {
		return badRequest("update stream %q: the body names stream %q; streams cannot be renamed", name, req.Name)
	}
	c := st.Config()
	if req.Shards != 0 && req.Shards != c.Shards {
		return fmt.Errorf("update stream %q: %d shards requested, the stream has %d: %w", name, req.Shards, c.Shards, ErrShardsFixed)
	}
	req.apply(&c)
	if err := validateCopies(c); err != nil {
		return fmt.Errorf("update stream %q: %w", name, err)
	}
	if err := h.store.UpdateStream(r.Context(), c); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, streamInfo(st, true, false))
	return nil
}

// StreamInUseBody is the 409 body of DELETE /v1/streams/{name} without
// ?force=true for a stream that plugins, groups or webhooks use.
type StreamInUseBody struct {
	ErrorBody
	Users []string `json:"users"`
}

func (h *Hub) deleteStream(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	force := false
	if v := r.URL.Query().Get("force"); v != "" {
		var err error
		if force, err = strconv.ParseBool(v); err != nil {
			return badRequest("delete stream %q: force=%q: want true or false", name, v)
		}
	}
	st, err := h.store.Stream(name)
	if err != nil {
		return err
	}
	if users := h.streamUsers(name); len(users) > 0 {
		if !force {
			writeJSON(w, http.StatusConflict, StreamInUseBody{
				ErrorBody: ErrorBody{Code: CodeInUse, Error: fmt.Sprintf("delete stream %q: used by %s; delete with ?force=true "+
					"(they start from the beginning of a stream created again under this name)", name, strings.Join(users, ", "))},
				Users: users,
			})
			return nil
		}
		h.logger.Warn("deleting a stream in use", "stream", name, "users", users)
	}
	announced := false
	if h.federation != nil {
		// First, so no peer's definition recreates it here meanwhile.
		h.federation.rep.StreamDeleted(st.Config())
		announced = true
	}
	if err := h.store.DeleteStream(r.Context(), name); err != nil && !(announced && errors.Is(err, store.ErrStreamNotFound)) {
		return err // (not found after the tombstone: replication applied it first)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// streamUsers lists what keeps a position in stream, from every part that
// registered a lister with addStreamUsers, sorted.
func (h *Hub) streamUsers(stream string) []string {
	var out []string
	for _, f := range h.userListers {
		out = append(out, f(stream)...)
	}
	slices.Sort(out)
	return out
}

// addStreamUsers registers a part's lister of the users of a stream (a
// plugin reading or writing it, a group consuming it).
func (h *Hub) addStreamUsers(f func(stream string) []string) {
	h.userListers = append(h.userListers, f)
}

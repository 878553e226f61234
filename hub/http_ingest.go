package hub

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/internal/recordjson"
	"github.com/edgehub/edgehub/quic"
	"github.com/edgehub/edgehub/store"
)

// HTTP ingest: POST /v1/streams/{name}/records on the admin listener, for
// devices that speak only HTTP (curl, a microcontroller's HTTP client). It
// is a thin adapter over what produce does: the same [auth] check, the same
// record limit, the same durable append (answered only once committed), the
// same idempotence and the same error table. docs/http.md is its contract.
//
// Why the admin listener and not one of its own: it already has TLS, the
// Host/Origin guard against browsers and the token model, and a device
// that can reach the admin API needs no second port opened. A separate
// listener would need all of that again.

// ingestPathPattern is the ingest route's path (path.Match syntax), which
// the admin guard lets authenticate itself (selfAuthenticated).
const ingestPathPattern = "/v1/streams/*/records"

// Request headers of HTTP ingest (raw bodies; docs/http.md).
const (
	// HeaderIngestKey is the record's key (or the query parameter key).
	HeaderIngestKey = "X-Edgehub-Key"
	// HeaderIngestHeaderPrefix starts a header that becomes a record
	// header: X-Edgehub-Header-Unit: C is the header unit=C (names are
	// lowercased: HTTP header names are case-insensitive).
	HeaderIngestHeaderPrefix = "X-Edgehub-Header-"
	// HeaderProducerID and HeaderProducerSeq make an append idempotent,
	// as a QUIC producer's: the producer's id (not 0) and its sequence of
	// the request's first record in (id, shard). Both need ?shard=N.
	HeaderProducerID  = "X-Edgehub-Producer-Id"
	HeaderProducerSeq = "X-Edgehub-Producer-Seq"
)

// ContentTypeNDJSON selects JSON lines: one record per line, as `hub consume
// --format json` prints them.
const ContentTypeNDJSON = "application/x-ndjson"

// IngestResult is the body of a 200 answer: where each record of the
// request was stored, in the request's order, once durable.
type IngestResult struct {
	Stream  string           `json:"stream"`
	Records []IngestPosition `json:"records"`
	// Duplicate: an idempotent request already stored; Records are the
	// positions it got then.
	Duplicate bool `json:"duplicate,omitempty"`
}

// IngestPosition is one record's shard and sequence.
type IngestPosition struct {
	Shard uint32 `json:"shard"`
	Seq   uint64 `json:"seq"`
}

type httpIngest struct {
	d     *dataPlane
	guard *adminGuard
}

// addHTTPIngest registers the ingest route; it runs after addAdmin and
// addDataPlane, whose guard, authorizer, budget and metrics it uses.
func (h *Hub) addHTTPIngest() error {
	in := &httpIngest{d: h.dataPlane, guard: h.admin.guard}
	h.route("POST /v1/streams/{name}/records", in.serve)
	return nil
}

func (in *httpIngest) serve(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	if err := in.authorize(w, r, name); err != nil {
		return in.refused(name, err)
	}
	st, err := in.d.st.Stream(name)
	if err != nil {
		return in.refused(name, err)
	}
	b, err := in.batch(r, st)
	if err != nil {
		return in.refused(name, err)
	}
	start := time.Now()
	res, err := st.Append(r.Context(), b)
	in.d.m.appendTime.Observe(time.Since(start).Seconds())
	if err != nil {
		return in.refused(name, fmt.Errorf("ingest to %q: %w", name, err))
	}
	out := IngestResult{Stream: name, Records: make([]IngestPosition, len(res.Positions)), Duplicate: res.Duplicate}
	for i, p := range res.Positions {
		out.Records[i] = IngestPosition{Shard: p.Shard, Seq: p.Seq}
	}
	if res.Duplicate {
		in.d.m.batches.WithLabelValues(name, "duplicate").Inc()
	} else {
		in.d.m.batches.WithLabelValues(name, "ok").Inc()
		in.d.m.records.WithLabelValues(name, "durable").Add(float64(len(b.Records)))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// refused counts a refusal as produce's are counted, by the admin API's
// code, and returns err for the route to write.
func (in *httpIngest) refused(stream string, err error) error {
	_, code := errorStatus(err)
	in.d.m.refusals.WithLabelValues("http_produce", code).Inc()
	if stream != "" {
		if _, serr := in.d.st.Stream(stream); serr == nil {
			in.d.m.batches.WithLabelValues(stream, "refused").Inc()
		}
	}
	return err
}

// authorize finds the request's principal and checks produce on stream.
// A bearer token is an [[auth.token]] (its produce patterns decide, as on
// QUIC) or an [[admin.token]] (role write may produce to every stream, role
// read to none). Without a token the request is anonymous: it gets what
// [auth.anonymous] grants, except that once the admin listener requires
// tokens and [auth] is off, anonymous ingest is refused: whoever set admin
// tokens did not mean the listener to take writes from anyone.
func (in *httpIngest) authorize(w http.ResponseWriter, r *http.Request, stream string) error {
	unauthenticated := func(format string, args ...any) error {
		w.Header().Set("WWW-Authenticate", `Bearer realm="edgehub"`)
		return &apiError{http.StatusUnauthorized, CodeUnauthenticated, fmt.Errorf(format, args...)}
	}
	tok := ""
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, t, ok := strings.Cut(h, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(t) == "" {
			return unauthenticated("ingest: the Authorization header must be \"Bearer TOKEN\"")
		}
		tok = strings.TrimSpace(t)
	}
	adminTokens := len(in.guard.tokens) > 0
	if tok != "" {
		if s, ok := in.guard.lookup(tok); ok {
			if s.role == RoleWrite {
				return nil
			}
			return &apiError{http.StatusForbidden, CodePermissionDenied, fmt.Errorf(
				"ingest: admin token %q has role %q, which may not produce (it needs role %q, or use an [[auth.token]] granting produce on %q)",
				s.name, s.role, RoleWrite, stream)}
		}
	}
	p, err := in.d.auth.authenticate(r.Context(), quic.AuthInfo{Token: tok})
	if err != nil {
		return unauthenticated("ingest: unknown token")
	}
	if p.Method == "anonymous" && adminTokens && !in.d.auth.enabled {
		if tok != "" {
			return unauthenticated("ingest: unknown token")
		}
		return unauthenticated("ingest: this hub's admin API requires a token: send Authorization: Bearer TOKEN "+
			"(an admin token of role %q, or an [[auth.token]] granting produce on %q)", RoleWrite, stream)
	}
	if err := in.d.auth.allow(p, actionProduce, stream); err != nil {
		var qe *quic.Error
		if errors.As(err, &qe) && qe.Code == quic.CodeUnauthenticated {
			return unauthenticated("ingest: %s", qe.Message)
		}
		msg := err.Error()
		if qe != nil {
			msg = qe.Message
		}
		return &apiError{http.StatusForbidden, CodePermissionDenied, fmt.Errorf("ingest: %s", msg)}
	}
	return nil
}

// batch reads the request into a store batch: the body within its bound
// (the record limit for a raw body, the data plane's frame limit for JSON
// lines) and within the produce share of the memory budget.
func (in *httpIngest) batch(r *http.Request, st *store.Stream) (store.Batch, error) {
	name := st.Name()
	q := r.URL.Query()
	b := store.Batch{Shard: -1}
	if v := q.Get("shard"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n >= st.Shards() {
			return b, badRequest("ingest to %q: shard=%q: want 0..%d (or no shard to route by key)", name, v, st.Shards()-1)
		}
		b.Shard = n
	}
	if v := r.Header.Get(HeaderProducerID); v != "" {
		id, err := strconv.ParseUint(v, 10, 64)
		if err != nil || id == 0 {
			return b, badRequest("ingest to %q: %s %q: want a producer id 1..2^64-1", name, HeaderProducerID, v)
		}
		seq, err := strconv.ParseUint(r.Header.Get(HeaderProducerSeq), 10, 64)
		if err != nil {
			return b, badRequest("ingest to %q: %s needs %s, the producer's sequence of the first record", name, HeaderProducerID, HeaderProducerSeq)
		}
		if b.Shard < 0 {
			return b, badRequest("ingest to %q: an idempotent producer (%s) must name the shard: ?shard=N", name, HeaderProducerID)
		}
		b.ProducerID, b.ProducerSeq = id, seq
	} else if r.Header.Get(HeaderProducerSeq) != "" {
		return b, badRequest("ingest to %q: %s without %s", name, HeaderProducerSeq, HeaderProducerID)
	}

	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	lines := mt == ContentTypeNDJSON
	maxRecord := in.d.st.Config().MaxRecordBytes
	limit := int64(maxRecord)
	if lines {
		limit = int64(in.d.limits.MaxFrameBytes)
	}
	// Take the budget before reading, for what the body can be at most.
	hold := limit
	if r.ContentLength >= 0 && r.ContentLength < hold {
		hold = r.ContentLength
	}
	if err := in.d.budget.produce.Acquire(r.Context(), hold); err != nil {
		return b, fmt.Errorf("ingest to %q: %w", name, err)
	}
	defer in.d.budget.produce.Release(hold)
	body, err := io.ReadAll(io.LimitReader(r.Body, hold+1))
	if err != nil {
		return b, badRequest("ingest to %q: read body: %w", name, err)
	}
	if int64(len(body)) > limit {
		if lines {
			return b, &apiError{http.StatusRequestEntityTooLarge, CodeTooLarge, fmt.Errorf(
				"ingest to %q: body above %d bytes (limits.max_frame_bytes); nothing was stored: send fewer lines per request", name, limit)}
		}
		return b, fmt.Errorf("ingest to %q: body above max_record_bytes %d; nothing was stored: %w", name, maxRecord, store.ErrRecordTooLarge)
	}
	if lines {
		b.Records, err = decodeLines(name, body, maxRecord)
	} else {
		var rec record.Record
		rec, err = rawRecord(name, r, body)
		b.Records = []record.Record{rec}
	}
	return b, err
}

// rawRecord is a raw body as one record: the body is the value, the key,
// time and headers come from the query and X-Edgehub-* headers.
func rawRecord(name string, r *http.Request, body []byte) (record.Record, error) {
	q := r.URL.Query()
	var rec record.Record
	qk, hk := q.Has("key"), r.Header.Get(HeaderIngestKey) != ""
	switch {
	case qk && hk:
		return rec, badRequest("ingest to %q: the key is given twice (?key= and %s); give one", name, HeaderIngestKey)
	case qk:
		rec.Key = []byte(q.Get("key"))
	case hk:
		rec.Key = []byte(r.Header.Get(HeaderIngestKey))
	}
	// An empty body is an empty value; only ?tombstone=true is none.
	rec.Value = append([]byte{}, body...)
	if v := q.Get("tombstone"); v != "" {
		tomb, err := strconv.ParseBool(v)
		if err != nil {
			return rec, badRequest("ingest to %q: tombstone=%q: want true or false", name, v)
		}
		if tomb && len(body) > 0 {
			return rec, badRequest("ingest to %q: a tombstone has no value, but the body has %d bytes", name, len(body))
		}
		if tomb {
			rec.Value = nil
		}
	}
	if v := q.Get("time"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return rec, badRequest("ingest to %q: time=%q: want RFC 3339, like 2026-01-02T15:04:05Z", name, v)
		}
		rec.Time = t.UnixNano()
	}
	var names []string
	for k := range r.Header {
		if strings.HasPrefix(k, HeaderIngestHeaderPrefix) && len(k) > len(HeaderIngestHeaderPrefix) {
			names = append(names, k)
		}
	}
	slices.Sort(names) // a map's order is random; the record's is kept
	for _, k := range names {
		for _, v := range r.Header.Values(k) {
			rec.Headers = append(rec.Headers, record.Header{Key: strings.ToLower(k[len(HeaderIngestHeaderPrefix):]), Value: []byte(v)})
		}
	}
	return rec, nil
}

// decodeLines decodes JSON lines; blank lines are skipped. A bad line or a
// record above the limit refuses the whole request, naming the line.
func decodeLines(name string, body []byte, maxRecord int) ([]record.Record, error) {
	var recs []record.Record
	for n := 1; len(body) > 0; n++ {
		line := body
		if i := bytes.IndexByte(body, '\n'); i >= 0 {
			line, body = body[:i], body[i+1:]
		} else {
			body = nil
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		rec, err := recordjson.Decode(line)
		if err != nil {
			return nil, badRequest("ingest to %q: line %d: %w; nothing was stored", name, n, err)
		}
		if sz := rec.PayloadSize(); sz > maxRecord {
			return nil, fmt.Errorf("ingest to %q: line %d: key, value and headers are %d bytes, above max_record_bytes %d; nothing was stored: %w",
				name, n, sz, maxRecord, store.ErrRecordTooLarge)
		}
		recs = append(recs, rec)
	}
	if len(recs) == 0 {
		return nil, badRequest("ingest to %q: no records: the body has no JSON lines", name)
	}
	return recs, nil
}

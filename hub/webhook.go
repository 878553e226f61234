package hub

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgehub/edgehub/internal/atomicfile"
	"github.com/edgehub/edgehub/internal/backoff"
	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/store"
)

// WebhookDelivery is the JSON body of one webhook POST: records of one shard,
// in order.
type WebhookDelivery struct {
	Webhook string          `json:"webhook"`
	Stream  string          `json:"stream"`
	Shard   int             `json:"shard"`
	Records []WebhookRecord `json:"records"`
}

// WebhookRecord is one record in a delivery. A key or value that is not
// valid UTF-8 (keys) or JSON (values) is sent base64-encoded instead.
type WebhookRecord struct {
	Seq         uint64            `json:"seq"`
	Key         string            `json:"key,omitempty"`
	KeyBase64   string            `json:"key_base64,omitempty"`
	Value       json.RawMessage   `json:"value,omitempty"`
	ValueBase64 string            `json:"value_base64,omitempty"`
	Headers     map[string]string `json:"headers,omitempty"`
	Time        time.Time         `json:"time,omitzero"`
	IngestTime  time.Time         `json:"ingest_time"`
}

// HeaderDelivery names a delivery: "stream/shard/first-last". A receiver that
// has seen it may drop the repeat (delivery is at-least-once).
const HeaderDelivery = "Edgehub-Delivery"

// webhook delivers one stream to one URL; a goroutine per shard. Its
// positions belong to one incarnation of the stream: a stream deleted and
// created again is delivered from its beginning (or from its end, with
// start = "latest"), never with the old positions.
type webhook struct {
	cfg     WebhookConfig
	store   *store.Store
	stream  *store.Stream // replaced only by Run, between deliveries
	logger  *slog.Logger
	client  *http.Client
	posPath string

	mu  sync.Mutex // guards pos, inc and the positions file
	pos map[string]uint64
	inc string // incarnation of the stream pos counts in

	delivered, failures atomic.Uint64
}

// addWebhooks starts a component per [[webhook]].
func (h *Hub) addWebhooks() error {
	var errs []error
	var hooks []*webhook
	seen := map[string]bool{}
	for i, wc := range h.cfg.Webhooks {
		key := fmt.Sprintf("webhook[%d]", i)
		wc = wc.withDefaults()
		if seen[wc.Name] {
			errs = append(errs, &ConfigError{File: h.cfg.File, Key: key + ".name", Err: fmt.Errorf("webhook %q is declared twice", wc.Name)})
			continue
		}
		seen[wc.Name] = true
		s, err := h.store.Stream(wc.Stream)
		if err != nil {
			errs = append(errs, &ConfigError{File: h.cfg.File, Key: key + ".stream",
				Err: fmt.Errorf("%w (declare it in [[stream]] or as a plugin output)", err)})
			continue
		}
		w := &webhook{
			cfg: wc, store: h.store, stream: s, logger: h.logger.With("webhook", wc.Name, "stream", wc.Stream),
			client:  &http.Client{Timeout: time.Duration(wc.Timeout)},
			posPath: filepath.Join(h.cfg.Hub.DataDir, "webhooks", wc.Name+".json"),
		}
		if err := w.load(); err != nil {
			errs = append(errs, &ConfigError{File: h.cfg.File, Key: key, Err: err})
			continue
		}
		hooks = append(hooks, w)
	}
	if len(errs) > 0 {
		return fmt.Errorf("hub: webhooks:\n%w", errors.Join(errs...))
	}
	if len(hooks) > 0 {
		if err := h.metrics.Register(&webhookCollector{hooks}); err != nil {
			return fmt.Errorf("hub: register webhook metrics: %w", err)
		}
	}
	for _, w := range hooks {
		h.add(w)
	}
	h.addStreamUsers(func(stream string) []string {
		var out []string
		for _, w := range hooks {
			if w.cfg.Stream == stream {
				out = append(out, "webhook "+w.cfg.Name)
			}
		}
		return out
	})
	return nil
}

// load reads the saved positions; a new webhook starts at its Start, and
// so do positions of another incarnation of the stream (deleted and created
// again while the hub was down). Positions saved before incarnations adopt
// the stream's.
func (w *webhook) load() error {
	w.pos = map[string]uint64{}
	w.inc = w.stream.Incarnation()
	savedInc := ""
	data, err := os.ReadFile(w.posPath)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return fmt.Errorf("webhook %s: %w", w.cfg.Name, err)
	default:
		var saved struct {
			Stream      string            `json:"stream"`
			Incarnation string            `json:"incarnation"`
			Next        map[string]uint64 `json:"next"`
		}
		if err := json.Unmarshal(data, &saved); err != nil {
			return fmt.Errorf("webhook %s: positions file %s: %w", w.cfg.Name, w.posPath, err)
		}
		// A damaged incarnation must not pass for a recreated stream: with
		// start = "latest" that would skip records.
		if inc := saved.Incarnation; inc != "" && (len(inc) != 2*store.IncarnationLen || strings.Trim(inc, "0123456789abcdef") != "") {
			return fmt.Errorf("webhook %s: positions file %s: incarnation %q is not %d hex digits: %w",
				w.cfg.Name, w.posPath, inc, 2*store.IncarnationLen, store.ErrCorrupt)
		}
		switch {
		case saved.Stream != w.cfg.Stream:
		case saved.Incarnation != "" && saved.Incarnation != w.inc:
			w.logger.Warn("webhook: the stream was deleted and created again since the positions were saved; delivering the new stream from its start position",
				"old_incarnation", saved.Incarnation, "new_incarnation", w.inc, "start", w.cfg.Start)
		default:
			w.pos, savedInc = saved.Next, w.inc
		}
	}
	return w.fillPositions(savedInc != w.inc)
}

// fillPositions positions shards with no saved position at the webhook's
// start, saving if anything changed (or force).
func (w *webhook) fillPositions(force bool) error {
	changed := force
	for shard := 0; shard < w.stream.Shards(); shard++ {
		k := strconv.Itoa(shard)
		if _, ok := w.pos[k]; ok {
			continue
		}
		first, last, err := w.stream.Bounds(shard)
		if err != nil {
			return err
		}
		w.pos[k] = first
		if w.cfg.Start == "latest" {
			w.pos[k] = last + 1
		}
		changed = true
	}
	if changed {
		return w.save()
	}
	return nil
}

// save writes the positions so that they survive a crash.
func (w *webhook) save() error {
	data, err := json.Marshal(map[string]any{"stream": w.cfg.Stream, "incarnation": w.inc, "next": w.pos})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(w.posPath), 0o755); err != nil {
		return err
	}
	if err := atomicfile.WriteFile(w.posPath, data, 0o644); err != nil {
		return fmt.Errorf("webhook %s: save positions: %w", w.cfg.Name, err)
	}
	return nil
}

// Run delivers every shard until ctx ends. When the stream is deleted it
// stops at once, waits for a stream of that name to exist again and
// delivers that one from its start position.
func (w *webhook) Run(ctx context.Context) error {
	for {
		st := w.stream
		sctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		for shard := 0; shard < st.Shards(); shard++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				w.deliverShard(sctx, st, shard)
			}()
		}
		select {
		case <-ctx.Done():
		case <-st.Done():
		}
		cancel()
		wg.Wait()
		if ctx.Err() != nil {
			return nil
		}
		if _, err := w.store.Stream(w.cfg.Stream); errors.Is(err, store.ErrClosed) {
			return nil // the hub is stopping
		}
		w.logger.Warn("webhook: the stream was deleted; waiting for it to be created again")
		next, ok := w.awaitStream(ctx)
		if !ok {
			return nil
		}
		w.mu.Lock()
		old := w.inc
		w.stream, w.inc, w.pos = next, next.Incarnation(), map[string]uint64{}
		err := w.fillPositions(true)
		w.mu.Unlock()
		if err != nil {
			w.logger.Error("webhook: save positions", "err", err)
		}
		w.logger.Warn("webhook: the stream was created again; delivering it from its start position",
			"old_incarnation", old, "new_incarnation", next.Incarnation(), "start", w.cfg.Start)
	}
}

// awaitStream polls for the webhook's stream to exist again.
func (w *webhook) awaitStream(ctx context.Context) (*store.Stream, bool) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, false
		case <-t.C:
		}
		if st, err := w.store.Stream(w.cfg.Stream); err == nil {
			return st, true
		} else if errors.Is(err, store.ErrClosed) {
			return nil, false
		}
	}
}

// Close has nothing to release: Run's goroutines end with its context.
func (w *webhook) Close() error { return nil }

func (w *webhook) deliverShard(ctx context.Context, st *store.Stream, shard int) {
	w.mu.Lock()
	next := w.pos[strconv.Itoa(shard)]
	w.mu.Unlock()
	for ctx.Err() == nil {
		recs, err := st.Read(shard, next, store.ReadOptions{MaxRecords: w.cfg.BatchRecords})
		if err != nil {
			if errors.Is(err, store.ErrClosed) {
				return
			}
			w.logger.Error("webhook: read", "shard", shard, "err", err)
			if !backoff.Sleep(ctx, time.Duration(w.cfg.BackoffMax)) {
				return
			}
			continue
		}
		if len(recs) == 0 {
			ch := st.Changed(shard)
			if _, last, _ := st.Bounds(shard); last >= next {
				continue
			}
			select {
			case <-ch:
			case <-ctx.Done():
				return
			}
			continue
		}
		body, err := json.Marshal(WebhookDelivery{Webhook: w.cfg.Name, Stream: w.cfg.Stream, Shard: shard, Records: webhookRecords(recs)})
		if err != nil {
			w.logger.Error("webhook: encode", "err", err)
			return
		}
		id := fmt.Sprintf("%s/%d/%d-%d", w.cfg.Stream, shard, recs[0].Seq, recs[len(recs)-1].Seq)
		for attempt := 1; ; attempt++ {
			err := w.post(ctx, body, id)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return
			}
			w.failures.Add(1)
			if attempt == 1 || attempt%10 == 0 {
				w.logger.Warn("webhook delivery failed; retrying", "delivery", id, "attempt", attempt, "err", err)
			}
			if !backoff.Sleep(ctx, backoff.Delay(time.Duration(w.cfg.BackoffMin), time.Duration(w.cfg.BackoffMax), attempt)) {
				return
			}
		}
		w.delivered.Add(uint64(len(recs)))
		next = recs[len(recs)-1].Seq + 1
		w.mu.Lock()
		w.pos[strconv.Itoa(shard)] = next
		err = w.save()
		w.mu.Unlock()
		if err != nil {
			// Delivery stays at-least-once: a restart resends from the
			// last saved position.
			w.logger.Error("webhook: save position", "err", err)
		}
	}
}

func (w *webhook) post(ctx context.Context, body []byte, id string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(HeaderDelivery, id)
	req.Header.Set("User-Agent", "edgehub/"+BuildVersion())
	for k, v := range w.cfg.Header {
		req.Header.Set(k, v)
	}
	resp, err := w.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s answered %s", w.cfg.URL, resp.Status)
	}
	return nil
}

func webhookRecords(recs []record.Record) []WebhookRecord {
	out := make([]WebhookRecord, len(recs))
	for i, r := range recs {
		wr := WebhookRecord{Seq: r.Seq, IngestTime: time.Unix(0, r.IngestTime).UTC()}
		if r.Time != 0 {
			wr.Time = time.Unix(0, r.Time).UTC()
		}
		if r.Key != nil {
			if utf8.Valid(r.Key) {
				wr.Key = string(r.Key)
			} else {
				wr.KeyBase64 = base64.StdEncoding.EncodeToString(r.Key)
			}
		}
		if r.Value != nil {
			if json.Valid(r.Value) {
				wr.Value = json.RawMessage(r.Value)
			} else {
				wr.ValueBase64 = base64.StdEncoding.EncodeToString(r.Value)
			}
		}
		if len(r.Headers) > 0 {
			wr.Headers = make(map[string]string, len(r.Headers))
			for _, h := range r.Headers {
				wr.Headers[h.Key] = string(h.Value)
			}
		}
		out[i] = wr
	}
	return out
}

type webhookCollector struct{ hooks []*webhook }

var (
	descWebhookDelivered = prometheus.NewDesc("edgehub_webhook_delivered_records_total", "Records delivered (acknowledged with 2xx) since the hub started.", []string{"webhook", "stream"}, nil)
	descWebhookFailures  = prometheus.NewDesc("edgehub_webhook_failed_posts_total", "Failed delivery attempts since the hub started.", []string{"webhook", "stream"}, nil)
)

func (c *webhookCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descWebhookDelivered
	ch <- descWebhookFailures
}

func (c *webhookCollector) Collect(ch chan<- prometheus.Metric) {
	for _, w := range c.hooks {
		ch <- prometheus.MustNewConstMetric(descWebhookDelivered, prometheus.CounterValue, float64(w.delivered.Load()), w.cfg.Name, w.cfg.Stream)
		ch <- prometheus.MustNewConstMetric(descWebhookFailures, prometheus.CounterValue, float64(w.failures.Load()), w.cfg.Name, w.cfg.Stream)
	}
}

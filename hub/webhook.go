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
	"slices"
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
	// skipped counts records removed (by retention or compaction) at the
	// position before they were delivered.
	skipped atomic.Uint64
	// waiting counts the shards held back because a parent shard closed
	// by a reshard is not delivered to its end yet.
	waiting atomic.Int64

	// Close stops delivery and waits for it: once the hub is closed no
	// POST is sent and no position written (a restarted hub would
	// otherwise send again what the old one's last POST delivered).
	lifeMu sync.Mutex // guards closed and active.Add
	closed bool
	quit   chan struct{} // closed by Close
	active sync.WaitGroup
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
			quit:    make(chan struct{}),
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
// start, saving if anything changed (or force). A shard none of whose
// parents has a saved position is new to the webhook as the rest of the
// stream is; a child of a shard the webhook has delivered (a reshard since
// the positions were saved) gets none here: it starts at its first live
// record once its parents are finished (docs/resharding.md section 2), so
// start = "latest" never skips what was written to it. Retired shards need
// none: they are finished whatever the position.
func (w *webhook) fillPositions(force bool) error {
	changed := force
	saved := make(map[string]bool, len(w.pos))
	for k := range w.pos {
		saved[k] = true
	}
	for _, sh := range w.stream.Layout().Shards {
		k := strconv.Itoa(int(sh.ID))
		if _, ok := w.pos[k]; ok || sh.State == store.ShardRetired {
			continue
		}
		if slices.ContainsFunc(sh.Parents, func(p uint32) bool { return saved[strconv.Itoa(int(p))] }) {
			continue
		}
		first, last, err := w.stream.Bounds(int(sh.ID))
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
		w.deliver(ctx, st)
		if ctx.Err() != nil || w.isClosed() {
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
		case <-w.quit:
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

// Close stops delivery and returns once every deliverer has ended: a POST
// in flight is cancelled (its records are sent again after a restart, as
// at-least-once allows), and none starts after it.
func (w *webhook) Close() error {
	w.lifeMu.Lock()
	if !w.closed {
		w.closed = true
		close(w.quit)
	}
	w.lifeMu.Unlock()
	w.active.Wait()
	return nil
}

func (w *webhook) isClosed() bool {
	w.lifeMu.Lock()
	defer w.lifeMu.Unlock()
	return w.closed
}

// deliver runs a deliverer per shard of st, as the stream's lineage allows,
// until ctx ends or st is closed, and returns once they have all ended
// (docs/resharding.md section 2). A shard starts once every parent is
// finished: closed and delivered to its end, or retired. Its parents'
// records of a key are therefore POSTed, and acknowledged, before any of
// its own. Shards a reshard creates while the webhook runs are followed
// through the stream's LayoutChanged; a closed shard's deliverer ends at
// the shard's end. Parents have lower ids than their children, so one pass
// in id order releases a chain of finished shards. A stream never
// resharded has no parents: every shard starts at once, as it always did.
func (w *webhook) deliver(ctx context.Context, st *store.Stream) {
	w.lifeMu.Lock()
	if w.closed {
		w.lifeMu.Unlock()
		return
	}
	w.active.Add(1)
	w.lifeMu.Unlock()
	defer w.active.Done()
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
		w.waiting.Store(0)
	}()
	started := map[uint32]bool{}
	ended := make(chan struct{}, 1) // a deliverer finished its shard
	for {
		// Taken before the layout is read, so a reshard in between is
		// seen at the next round.
		changed := st.LayoutChanged()
		l := st.Layout()
		waiting := 0
		memo := map[uint32]bool{}
		for _, sh := range l.Shards {
			if started[sh.ID] {
				continue
			}
			if !chaosSkipLineage("webhook") && !w.allFinished(l, sh.Parents, memo) {
				waiting++
				continue
			}
			started[sh.ID] = true
			if w.finished(sh) {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				if w.deliverShard(ctx, st, int(sh.ID)) {
					select {
					case ended <- struct{}{}:
					default:
					}
				}
			}()
		}
		w.waiting.Store(int64(waiting))
		select {
		case <-ctx.Done():
			return
		case <-w.quit:
			return
		case <-st.Done():
			return
		case <-changed:
		case <-ended:
		}
	}
}

// allFinished reports whether every shard of ids is finished for the
// webhook, and so are its own parents: a shard with nothing to deliver
// (retired, or empty between two reshards and positioned past its end at a
// fresh start) must not release its children before its parents are
// delivered. memo holds what this round decided (a long reshard history is
// a lattice with many paths to one shard).
func (w *webhook) allFinished(l store.Layout, ids []uint32, memo map[uint32]bool) bool {
	for _, p := range ids {
		if int(p) >= len(l.Shards) {
			return false
		}
		f, ok := memo[p]
		if !ok {
			f = w.finished(l.Shards[p]) && w.allFinished(l, l.Shards[p].Parents, memo)
			memo[p] = f
		}
		if !f {
			return false
		}
	}
	return true
}

// finished reports whether the webhook has nothing more to deliver of sh:
// it is retired (retention removed every record), or closed and its saved
// position is past its end.
func (w *webhook) finished(sh store.ShardLayout) bool {
	switch sh.State {
	case store.ShardOpen:
		return false
	case store.ShardRetired:
		return true
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	next, ok := w.pos[strconv.Itoa(int(sh.ID))]
	return ok && next > sh.End
}

// shardEnd returns the end of shard id of st if it is closed or retired.
func shardEnd(st *store.Stream, id int) (uint64, bool) {
	l := st.Layout()
	if id >= len(l.Shards) || l.Shards[id].State == store.ShardOpen {
		return 0, false
	}
	return l.Shards[id].End, true
}

// deliverShard delivers shard of st from its position until ctx ends, or,
// for a shard closed by a reshard, up to its end, and then reports true
// (finished, its position saved past the end). A shard with no position
// yet (a child of a reshard) starts at its first live record.
func (w *webhook) deliverShard(ctx context.Context, st *store.Stream, shard int) bool {
	k := strconv.Itoa(shard)
	w.mu.Lock()
	next, ok := w.pos[k]
	var err error
	if !ok {
		first, _, _ := st.Bounds(shard)
		next = max(first, 1)
		w.pos[k] = next
		err = w.save()
	}
	w.mu.Unlock()
	if err != nil {
		w.logger.Error("webhook: save position", "err", err)
	}
	for ctx.Err() == nil {
		// The state is read before the records: a shard seen closed
		// holds every record up to its end, so a read that then finds
		// nothing from next on means nothing is left (retention or
		// compaction removed the rest, or the shard was retired).
		layoutChanged := st.LayoutChanged()
		end, closed := shardEnd(st, shard)
		if closed && next > end {
			w.finishShard(shard, end)
			return true
		}
		// last is taken before the read: if the read then finds nothing
		// from next on, every record up to last was removed, and the
		// position can move past them (taken after, it could pass a
		// record committed in between).
		_, last, _ := st.Bounds(shard)
		recs, err := st.Read(shard, next, store.ReadOptions{MaxRecords: w.cfg.BatchRecords})
		if err != nil {
			if errors.Is(err, store.ErrClosed) {
				return false
			}
			w.logger.Error("webhook: read", "shard", shard, "err", err)
			if !backoff.Sleep(ctx, time.Duration(w.cfg.BackoffMax)) {
				return false
			}
			continue
		}
		if len(recs) == 0 {
			if closed {
				w.finishShard(shard, end)
				return true
			}
			ch := st.Changed(shard)
			if last >= next {
				// Retention or compaction removed next..last before
				// they were delivered: move past them (looping back
				// to next would spin until a new record came).
				w.skip(shard, next, last)
				next = last + 1
				w.setPosition(shard, next)
				continue
			}
			if _, now, _ := st.Bounds(shard); now >= next {
				continue
			}
			// A reshard closing the shard at its tail commits nothing
			// to it: the layout change wakes the deliverer to finish.
			select {
			case <-ch:
			case <-layoutChanged:
			case <-ctx.Done():
				return false
			}
			continue
		}
		if recs[0].Seq > next {
			w.skip(shard, next, recs[0].Seq-1)
		}
		body, err := json.Marshal(WebhookDelivery{Webhook: w.cfg.Name, Stream: w.cfg.Stream, Shard: shard, Records: webhookRecords(recs)})
		if err != nil {
			w.logger.Error("webhook: encode", "err", err)
			return false
		}
		id := fmt.Sprintf("%s/%d/%d-%d", w.cfg.Stream, shard, recs[0].Seq, recs[len(recs)-1].Seq)
		for attempt := 1; ; attempt++ {
			err := w.post(ctx, body, id)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return false
			}
			w.failures.Add(1)
			if attempt == 1 || attempt%10 == 0 {
				w.logger.Warn("webhook delivery failed; retrying", "delivery", id, "attempt", attempt, "err", err)
			}
			if !backoff.Sleep(ctx, backoff.Delay(time.Duration(w.cfg.BackoffMin), time.Duration(w.cfg.BackoffMax), attempt)) {
				return false
			}
		}
		w.delivered.Add(uint64(len(recs)))
		next = recs[len(recs)-1].Seq + 1
		w.setPosition(shard, next)
	}
	return false
}

// setPosition saves next as shard's position. A failed save is logged:
// delivery stays at least once, a restart resends from the last saved
// position.
func (w *webhook) setPosition(shard int, next uint64) {
	w.mu.Lock()
	w.pos[strconv.Itoa(shard)] = next
	err := w.save()
	w.mu.Unlock()
	if err != nil {
		w.logger.Error("webhook: save position", "err", err)
	}
}

// skip records that from..to of shard were removed before delivery.
func (w *webhook) skip(shard int, from, to uint64) {
	w.skipped.Add(to - from + 1)
	w.logger.Warn("webhook: records removed by retention or compaction before delivery", "shard", shard, "from", from, "to", to)
}

// finishShard saves a closed shard's position past its end (if it is not
// already), so that a restart neither delivers it again nor holds its
// children.
func (w *webhook) finishShard(shard int, end uint64) {
	k := strconv.Itoa(shard)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.pos[k] > end {
		return
	}
	w.pos[k] = end + 1
	if err := w.save(); err != nil {
		w.logger.Error("webhook: save position", "err", err)
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
	descWebhookSkipped   = prometheus.NewDesc("edgehub_webhook_skipped_records_total", "Sequences removed by retention or compaction before the webhook delivered them, since the hub started.", []string{"webhook", "stream"}, nil)
	// The series other readers export too, with their own reader label
	// (the help text must be the same: internal/replicate).
	descWebhookLineage = prometheus.NewDesc("edgehub_lineage_waiting_shards",
		"Shards a reader may not start yet because a parent shard closed by a reshard is not finished for it.",
		[]string{"stream"}, prometheus.Labels{"reader": "webhook"})
)

func (c *webhookCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descWebhookDelivered
	ch <- descWebhookFailures
	ch <- descWebhookSkipped
	ch <- descWebhookLineage
}

func (c *webhookCollector) Collect(ch chan<- prometheus.Metric) {
	waiting := map[string]int64{}
	var streams []string
	for _, w := range c.hooks {
		ch <- prometheus.MustNewConstMetric(descWebhookDelivered, prometheus.CounterValue, float64(w.delivered.Load()), w.cfg.Name, w.cfg.Stream)
		ch <- prometheus.MustNewConstMetric(descWebhookFailures, prometheus.CounterValue, float64(w.failures.Load()), w.cfg.Name, w.cfg.Stream)
		ch <- prometheus.MustNewConstMetric(descWebhookSkipped, prometheus.CounterValue, float64(w.skipped.Load()), w.cfg.Name, w.cfg.Stream)
		if _, ok := waiting[w.cfg.Stream]; !ok {
			streams = append(streams, w.cfg.Stream)
		}
		waiting[w.cfg.Stream] += w.waiting.Load()
	}
	// One series per stream, summed over its webhooks, as the other
	// readers export it.
	for _, s := range streams {
		ch <- prometheus.MustNewConstMetric(descWebhookLineage, prometheus.GaugeValue, float64(waiting[s]), s)
	}
}

package hub

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgehub/edgehub/plugins"
)

// MaxModuleBytes bounds an uploaded plugin module.
const MaxModuleBytes = 64 << 20

// Plugin admin API:
//
//	GET    /v1/plugins                 list (plugins.Info)
//	POST   /v1/plugins                 deploy or upgrade: multipart/form-data with
//	                                   a "definition" part (PluginConfig as JSON)
//	                                   and a "module" part (the .wasm bytes)
//	GET    /v1/plugins/{name}          describe (plugins.Info)
//	DELETE /v1/plugins/{name}          delete (definition, state, checkpoints)
//	POST   /v1/plugins/{name}/pause    body {"reason": "..."} (optional)
//	POST   /v1/plugins/{name}/resume
//	GET    /v1/plugins/{name}/logs?n=N last N log lines (plugins.LogLine)
//	GET    /v1/plugins/{name}/module   the module bytes (application/wasm)

// PluginInfo and PluginLogLine are the plugin admin API's bodies, named
// here so that an admin client (the CLI) decodes them knowing only the hub.
type (
	PluginInfo    = plugins.Info
	PluginLogLine = plugins.LogLine
)

// PauseRequest is the optional body of POST /v1/plugins/{name}/pause.
type PauseRequest struct {
	Reason string `json:"reason"`
}

// addPlugins starts the plugin manager, deploys the [[plugin]] declarations,
// registers the admin routes and metrics, and starts the [[webhook]]s.
func (h *Hub) addPlugins() error {
	cfg := plugins.DefaultConfig(h.cfg.Hub.DataDir)
	cfg.Store = h.store
	cfg.HubName = h.cfg.Hub.Name
	cfg.Logger = h.logger
	m, err := plugins.New(cfg)
	if err != nil {
		return fmt.Errorf("hub: plugins: %w", err)
	}
	h.add(m)
	if err := h.declarePlugins(m); err != nil {
		return err
	}
	if err := h.metrics.Register(&pluginCollector{m: m}); err != nil {
		return fmt.Errorf("hub: register plugin metrics: %w", err)
	}
	h.routePlugins(m)
	h.addStreamUsers(func(stream string) []string {
		var out []string
		for _, p := range m.List() {
			switch {
			case slices.Contains(p.Inputs, stream):
				out = append(out, "plugin "+p.Name+" (input)")
			case slices.Contains(p.Outputs, stream):
				out = append(out, "plugin "+p.Name+" (output)")
			case p.DeadLetter == stream:
				out = append(out, "plugin "+p.Name+" (dead letter)")
			}
		}
		return out
	})
	return h.addWebhooks()
}

// declarePlugins deploys each [[plugin]] whose module or settings differ
// from what is deployed.
func (h *Hub) declarePlugins(m *plugins.Manager) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var errs []error
	seen := map[string]bool{}
	for i, pc := range h.cfg.Plugins {
		key := fmt.Sprintf("plugin[%d]", i)
		if seen[pc.Name] {
			errs = append(errs, &ConfigError{File: h.cfg.File, Key: key + ".name", Err: fmt.Errorf("plugin %q is declared twice", pc.Name)})
			continue
		}
		seen[pc.Name] = true
		path := pc.ModulePath(h.cfg.File)
		wasm, err := os.ReadFile(path)
		if err != nil {
			errs = append(errs, &ConfigError{File: h.cfg.File, Key: key + ".module", Err: err})
			continue
		}
		def := pc.Definition().WithDefaults()
		sum := sha256.Sum256(wasm)
		if info, err := m.Describe(pc.Name); err == nil && info.SHA256 == hex.EncodeToString(sum[:]) && sameSettings(info.Definition, def) {
			continue
		}
		if _, err := m.Deploy(ctx, def, wasm); err != nil {
			errs = append(errs, &ConfigError{File: h.cfg.File, Key: key, Err: err})
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("hub: declare plugins:\n%w", errors.Join(errs...))
	}
	return nil
}

// sameSettings compares the user-set fields of two definitions.
func sameSettings(a, b plugins.Definition) bool {
	clear := func(d plugins.Definition) plugins.Definition {
		d.SHA256, d.ModuleSize, d.Version, d.Created, d.Updated, d.Paused, d.PauseReason = "", 0, 0, time.Time{}, time.Time{}, false, ""
		if len(d.Config) == 0 {
			d.Config = nil
		}
		if len(d.Outputs) == 0 {
			d.Outputs = nil
		}
		return d
	}
	ja, _ := json.Marshal(clear(a))
	jb, _ := json.Marshal(clear(b))
	return bytes.Equal(ja, jb)
}

func (h *Hub) routePlugins(m *plugins.Manager) {
	h.route("GET /v1/plugins", func(w http.ResponseWriter, r *http.Request) error {
		writeJSON(w, http.StatusOK, m.List())
		return nil
	})
	h.route("POST /v1/plugins", func(w http.ResponseWriter, r *http.Request) error {
		def, wasm, err := readDeploy(w, r)
		if err != nil {
			return err
		}
		_, existed := m.Describe(def.Name)
		info, err := m.Deploy(r.Context(), def, wasm)
		if err != nil {
			return err
		}
		status := http.StatusCreated
		if existed == nil {
			status = http.StatusOK
		}
		writeJSON(w, status, info)
		return nil
	})
	h.route("GET /v1/plugins/{name}", func(w http.ResponseWriter, r *http.Request) error {
		info, err := m.Describe(r.PathValue("name"))
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, info)
		return nil
	})
	h.route("DELETE /v1/plugins/{name}", func(w http.ResponseWriter, r *http.Request) error {
		if err := m.Delete(r.Context(), r.PathValue("name")); err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	})
	h.route("POST /v1/plugins/{name}/pause", func(w http.ResponseWriter, r *http.Request) error {
		var req PauseRequest
		if r.ContentLength != 0 {
			if err := readJSON(w, r, &req); err != nil {
				return err
			}
		}
		if req.Reason == "" {
			req.Reason = "paused by an operator"
		}
		name := r.PathValue("name")
		if err := m.Pause(r.Context(), name, req.Reason); err != nil {
			return err
		}
		info, err := m.Describe(name)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, info)
		return nil
	})
	h.route("POST /v1/plugins/{name}/resume", func(w http.ResponseWriter, r *http.Request) error {
		name := r.PathValue("name")
		if err := m.Resume(r.Context(), name); err != nil {
			return err
		}
		info, err := m.Describe(name)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, info)
		return nil
	})
	h.route("GET /v1/plugins/{name}/logs", func(w http.ResponseWriter, r *http.Request) error {
		n := 100
		if s := r.URL.Query().Get("n"); s != "" {
			v, err := strconv.Atoi(s)
			if err != nil || v < 0 {
				return badRequest("n=%q: want a number of lines (0 = all kept)", s)
			}
			n = v
		}
		lines, err := m.Logs(r.PathValue("name"), n)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, lines)
		return nil
	})
	h.route("GET /v1/plugins/{name}/module", func(w http.ResponseWriter, r *http.Request) error {
		wasm, err := m.Module(r.PathValue("name"))
		if err != nil {
			return err
		}
		w.Header().Set("Content-Type", "application/wasm")
		w.Header().Set("Content-Length", strconv.Itoa(len(wasm)))
		w.Write(wasm)
		return nil
	})
}

// readDeploy parses a deploy request: a multipart form with the definition
// (JSON PluginConfig) and the module.
func readDeploy(w http.ResponseWriter, r *http.Request) (plugins.Definition, []byte, error) {
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/form-data" {
		return plugins.Definition{}, nil, badRequest("deploy: want multipart/form-data with parts \"definition\" and \"module\"")
	}
	if params["boundary"] == "" {
		return plugins.Definition{}, nil, badRequest("deploy: multipart boundary missing")
	}
	r.Body = http.MaxBytesReader(w, r.Body, MaxModuleBytes+maxRequestBody)
	mr, err := r.MultipartReader()
	if err != nil {
		return plugins.Definition{}, nil, badRequest("deploy: %v", err)
	}
	var pc *PluginConfig
	var wasm []byte
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return plugins.Definition{}, nil, err
			}
			return plugins.Definition{}, nil, badRequest("deploy: %v", err)
		}
		switch part.FormName() {
		case "definition":
			dec := json.NewDecoder(io.LimitReader(part, maxRequestBody))
			dec.DisallowUnknownFields()
			pc = new(PluginConfig)
			if err := dec.Decode(pc); err != nil {
				return plugins.Definition{}, nil, badRequest("deploy: definition: %v", err)
			}
		case "module":
			if wasm, err = io.ReadAll(io.LimitReader(part, MaxModuleBytes+1)); err != nil {
				return plugins.Definition{}, nil, badRequest("deploy: module: %v", err)
			}
			if len(wasm) > MaxModuleBytes {
				return plugins.Definition{}, nil, &apiError{http.StatusRequestEntityTooLarge, CodeTooLarge,
					fmt.Errorf("deploy: module larger than %d bytes", MaxModuleBytes)}
			}
		default:
			return plugins.Definition{}, nil, badRequest("deploy: unknown part %q", part.FormName())
		}
	}
	if pc == nil || wasm == nil {
		return plugins.Definition{}, nil, badRequest("deploy: both a \"definition\" and a \"module\" part are required")
	}
	if pc.Memory < 0 || pc.Memory > 4<<30 {
		return plugins.Definition{}, nil, badRequest("deploy: memory %s outside 0..4GiB", pc.Memory)
	}
	return pc.Definition(), wasm, nil
}

// pluginCollector exports the plugins' progress as Prometheus metrics, read
// from the manager at scrape time.
type pluginCollector struct{ m *plugins.Manager }

var (
	pluginLabels     = []string{"plugin", "input", "shard"}
	descPluginIn     = prometheus.NewDesc("edgehub_plugin_records_in_total", "Input records a plugin has processed (committed).", pluginLabels, nil)
	descPluginOut    = prometheus.NewDesc("edgehub_plugin_records_out_total", "Records a plugin has emitted (committed).", pluginLabels, nil)
	descPluginDead   = prometheus.NewDesc("edgehub_plugin_dead_lettered_total", "Input records sent to the plugin's dead-letter stream.", pluginLabels, nil)
	descPluginErrors = prometheus.NewDesc("edgehub_plugin_errors_total", "Failed calls and other errors since the hub started.", pluginLabels, nil)
	descPluginCalls  = prometheus.NewDesc("edgehub_plugin_calls_total", "Calls into the plugin since the hub started.", pluginLabels, nil)
	descPluginTime   = prometheus.NewDesc("edgehub_plugin_call_duration_seconds", "Time per call into the plugin since the hub started.", pluginLabels, nil)
	descPluginLag    = prometheus.NewDesc("edgehub_plugin_lag_records", "Input records not yet processed.", pluginLabels, nil)
	descPluginState  = prometheus.NewDesc("edgehub_plugin_state_bytes", "Size of the plugin's keyed state (keys and values).", pluginLabels, nil)
	descPluginMem    = prometheus.NewDesc("edgehub_plugin_memory_bytes", "Linear memory of the plugin's instance.", pluginLabels, nil)
	descPluginPaused = prometheus.NewDesc("edgehub_plugin_paused", "1 if the plugin is paused.", []string{"plugin"}, nil)
	descPluginWait   = prometheus.NewDesc("edgehub_plugin_waiting", "1 if the plugin waits for a stream it uses to exist again (deleted).", []string{"plugin"}, nil)
	descPluginQuar   = prometheus.NewDesc("edgehub_plugin_quarantined", "1 if the plugin's runner runs in the quarantine slot (recent failures or slot-lease overruns).", pluginLabels, nil)
	descPluginTO     = prometheus.NewDesc("edgehub_plugin_timeouts_total", "Calls stopped at their deadline since the hub started.", pluginLabels, nil)
	// The series other readers export too, with their own reader label
	// (the help text must be the same: internal/replicate).
	descPluginLineage = prometheus.NewDesc("edgehub_lineage_waiting_shards",
		"Shards a reader may not start yet because a parent shard closed by a reshard is not finished for it.",
		[]string{"stream"}, prometheus.Labels{"reader": "plugin"})
)

func (c *pluginCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descPluginIn, descPluginOut, descPluginDead, descPluginErrors, descPluginCalls,
		descPluginTime, descPluginLag, descPluginState, descPluginMem, descPluginPaused, descPluginWait, descPluginQuar, descPluginTO,
		descPluginLineage} {
		ch <- d
	}
}

// callHistogram is a runner's call-time histogram as a metric.
func callHistogram(s plugins.ShardInfo, labels []string) prometheus.Metric {
	// Every child has every bucket, zero for a runner not running now.
	buckets := make(map[float64]uint64, len(plugins.CallTimeBuckets))
	var count uint64
	for i, b := range plugins.CallTimeBuckets {
		if i < len(s.CallTimeCounts) {
			buckets[b.Seconds()] = s.CallTimeCounts[i]
		} else {
			buckets[b.Seconds()] = 0
		}
	}
	if n := len(s.CallTimeCounts); n > 0 {
		count = s.CallTimeCounts[n-1]
	}
	return prometheus.MustNewConstHistogram(descPluginTime, count, s.CallTimeSum.Seconds(), buckets, labels...)
}

func (c *pluginCollector) Collect(ch chan<- prometheus.Metric) {
	for stream, n := range c.m.LineageWaiting() {
		ch <- prometheus.MustNewConstMetric(descPluginLineage, prometheus.GaugeValue, float64(n), stream)
	}
	for _, info := range c.m.List() {
		paused := 0.0
		if info.Status == plugins.StatusPaused {
			paused = 1
		}
		ch <- prometheus.MustNewConstMetric(descPluginPaused, prometheus.GaugeValue, paused, info.Name)
		waiting := 0.0
		if info.Status == plugins.StatusWaiting {
			waiting = 1
		}
		ch <- prometheus.MustNewConstMetric(descPluginWait, prometheus.GaugeValue, waiting, info.Name)
		for _, s := range info.Shards {
			l := []string{info.Name, s.Input, strconv.Itoa(s.Shard)}
			ch <- prometheus.MustNewConstMetric(descPluginIn, prometheus.CounterValue, float64(s.RecordsIn), l...)
			ch <- prometheus.MustNewConstMetric(descPluginOut, prometheus.CounterValue, float64(s.RecordsOut), l...)
			ch <- prometheus.MustNewConstMetric(descPluginDead, prometheus.CounterValue, float64(s.DeadLettered), l...)
			ch <- prometheus.MustNewConstMetric(descPluginErrors, prometheus.CounterValue, float64(s.Errors), l...)
			ch <- prometheus.MustNewConstMetric(descPluginCalls, prometheus.CounterValue, float64(s.Calls), l...)
			ch <- callHistogram(s, l)
			ch <- prometheus.MustNewConstMetric(descPluginLag, prometheus.GaugeValue, float64(s.Lag), l...)
			ch <- prometheus.MustNewConstMetric(descPluginState, prometheus.GaugeValue, float64(s.StateBytes), l...)
			ch <- prometheus.MustNewConstMetric(descPluginMem, prometheus.GaugeValue, float64(s.MemoryBytes), l...)
			quar := 0.0
			if s.Quarantined {
				quar = 1
			}
			ch <- prometheus.MustNewConstMetric(descPluginQuar, prometheus.GaugeValue, quar, l...)
			ch <- prometheus.MustNewConstMetric(descPluginTO, prometheus.CounterValue, float64(s.Timeouts), l...)
		}
	}
}

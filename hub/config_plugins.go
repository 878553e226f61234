package hub

import (
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/edgehub/edgehub/plugins"
	"github.com/edgehub/edgehub/store"
)

// PluginConfig is one [[plugin]] declaration: a Wasm plugin deployed at
// start. A declaration whose module and settings equal the deployed plugin's
// is left alone (its checkpoint and state continue); a changed one upgrades
// it in place. Plugins deployed through the admin API are not touched.
//
//	[[plugin]]
//	name = "agg"
//	module = "plugins/aggregate.wasm"   # relative to this file
//	inputs = ["readings"]
//	outputs = ["aggregates"]
//	start = "earliest"
//	on_error = "dead-letter"
//	dead_letter = "agg-dead"
//	[plugin.config]
//	window = "1m"
type PluginConfig struct {
	Name    string   `toml:"name" json:"name,omitempty"`
	Module  string   `toml:"module" json:"module,omitempty"`
	Inputs  []string `toml:"inputs" json:"inputs,omitempty"`
	Outputs []string `toml:"outputs" json:"outputs,omitempty"`
	// Config is passed to the plugin's eh_init; values may be strings,
	// numbers or booleans.
	Config        PluginParams `toml:"config" json:"config,omitempty"`
	Start         string       `toml:"start" json:"start,omitempty"`
	OnError       string       `toml:"on_error" json:"on_error,omitempty"`
	DeadLetter    string       `toml:"dead_letter" json:"dead_letter,omitempty"`
	MaxAttempts   int          `toml:"max_attempts" json:"max_attempts,omitempty"`
	BackoffMin    Duration     `toml:"backoff_min" json:"backoff_min,omitempty"`
	BackoffMax    Duration     `toml:"backoff_max" json:"backoff_max,omitempty"`
	Memory        Size         `toml:"memory" json:"memory,omitempty"` // linear memory cap, rounded up to 64 KiB pages
	CallTimeout   Duration     `toml:"call_timeout" json:"call_timeout,omitempty"`
	BatchRecords  int          `toml:"batch_records" json:"batch_records,omitempty"`
	BatchBytes    Size         `toml:"batch_bytes" json:"batch_bytes,omitempty"`
	TimerInterval Duration     `toml:"timer_interval" json:"timer_interval,omitempty"`
	// MaxWait is how long a partial batch may wait to fill (default 10ms).
	MaxWait Duration `toml:"max_wait" json:"max_wait,omitempty"`
	// MaxStateDelta bounds the keyed state one call may write (default
	// 16MiB); StateQuota the plugin's whole keyed state (default 256MiB).
	MaxStateDelta Size `toml:"max_state_delta" json:"max_state_delta,omitempty"`
	StateQuota    Size `toml:"state_quota" json:"state_quota,omitempty"`
	// StateByKey: the plugin's state keys are its input's record keys, so a
	// split copies each key to its child only (docs/plugins.md).
	StateByKey bool `toml:"state_by_key" json:"state_by_key,omitempty"`
}

// PluginParams is a plugin's config table.
type PluginParams map[string]string

// UnmarshalTOML accepts a table of strings, numbers and booleans.
func (p *PluginParams) UnmarshalTOML(v any) error {
	m, ok := v.(map[string]any)
	if !ok {
		return fmt.Errorf("expected a table of values, got %T", v)
	}
	out := make(PluginParams, len(m))
	for k, val := range m {
		switch x := val.(type) {
		case string:
			out[k] = x
		case int64:
			out[k] = strconv.FormatInt(x, 10)
		case float64:
			out[k] = strconv.FormatFloat(x, 'g', -1, 64)
		case bool:
			out[k] = strconv.FormatBool(x)
		default:
			return fmt.Errorf("config.%s: %T is not a string, number or boolean", k, val)
		}
	}
	*p = out
	return nil
}

// Definition converts the declaration to a plugin definition (defaults not
// yet filled).
func (c PluginConfig) Definition() plugins.Definition {
	d := plugins.Definition{
		Name: c.Name, Inputs: slices.Clone(c.Inputs), Outputs: slices.Clone(c.Outputs),
		Start: c.Start, OnError: plugins.Policy(c.OnError), DeadLetter: c.DeadLetter, MaxAttempts: c.MaxAttempts,
		BackoffMin: time.Duration(c.BackoffMin), BackoffMax: time.Duration(c.BackoffMax),
		MemoryPages: uint32((int64(c.Memory) + 65535) / 65536), CallTimeout: time.Duration(c.CallTimeout),
		BatchRecords: c.BatchRecords, BatchBytes: int(c.BatchBytes), TimerInterval: time.Duration(c.TimerInterval),
		MaxWait: time.Duration(c.MaxWait), MaxStateDelta: int(c.MaxStateDelta), StateQuota: int64(c.StateQuota),
		StateByKey: c.StateByKey,
	}
	if len(c.Config) > 0 {
		d.Config = map[string]string(c.Config)
	}
	return d
}

// ModulePath resolves Module against the directory of the config file.
func (c PluginConfig) ModulePath(configFile string) string {
	if filepath.IsAbs(c.Module) || configFile == "" {
		return c.Module
	}
	return filepath.Join(filepath.Dir(configFile), c.Module)
}

// Validate reports every problem in one [[plugin]] element.
func (c PluginConfig) Validate() error {
	var errs []error
	if c.Module == "" {
		errs = append(errs, fieldErrorf("module", "a path to a .wasm file is required"))
	}
	if c.Memory < 0 || c.Memory > 4<<30 {
		errs = append(errs, fieldErrorf("memory", "%s outside 0..4GiB", c.Memory))
	}
	if err := c.Definition().WithDefaults().Validate(); err != nil {
		for _, e := range flatten(err) {
			errs = append(errs, fieldError("", e))
		}
	}
	return errors.Join(errs...)
}

// WebhookConfig is one [[webhook]] declaration: a stream's records delivered
// to an HTTP endpoint, one POST per batch, retried with backoff until the
// endpoint answers 2xx. Delivery is at-least-once: the position is saved
// after each acknowledged POST; the Edgehub-Delivery header (stream, shard
// and sequence range) lets the receiver drop a repeat.
//
//	[[webhook]]
//	name = "pager"
//	stream = "alerts"
//	url = "https://example.org/hooks/edgehub"
//	headers = { Authorization = "Bearer ..." }
type WebhookConfig struct {
	Name   string            `toml:"name" json:"name,omitempty"`
	Stream string            `toml:"stream" json:"stream,omitempty"`
	URL    string            `toml:"url" json:"url,omitempty"`
	Header map[string]string `toml:"headers" json:"headers,omitempty"`
	// Start is "latest" (default: only records after the webhook is first
	// started) or "earliest".
	Start        string   `toml:"start" json:"start,omitempty"`
	BatchRecords int      `toml:"batch_records" json:"batch_records,omitempty"`
	Timeout      Duration `toml:"timeout" json:"timeout,omitempty"`
	BackoffMin   Duration `toml:"backoff_min" json:"backoff_min,omitempty"`
	BackoffMax   Duration `toml:"backoff_max" json:"backoff_max,omitempty"`
}

// Webhook defaults.
const (
	DefaultWebhookBatch      = 100
	DefaultWebhookTimeout    = 10 * time.Second
	DefaultWebhookBackoffMin = 100 * time.Millisecond
	DefaultWebhookBackoffMax = 30 * time.Second
)

func (c *WebhookConfig) setDefaults() {
	c.Start = plugins.StartLatest
	c.BatchRecords = DefaultWebhookBatch
	c.Timeout = Duration(DefaultWebhookTimeout)
	c.BackoffMin = Duration(DefaultWebhookBackoffMin)
	c.BackoffMax = Duration(DefaultWebhookBackoffMax)
}

// withDefaults fills zero fields (for configs built in code).
func (c WebhookConfig) withDefaults() WebhookConfig {
	var d WebhookConfig
	d.setDefaults()
	if c.Start == "" {
		c.Start = d.Start
	}
	if c.BatchRecords == 0 {
		c.BatchRecords = d.BatchRecords
	}
	if c.Timeout == 0 {
		c.Timeout = d.Timeout
	}
	if c.BackoffMin == 0 {
		c.BackoffMin = d.BackoffMin
	}
	if c.BackoffMax == 0 {
		c.BackoffMax = d.BackoffMax
	}
	return c
}

// Validate reports every problem in one [[webhook]] element.
func (c WebhookConfig) Validate() error {
	c = c.withDefaults()
	var errs []error
	if err := store.ValidateName(c.Name); err != nil {
		errs = append(errs, fieldError("name", err))
	}
	if err := store.ValidateName(c.Stream); err != nil {
		errs = append(errs, fieldError("stream", err))
	}
	if u, err := url.Parse(c.URL); err != nil {
		errs = append(errs, fieldError("url", err))
	} else if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fieldErrorf("url", "%q: want an http:// or https:// URL", c.URL))
	}
	if c.Start != plugins.StartLatest && c.Start != plugins.StartEarliest {
		errs = append(errs, fieldErrorf("start", "%q: want %q or %q", c.Start, plugins.StartEarliest, plugins.StartLatest))
	}
	if c.BatchRecords < 1 || c.BatchRecords > 10_000 {
		errs = append(errs, fieldErrorf("batch_records", "%d outside 1..10000", c.BatchRecords))
	}
	if c.Timeout <= 0 {
		errs = append(errs, fieldErrorf("timeout", "%s must be positive", c.Timeout))
	}
	if c.BackoffMin <= 0 || c.BackoffMax < c.BackoffMin {
		errs = append(errs, fieldErrorf("backoff_min", "%s..%s: want 0 < backoff_min <= backoff_max", c.BackoffMin, c.BackoffMax))
	}
	return errors.Join(errs...)
}

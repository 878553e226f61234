package plugins

import (
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/edgehub/edgehub/store"
	"github.com/edgehub/edgehub/wasmhost"
)

// Config configures a Manager.
type Config struct {
	// Dir is the data directory: definitions, modules, checkpoints and
	// state live in Dir/plugins.db, compiled code in Dir/wasmcache.
	Dir string
	// HubName prefixes the origin of every plugin output, so the same plugin
	// on two federated hubs produces distinct origins.
	HubName string
	// Store holds the input and output streams.
	Store *store.Store
	// Logger receives manager events; each plugin logs with
	// Logger.With("plugin", name). nil means slog.Default().
	Logger *slog.Logger
	// LogLines is how many log lines each plugin keeps for `hub plugin logs`.
	LogLines int
	// GuestLogRate bounds the guest log lines per second and plugin that
	// are forwarded to Logger (all are kept in the plugin's log ring).
	GuestLogRate int
	// MaxConcurrentCalls bounds how many guest calls run at once across all
	// plugins and shards, so plugins never take every core from ingest: a
	// plugin behind a busy ingest lags and catches up instead of slowing
	// producers (a goroutine running compiled wasm is not preempted until
	// the call returns). Quarantined runners (failing calls, or calls past
	// SlotLease) share one more slot of their own, which rests twice as
	// long as it was held, so a hostile plugin delays healthy ones by at
	// most SlotLease once per shard (docs/plugins.md). Default: half the
	// CPUs, at least 1.
	MaxConcurrentCalls int
	// BusyDutyCycle is the share of wall time a runner may hold an
	// execution slot while records keep arriving on its input shard; it
	// waits out the rest. 1 disables the throttle. Default 1/3: during an
	// ingest burst plugins take at most a third of a slot each, and catch up
	// at full speed when it ends (docs/performance.md).
	BusyDutyCycle float64
	// SlotLease is how long one step (read, call, commit) may hold a slot
	// of the shared pool. A step that holds it longer — a plugin looping
	// until its call_timeout, a trap storm — gives the slot back while it
	// goes on, and its runner moves to the quarantine slot: healthy
	// plugins wait at most SlotLease for a hostile one. Default 200ms.
	SlotLease time.Duration
	// Now is the wall clock; nil means time.Now.
	Now func() time.Time

	// beforeHandoff, in tests, is asked before each handoff pass creates
	// children; false leaves them to a later pass (a crash before it).
	beforeHandoff func() bool
}

// DefaultSlotLease is Config.SlotLease's default.
const DefaultSlotLease = 200 * time.Millisecond

// DefaultConfig returns a Config for the data directory dir.
func DefaultConfig(dir string) Config {
	return Config{Dir: dir, HubName: "local", LogLines: 1000, GuestLogRate: 100,
		MaxConcurrentCalls: max(1, runtime.GOMAXPROCS(0)/2), BusyDutyCycle: 1.0 / 3, SlotLease: DefaultSlotLease}
}

// Validate reports every problem in c at once.
func (c Config) Validate() error {
	var errs []error
	if c.Dir == "" {
		errs = append(errs, errors.New("plugins: config: Dir is required"))
	}
	if c.Store == nil {
		errs = append(errs, errors.New("plugins: config: Store is required"))
	}
	if c.HubName == "" {
		errs = append(errs, errors.New("plugins: config: HubName is required"))
	}
	if c.LogLines < 1 {
		errs = append(errs, fmt.Errorf("plugins: config: LogLines %d must be at least 1", c.LogLines))
	}
	if c.MaxConcurrentCalls < 1 {
		errs = append(errs, fmt.Errorf("plugins: config: MaxConcurrentCalls %d must be at least 1", c.MaxConcurrentCalls))
	}
	if c.BusyDutyCycle <= 0 || c.BusyDutyCycle > 1 {
		errs = append(errs, fmt.Errorf("plugins: config: BusyDutyCycle %g outside (0, 1]", c.BusyDutyCycle))
	}
	if c.SlotLease <= 0 {
		errs = append(errs, fmt.Errorf("plugins: config: SlotLease %s must be positive", c.SlotLease))
	}
	if c.GuestLogRate < 0 {
		errs = append(errs, fmt.Errorf("plugins: config: GuestLogRate %d is negative", c.GuestLogRate))
	}
	return errors.Join(errs...)
}

// Policy says what happens to an input record whose call fails (trap,
// timeout, ABI violation, error status).
type Policy string

// Error policies.
const (
	// PolicyRetry retries the record with exponential backoff; after
	// MaxAttempts (if set) the plugin is paused.
	PolicyRetry Policy = "retry"
	// PolicyDeadLetter appends the record, with the reason in its headers,
	// to the dead-letter stream and moves on.
	PolicyDeadLetter Policy = "dead-letter"
	// PolicyPause pauses the plugin until it is resumed or upgraded.
	PolicyPause Policy = "pause"
)

// Start positions for a plugin's first run.
const (
	StartEarliest = "earliest"
	StartLatest   = "latest"
)

// Definition is a plugin as deployed: what it reads and writes, its config
// and limits. It is stored durably with the module's bytes.
type Definition struct {
	Name    string            `json:"name"`
	Inputs  []string          `json:"inputs"`
	Outputs []string          `json:"outputs,omitempty"`
	Config  map[string]string `json:"config,omitempty"`
	// Start is where a new plugin begins reading: "earliest" or "latest".
	// Upgrades keep the checkpoint.
	Start string `json:"start"`

	OnError     Policy        `json:"on_error"`
	DeadLetter  string        `json:"dead_letter,omitempty"` // stream for PolicyDeadLetter
	MaxAttempts int           `json:"max_attempts,omitempty"`
	BackoffMin  time.Duration `json:"backoff_min"`
	BackoffMax  time.Duration `json:"backoff_max"`

	MemoryPages  uint32        `json:"memory_pages"`
	CallTimeout  time.Duration `json:"call_timeout"`
	BatchRecords int           `json:"batch_records"`
	BatchBytes   int           `json:"batch_bytes"`
	// MaxWait is how long a runner lets a partial batch fill before calling
	// the plugin: latency traded for fewer commits under a trickle.
	MaxWait       time.Duration `json:"max_wait"`
	TimerInterval time.Duration `json:"timer_interval"`
	// MaxStateDelta bounds the keyed state one call may write: the sum of
	// key and value bytes of its state_set calls and key bytes of its
	// state_delete calls. StateQuota bounds the plugin's committed state
	// (keys and values, all inputs and shards together). A call that goes
	// past either fails with ErrStateLimit and the error policy applies.
	MaxStateDelta int   `json:"max_state_delta"`
	StateQuota    int64 `json:"state_quota"`
	// StateByKey promises that the plugin's state keys are record keys
	// of its input: when an input shard is split, each key is copied only
	// to the child whose hash range holds it, instead of the whole state
	// to both (docs/plugins.md, "Resharded inputs").
	StateByKey bool `json:"state_by_key,omitempty"`

	// Set by the manager.
	SHA256      string    `json:"sha256"`
	ModuleSize  int       `json:"module_size"`
	Version     int       `json:"version"`
	Created     time.Time `json:"created"`
	Updated     time.Time `json:"updated"`
	Paused      bool      `json:"paused,omitempty"`
	PauseReason string    `json:"pause_reason,omitempty"`
}

// Defaults of a Definition.
const (
	DefaultBatchRecords  = 1000
	DefaultBatchBytes    = 1 << 20
	DefaultTimerInterval = time.Second
	DefaultMaxWait       = 10 * time.Millisecond
	DefaultBackoffMin    = 100 * time.Millisecond
	DefaultBackoffMax    = 30 * time.Second
	DefaultMaxStateDelta = 16 << 20
	DefaultStateQuota    = 256 << 20
)

// WithDefaults fills zero fields with the defaults.
func (d Definition) WithDefaults() Definition {
	if d.Start == "" {
		d.Start = StartLatest
	}
	if d.OnError == "" {
		if d.DeadLetter != "" {
			d.OnError = PolicyDeadLetter
		} else {
			d.OnError = PolicyRetry
		}
	}
	if d.BackoffMin == 0 {
		d.BackoffMin = DefaultBackoffMin
	}
	if d.BackoffMax == 0 {
		d.BackoffMax = DefaultBackoffMax
	}
	if d.MemoryPages == 0 {
		d.MemoryPages = wasmhost.DefaultMemoryPages
	}
	if d.CallTimeout == 0 {
		d.CallTimeout = wasmhost.DefaultCallTimeout
	}
	if d.BatchRecords == 0 {
		d.BatchRecords = DefaultBatchRecords
	}
	if d.BatchBytes == 0 {
		d.BatchBytes = DefaultBatchBytes
	}
	if d.TimerInterval == 0 {
		d.TimerInterval = DefaultTimerInterval
	}
	if d.MaxWait == 0 {
		d.MaxWait = DefaultMaxWait
	}
	if d.MaxStateDelta == 0 {
		d.MaxStateDelta = DefaultMaxStateDelta
	}
	if d.StateQuota == 0 {
		d.StateQuota = DefaultStateQuota
	}
	return d
}

// Validate reports every problem in d at once.
func (d Definition) Validate() error {
	var errs []error
	add := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidDefinition}, args...)...))
	}
	if err := store.ValidateName(d.Name); err != nil {
		add("name: %v", err)
	}
	if len(d.Inputs) == 0 {
		add("at least one input stream is required")
	}
	seen := map[string]string{}
	for _, s := range d.Inputs {
		if err := store.ValidateName(s); err != nil {
			add("input: %v", err)
		}
		if seen[s] != "" {
			add("stream %q listed twice", s)
		}
		seen[s] = "input"
	}
	for _, s := range d.Outputs {
		if err := store.ValidateName(s); err != nil {
			add("output: %v", err)
		}
		if seen[s] == "input" {
			add("stream %q is both input and output: the plugin would read its own output forever", s)
		} else if seen[s] != "" {
			add("stream %q listed twice", s)
		}
		seen[s] = "output"
	}
	switch d.Start {
	case StartEarliest, StartLatest:
	default:
		add("start %q: want %q or %q", d.Start, StartEarliest, StartLatest)
	}
	switch d.OnError {
	case PolicyRetry, PolicyPause:
	case PolicyDeadLetter:
		if d.DeadLetter == "" {
			add("on_error %q needs a dead_letter stream", d.OnError)
		}
	default:
		add("on_error %q: want %q, %q or %q", d.OnError, PolicyRetry, PolicyDeadLetter, PolicyPause)
	}
	if d.DeadLetter != "" {
		if err := store.ValidateName(d.DeadLetter); err != nil {
			add("dead_letter: %v", err)
		}
		if slices.Contains(d.Inputs, d.DeadLetter) {
			add("dead_letter stream %q is an input", d.DeadLetter)
		}
	}
	if d.MaxAttempts < 0 {
		add("max_attempts %d is negative", d.MaxAttempts)
	}
	if d.BackoffMin <= 0 || d.BackoffMax < d.BackoffMin {
		add("backoff %s..%s: want 0 < min <= max", d.BackoffMin, d.BackoffMax)
	}
	if d.MemoryPages < 1 || d.MemoryPages > wasmhost.MaxMemoryPages {
		add("memory_pages %d outside 1..%d", d.MemoryPages, wasmhost.MaxMemoryPages)
	}
	if d.CallTimeout <= 0 {
		add("call_timeout %s must be positive", d.CallTimeout)
	}
	if d.BatchRecords < 1 || d.BatchRecords > 100_000 {
		add("batch_records %d outside 1..100000", d.BatchRecords)
	}
	if d.BatchBytes < 1024 || d.BatchBytes > 64<<20 {
		add("batch_bytes %d outside 1KiB..64MiB", d.BatchBytes)
	}
	if d.MaxWait < 0 || d.MaxWait > time.Minute {
		add("max_wait %s outside 0..1m", d.MaxWait)
	}
	if d.MaxStateDelta < 1024 || d.MaxStateDelta > 1<<30 {
		add("max_state_delta %d outside 1KiB..1GiB", d.MaxStateDelta)
	}
	if d.StateQuota < 1024 || d.StateQuota > 1<<40 {
		add("state_quota %d outside 1KiB..1TiB", d.StateQuota)
	}
	if d.TimerInterval < 10*time.Millisecond {
		add("timer_interval %s is below 10ms", d.TimerInterval)
	}
	for k := range d.Config {
		if k == "" {
			add("config has an empty key")
		}
	}
	return errors.Join(errs...)
}

// Config keys the hub fills from the declared outputs, so a plugin learns
// where to emit from --output alone (docs/plugin-abi.md, "Declared outputs").
const (
	// configOutput is the first declared output.
	configOutput = "output"
	// configOutputs is every declared output in declaration order, joined by
	// commas (stream names contain none).
	configOutputs = "outputs"
)

// guestConfig is the config eh_init receives: d.Config plus configOutput and
// configOutputs from d.Outputs, each unless d.Config sets it (the user's value
// wins, unchecked: to another plugin the key may mean something else). It is
// computed at every init rather than stored, so an upgrade that changes the
// outputs changes them, and describe shows the config as given.
func (d Definition) guestConfig() map[string]string {
	if len(d.Outputs) == 0 {
		return d.Config
	}
	c := make(map[string]string, len(d.Config)+2)
	c[configOutput] = d.Outputs[0]
	c[configOutputs] = strings.Join(d.Outputs, ",")
	for k, v := range d.Config {
		c[k] = v
	}
	return c
}

func (d Definition) limits() wasmhost.Limits {
	return wasmhost.Limits{MemoryPages: d.MemoryPages, CallTimeout: d.CallTimeout}.WithDefaults()
}

// clone returns a deep copy of d.
func (d Definition) clone() Definition {
	d.Inputs = slices.Clone(d.Inputs)
	d.Outputs = slices.Clone(d.Outputs)
	if d.Config != nil {
		c := make(map[string]string, len(d.Config))
		for k, v := range d.Config {
			c[k] = v
		}
		d.Config = c
	}
	return d
}

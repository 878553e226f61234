package hub

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/internal/stricttoml"
	"github.com/edgehub/edgehub/store"
)

// Config is the whole hub configuration, the schema of hub.toml. The hub.toml
// schema is a public compatibility surface: keys are only ever added.
//
// Sections owned by other parts of the hub live in their own files
// (config_tls.go, config_auth.go, config_admin.go, config_limits.go,
// config_groups.go, config_gossip.go, config_plugins.go); each has a Validate
// method that Config.Validate calls.
type Config struct {
	Hub      HubConfig       `toml:"hub"`
	Listen   ListenConfig    `toml:"listen"`
	Store    StoreConfig     `toml:"store"`
	Streams  []StreamConfig  `toml:"stream"`
	TLS      TLSConfig       `toml:"tls"`
	Auth     AuthConfig      `toml:"auth"`
	Admin    AdminConfig     `toml:"admin"`
	Limits   LimitsConfig    `toml:"limits"`
	Groups   GroupsConfig    `toml:"groups"`
	Gossip   GossipConfig    `toml:"gossip"`
	Plugins  []PluginConfig  `toml:"plugin"`
	Webhooks []WebhookConfig `toml:"webhook"`

	// File is the path the configuration was loaded from ("" for built-in
	// defaults); messages name it.
	File string `toml:"-"`
	// Logger receives the hub's logs. Default slog.Default().
	Logger *slog.Logger `toml:"-"`
	// Rename lets the hub adopt Hub.Name for a data directory recorded under
	// another name (hub serve --rename); see checkIdentity. Not in hub.toml:
	// renaming is a one-off decision, not a standing setting.
	Rename bool `toml:"-"`
}

// HubConfig is the [hub] section: who this hub is.
type HubConfig struct {
	// Name identifies the hub in a federation and in record origins, so it
	// must be unique and stable. Default: the host name.
	Name   string   `toml:"name"`
	Site   string   `toml:"site"`
	Region string   `toml:"region"`
	Tags   []string `toml:"tags"`
	// DataDir holds the store and everything else the hub keeps on disk.
	DataDir string `toml:"data_dir"`
	// ShutdownTimeout bounds a graceful stop (SIGTERM, SIGINT): the drain
	// and the close. 0 means DefaultShutdownTimeout.
	ShutdownTimeout Duration `toml:"shutdown_timeout"`
}

// ListenConfig is the [listen] section. Port 0 picks a free port.
type ListenConfig struct {
	// QUIC is the UDP address of the data plane.
	QUIC string `toml:"quic"`
	// Admin is the TCP address of the admin HTTP API.
	Admin string `toml:"admin"`
}

// StoreConfig is the [store] section.
type StoreConfig struct {
	// Sync is "always" (ack after fsync, the default) or "interval" (ack
	// after the write reaches the OS; fsync every SyncInterval).
	Sync           string   `toml:"sync"`
	SyncInterval   Duration `toml:"sync_interval"`
	MaxRecordBytes Size     `toml:"max_record_bytes"`
}

// StreamConfig is one [[stream]] declaration. Declared streams are created at
// start; an existing stream gets its mutable settings updated.
type StreamConfig struct {
	Name               string    `toml:"name"`
	Shards             int       `toml:"shards"`
	Retention          Duration  `toml:"retention"`
	MaxBytes           Size      `toml:"max_bytes"`
	Compact            bool      `toml:"compact"`
	TombstoneRetention Duration  `toml:"tombstone_retention"`
	Replicate          Replicate `toml:"replicate"`
	// Copies, CopiesAt, CopiesTimeout and CopiesShortfall: how many hubs
	// hold a batch before its ACK, and what happens when they do not
	// (CopiesPolicy, hub/copies.go).
	Copies          int       `toml:"copies"`
	CopiesAt        Replicate `toml:"copies_at"`
	CopiesTimeout   Duration  `toml:"copies_timeout"`
	CopiesShortfall string    `toml:"copies_shortfall"`
	// Autosplit is the optional [stream.autosplit] policy; nil: none from
	// the config (a policy set through the API then stays).
	Autosplit *AutosplitConfig `toml:"autosplit"`
}

// Defaults of the built-in configuration.
const (
	DefaultDataDir        = "./hub-data"
	DefaultQUICAddr       = "127.0.0.1:7440"
	DefaultAdminAddr      = "127.0.0.1:7441"
	DefaultMaxRecordBytes = 1 << 20
	DefaultSyncInterval   = 100 * time.Millisecond
	DefaultTombstoneRet   = 24 * time.Hour
	// DefaultShutdownTimeout: a drain takes as long as the slowest
	// in-flight batch's fsync and a plugin's call; 15s leaves room for a
	// slow disk and stays under the 30s systemd and Kubernetes wait
	// before they kill.
	DefaultShutdownTimeout = 15 * time.Second
)

// minFrameBytes is the smallest limits.max_frame_bytes that carries a BATCH
// of one record of maxRecord bytes: the record, its encoding, and the 64
// bytes PRODUCE_READY reserves for the BATCH fields (max_batch_bytes is
// max_frame_bytes - 64).
func minFrameBytes(maxRecord Size) int64 {
	return int64(maxRecord) + int64(record.MaxEncodingOverhead(int(maxRecord))) + 64
}

// MetaReplicate is the store.StreamConfig.Meta key holding a stream's
// replication policy in canonical form (see Replicate).
const MetaReplicate = "replicate"

// DefaultConfig returns the configuration `hub serve` runs with when no file
// is given.
func DefaultConfig() Config {
	name, err := os.Hostname()
	if err != nil || store.ValidateName(name) != nil {
		name = "hub"
	}
	return Config{
		Hub:    HubConfig{Name: name, DataDir: DefaultDataDir, ShutdownTimeout: Duration(DefaultShutdownTimeout)},
		Listen: ListenConfig{QUIC: DefaultQUICAddr, Admin: DefaultAdminAddr},
		Store: StoreConfig{
			Sync:           "always",
			SyncInterval:   Duration(DefaultSyncInterval),
			MaxRecordBytes: DefaultMaxRecordBytes,
		},
	}
}

// setDefaults fills a [[stream]] element before it is decoded.
func (s *StreamConfig) setDefaults() {
	s.Shards = 1
	s.TombstoneRetention = Duration(DefaultTombstoneRet)
	s.Replicate = ReplicateLocal
	s.Copies = 1
	s.CopiesAt = ReplicateAll
	s.CopiesTimeout = Duration(DefaultCopiesTimeout)
	s.CopiesShortfall = DefaultCopiesShortfall
}

// copies is the declaration's copies policy. A zero field is unset, as
// everywhere in Config (a StreamConfig literal need not name them): it
// takes its default.
func (s StreamConfig) copies() CopiesPolicy {
	p := defaultCopies()
	if s.Copies != 0 {
		p.Copies = s.Copies
	}
	if s.CopiesAt != "" {
		p.At = s.CopiesAt
	}
	if s.CopiesTimeout != 0 {
		p.Timeout = s.CopiesTimeout
	}
	if s.CopiesShortfall != "" {
		p.Shortfall = s.CopiesShortfall
	}
	return p
}

// StoreStreamConfig converts the declaration to the store's definition.
func (s StreamConfig) StoreStreamConfig() store.StreamConfig {
	return store.StreamConfig{
		Name:               s.Name,
		Shards:             s.Shards,
		Retention:          time.Duration(s.Retention),
		MaxBytes:           int64(s.MaxBytes),
		Compact:            s.Compact,
		TombstoneRetention: time.Duration(s.TombstoneRetention),
		Meta:               s.meta(),
	}
}

// meta is the declaration's part of the stream's metadata.
func (s StreamConfig) meta() map[string]string {
	m := map[string]string{MetaReplicate: string(s.Replicate.orLocal())}
	if v := s.copies().encode(); v != "" {
		m[MetaCopies] = v
	}
	if s.Autosplit != nil {
		m[MetaAutosplit] = encodeAutosplit(*s.Autosplit, autosplitFromConfig)
	}
	return m
}

// StoreOptions returns the store configuration the hub opens its store with.
func (c Config) StoreOptions() store.Config {
	sc := store.DefaultConfig(c.Hub.DataDir)
	if c.Store.Sync == "interval" {
		sc.Sync = store.SyncInterval
	}
	if c.Store.SyncInterval > 0 {
		sc.SyncInterval = time.Duration(c.Store.SyncInterval)
	}
	if c.Store.MaxRecordBytes > 0 {
		sc.MaxRecordBytes = int(c.Store.MaxRecordBytes)
	}
	if chaosClock != nil {
		sc.Now, sc.Ticks = chaosClock, time.Now
	}
	sc.Logger = c.Logger
	return sc
}

// Validate reports every problem in c at once, each as a *ConfigError naming
// its key.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &ConfigError{Key: key, Err: fmt.Errorf(format, args...)})
	}
	badErr := func(key string, err error) {
		if err != nil {
			errs = append(errs, &ConfigError{Key: key, Err: err})
		}
	}

	if c.Hub.Name == "" {
		bad("hub.name", "must not be empty")
	} else {
		badErr("hub.name", store.ValidateName(c.Hub.Name))
	}
	for i, tag := range c.Hub.Tags {
		badErr(fmt.Sprintf("hub.tags[%d]", i), store.ValidateName(tag))
	}
	if c.Hub.DataDir == "" {
		bad("hub.data_dir", "must not be empty")
	}
	if c.Hub.ShutdownTimeout < 0 {
		bad("hub.shutdown_timeout", "must not be negative")
	}

	badErr("listen.quic", validateAddr(c.Listen.QUIC))
	badErr("listen.admin", validateAddr(c.Listen.Admin))

	switch c.Store.Sync {
	case "always":
	case "interval":
		if c.Store.SyncInterval <= 0 {
			bad("store.sync_interval", "%s must be positive with sync = \"interval\"", c.Store.SyncInterval)
		}
	default:
		bad("store.sync", "%q is not one of \"always\", \"interval\"", c.Store.Sync)
	}
	if c.Store.MaxRecordBytes <= 0 || c.Store.MaxRecordBytes > 64<<20 {
		bad("store.max_record_bytes", "%s outside 1B..64MiB", c.Store.MaxRecordBytes)
	} else if frame := c.Limits.withDefaults().MaxFrameBytes; int64(frame) < minFrameBytes(c.Store.MaxRecordBytes) {
		// Any record the store accepts must fit a BATCH alone.
		bad("limits.max_frame_bytes", "%s cannot carry a record of store.max_record_bytes %s; set it to at least %s",
			frame, c.Store.MaxRecordBytes, Size((minFrameBytes(c.Store.MaxRecordBytes)+1<<20-1)&^(1<<20-1)))
	}

	seen := map[string]int{}
	for i, s := range c.Streams {
		key := fmt.Sprintf("stream[%d]", i)
		if err := store.ValidateName(s.Name); err != nil {
			badErr(key+".name", err)
		} else if j, dup := seen[s.Name]; dup {
			bad(key+".name", "stream %q is already declared by stream[%d]", s.Name, j)
		} else {
			seen[s.Name] = i
		}
		if s.Shards < 1 || s.Shards > store.MaxShards {
			bad(key+".shards", "%d outside 1..%d", s.Shards, store.MaxShards)
		}
		if s.Retention < 0 {
			bad(key+".retention", "%s is negative", s.Retention)
		}
		if s.MaxBytes < 0 {
			bad(key+".max_bytes", "%s is negative", s.MaxBytes)
		}
		if s.TombstoneRetention < 0 {
			bad(key+".tombstone_retention", "%s is negative", s.TombstoneRetention)
		}
		if _, err := ParseReplicate(string(s.Replicate.orLocal())); err != nil {
			badErr(key+".replicate", err)
		}
		errs = append(errs, inSection(key, s.copies().validate(s.Replicate)))
		if s.Autosplit != nil {
			errs = append(errs, inSection(key+".autosplit", s.Autosplit.validate(s.Shards)))
		}
	}

	errs = append(errs, inSection("tls", c.TLS.Validate()))
	errs = append(errs, inSection("auth", c.Auth.Validate()))
	errs = append(errs, inSection("admin", c.Admin.Validate()), c.validateAdminExposure())
	errs = append(errs, inSection("limits", c.Limits.Validate()))
	errs = append(errs, inSection("groups", c.Groups.Validate()))
	errs = append(errs, inSection("gossip", c.Gossip.Validate()))
	for i, p := range c.Plugins {
		errs = append(errs, inSection(fmt.Sprintf("plugin[%d]", i), p.Validate()))
	}
	for i, w := range c.Webhooks {
		errs = append(errs, inSection(fmt.Sprintf("webhook[%d]", i), w.Validate()))
	}
	return errors.Join(errs...)
}

func validateAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %w", addr, err)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("%q: port %q is not a number in 0..65535", addr, port)
	} else if p == 0 && host == "" {
		return fmt.Errorf("%q: give a host or a port", addr)
	}
	return nil
}

// ConfigError is one problem in a configuration: the file, line and key it
// concerns and what is wrong. LoadConfig and Validate return them joined with
// errors.Join, so every problem is reported at once.
type ConfigError struct {
	File string // "" when the configuration did not come from a file
	Line int    // 0 when unknown
	Key  string // dotted path such as "stream[1].shards"; "" for the whole file
	Err  error
}

func (e *ConfigError) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			fmt.Fprintf(&b, ":%d", e.Line)
		}
		b.WriteString(": ")
	} else if e.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Err.Error())
	return b.String()
}

func (e *ConfigError) Unwrap() error { return e.Err }

// fieldError attributes err to key (relative to the section being
// validated). Section Validate methods use it so problems name their key.
func fieldError(key string, err error) error {
	if err == nil {
		return nil
	}
	return &ConfigError{Key: key, Err: err}
}

// fieldErrorf is fieldError(key, fmt.Errorf(format, args...)).
func fieldErrorf(key, format string, args ...any) error {
	return &ConfigError{Key: key, Err: fmt.Errorf(format, args...)}
}

// inSection prefixes the keys of the problems in err (which may be joined)
// with section; problems without a key are attributed to the section.
func inSection(section string, err error) error {
	if err == nil {
		return nil
	}
	var out []error
	for _, e := range flatten(err) {
		var ce *ConfigError
		if errors.As(e, &ce) {
			c := *ce
			if c.Key == "" {
				c.Key = section
			} else if strings.HasPrefix(c.Key, "[") {
				c.Key = section + c.Key
			} else {
				c.Key = section + "." + c.Key
			}
			out = append(out, &c)
			continue
		}
		out = append(out, &ConfigError{Key: section, Err: e})
	}
	return errors.Join(out...)
}

// flatten expands joined errors into their parts.
func flatten(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		if _, isCfg := err.(*ConfigError); !isCfg {
			var out []error
			for _, e := range j.Unwrap() {
				out = append(out, flatten(e)...)
			}
			return out
		}
	}
	return []error{err}
}

// LoadConfig reads and strictly decodes the TOML file at path on top of
// DefaultConfig, then validates it. It reports every problem at once: unknown
// keys, wrong types and invalid values, each with the file, line and key.
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	return ParseConfig(path, data)
}

// ParseConfig is LoadConfig for data already read; file names it in messages.
func ParseConfig(file string, data []byte) (Config, error) {
	cfg := DefaultConfig()
	cfg.File = file
	doc, err := stricttoml.Parse(string(data))
	if err != nil {
		return Config{}, inFile(file, err)
	}
	var errs []error
	for _, e := range doc.Decode(&cfg, setDefaults) {
		errs = append(errs, inFile(file, e))
	}
	if err := cfg.Validate(); err != nil {
		for _, e := range flatten(err) {
			errs = append(errs, locate(file, doc, e))
		}
	}
	if len(errs) > 0 {
		slices.SortStableFunc(errs, func(a, b error) int { return lineOf(a) - lineOf(b) })
		return Config{}, errors.Join(errs...)
	}
	return cfg, nil
}

// setDefaults fills the defaults of a new element of an array of tables
// (elem points to it) before the decoder decodes into it.
func setDefaults(elem any) {
	if d, ok := elem.(interface{ setDefaults() }); ok {
		d.setDefaults()
	}
}

// inFile turns a decoding problem into a *ConfigError naming file.
func inFile(file string, err error) error {
	var se *stricttoml.Error
	if !errors.As(err, &se) {
		return &ConfigError{File: file, Err: err}
	}
	return &ConfigError{File: file, Line: se.Line, Key: se.Key, Err: se.Err}
}

// locate fills the file and line of a validation problem.
func locate(file string, doc *stricttoml.Doc, err error) error {
	var ce *ConfigError
	if !errors.As(err, &ce) {
		return &ConfigError{File: file, Err: err}
	}
	c := *ce
	c.File = file
	if c.Line == 0 {
		c.Line = doc.Line(c.Key)
	}
	return &c
}

func lineOf(err error) int {
	var ce *ConfigError
	if errors.As(err, &ce) {
		return ce.Line
	}
	return 0
}

// Size is a byte count. In hub.toml and JSON it is an integer (bytes) or a
// string with a unit: "512MB" (decimal: KB, MB, GB, TB), "10GiB" (binary:
// KiB, MiB, GiB, TiB), "1048576" or "100B". Fractions are allowed
// ("1.5GiB") and rounded down to whole bytes.
type Size int64

var sizeUnits = map[string]float64{
	"": 1, "b": 1,
	"kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
	"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
}

// ParseSize parses a size such as "10GiB", "512MB" or "1048576".
func ParseSize(s string) (Size, error) {
	t := strings.TrimSpace(s)
	i := strings.IndexFunc(t, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	if i < 0 {
		i = len(t)
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	mult, ok := sizeUnits[unit]
	if num == "" || !ok {
		return 0, fmt.Errorf("invalid size %q (use bytes or a unit: B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)", s)
	}
	if !strings.Contains(num, ".") {
		n, err := strconv.ParseInt(num, 10, 64)
		if err != nil || (mult > 1 && n > int64(float64(1<<63-1)/mult)) {
			return 0, fmt.Errorf("invalid size %q: out of range", s)
		}
		return Size(n * int64(mult)), nil
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("invalid size %q", s)
	}
	if v := f * mult; v < 1<<63 {
		return Size(v), nil
	}
	return 0, fmt.Errorf("invalid size %q: out of range", s)
}

// String formats s in the unit, binary or decimal, that writes it in the
// fewest digits exactly ("512MB", "10GiB", "1001B").
func (s Size) String() string {
	if s == 0 {
		return "0"
	}
	best := strconv.FormatInt(int64(s), 10) + "B"
	for _, u := range []struct {
		name string
		n    int64
	}{{"TiB", 1 << 40}, {"TB", 1e12}, {"GiB", 1 << 30}, {"GB", 1e9}, {"MiB", 1 << 20}, {"MB", 1e6}, {"KiB", 1 << 10}, {"KB", 1e3}} {
		if int64(s)%u.n == 0 {
			if c := strconv.FormatInt(int64(s)/u.n, 10) + u.name; len(c)-len(u.name) < len(best)-1 {
				best = c
			}
		}
	}
	return best
}

// UnmarshalTOML accepts an integer (bytes) or a string with a unit.
func (s *Size) UnmarshalTOML(v any) error {
	switch v := v.(type) {
	case int64:
		if v < 0 {
			return fmt.Errorf("invalid size %d: negative", v)
		}
		*s = Size(v)
		return nil
	case string:
		n, err := ParseSize(v)
		if err != nil {
			return err
		}
		*s = n
		return nil
	}
	return fmt.Errorf("invalid size %v: want an integer (bytes) or a string such as \"10GiB\"", v)
}

// MarshalJSON writes bytes as a JSON number.
func (s Size) MarshalJSON() ([]byte, error) { return strconv.AppendInt(nil, int64(s), 10), nil }

// UnmarshalJSON accepts a number (bytes) or a string with a unit.
func (s *Size) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		str, err := strconv.Unquote(string(b))
		if err != nil {
			return fmt.Errorf("invalid size %s", b)
		}
		n, err := ParseSize(str)
		*s = n
		return err
	}
	n, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil || n < 0 {
		return fmt.Errorf("invalid size %s: want bytes or a string such as \"10GiB\"", b)
	}
	*s = Size(n)
	return nil
}

// Duration is a time.Duration written in Go syntax ("168h", "1h30m",
// "250ms") in hub.toml and JSON.
type Duration time.Duration

// String formats d without trailing zero units: "168h", not "168h0m0s".
func (d Duration) String() string {
	s := time.Duration(d).String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// ParseDuration parses a Go duration such as "168h" or "1h30m".
func ParseDuration(s string) (Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q (use Go syntax such as \"168h\", \"1h30m\", \"500ms\")", s)
	}
	return Duration(d), nil
}

// UnmarshalTOML accepts a Go duration string; integer 0 is allowed as "off".
func (d *Duration) UnmarshalTOML(v any) error {
	switch v := v.(type) {
	case string:
		p, err := ParseDuration(v)
		*d = p
		return err
	case int64:
		if v == 0 {
			*d = 0
			return nil
		}
		return fmt.Errorf("invalid duration %d: write it with a unit, e.g. \"%ds\"", v, v)
	}
	return fmt.Errorf("invalid duration %v: want a string such as \"168h\"", v)
}

// MarshalJSON writes d as a Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return strconv.AppendQuote(nil, d.String()), nil }

// UnmarshalJSON accepts a Go duration string or 0.
func (d *Duration) UnmarshalJSON(b []byte) error {
	if string(b) == "0" {
		*d = 0
		return nil
	}
	s, err := strconv.Unquote(string(b))
	if err != nil {
		return fmt.Errorf("invalid duration %s: want a string such as \"168h\"", b)
	}
	p, err := ParseDuration(s)
	*d = p
	return err
}

// Replicate is a stream's replication policy in canonical form: "local"
// (never leaves this hub), "all" (every federated hub) or a comma-separated,
// sorted list of "tag:NAME" (hubs carrying any of the tags). In hub.toml it is
// written replicate = "local" | "all" | ["tag:NAME", ...]. The hub stores it
// in store.StreamConfig.Meta[MetaReplicate]; federation interprets it.
type Replicate string

// Replication policies.
const (
	ReplicateLocal Replicate = "local"
	ReplicateAll   Replicate = "all"
)

func (r Replicate) orLocal() Replicate {
	if r == "" {
		return ReplicateLocal
	}
	return r
}

// Tags returns the tags of a tag-scoped policy, nil for "local" and "all".
func (r Replicate) Tags() []string {
	if r == ReplicateLocal || r == ReplicateAll || r == "" {
		return nil
	}
	var tags []string
	for _, t := range strings.Split(string(r), ",") {
		tags = append(tags, strings.TrimPrefix(t, "tag:"))
	}
	return tags
}

// ParseReplicate parses a policy written as a string: "local", "all", or
// one or more comma-separated "tag:NAME", returning the canonical form.
func ParseReplicate(s string) (Replicate, error) {
	s = strings.TrimSpace(s)
	switch s {
	case "", string(ReplicateLocal):
		return ReplicateLocal, nil
	case string(ReplicateAll):
		return ReplicateAll, nil
	}
	return replicateTags(strings.Split(s, ","))
}

func replicateTags(items []string) (Replicate, error) {
	var tags []string
	for _, it := range items {
		it = strings.TrimSpace(it)
		name, ok := strings.CutPrefix(it, "tag:")
		if !ok {
			return "", fmt.Errorf("invalid replication policy item %q: want \"local\", \"all\" or a list of \"tag:NAME\"", it)
		}
		if err := store.ValidateName(name); err != nil {
			return "", fmt.Errorf("invalid replication tag %q: %w", it, err)
		}
		tags = append(tags, "tag:"+name)
	}
	if len(tags) == 0 {
		return "", errors.New("empty replication tag list: use \"local\" to keep a stream on this hub")
	}
	slices.Sort(tags)
	return Replicate(strings.Join(slices.Compact(tags), ",")), nil
}

// UnmarshalTOML accepts "local", "all", "tag:NAME" or an array of "tag:NAME".
func (r *Replicate) UnmarshalTOML(v any) error {
	switch v := v.(type) {
	case string:
		p, err := ParseReplicate(v)
		*r = p
		return err
	case []any:
		items := make([]string, 0, len(v))
		for _, it := range v {
			s, ok := it.(string)
			if !ok {
				return fmt.Errorf("invalid replication policy item %v: want a string \"tag:NAME\"", it)
			}
			items = append(items, s)
		}
		p, err := replicateTags(items)
		*r = p
		return err
	}
	return fmt.Errorf("invalid replication policy %v: want \"local\", \"all\" or [\"tag:NAME\", ...]", v)
}

// UnmarshalJSON accepts the same forms as UnmarshalTOML.
func (r *Replicate) UnmarshalJSON(b []byte) error {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	if items, ok := v.([]any); ok {
		return r.UnmarshalTOML(items)
	}
	if s, ok := v.(string); ok {
		return r.UnmarshalTOML(s)
	}
	return fmt.Errorf("invalid replication policy %s: want \"local\", \"all\" or [\"tag:NAME\", ...]", b)
}

package hub

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// AutosplitConfig is a stream's [stream.autosplit] policy: split the
// hottest open shard at its midpoint once one of its thresholds has held
// For, never beyond MaxShards open shards, at most one automatic reshard
// per Cooldown (docs/resharding.md section 4, docs/config.md). The
// controller is hub/autosplit.go.
//
// The hub keeps the policy in the stream's metadata (MetaAutosplit), so
// one set through the admin API (PUT /v1/streams/{name}/autosplit)
// survives restarts; it is not part of the replicated definition: each
// hub splits its own layout.
type AutosplitConfig struct {
	// Bytes: a shard's live bytes. 0: not a threshold.
	Bytes Size `toml:"bytes" json:"bytes,omitempty"`
	// Rate: a shard's ingest rate in encoded bytes per second.
	Rate ByteRate `toml:"rate" json:"rate,omitempty"`
	// RecordsRate: a shard's ingest rate in records per second.
	RecordsRate int64 `toml:"records_rate" json:"records_rate,omitempty"`
	// For is how long a threshold must hold (at every sample) before the
	// shard is split. At least MinAutosplitFor; default 10m.
	For Duration `toml:"for" json:"for"`
	// MaxShards bounds the open shards automatic splits may reach.
	// Required: above the stream's creation count, at most the store's cap
	// (256 open, or the creation count if it is higher).
	MaxShards int `toml:"max_shards" json:"max_shards"`
	// Cooldown is the least time between two automatic reshards of the
	// stream. At least MinAutosplitFor; default 30m.
	Cooldown Duration `toml:"cooldown" json:"cooldown"`
}

// Defaults and bounds of [stream.autosplit].
const (
	DefaultAutosplitFor      = 10 * time.Minute
	DefaultAutosplitCooldown = 30 * time.Minute
	// MinAutosplitFor is the least For and Cooldown: the controller samples
	// every 10 s, and a shorter window would split on a burst.
	MinAutosplitFor = time.Minute
	// maxAutosplitOpen is the store's cap on open shards (store's
	// maxOpenShards, which a stream created with more shards raises to its
	// count); TestAutosplitMaxShardsCap checks the two agree.
	maxAutosplitOpen = 256
)

// MetaAutosplit is the store.StreamConfig.Meta key holding a stream's
// autosplit policy: the JSON of AutosplitConfig plus "from" ("config" or
// "api"), so that a policy hub.toml declared goes away with its
// declaration while one set through the API stays.
const MetaAutosplit = "autosplit"

// Where a stored policy came from.
const (
	autosplitFromConfig = "config"
	autosplitFromAPI    = "api"
)

func (a *AutosplitConfig) setDefaults() {
	a.For = Duration(DefaultAutosplitFor)
	a.Cooldown = Duration(DefaultAutosplitCooldown)
}

// defaultAutosplitConfig returns a policy with For and Cooldown at their
// defaults and no threshold (which Validate refuses).
func defaultAutosplitConfig() AutosplitConfig {
	var a AutosplitConfig
	a.setDefaults()
	return a
}

// validate reports every problem of the policy of a stream created with
// shards shards, keys relative to the section.
func (a AutosplitConfig) validate(shards int) error {
	var errs []error
	if a.Bytes <= 0 && a.Rate <= 0 && a.RecordsRate <= 0 {
		errs = append(errs, errors.New("give at least one threshold: bytes, rate or records_rate"))
	}
	if a.Bytes < 0 {
		errs = append(errs, fieldErrorf("bytes", "%d is negative", a.Bytes))
	}
	if a.Rate < 0 {
		errs = append(errs, fieldErrorf("rate", "%d is negative", a.Rate))
	}
	if a.RecordsRate < 0 {
		errs = append(errs, fieldErrorf("records_rate", "%d is negative", a.RecordsRate))
	}
	if time.Duration(a.For) < MinAutosplitFor {
		errs = append(errs, fieldErrorf("for", "%s is below the minimum %s (the controller samples every 10s)", a.For, Duration(MinAutosplitFor)))
	}
	if time.Duration(a.Cooldown) < MinAutosplitFor {
		errs = append(errs, fieldErrorf("cooldown", "%s is below the minimum %s", a.Cooldown, Duration(MinAutosplitFor)))
	}
	limit := max(maxAutosplitOpen, shards)
	switch {
	case a.MaxShards == 0:
		errs = append(errs, fieldErrorf("max_shards", "required: the most open shards automatic splits may reach"))
	case a.MaxShards <= shards:
		errs = append(errs, fieldErrorf("max_shards", "%d is not above the stream's %d shards: nothing would be split", a.MaxShards, shards))
	case a.MaxShards > limit:
		errs = append(errs, fieldErrorf("max_shards", "%d is above the store's cap of %d open shards", a.MaxShards, limit))
	}
	return errors.Join(errs...)
}

// String describes the policy in one line, for logs and `hub stream
// describe`.
func (a AutosplitConfig) String() string {
	var th []string
	if a.Bytes > 0 {
		th = append(th, "bytes ≥ "+a.Bytes.String())
	}
	if a.Rate > 0 {
		th = append(th, "rate ≥ "+a.Rate.String())
	}
	if a.RecordsRate > 0 {
		th = append(th, fmt.Sprintf("records ≥ %d/s", a.RecordsRate))
	}
	return fmt.Sprintf("%s for %s; at most %d open shards; cooldown %s", strings.Join(th, " or "), a.For, a.MaxShards, a.Cooldown)
}

// storedAutosplit is the JSON in Meta[MetaAutosplit].
type storedAutosplit struct {
	AutosplitConfig
	From string `json:"from"`
}

func encodeAutosplit(a AutosplitConfig, from string) string {
	b, _ := json.Marshal(storedAutosplit{a, from}) // plain numbers and strings: cannot fail
	return string(b)
}

// decodeAutosplit parses Meta[MetaAutosplit]; "" is no policy.
func decodeAutosplit(s string) (a AutosplitConfig, from string, ok bool, err error) {
	if s == "" {
		return a, "", false, nil
	}
	var st storedAutosplit
	if err := json.Unmarshal([]byte(s), &st); err != nil {
		return a, "", false, fmt.Errorf("autosplit policy %q: %w", s, err)
	}
	return st.AutosplitConfig, st.From, true, nil
}

// ByteRate is a rate in bytes per second. In hub.toml and JSON it is an
// integer (bytes per second) or a size with "/s": "8MiB/s", "500KB/s".
type ByteRate int64

// ParseByteRate parses a rate such as "8MiB/s" or "1048576".
func ParseByteRate(s string) (ByteRate, error) {
	t := strings.TrimSpace(s)
	size, ok := strings.CutSuffix(t, "/s")
	if !ok {
		if _, err := strconv.ParseInt(t, 10, 64); err != nil {
			return 0, fmt.Errorf("invalid rate %q: want bytes per second or a size with \"/s\" such as \"8MiB/s\"", s)
		}
	}
	n, err := ParseSize(size)
	if err != nil {
		return 0, fmt.Errorf("invalid rate %q: want bytes per second or a size with \"/s\" such as \"8MiB/s\"", s)
	}
	return ByteRate(n), nil
}

// String formats r as a size per second: "8MiB/s".
func (r ByteRate) String() string { return Size(r).String() + "/s" }

// UnmarshalTOML accepts an integer (bytes per second) or a string "8MiB/s".
func (r *ByteRate) UnmarshalTOML(v any) error {
	switch v := v.(type) {
	case int64:
		if v < 0 {
			return fmt.Errorf("invalid rate %d: negative", v)
		}
		*r = ByteRate(v)
		return nil
	case string:
		n, err := ParseByteRate(v)
		*r = n
		return err
	}
	return fmt.Errorf("invalid rate %v: want an integer (bytes per second) or a string such as \"8MiB/s\"", v)
}

// MarshalJSON writes bytes per second as a JSON number.
func (r ByteRate) MarshalJSON() ([]byte, error) { return strconv.AppendInt(nil, int64(r), 10), nil }

// UnmarshalJSON accepts a number (bytes per second) or a string "8MiB/s".
func (r *ByteRate) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		s, err := strconv.Unquote(string(b))
		if err != nil {
			return fmt.Errorf("invalid rate %s", b)
		}
		n, err := ParseByteRate(s)
		*r = n
		return err
	}
	n, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil || n < 0 {
		return fmt.Errorf("invalid rate %s: want bytes per second or a string such as \"8MiB/s\"", b)
	}
	*r = ByteRate(n)
	return nil
}

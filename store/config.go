package store

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/edgehub/edgehub/internal/names"
)

// SyncMode says when an append is acknowledged.
type SyncMode int

const (
	// SyncAlways acknowledges an append only after the transaction that holds
	// it has been fsynced. The default.
	SyncAlways SyncMode = iota
	// SyncInterval acknowledges after the transaction commits to the OS page
	// cache and fsyncs every Config.SyncInterval. A power loss or kernel crash
	// loses up to that interval of acknowledged appends (a process crash
	// loses nothing: the pages are in the kernel).
	SyncInterval
)

// Config configures a Store. Fill defaults with DefaultConfig; check with
// Validate.
type Config struct {
	// Dir holds one bbolt file per stream under Dir/streams and a LOCK file.
	Dir string
	// Sync selects when appends are acknowledged; see SyncMode.
	Sync SyncMode
	// SyncInterval is the fsync period under SyncInterval.
	SyncInterval time.Duration
	// MaxRecordBytes bounds one record's edgehub.Record.PayloadSize: the bytes of
	// its key, value and header keys and values.
	MaxRecordBytes int
	// MaxBatchRecords bounds the records a group commit may gather into one
	// transaction; larger appends are still accepted whole.
	MaxBatchRecords int
	// RetentionInterval is how often retention and compaction run.
	RetentionInterval time.Duration
	// OpenTimeout bounds the wait for another process's file lock.
	OpenTimeout time.Duration
	// ProducerExpiry forgets an idempotent producer's state after this long
	// without appends.
	ProducerExpiry time.Duration
	// Now returns the wall clock, which stamps ingest times (and producer
	// activity). Default time.Now; tests substitute a clock.
	Now func() time.Time
	// Ticks measures elapsed time for age decisions (retention, tombstone
	// expiry, producer expiry): only differences of its readings are used,
	// so a step of the wall clock while the store is open cannot age a
	// record (see ageNow). Default: time.Now's monotonic reading if Now is
	// the default, else Now itself (a test clock is then the whole truth).
	Ticks func() time.Time
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// DefaultConfig returns the defaults for a store in dir.
func DefaultConfig(dir string) Config {
	return Config{
		Dir:               dir,
		Sync:              SyncAlways,
		SyncInterval:      100 * time.Millisecond,
		MaxRecordBytes:    1 << 20,
		MaxBatchRecords:   64 << 10,
		RetentionInterval: 10 * time.Second,
		OpenTimeout:       time.Second,
		ProducerExpiry:    7 * 24 * time.Hour,
	}
}

// Validate reports every problem in c at once.
func (c Config) Validate() error {
	var errs []error
	if c.Dir == "" {
		errs = append(errs, errors.New("store: dir is empty"))
	}
	if c.Sync != SyncAlways && c.Sync != SyncInterval {
		errs = append(errs, fmt.Errorf("store: unknown sync mode %d", c.Sync))
	}
	if c.Sync == SyncInterval && c.SyncInterval <= 0 {
		errs = append(errs, fmt.Errorf("store: sync interval %s must be positive", c.SyncInterval))
	}
	if c.MaxRecordBytes <= 0 || c.MaxRecordBytes > 64<<20 {
		errs = append(errs, fmt.Errorf("store: max record bytes %d outside 1..64MiB", c.MaxRecordBytes))
	}
	if c.MaxBatchRecords <= 0 {
		errs = append(errs, fmt.Errorf("store: max batch records %d must be positive", c.MaxBatchRecords))
	}
	if c.RetentionInterval <= 0 {
		errs = append(errs, fmt.Errorf("store: retention interval %s must be positive", c.RetentionInterval))
	}
	return errors.Join(errs...)
}

// Limits on stream definitions.
const (
	MaxShards     = 1024
	MaxNameLength = 128
)

// The name rule is shared with packages that check names without the
// store; this fails to compile if the two lengths ever differ.
const _ = uint(MaxNameLength-names.MaxLength) + uint(names.MaxLength-MaxNameLength)

// ValidateName reports whether name is a valid stream (or plugin, group)
// name: 1 to 128 characters from [A-Za-z0-9._-], starting with a letter or
// digit. Other packages (consumer groups, plugins) check names by the same
// rule.
func ValidateName(name string) error { return names.Validate(name) }

// StreamConfig defines a stream. Shards is fixed at creation; the rest may be
// changed with Store.UpdateStream.
type StreamConfig struct {
	Name   string `json:"name"`
	Shards int    `json:"shards"`
	// Retention deletes records older than this (by ingest time); 0 keeps
	// them forever.
	Retention time.Duration `json:"retention"`
	// MaxBytes deletes the oldest records while the stream's live bytes
	// exceed it; 0 means no limit.
	MaxBytes int64 `json:"max_bytes"`
	// Compact keeps only the latest record per key.
	Compact bool `json:"compact"`
	// TombstoneRetention is how long a tombstone (nil value) survives
	// compaction, so consumers can see the delete. Default 24h.
	TombstoneRetention time.Duration `json:"tombstone_retention"`
	// Meta carries settings owned by other packages (replication policy,
	// etc.), stored with the stream and returned unchanged.
	Meta map[string]string `json:"meta,omitempty"`
}

// Validate reports every problem in c at once.
func (c StreamConfig) Validate() error {
	var errs []error
	if err := ValidateName(c.Name); err != nil {
		errs = append(errs, err)
	}
	if c.Shards < 1 || c.Shards > MaxShards {
		errs = append(errs, fmt.Errorf("%w: shards %d outside 1..%d", ErrInvalidConfig, c.Shards, MaxShards))
	}
	if c.Retention < 0 {
		errs = append(errs, fmt.Errorf("%w: retention %s is negative", ErrInvalidConfig, c.Retention))
	}
	if c.MaxBytes < 0 {
		errs = append(errs, fmt.Errorf("%w: max bytes %d is negative", ErrInvalidConfig, c.MaxBytes))
	}
	if c.TombstoneRetention < 0 {
		errs = append(errs, fmt.Errorf("%w: tombstone retention %s is negative", ErrInvalidConfig, c.TombstoneRetention))
	}
	return errors.Join(errs...)
}

func (c StreamConfig) withDefaults() StreamConfig {
	if c.Shards == 0 {
		c.Shards = 1
	}
	if c.TombstoneRetention == 0 {
		c.TombstoneRetention = 24 * time.Hour
	}
	return c
}

package wasmhost

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Config configures an Engine.
type Config struct {
	// CacheDir holds compiled machine code across restarts, so a redeploy or
	// a restart skips compilation. Empty keeps the cache in memory.
	CacheDir string
	// Logger receives engine events; nil means slog.Default().
	Logger *slog.Logger
}

// DefaultConfig returns a Config with an in-memory compilation cache.
func DefaultConfig() Config { return Config{} }

// Validate reports every problem in c at once.
func (c Config) Validate() error { return nil }

// Limits bound one plugin's module. They are fixed per Module: every instance
// of a module shares them.
type Limits struct {
	// MemoryPages caps each instance's linear memory in 64 KiB pages. A
	// module that declares a larger minimum or maximum fails to compile.
	MemoryPages uint32
	// CallTimeout is the deadline of each call into the guest; a guest that
	// runs longer is stopped (ErrTimeout) and its instance discarded.
	CallTimeout time.Duration
	// MaxOutputBytes bounds what one call may emit (encoded bytes), so a
	// guest cannot make the host buffer without limit.
	MaxOutputBytes int
	// StderrBytes is how much of the guest's stderr tail is kept to explain
	// a trap (a Go guest prints its panic there).
	StderrBytes int
}

// Default limits.
const (
	DefaultMemoryPages    = 256 // 16 MiB
	DefaultCallTimeout    = 5 * time.Second
	DefaultMaxOutputBytes = 64 << 20
	DefaultStderrBytes    = 4096
	// MaxMemoryPages is 4 GiB, the most a 32-bit memory can address.
	MaxMemoryPages = 65536
)

// DefaultLimits returns the default limits.
func DefaultLimits() Limits {
	return Limits{
		MemoryPages:    DefaultMemoryPages,
		CallTimeout:    DefaultCallTimeout,
		MaxOutputBytes: DefaultMaxOutputBytes,
		StderrBytes:    DefaultStderrBytes,
	}
}

// WithDefaults fills zero fields with the defaults.
func (l Limits) WithDefaults() Limits {
	d := DefaultLimits()
	if l.MemoryPages == 0 {
		l.MemoryPages = d.MemoryPages
	}
	if l.CallTimeout == 0 {
		l.CallTimeout = d.CallTimeout
	}
	if l.MaxOutputBytes == 0 {
		l.MaxOutputBytes = d.MaxOutputBytes
	}
	if l.StderrBytes == 0 {
		l.StderrBytes = d.StderrBytes
	}
	return l
}

// Validate reports every problem in l at once.
func (l Limits) Validate() error {
	var errs []error
	if l.MemoryPages < 1 || l.MemoryPages > MaxMemoryPages {
		errs = append(errs, fmt.Errorf("wasmhost: memory pages %d outside 1..%d", l.MemoryPages, MaxMemoryPages))
	}
	if l.CallTimeout <= 0 {
		errs = append(errs, fmt.Errorf("wasmhost: call timeout %s must be positive", l.CallTimeout))
	}
	if l.MaxOutputBytes <= 0 {
		errs = append(errs, fmt.Errorf("wasmhost: max output bytes %d must be positive", l.MaxOutputBytes))
	}
	if l.StderrBytes < 0 {
		errs = append(errs, fmt.Errorf("wasmhost: stderr bytes %d is negative", l.StderrBytes))
	}
	return errors.Join(errs...)
}

package hub

import (
	"errors"
	"time"

	"github.com/edgehub/edgehub/quic"
)

// LimitsConfig is the [limits] section: protections of the data plane. Zero
// values take the defaults shown.
//
//	[limits]
//	max_connections = 10000
//	max_streams_per_connection = 100
//	max_frame_bytes = "8MiB"
//	handshake_timeout = "10s"
//	idle_timeout = "60s"
//	validate_address_above = 64   # handshakes in progress before Retry
//	max_inflight_batches = 64     # per produce session
//	max_consumer_credit = "16MiB" # per subscription
//	memory_budget = "256MiB"      # all the data plane holds for clients
//	frame_timeout = "30s"         # to finish a frame once begun
//	allow_0rtt = true
//	datagrams = true
type LimitsConfig struct {
	MaxConnections          int      `toml:"max_connections"`
	MaxStreamsPerConnection int      `toml:"max_streams_per_connection"`
	MaxFrameBytes           Size     `toml:"max_frame_bytes"`
	HandshakeTimeout        Duration `toml:"handshake_timeout"`
	IdleTimeout             Duration `toml:"idle_timeout"`
	ValidateAddressAbove    int      `toml:"validate_address_above"`
	MaxInflightBatches      int      `toml:"max_inflight_batches"`
	MaxConsumerCredit       Size     `toml:"max_consumer_credit"`
	MemoryBudget            Size     `toml:"memory_budget"`
	FrameTimeout            Duration `toml:"frame_timeout"`
	Allow0RTT               *bool    `toml:"allow_0rtt"`
	Datagrams               *bool    `toml:"datagrams"`
}

// Defaults of [limits].
const (
	DefaultMaxInflightBatches = 64
	DefaultMaxConsumerCredit  = 16 << 20
	DefaultMemoryBudget       = 256 << 20
)

// withDefaults fills zero values.
func (c LimitsConfig) withDefaults() LimitsConfig {
	d := quic.DefaultConfig("")
	if c.MaxConnections == 0 {
		c.MaxConnections = d.MaxConnections
	}
	if c.MaxStreamsPerConnection == 0 {
		c.MaxStreamsPerConnection = d.MaxStreamsPerConn
	}
	if c.MaxFrameBytes == 0 {
		c.MaxFrameBytes = Size(d.MaxFrameBytes)
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = Duration(d.HandshakeTimeout)
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = Duration(d.IdleTimeout)
	}
	if c.ValidateAddressAbove == 0 {
		c.ValidateAddressAbove = d.ValidateAddressAbove
	}
	if c.MaxInflightBatches == 0 {
		c.MaxInflightBatches = DefaultMaxInflightBatches
	}
	if c.MaxConsumerCredit == 0 {
		c.MaxConsumerCredit = DefaultMaxConsumerCredit
	}
	if c.MemoryBudget == 0 {
		c.MemoryBudget = DefaultMemoryBudget
	}
	if c.FrameTimeout == 0 {
		c.FrameTimeout = Duration(d.FrameTimeout)
	}
	if c.Allow0RTT == nil {
		c.Allow0RTT = &d.Allow0RTT
	}
	if c.Datagrams == nil {
		c.Datagrams = &d.EnableDatagrams
	}
	return c
}

// Validate reports every problem in the [limits] section.
func (c LimitsConfig) Validate() error {
	var errs []error
	neg := func(key string, v int64) {
		if v < 0 {
			errs = append(errs, fieldErrorf(key, "%d is negative", v))
		}
	}
	neg("max_connections", int64(c.MaxConnections))
	neg("max_streams_per_connection", int64(c.MaxStreamsPerConnection))
	neg("validate_address_above", int64(c.ValidateAddressAbove))
	neg("max_inflight_batches", int64(c.MaxInflightBatches))
	if c.MaxFrameBytes != 0 && (c.MaxFrameBytes < 64<<10 || c.MaxFrameBytes > 256<<20) {
		errs = append(errs, fieldErrorf("max_frame_bytes", "%s outside 64KiB..256MiB", c.MaxFrameBytes))
	}
	if c.MaxConsumerCredit < 0 || (c.MaxConsumerCredit != 0 && c.MaxConsumerCredit < 64<<10) {
		errs = append(errs, fieldErrorf("max_consumer_credit", "%s below 64KiB", c.MaxConsumerCredit))
	}
	if c.HandshakeTimeout < 0 || (c.HandshakeTimeout != 0 && time.Duration(c.HandshakeTimeout) < 100*time.Millisecond) {
		errs = append(errs, fieldErrorf("handshake_timeout", "%s below 100ms", c.HandshakeTimeout))
	}
	if c.IdleTimeout < 0 || (c.IdleTimeout != 0 && time.Duration(c.IdleTimeout) < time.Second) {
		errs = append(errs, fieldErrorf("idle_timeout", "%s below 1s", c.IdleTimeout))
	}
	if c.FrameTimeout < 0 || (c.FrameTimeout != 0 && time.Duration(c.FrameTimeout) < 100*time.Millisecond) {
		errs = append(errs, fieldErrorf("frame_timeout", "%s below 100ms", c.FrameTimeout))
	}
	// Half the budget is for produce batches: one batch of the largest
	// frame must fit, twice, or a session could wait forever.
	frame := c.MaxFrameBytes
	if frame == 0 {
		frame = Size(quic.DefaultConfig("").MaxFrameBytes)
	}
	if c.MemoryBudget < 0 || (c.MemoryBudget != 0 && c.MemoryBudget < max(16<<20, 4*frame)) {
		errs = append(errs, fieldErrorf("memory_budget", "%s below max(16MiB, 4 × max_frame_bytes = %s)", c.MemoryBudget, 4*frame))
	}
	return errors.Join(errs...)
}

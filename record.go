package edgehub

// Record is one event in a shard's log.
//
// A record decoded from a batch aliases the batch's buffer: Clone it to
// keep it beyond the buffer's life.
type Record struct {
	// Seq is the per-shard sequence number assigned by the hub that stores
	// the record: dense, strictly increasing from 1, never reused. 0 means
	// "not yet assigned".
	Seq uint64
	// Key routes the record to a shard; nil means keyless.
	Key []byte
	// Value is opaque. A nil value is a tombstone for Key (compaction).
	Value   []byte
	Headers []Header
	// Time is the producer's timestamp in Unix nanoseconds (0 = unset).
	Time int64
	// IngestTime is when the storing hub committed the record, in Unix
	// nanoseconds; non-decreasing within a shard.
	IngestTime int64
	// Origin identifies the record across hubs; see Origin.
	Origin Origin
}

// Header is one record header. Keys need not be unique.
type Header struct {
	Key   string
	Value []byte
}

// Origin is the identity a record keeps across replication and plugin
// re-emission: the hub (or plugin) that first produced it, the shard there,
// and its sequence there. Hub == "" means "the hub storing this record"
// (a local record: its origin is its own shard and sequence).
type Origin struct {
	Hub   string
	Shard uint32
	Seq   uint64
}

// IsLocal reports whether the origin is the storing hub itself.
func (o Origin) IsLocal() bool { return o.Hub == "" }

// PayloadSize is what the hub's record limit (store.max_record_bytes)
// counts: the bytes of the key and the value, and for each header its key,
// its value and 2 bytes. Sequences, times and the origin are not counted,
// so a record keeps its size through replication and plugins, and a value
// of exactly the limit fits. The 2 bytes per header make the encoded size
// proportional to the count: without them, 65,536 empty headers would be
// 128 KiB of encoding that counts as nothing.
func (r *Record) PayloadSize() int {
	n := len(r.Key) + len(r.Value)
	for _, h := range r.Headers {
		n += len(h.Key) + len(h.Value) + 2
	}
	return n
}

// Clone returns a deep copy of r that shares no memory with it.
func (r *Record) Clone() Record {
	c := *r
	total := len(r.Key) + len(r.Value)
	for _, h := range r.Headers {
		total += len(h.Value)
	}
	buf := make([]byte, 0, total)
	if r.Key != nil {
		buf = append(buf, r.Key...)
		c.Key = buf[len(buf)-len(r.Key) : len(buf) : len(buf)]
	}
	if r.Value != nil {
		buf = append(buf, r.Value...)
		c.Value = buf[len(buf)-len(r.Value) : len(buf) : len(buf)]
	}
	if r.Headers != nil {
		c.Headers = make([]Header, len(r.Headers))
		for i, h := range r.Headers {
			c.Headers[i].Key = h.Key
			if h.Value != nil {
				buf = append(buf, h.Value...)
				c.Headers[i].Value = buf[len(buf)-len(h.Value) : len(buf) : len(buf)]
			}
		}
	}
	return c
}

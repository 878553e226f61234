package quic

import (
	"encoding/binary"
	"time"
)

// Consumer-group membership (OpGroup). One stream per member session: the
// client opens it with a GroupJoin body, the hub pushes GROUP_ASSIGNMENT
// frames whenever the member's leases change, and the client sends
// heartbeats, offset commits, SYNC (an assignment has been applied) and
// LEAVE. docs/protocol.md section 5.4 is the specification.

// Frame types of OpGroup.
const (
	FrameGroupAssignment FrameType = 0x40 // hub → client
	FrameGroupHeartbeat  FrameType = 0x41 // client → hub
	FrameGroupCommit     FrameType = 0x42 // client → hub
	FrameGroupCommitAck  FrameType = 0x43 // hub → client
	FrameGroupSync       FrameType = 0x44 // client → hub
	FrameGroupLeave      FrameType = 0x45 // client → hub
)

// Error codes of consumer groups.
const (
	// CodeStaleEpoch refuses a commit whose epoch is not the shard's current
	// lease: the shard moved to another member (or to a later session of
	// this one). The member must stop processing that shard.
	CodeStaleEpoch Code = 0x10
	// CodeSessionExpired ends a member session the hub has expired (no
	// heartbeat within the session timeout) or that a newer session of the
	// same member id replaced. The member rejoins to get a new assignment.
	CodeSessionExpired Code = 0x11
)

func init() {
	codeNames[CodeStaleEpoch] = "stale_epoch"
	codeNames[CodeSessionExpired] = "session_expired"
}

// groupFrameName names the group frame types for FrameType.String.
func groupFrameName(t FrameType) string {
	switch t {
	case FrameGroupAssignment:
		return "GROUP_ASSIGNMENT"
	case FrameGroupHeartbeat:
		return "GROUP_HEARTBEAT"
	case FrameGroupCommit:
		return "GROUP_COMMIT"
	case FrameGroupCommitAck:
		return "GROUP_COMMIT_ACK"
	case FrameGroupSync:
		return "GROUP_SYNC"
	case FrameGroupLeave:
		return "GROUP_LEAVE"
	}
	return ""
}

// Millis converts a duration to the wire's milliseconds, rounding up so a
// positive duration never becomes 0.
func Millis(d time.Duration) uint64 {
	if d <= 0 {
		return 0
	}
	return uint64((d + time.Millisecond - 1) / time.Millisecond)
}

// maxMillis bounds millisecond fields so they convert to a time.Duration.
const maxMillis = uint64(1<<63-1) / uint64(time.Millisecond)

// GroupJoin is the OPEN body of OpGroup.
type GroupJoin struct {
	Group  string
	Stream string
	// MemberID names the member, stable across its reconnects: a join with
	// the id of a member the hub still knows takes over its session and
	// leases.
	MemberID string
	// SessionTimeoutMillis: the hub expires the member when no frame has
	// arrived for this long; 0 asks for the hub's default.
	SessionTimeoutMillis uint64
	// Start resolves a shard's position when the group has no committed
	// offset for it yet.
	Start Start
}

func (f *GroupJoin) Append(dst []byte) []byte {
	dst = appendString(dst, f.Group)
	dst = appendString(dst, f.Stream)
	dst = appendString(dst, f.MemberID)
	dst = binary.AppendUvarint(dst, f.SessionTimeoutMillis)
	dst = append(dst, byte(f.Start.Kind))
	return binary.AppendUvarint(dst, f.Start.Value)
}

func (f *GroupJoin) Decode(p []byte) error {
	d := newDecoder(p, "GROUP join")
	f.Group = d.String(MaxNameLength)
	f.Stream = d.String(MaxNameLength)
	f.MemberID = d.String(MaxNameLength)
	f.SessionTimeoutMillis = d.Uvarint()
	if f.SessionTimeoutMillis > maxMillis {
		d.Fail("session timeout %d ms out of range", f.SessionTimeoutMillis)
	}
	f.Start.Kind = StartKind(d.Byte()) // unknown kinds: invalid_argument from the hub
	f.Start.Value = d.Uvarint()
	return d.done()
}

// GroupLease is one shard leased to a member: Epoch fences commits (it is
// unique to this grant of the shard), Offset is where the member starts:
// the group's committed offset, the next sequence to process.
type GroupLease struct {
	Shard  uint32
	Epoch  uint64
	Offset uint64
	// ClosedNext is 0 while the shard is open; for a shard a reshard
	// closed, end+1: the member commits it as soon as it has processed the
	// shard's last record, and the hub then leases the shard's children.
	// On the wire it trails the leases (one per lease, in order), so
	// receivers from before resharding ignore it.
	ClosedNext uint64
}

// GroupAssignment is the member's complete current assignment. The hub sends
// one right after the join and another whenever the member's leases change;
// each has a larger Generation.
type GroupAssignment struct {
	Generation uint64
	// SessionTimeoutMillis is the session timeout in force; members
	// heartbeat at a third of it.
	SessionTimeoutMillis uint64
	// Shards is the stream's shard count.
	Shards uint32
	Leases []GroupLease
}

func (f *GroupAssignment) Append(dst []byte) []byte {
	dst = binary.AppendUvarint(dst, f.Generation)
	dst = binary.AppendUvarint(dst, f.SessionTimeoutMillis)
	dst = binary.AppendUvarint(dst, uint64(f.Shards))
	dst = binary.AppendUvarint(dst, uint64(len(f.Leases)))
	for _, l := range f.Leases {
		dst = binary.AppendUvarint(dst, uint64(l.Shard))
		dst = binary.AppendUvarint(dst, l.Epoch)
		dst = binary.AppendUvarint(dst, l.Offset)
	}
	// The trailing closed_next list is always written (zeros while the
	// stream was never resharded), so fields appended after it by later
	// revisions are found where a receiver of this one stops.
	for _, l := range f.Leases {
		dst = binary.AppendUvarint(dst, l.ClosedNext)
	}
	return dst
}

func (f *GroupAssignment) Decode(p []byte) error {
	d := newDecoder(p, "GROUP_ASSIGNMENT")
	f.Generation = d.Uvarint()
	f.SessionTimeoutMillis = d.Uvarint()
	if f.SessionTimeoutMillis > maxMillis {
		d.Fail("session timeout %d ms out of range", f.SessionTimeoutMillis)
	}
	f.Shards = d.Uint32("shards")
	n := d.Count(3)
	if n > maxShards {
		d.Fail("%d leases", n)
	}
	f.Leases = make([]GroupLease, 0, n)
	for i := 0; i < n && d.Err == nil; i++ {
		f.Leases = append(f.Leases, GroupLease{Shard: d.Uint32("shard"), Epoch: d.Uvarint(), Offset: d.Uvarint()})
	}
	if d.Err == nil && len(d.Buf) > 0 && len(f.Leases) > 0 {
		// Trailing closed_next per lease (absent from hubs before
		// resharding, and when every leased shard is open).
		for i := range f.Leases {
			f.Leases[i].ClosedNext = d.Uvarint()
		}
	}
	return d.done()
}

// GroupHeartbeat keeps the member's session alive. Generation is the newest
// assignment the member has received (informational).
type GroupHeartbeat struct {
	Generation uint64
}

func (f *GroupHeartbeat) Append(dst []byte) []byte { return binary.AppendUvarint(dst, f.Generation) }

func (f *GroupHeartbeat) Decode(p []byte) error {
	d := newDecoder(p, "GROUP_HEARTBEAT")
	f.Generation = d.Uvarint()
	return d.done()
}

// GroupOffset is one shard's offset in a commit: every record below Offset
// has been processed; Epoch is the lease's.
type GroupOffset struct {
	Shard  uint32
	Epoch  uint64
	Offset uint64
}

// GroupCommit commits offsets; the hub answers with a GROUP_COMMIT_ACK
// carrying the same ID after the accepted offsets are durable.
type GroupCommit struct {
	ID      uint64
	Offsets []GroupOffset
}

func (f *GroupCommit) Append(dst []byte) []byte {
	dst = binary.AppendUvarint(dst, f.ID)
	dst = binary.AppendUvarint(dst, uint64(len(f.Offsets)))
	for _, o := range f.Offsets {
		dst = binary.AppendUvarint(dst, uint64(o.Shard))
		dst = binary.AppendUvarint(dst, o.Epoch)
		dst = binary.AppendUvarint(dst, o.Offset)
	}
	return dst
}

func (f *GroupCommit) Decode(p []byte) error {
	d := newDecoder(p, "GROUP_COMMIT")
	f.ID = d.Uvarint()
	n := d.Count(3)
	if n > maxShards {
		d.Fail("%d offsets", n)
	}
	f.Offsets = make([]GroupOffset, 0, n)
	for i := 0; i < n && d.Err == nil; i++ {
		f.Offsets = append(f.Offsets, GroupOffset{Shard: d.Uint32("shard"), Epoch: d.Uvarint(), Offset: d.Uvarint()})
	}
	return d.done()
}

// GroupCommitResult is the outcome of one shard's offset in a commit.
type GroupCommitResult struct {
	Shard   uint32
	Code    Code // CodeOK, CodeStaleEpoch, CodeInvalidArgument, ...
	Message string
}

// GroupCommitAck answers a GROUP_COMMIT: one result per offset, in order.
type GroupCommitAck struct {
	ID      uint64
	Results []GroupCommitResult
}

func (f *GroupCommitAck) Append(dst []byte) []byte {
	dst = binary.AppendUvarint(dst, f.ID)
	dst = binary.AppendUvarint(dst, uint64(len(f.Results)))
	for _, r := range f.Results {
		dst = binary.AppendUvarint(dst, uint64(r.Shard))
		dst = binary.AppendUvarint(dst, uint64(r.Code))
		dst = appendString(dst, truncate(r.Message, MaxMessageLength))
	}
	return dst
}

func (f *GroupCommitAck) Decode(p []byte) error {
	d := newDecoder(p, "GROUP_COMMIT_ACK")
	f.ID = d.Uvarint()
	n := d.Count(3)
	if n > maxShards {
		d.Fail("%d results", n)
	}
	f.Results = make([]GroupCommitResult, 0, n)
	for i := 0; i < n && d.Err == nil; i++ {
		f.Results = append(f.Results, GroupCommitResult{Shard: d.Uint32("shard"), Code: Code(d.Uvarint()), Message: d.String(MaxMessageLength)})
	}
	return d.done()
}

// Err returns the first refused offset as an *Error, or nil.
func (f *GroupCommitAck) Err() error {
	for _, r := range f.Results {
		if r.Code != CodeOK {
			return &Error{Code: r.Code, Message: r.Message}
		}
	}
	return nil
}

// GroupSync tells the hub the member has applied assignment Generation: it
// has stopped processing every shard that assignment does not list, after
// committing them. The hub then hands those shards to their new owners.
type GroupSync struct {
	Generation uint64
}

func (f *GroupSync) Append(dst []byte) []byte { return binary.AppendUvarint(dst, f.Generation) }

func (f *GroupSync) Decode(p []byte) error {
	d := newDecoder(p, "GROUP_SYNC")
	f.Generation = d.Uvarint()
	return d.done()
}

// GroupLeave ends the member's membership at once (its shards move without
// waiting for the session timeout). It has no fields in version 1.
type GroupLeave struct{}

func (f *GroupLeave) Append(dst []byte) []byte { return dst }

func (f *GroupLeave) Decode(p []byte) error { return nil }

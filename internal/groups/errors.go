package groups

import "errors"

// Sentinel errors of package groups.
var (
	// ErrNotFound: no group of that name.
	ErrNotFound = errors.New("groups: group not found")
	// ErrInvalid: a bad name, member id, session timeout, shard or offset.
	ErrInvalid = errors.New("groups: invalid argument")
	// ErrStreamMismatch: the group consumes another stream (a group is
	// bound to the stream of its first join or reset).
	ErrStreamMismatch = errors.New("groups: the group consumes another stream")
	// ErrShardsChanged: the stream's shard count differs from the group's
	// (the stream was deleted and created again): delete or reset the group.
	ErrShardsChanged = errors.New("groups: the stream's shard count differs from the group's")
	// ErrActive: the operation needs a group without members.
	ErrActive = errors.New("groups: the group has members")
	// ErrTooManyMembers: the group has Config.MaxMembers members.
	ErrTooManyMembers = errors.New("groups: too many members")
	// ErrStaleEpoch: a commit whose epoch is not the shard's current lease,
	// or from a session that no longer holds it.
	ErrStaleEpoch = errors.New("groups: stale epoch")
	// ErrSessionExpired: the member sent nothing within its session timeout
	// and lost its leases.
	ErrSessionExpired = errors.New("groups: session expired")
	// ErrReplaced: a newer session of the same member id took over.
	ErrReplaced = errors.New("groups: session replaced by a newer join of the same member")
	// ErrDeleted: the group was deleted.
	ErrDeleted = errors.New("groups: group deleted")
	// ErrStreamRecreated: the group's stream was deleted and created again
	// (a new incarnation): the group's offsets were dropped and the
	// sessions of its members ended; they rejoin and start over.
	ErrStreamRecreated = errors.New("groups: the stream was deleted and created again; the group starts over")
	// ErrLeft: the session ended with Leave.
	ErrLeft = errors.New("groups: member left")
	// ErrClosed: the coordinator is closed.
	ErrClosed = errors.New("groups: closed")
	// ErrCorrupt: groups.db holds a value this version cannot read.
	ErrCorrupt = errors.New("groups: corrupt data")
)

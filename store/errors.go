package store

import (
	"errors"
	"fmt"

	"github.com/edgehub/edgehub/internal/names"
)

// Sentinel errors. Callers test them with errors.Is; the store wraps them with
// the operation and the object it concerns.
var (
	// ErrClosed is returned by operations on a closed store or stream.
	ErrClosed = errors.New("store: closed")
	// ErrStreamNotFound: no stream has that name.
	ErrStreamNotFound = errors.New("stream not found")
	// ErrStreamExists: CreateStream with a name in use and a different shard
	// count (other settings of an existing stream change with UpdateStream),
	// or CreateNewStream with a name in use.
	ErrStreamExists = errors.New("stream already exists")
	// ErrInvalidName: a name outside the documented charset or length.
	// It is the error every package checking names wraps.
	ErrInvalidName error = invalidName()
	// ErrInvalidConfig: a stream definition that cannot be honoured.
	ErrInvalidConfig = errors.New("invalid stream config")
	// ErrRecordTooLarge: a record above Config.MaxRecordBytes.
	ErrRecordTooLarge = errors.New("record too large")
	// ErrInvalidShard: a shard index outside the stream's shards.
	ErrInvalidShard = errors.New("invalid shard")
	// ErrSequenceGap: an idempotent producer's batch skips sequences, so an
	// earlier batch was lost; the producer must resend from the gap.
	ErrSequenceGap = errors.New("producer sequence gap")
	// ErrDuplicateTooOld: an idempotent producer resent a batch older than
	// the window of batches the store remembers; it was stored before, but
	// its sequence numbers can no longer be reported.
	ErrDuplicateTooOld = errors.New("duplicate batch too old to answer")
	// ErrSequenceConflict: an idempotent producer sent a batch under a
	// producer sequence that a remembered batch with a different record
	// count or content (or a different start) was stored under. Nothing of
	// it is stored: the producer's numbering disagrees with the store's
	// (two producers sharing an id, or a reused sequence).
	ErrSequenceConflict = errors.New("producer sequence conflict")
	// ErrLocked: another process holds the data directory.
	ErrLocked = errors.New("data directory in use by another process")
	// ErrCorrupt is wrapped by CorruptError.
	ErrCorrupt = errors.New("corrupt data")
	// ErrNoSpace: the data directory's file system is full (ENOSPC or
	// EDQUOT). The append's transaction was rolled back: nothing of it
	// was stored, and appends succeed again once space is freed.
	ErrNoSpace = errors.New("no space left for the data directory")
	// ErrShardClosed: an append names a closed or retired shard (a reshard
	// closed it). Nothing of the batch was stored: route its records by the
	// current Layout and resend. A resend of a batch stored before the close
	// is still answered as a duplicate. Wait on a closed shard returns it
	// once the wait is past the shard's end.
	ErrShardClosed = errors.New("shard closed")
	// ErrNotAdjacent: Merge of two shards whose ranges do not touch.
	ErrNotAdjacent = errors.New("shards not adjacent")
	// ErrTooManyShards: a reshard would exceed the stream's cap on open
	// shards or on shard ids ever assigned.
	ErrTooManyShards = errors.New("too many shards")
	// ErrReshardBusy: the layout changed between planning a reshard and
	// running it; re-plan from the current Layout.
	ErrReshardBusy = errors.New("reshard busy: the layout changed")
)

// CorruptError reports damaged data: a file that bbolt cannot open, or a
// chunk whose checksum fails. Data that fails verification is never returned.
type CorruptError struct {
	File  string
	Shard int    // -1 when not shard-specific
	Seq   uint64 // first sequence of the damaged chunk, 0 if unknown
	Err   error
}

func (e *CorruptError) Error() string {
	if e.Shard < 0 {
		return fmt.Sprintf("store: corrupt file %s: %v", e.File, e.Err)
	}
	return fmt.Sprintf("store: corrupt chunk in %s shard %d at sequence %d: %v", e.File, e.Shard, e.Seq, e.Err)
}

func (e *CorruptError) Unwrap() []error { return []error{ErrCorrupt, e.Err} }

// invalidName is the shared name rule's sentinel, so errors.Is matches a
// name refused by any package.
func invalidName() error { return names.ErrInvalid }

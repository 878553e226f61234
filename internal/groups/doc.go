// Package groups coordinates consumer groups: members of a group share the
// shards of one stream, and the group's committed offsets are durable.
//
// # Basics
//
// A Coordinator keeps every group of a hub. Join adds a member (or takes
// over the session of a member id it still knows) and returns its Session;
// the coordinator then assigns shards to the live members, balanced (counts
// differ by at most one) and sticky (a shard stays where it is unless the
// balance needs it elsewhere). Each grant of a shard is a lease with an
// epoch, unique and increasing within the group and persisted, so it stays
// a fencing token across hub restarts: a commit is accepted only with the
// epoch of the shard's current lease, from the member's current session.
//
// Offsets are the next sequence to process (every record below has been
// processed). A shard granted for the first time starts where the joining
// member's Start says (earliest, latest, a sequence or a time), and that
// position is stored with the grant, so a member that dies before its first
// commit does not make the next one skip or re-read records.
//
// # Handing shards over
//
// A shard moves between live members in two steps: the coordinator takes
// it out of the owner's assignment (the lease is "revoking"), the owner
// commits what it processed and confirms with Sync; only then is the shard
// granted to its new owner, from the committed offset. An owner that does
// not confirm within its session timeout loses the lease anyway (its later
// commits are refused as stale). A member that leaves gives up its shards
// at once; one that stops heartbeating keeps them until its session timeout
// expires, so a member reconnecting after a short break keeps its leases.
//
// Processing is therefore at least once: after a crash, the records a
// member processed after its last commit are delivered again to the next
// owner; nothing is skipped.
//
// # Across a reshard
//
// The hub gives the coordinator each stream's layout (SetLayout): every
// shard id ever assigned, with its parents and, once a reshard closed it,
// its end. A reshard is not a rebind: the group keeps its creation shard
// count and every offset, and children are new ids. A child is leased only
// when every parent is finished for the group (closed and committed past
// its end, retired, or nothing of it left to read), which keeps each key's
// order across the lineage; rebalance balances only such assignable
// shards, and a finished parent leaves its holder through the usual
// hand-over. Offsets of finished parents are kept until they are retired.
// docs/groups.md "Across a reshard" is the contract.
//
// # Durability
//
// Everything durable lives in one bbolt file (groups.db in the hub's data
// directory): per group its definition, the highest epoch granted, and per
// shard the committed offset with when, by whom and under which epoch it
// was committed. Commits return after the transaction's fsync; concurrent
// commits share transactions (bbolt's Batch), and no lock is held while
// they are written: a shard whose commit is being written is granted to
// its next owner only once the write is done.
// Membership is not persisted: after a hub restart members rejoin.
//
// # Caveats
//
// Offsets are sequence numbers of this hub's shards: a group is local to one
// hub and is not replicated.
//
// Lock order: Coordinator.mu before group.mu. Coordinator.mu, which every
// group's lookup takes, is never held across a write: creating, rebinding
// or deleting a group marks its name busy (other calls for that name wait,
// other groups go on) and writes without it. group.mu is held while
// calling Config.Resolve (which must not call back) and while writing
// grants, rebindings, resets, deletions and the offset deletions of retired
// shards of its group (rare), never while writing commits.
package groups

// Package replicate is edgehub's federation data path: it pulls the
// records of replicated streams from peer hubs and serves theirs.
//
// # Basics
//
// Every record keeps its origin (hub, shard, sequence there). A hub's
// version vector for a stream maps each origin shard to the highest origin
// sequence it holds; hubs publish their vectors and stream definitions by
// gossip (package gossip, adapted by the hub to Membership and Publisher).
//
// A Replicator runs one pull task per (stream, origin shard). A task pulls
// from the origin itself when it is alive, else from the peer holding the
// most of that origin; it asks for the records after our watermark and
// follows new commits, so steady-state replication needs no gossip round.
// Pulled records are appended in origin order by that one task, and the
// store drops any whose origin sequence is not above the watermark, so each
// origin's records land once and in order, whatever the topology (chains,
// hub-and-spoke, mesh) and however often pulls are cut and resumed.
//
// Pulls travel on the QUIC data plane (quic.OpReplicate). QUICTransport
// keeps one replication session per peer: one QUIC stream carrying every
// pull from that peer as a "follow" with its own credit, so the peer's
// per-connection stream limit does not bound how many origin shards are
// followed, a follow's order is kept, and a slow follow holds at most its
// window without delaying the others (docs/protocol.md, section 5.5).
//
// Records of origin shard s go to local shard s when the stream has the
// same shard count at the origin (streams created from a peer's definition
// always do) and neither hub resharded it; otherwise keyed records are
// routed by key hash (per-key order is kept) and keyless ones round-robin.
//
// # Reshards
//
// Layouts are per hub. Hubs publish their own layout and relay what they
// know of others' (gossip, persisted per origin in the stream's file); the
// task of a child origin shard pulls only once its parents are applied
// here, and a follow of a closed origin shard ends with its last sequence
// (closed_end), to which the puller raises its watermark (lineage.go).
//
// # Policy
//
// A stream's policy (Meta["replicate"]) is "local" (never leaves its hub:
// never published, never served), "all", or tags: a hub creates, pulls and
// is served a tag-scoped stream only if it carries one of the tags. A hub
// that holds a stream its policy does not admit (it created it) serves its
// own records to admitted peers but does not collect others'.
//
// # Gaps
//
// A record this hub will never hold is a gap, never a silent skip: counted
// (edgehub_replication_gaps_total), logged and shown in hub peers. The
// origin announces records its retention deleted before the peer pulled
// them (PULL_GAP). A relay (not the origin) cannot tell records its own
// retention removed from a hole in the origin's numbering (origin shards
// interleave replicated records) unless it still holds a record of the
// origin at or below the puller's position, so otherwise, once it has ever
// trimmed, it refuses (PULL_TRIMMED); the puller asks another peer or waits
// for the origin. When the origin has been unreachable for GapAfter and
// every live peer holding more of it refused, the puller records the gap up
// to the least any of them lost and pulls the rest. Each hub keeps its gaps
// in a gap book (Config.StateFile) so a gap counts once across reconnects
// and restarts, pulls resume after it, and, as a relay, the hub announces
// it to its own pullers. Compacted streams converge on the latest record
// per key; holes there are expected and not reported.
//
// # Caveats
//
// Pulls are rate-limited per peer (bytes per second) so a catch-up never
// starves local ingest. The delay metric compares the source's ingest clock
// with ours: across machines it includes clock skew.
package replicate

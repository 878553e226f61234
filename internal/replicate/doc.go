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
// window without delaying the others (docs/protocol.md, section 5.4).
//
// Records of origin shard s go to local shard s when the stream has the
// same shard count at the origin (streams created from a peer's definition
// always do); otherwise keyed records are routed by key hash (per-key order
// is kept) and keyless ones round-robin.
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
// A record deleted by retention at its origin before a peer pulled it is a
// gap: the origin announces the range (PULL_GAP) and the puller counts it
// (edgehub_replication_gaps_total), logs it and shows it in hub peers,
// then continues after it. A relay (not the origin) cannot tell such a hole
// from the origin's own numbering (origin shards interleave replicated
// records), so if its retention ever trimmed the stream it refuses the pull
// (PULL_TRIMMED) rather than skip silently; the puller then asks another
// peer or waits for the origin. Compacted streams converge on the latest
// record per key; holes there are expected and not reported.
//
// # Caveats
//
// Pulls are rate-limited per peer (bytes per second) so a catch-up never
// starves local ingest. The delay metric compares the source's ingest clock
// with ours: across machines it includes clock skew.
package replicate

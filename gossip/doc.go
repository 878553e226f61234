// Package gossip is edgehub's federation membership: a wrapper around
// hashicorp/memberlist that tells every hub who its peers are, where they
// are (site, region, tags), how to reach their QUIC data plane, which
// streams they replicate and how much of each origin they hold.
//
// # Basics
//
// A Gossip joins a federation named by its label and protected by a shared
// AES-GCM keyring (a key file, rotated without downtime; see LoadKeyFile).
// memberlist runs with the WAN profile by default (LAN or local selectable).
// Each member's node metadata (NodeMeta: site, region, tags, QUIC address,
// the pins of its data plane certificates) is small and rides on
// memberlist's alive messages; with a keyring, only key holders can write
// it, which is what lets hubs pin each other's certificates from it.
//
// On top of membership, every hub publishes two kinds of small entries:
//
//   - a stream definition (Def): the replicated stream's spec, with a
//     definition version so that the newest definition wins everywhere;
//   - a version vector slice (Vector): for one stream and one origin hub, the
//     highest contiguous origin sequence the publishing hub holds, per
//     origin shard;
//   - a layout (Layout): for one stream and one origin hub, the highest
//     version of that hub's shard layout (its reshards) the publisher
//     knows. Layouts ride in definition entries under a name no stream can
//     have (layout.go), so hubs from before them relay them and ignore them.
//
// Entries are keyed by (publisher, stream[, origin hub]) and carry the
// publisher's clock; the newest version of a key wins. Merging is therefore
// idempotent and commutative, so entries can be relayed by any member in any
// order: a hub re-broadcasts an entry that taught it something new
// (epidemic dissemination over memberlist's piggybacked broadcasts), and push/
// pull state exchanges carry every entry known, which heals what broadcasts
// missed (a partition, a restart).
//
// Bulk data never rides on gossip: records are pulled over QUIC by the
// hub's replication, which reads these entries to know who holds what.
//
// A deleted definition (a tombstone) is dropped TombstoneTTL after its
// publication, and a member dead or left for PruneAfter is forgotten with
// every entry it published; copies relayed afterwards are refused, so the
// table does not grow with every hub and stream that ever was.
//
// # Caveats
//
// A hub's clock orders its own entries (a hybrid clock: never behind the
// last version it issued, so a restart with a sane wall clock keeps
// ordering). A hub name is an identity: a hub that loses its data directory
// must come back under a new name, or peers would treat its new records as
// already applied.
package gossip

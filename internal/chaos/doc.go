// Package chaos is edgehub's fault suite: a history checker, a recorder, and
// (behind the build tag chaos) tests that run real hub processes under
// faults and judge what they did with the checker. docs/chaos.md says how
// to run them and what each proves.
//
// # Basics
//
// A test records every operation in a history, a file of JSON lines (Op),
// through a Recorder shared by all its clients:
//
//	rec, _ := chaos.CreateRecorder(filepath.Join(dir, "history.jsonl"))
//	inv := rec.Invoke(chaos.Op{Kind: chaos.Produce, Client: "p1", Key: "k", Value: "p1-17"})
//	// ... later, from the SDK callback:
//	inv.OK(pos.Shard, pos.Seq) // or inv.Fail(err), inv.Unknown(err)
//	rec.Read(chaos.Op{Kind: chaos.Consume, Client: "c1", Group: "g", Shard: 0, Seq: 5, Key: "k", Value: "p1-17"})
//	rec.Invoke(chaos.Op{Kind: chaos.Commit, Client: "c1", Group: "g", Shard: 0, Seq: 6}).OK(0, 0)
//	// at the end, the read-back of the whole stream from each hub:
//	rec.Read(chaos.Op{Kind: chaos.Final, Client: "final", Hub: "a", Shard: 0, Seq: 5, Key: "k", Value: "p1-17"})
//	rec.Close()
//	ops, _ := chaos.ReadHistoryFile(path)
//	report := chaos.Check(ops) // report.Err() is nil for a clean history
//
// The history's line order is its time order, which the recorder's mutex
// makes a linearisation of what the clients saw; no clock is involved. Every
// produced Value must be unique: it is how the checker finds a write in the
// read-backs. A Produce or Commit whose completion was never recorded (the
// client was killed, the test ended) counts as Unknown.
//
// Outcomes are the test's claim about what the client was told: Failed
// means "definitely not applied" (the hub refused before storing), Unknown
// means "may have been applied" (timeouts, lost connections, crashes).
// Classify conservatively: marking a possibly-applied write Failed makes the
// checker report it if it was applied, which is the point of the
// failed-write-visible check.
//
// # What Check reports
//
// For each Final read-back (one per hub and stream):
//   - lost-write: an acknowledged write is missing;
//   - duplicate: a value, or a replicated origin (hub, shard, seq), is
//     stored twice (unknown-outcome writes may appear, once at most);
//   - failed-write-visible: a failed write is stored;
//   - wrong-position: on the hub that acknowledged it (Op.Hub equal), a
//     write is stored elsewhere than its acknowledged shard and sequence;
//   - reorder-key: within a shard and key, a record stored before one that
//     was acknowledged before it was invoked, or one client's acknowledged
//     writes stored out of the order it invoked them in (pipelining
//     included);
//   - reorder-origin: records of one origin shard out of origin order
//     within a shard;
//   - phantom: a record no Produce wrote.
//
// For each Consume (against the read-back of its hub, or the stream's only
// one): phantom and failed-write-visible reads; divergent-read when the
// read-back holds something else (or nothing) at that shard and sequence;
// per client and shard, skipped-read when it jumps over stored records and
// non-monotonic-read when it goes back. A group member (Op.Group set) may
// jump forward only to a committed offset (a commit invoked before, not
// failed) or the start, may go back (delivery is at least once), and never
// reads before an offset whose commit was acknowledged before the read;
// and every record of a shard up to the furthest read of the group must
// have been read by some member.
//
// # Across a reshard
//
// A test of a resharded stream records its layout as Lineage lines, one
// per shard with the shard's parents (Op.Parents; Op.Hub set for one hub's
// read-back, empty for all). The checker then also judges:
//   - reorder-key across lineage: a record of a key stored in a shard is
//     after every record of that key in the shard's ancestors, so it must
//     not have been acknowledged before one of them was invoked, and one
//     client's acknowledged writes keep their order from ancestor to
//     descendant;
//   - for group reads (docs/groups.md, "Across a reshard": a child is
//     leased only once the group finished its parents): reorder-key when a
//     member reads a child's record of a key before the group has read
//     every record of that key in the child's ancestors, and lineage-read
//     when a member reads a child at all before the group has read every
//     record of every ancestor and invoked a (not failed) commit past the
//     ancestor's last record.
//
// # Caveats
//
// The checker trusts the Final read-back as the truth: a test must read it
// with a fresh reader after the faults end, and read all of it. Per-key
// order is judged within a shard, where the hub promises it, and across
// a shard's lineage when the history has Lineage lines. Report lists
// at most 100 findings per kind; Report.Counts is exact.
package chaos

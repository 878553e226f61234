// Package boltcheck checks a bbolt file's page structure with plain reads,
// before bbolt maps it.
//
// bbolt cannot report some damage but by crashing. A file cut short makes
// the mapped read past its end fault (SIGBUS). With NoFreelistSync, Open
// walks every reachable page to rebuild the freelist and stops at the first
// inconsistency by panicking in the opening goroutine while its walker
// goroutine goes on through the closed transaction: a nil dereference no
// one can recover. Check finds those cases first, so a damaged file is an
// error that names it, not a dead process.
//
// # Basics
//
// Check verifies what bbolt's own walk verifies: page ids, kinds and
// bounds, every page (overflow pages included) reached once, the key order
// within a page and against its parents' separators, and the synced
// freelist's page when there is one.
//
// # Caveats
//
//   - Contents are not checked: what a value means is the caller's business
//     (edgehub's chunks carry checksums verified at read).
//   - A file without a valid meta page passes: bbolt reports that itself,
//     as an error.
//   - The layout read is bbolt's little-endian one (the platforms edgehub
//     runs on); the check follows bbolt v1.4/v1.5's Open.
package boltcheck

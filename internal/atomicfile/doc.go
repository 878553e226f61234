// Package atomicfile replaces small files so that they survive a crash:
// after a crash or power loss the file holds either its old content or its
// new content, never a mix, an empty file or nothing.
//
// # Basics
//
// WriteFile writes a temporary file in the same directory, fsyncs it,
// renames it over the target and fsyncs the directory. The rename is atomic
// on POSIX file systems; the first fsync makes the new content durable
// before the name points at it, the second makes the rename itself durable.
// Every file of the hub that must survive a crash and is not a bbolt file
// (the hub's identity, the stateless reset key, generated TLS keys and
// certificates, webhook positions, the replication gap book) is written
// this way.
//
// # Caveats
//
// The directory must exist. On an error no temporary file is left behind,
// and the target keeps its old content. Concurrent writers of one path do
// not corrupt it, but the last rename wins.
package atomicfile

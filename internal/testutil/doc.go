// Package testutil holds helpers for edgehub's own tests. It imports
// testing, so only test files import it: no binary of the module links it.
//
// # Basics
//
// Eventually waits for a condition the test cannot be told about, polling
// it until a generous deadline: the machine is shared and noisy, so tests
// wait for conditions and assert on counts and contents, never on how long
// something took.
//
// The rest is what several packages' tests need alike: LeakCheck for a
// TestMain (goleak), SyncBuffer for output written from other goroutines,
// FlipAll to damage a file on disk, and Binary to build a command (the hub)
// once per test binary.
package testutil

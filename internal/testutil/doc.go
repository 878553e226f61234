// Package testutil holds helpers for edgehub's own tests. It imports
// testing, so only test files import it: no binary of the module links it.
//
// # Basics
//
// Eventually waits for a condition the test cannot be told about, polling
// it until a generous deadline: the machine is shared and noisy, so tests
// wait for conditions and assert on counts and contents, never on how long
// something took.
package testutil

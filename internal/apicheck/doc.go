// Package apicheck holds the test that keeps the public API a visible
// decision: it lists every exported identifier of each public package
// (functions, types, methods, struct fields, constants, variables, with
// their signatures) and compares the list with a golden file under
// testdata/api, and it fails if an exported signature names a type of an
// internal package, which no importer outside the module could name.
//
// # Basics
//
// Run
//
//	go test ./internal/apicheck -update
//
// after an intended change of the surface and commit the golden files with
// it: the diff of testdata/api is the review of the change. docs/RATIONALE.md
// says what each public package exports and why.
//
// # Caveats
//
// The test reads the packages' export data through `go list -export`, so it
// needs the go command (it is there wherever go test runs) and compiles the
// public packages if the build cache does not hold them.
package apicheck

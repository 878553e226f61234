// Package names holds the one rule for the names of streams, plugins,
// consumer groups, members, hubs and tags: 1 to 128 characters from
// [A-Za-z0-9._-], starting with a letter or digit.
//
// # Basics
//
// The rule makes a name safe as a file name on every platform and in a URL
// path without escaping. store, plugins, internal/groups and hub all check
// names with Validate; it lives in a leaf of its own so that a package that
// only needs the rule (internal/groups) does not import the store.
//
// # Caveats
//
// ErrInvalid is store.ErrInvalidName: the same value, so that errors.Is
// matches either name.
package names
